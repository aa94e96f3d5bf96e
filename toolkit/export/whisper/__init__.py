"""Whisper export: TensorRT-friendly encoder and decoder graphs (no `If`, explicit KV cache)."""

from .plan import EXPORT_REVISION, build_plan

__all__ = ["EXPORT_REVISION", "build_plan"]
