"""Registry entry for Grad-TTS."""

from __future__ import annotations

from ...registry import Family
from .model import PRESETS


def _export(**kw):
    from ...export.gradtts import export

    return export(**kw)


def _bench(**kw):
    from ...bench.gradtts import bench

    return bench(**kw)


FAMILY = Family(
    name="gradtts",
    description="Grad-TTS acoustic model (Popov et al., ICML 2021): text encoder + score U-Net, "
                "N-step probability-flow ODE sampler",
    presets=tuple(PRESETS),
    default_preset="paper",
    export=_export,
    bench=_bench,
    work_unit="seconds of audio (frames × 256 / 22050)",
    extra={"bench_options": ("steps",)},
)
