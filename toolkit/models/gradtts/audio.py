"""Mel extraction with the paper's audio settings (training and calibration data; the vocoder,
which needs no PyTorch, is ``vocoder.py``).

22 050 Hz, n_fft 1024, hop 256, window 1024 (Hann), 80 Slaney mel bands over 0–8 kHz,
magnitude spectrogram, natural log clamped at 1e-5 (as HiFi-GAN / Grad-TTS do).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...core.errors import ToolkitError
from .constants import AUDIO
from .vocoder import mel_filters


def _stft_mag(wav: torch.Tensor) -> torch.Tensor:
    n_fft, hop = AUDIO["n_fft"], AUDIO["hop_length"]
    pad = (n_fft - hop) // 2
    wav = torch.nn.functional.pad(wav[None, None], (pad, pad), mode="reflect")[0, 0]
    spec = torch.stft(wav, n_fft, hop, AUDIO["win_length"], torch.hann_window(AUDIO["win_length"]),
                      center=False, return_complex=True)
    return (spec.real ** 2 + spec.imag ** 2 + 1e-9).sqrt()


def mel_spectrogram(wav: np.ndarray) -> np.ndarray:
    """(n_samples,) float waveform at 22 050 Hz → log-mel (80, frames)."""
    mag = _stft_mag(torch.as_tensor(np.asarray(wav, dtype=np.float32)))
    fb = torch.from_numpy(mel_filters(AUDIO["sample_rate"], AUDIO["n_fft"], AUDIO["n_mels"],
                                      AUDIO["f_min"], AUDIO["f_max"]))
    return torch.log(torch.clamp(fb @ mag, min=1e-5)).numpy()


def load_wav(path: str | Path) -> np.ndarray:
    """Mono float32 at 22 050 Hz; one-line ToolkitError naming the file otherwise."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"audio file {path} is missing; fix metadata.csv or add the wav")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises its own LibsndfileError
        raise ToolkitError(f"cannot read audio file {path}: {str(exc).splitlines()[0][:120]}; "
                           "replace it with a valid WAV") from None
    wav = wav.mean(axis=1)
    if sr != AUDIO["sample_rate"]:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(sr, AUDIO["sample_rate"])
        wav = resample_poly(wav, AUDIO["sample_rate"] // g, sr // g).astype(np.float32)
    if wav.size < AUDIO["n_fft"]:
        raise ToolkitError(f"audio file {path} is too short ({wav.size} samples); remove it "
                           "from metadata.csv")
    return wav
