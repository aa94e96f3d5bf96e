"""Whisper runtime: the decode loop over encoder and decoder Sessions, on any backend."""

from .longform import TranscribeOptions, fallback_temperatures
from .pipeline import WhisperPipeline, open_pipeline
from .subtitles import check_formats, plan_outputs, write_outputs

__all__ = ["TranscribeOptions", "WhisperPipeline", "check_formats", "fallback_temperatures",
           "open_pipeline", "plan_outputs", "write_outputs"]
