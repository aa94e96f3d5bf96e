"""Mel extraction with the paper's audio settings and a Griffin-Lim vocoder.

22 050 Hz, n_fft 1024, hop 256, window 1024 (Hann), 80 Slaney mel bands over 0–8 kHz,
magnitude spectrogram, natural log clamped at 1e-5 (as HiFi-GAN / Grad-TTS do).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ...core.errors import ToolkitError
from .model import AUDIO

VOCODER = "griffin-lim"


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = f / f_sp
    min_log_hz = 1000.0
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def _mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@lru_cache(maxsize=4)
def mel_filters(sr: int = 22050, n_fft: int = 1024, n_mels: int = 80, fmin: float = 0.0,
                fmax: float = 8000.0) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters, (n_mels, n_fft//2+1)."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0, np.minimum(lower, upper))
    w *= (2.0 / (mel_pts[2:n_mels + 2] - mel_pts[:n_mels]))[:, None]
    return w.astype(np.float32)


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


def griffin_lim(log_mel: np.ndarray, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Log-mel (80, frames) → waveform: pseudo-inverse of the filter bank, then Griffin-Lim."""
    n_fft, hop, win = AUDIO["n_fft"], AUDIO["hop_length"], AUDIO["win_length"]
    fb = mel_filters(AUDIO["sample_rate"], n_fft, AUDIO["n_mels"], AUDIO["f_min"], AUDIO["f_max"])
    mel = np.exp(np.asarray(log_mel, dtype=np.float64))
    mag = np.maximum(np.linalg.pinv(fb.astype(np.float64)) @ mel, 1e-5)
    mag_t = torch.from_numpy(mag.astype(np.float32))
    window = torch.hann_window(win)
    g = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * torch.pi * torch.rand(mag_t.shape, generator=g))
    length = mag.shape[1] * hop
    for _ in range(n_iter):
        wav = torch.istft(mag_t * angles, n_fft, hop, win, window, length=length)
        spec = torch.stft(wav, n_fft, hop, win, window, return_complex=True)
        angles = torch.exp(1j * torch.angle(spec[:, :mag.shape[1]]))
    wav = torch.istft(mag_t * angles, n_fft, hop, win, window, length=length).numpy()
    peak = np.abs(wav).max()
    return (wav / peak * 0.95 if peak > 0 else wav).astype(np.float32)
