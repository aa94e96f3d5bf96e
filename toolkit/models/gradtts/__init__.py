"""Grad-TTS (Popov et al., ICML 2021): model, text front end, audio, MAS, training."""
