"""Whisper: Hugging Face / CTranslate2 checkpoints, seeded presets, the default trained model,
the offline tokenizer, audio features.

Modules are imported by their own names (the registry names this family's entry points); this
package imports none of them, so that importing one front end never drags in PyTorch."""
