"""Whisper: Hugging Face checkpoints or seeded presets, the offline tokenizer, audio features."""
