"""Registry entry for Grad-TTS."""

from __future__ import annotations

from ...registry import Family, lazy
from .model import PRESETS


FAMILY = Family(
    name="gradtts",
    description="Grad-TTS acoustic model (Popov et al., ICML 2021): text encoder + score U-Net, "
                "N-step probability-flow ODE sampler",
    presets=tuple(PRESETS),
    default_preset="paper",
    export=lazy("toolkit.export.gradtts", "export"),
    bench=lazy("toolkit.bench.gradtts", "bench"),
    work_unit="seconds of audio (frames × 256 / 22050)",
    extra={"bench_options": ("steps",)},
)
