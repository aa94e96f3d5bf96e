"""Registry entry for Whisper."""

from ...registry import Family, lazy
from .loading import DEFAULT_MODEL_NAME, DEFAULT_PRESET, PRESETS


FAMILY = Family(
    name="whisper",
    description="Whisper ASR: encoder + KV-cached decoder graphs, greedy decode loop",
    presets=tuple(PRESETS),
    default_preset=DEFAULT_PRESET,
    export=lazy("toolkit.export.whisper", "export_whisper"),
    bench=lazy("toolkit.bench.whisper", "bench_whisper"),
    work_unit="seconds of input audio (RTF = processing time / audio duration)",
    default_model=DEFAULT_MODEL_NAME,
    extra={"bench_options": ("tokens",)},
)
