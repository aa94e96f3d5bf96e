"""Grad-TTS export: text encoder + duration predictor, and one score U-Net evaluation."""

from .plan import EXPORT_REVISION, build_plan

__all__ = ["EXPORT_REVISION", "build_plan"]
