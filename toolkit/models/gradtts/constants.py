"""Grad-TTS audio settings and frame arithmetic, shared by the model, the sampler and the
runtime (no PyTorch here: synthesis from an artifact imports this, not ``model.py``)."""

from __future__ import annotations

import math

# 22 050 Hz, n_fft 1024, hop 256, window 1024 (Hann), 80 Slaney mel bands over 0–8 kHz
AUDIO = {"sample_rate": 22050, "n_fft": 1024, "hop_length": 256, "win_length": 1024,
         "n_mels": 80, "f_min": 0.0, "f_max": 8000.0}


def fix_len(n: int, multiple: int = 4) -> int:
    """Frames padded up to a multiple of 4: the U-Net halves the frame axis twice."""
    return int(math.ceil(n / multiple) * multiple)
