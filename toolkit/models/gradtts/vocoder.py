"""Mel → waveform without PyTorch: the Slaney mel filter bank and a Griffin-Lim vocoder in
NumPy (so ``toolkit synthesize`` and the server's speech route run from an artifact alone).

The STFT is torch.stft's default framing (centred, reflect-padded, periodic Hann window,
one-sided); the inverse overlap-adds and divides by the summed squared window, as torch.istft
does. No neural vocoder weights are available offline; Griffin-Lim is the honest stand-in.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .constants import AUDIO

VOCODER = "griffin-lim"


def _hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = f / f_sp
    min_log_hz = 1000.0
    logstep = np.log(6.4) / 27.0
    return np.where(f >= min_log_hz,
                    min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


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


def hann(n: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window's default)."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def stft(wav: np.ndarray, n_fft: int, hop: int, window: np.ndarray) -> np.ndarray:
    """Centred (reflect-padded) one-sided STFT: complex [n_fft // 2 + 1, frames]."""
    padded = np.pad(wav, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.fft.rfft(frames * window, axis=1).T


def istft(spec: np.ndarray, n_fft: int, hop: int, window: np.ndarray, length: int) -> np.ndarray:
    """Inverse of ``stft``: overlap-add of the windowed frames over the summed squared window."""
    frames = np.fft.irfft(spec.T, n=n_fft, axis=1) * window
    n = n_fft + hop * (frames.shape[0] - 1)
    out = np.zeros(n, np.float64)
    norm = np.zeros(n, np.float64)
    square = window.astype(np.float64) ** 2
    for i, frame in enumerate(frames):
        out[i * hop:i * hop + n_fft] += frame
        norm[i * hop:i * hop + n_fft] += square
    out = np.divide(out, norm, out=np.zeros_like(out), where=norm > 1e-11)
    start = n_fft // 2
    return out[start:start + length]


def griffin_lim(log_mel: np.ndarray, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Log-mel (80, frames) → waveform: pseudo-inverse of the filter bank, then Griffin-Lim
    from seeded random phases; peak-normalised to 0.95."""
    n_fft, hop, win = AUDIO["n_fft"], AUDIO["hop_length"], AUDIO["win_length"]
    fb = mel_filters(AUDIO["sample_rate"], n_fft, AUDIO["n_mels"], AUDIO["f_min"], AUDIO["f_max"])
    mel = np.exp(np.asarray(log_mel, dtype=np.float64))
    mag = np.maximum(np.linalg.pinv(fb.astype(np.float64)) @ mel, 1e-5).astype(np.float32)
    window = hann(win)
    rng = np.random.default_rng(seed)
    angles = np.exp(2j * np.pi * rng.random(mag.shape))
    length = mag.shape[1] * hop
    for _ in range(n_iter):
        wav = istft(mag * angles, n_fft, hop, window, length)
        spec = stft(wav, n_fft, hop, window)
        angles = np.exp(1j * np.angle(spec[:, :mag.shape[1]]))
    wav = istft(mag * angles, n_fft, hop, window, length)
    peak = np.abs(wav).max()
    return (wav / peak * 0.95 if peak > 0 else wav).astype(np.float32)
