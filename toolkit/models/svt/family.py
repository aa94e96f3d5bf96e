"""Registry entry for SVT (self-supervised video transformer backbone)."""

from __future__ import annotations

from ...registry import Family, lazy
from .model import PRESETS


FAMILY = Family(
    name="svt",
    description="SVT video backbone (TimeSformer ViT-B/16, divided space-time attention) → CLS "
                "embedding",
    presets=tuple(PRESETS),
    default_preset="vit-base",
    export=lazy("toolkit.export.svt", "export"),
    bench=lazy("toolkit.bench.svt", "bench"),
    work_unit="clip (RTF: compute time per second of the source video the clip is sampled from)",
    extra={"bench_options": ("frames", "size")},
)
