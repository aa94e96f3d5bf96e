"""Registry entry for SVT (self-supervised video transformer backbone)."""

from __future__ import annotations

from ...registry import Family
from .model import PRESETS


def _export(**kwargs):
    from ...export.svt import export

    return export(**kwargs)


def _bench(**kwargs):
    from ...bench.svt import bench

    return bench(**kwargs)


FAMILY = Family(
    name="svt",
    description="SVT video backbone (TimeSformer ViT-B/16, divided space-time attention) → CLS "
                "embedding",
    presets=tuple(PRESETS),
    default_preset="vit-base",
    export=_export,
    bench=_bench,
    work_unit="clip (RTF: compute time per second of the source video the clip is sampled from)",
    extra={"bench_options": ("frames", "size")},
)
