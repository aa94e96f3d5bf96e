"""Whisper runtime: the decode loop over encoder and decoder Sessions, on any backend."""

from .pipeline import WhisperPipeline, open_pipeline

__all__ = ["WhisperPipeline", "open_pipeline"]
