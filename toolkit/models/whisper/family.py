"""Registry entry for Whisper."""

from ...registry import Family
from .loading import DEFAULT_PRESET, PRESETS


def _export(**kw):
    from ...export.whisper import export_whisper

    return export_whisper(**kw)


def _bench(**kw):
    from ...bench.whisper import bench_whisper

    return bench_whisper(**kw)


FAMILY = Family(
    name="whisper",
    description="Whisper ASR: encoder + KV-cached decoder graphs, greedy decode loop",
    presets=tuple(PRESETS),
    default_preset=DEFAULT_PRESET,
    export=_export,
    bench=_bench,
    work_unit="seconds of input audio (RTF = processing time / audio duration)",
    extra={"bench_options": ("tokens",)},
)
