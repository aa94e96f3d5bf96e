"""Whisper: Hugging Face / CTranslate2 checkpoints, seeded presets, the default trained model,
the offline tokenizer, audio features."""

from .loading import load_model, parameter_count

__all__ = ["load_model", "parameter_count"]
