"""Whisper's audio front end: 16-kHz decoding and log-mel features, in NumPy (no PyTorch).

Any common format, sample rate and channel count is decoded by ``core/audio.py`` (libsndfile
for WAV/FLAC/OGG, PyAV/FFmpeg for the rest, streamed), down-mixed to mono and resampled to
16 kHz. The log-mel is Whisper's: a centred, reflect-padded STFT (n_fft 400, hop 160, periodic
Hann window), power, the packaged mel filters, log10, floored 8 below the maximum, (x + 4) / 4.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ...core.audio import AUDIO_DEMUXERS, TooLong  # noqa: F401 (re-exported)
from ...core.audio import load_audio as _load
from ...core.errors import ToolkitError

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE      # 480 000 samples per window
N_FRAMES = N_SAMPLES // HOP_LENGTH           # 3 000 mel frames per window


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, max_seconds: float | None = None,
               untrusted: bool = False, watch=None) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sr`` Hz (16 kHz), streamed (``core/audio.py``)."""
    return _load(path, sr, max_seconds=max_seconds, untrusted=untrusted, watch=watch)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int) -> np.ndarray:
    if n_mels not in (80, 128):
        raise ToolkitError(f"Whisper uses 80 or 128 mel bins, not {n_mels}")
    ref = resources.files("toolkit.assets").joinpath("whisper/mel_filters.npz")
    with ref.open("rb") as f:
        return np.load(f)[f"mel_{n_mels}"].astype(np.float32)


def pad_or_trim(audio: np.ndarray, length: int = N_SAMPLES) -> np.ndarray:
    if audio.shape[-1] >= length:
        return audio[..., :length]
    return np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])])


def _hann() -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)


def _power(segment: np.ndarray) -> np.ndarray:
    """|STFT|² of an already padded segment (frames every HOP_LENGTH, no centring): float32
    [N_FFT // 2 + 1, frames]."""
    frames = np.lib.stride_tricks.sliding_window_view(segment, N_FFT)[::HOP_LENGTH]
    spec = np.fft.rfft(frames * _hann(), axis=1)
    return (spec.real ** 2 + spec.imag ** 2).astype(np.float32).T


def log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper log-mel spectrogram of one 30-s window: float32 [n_mels, 3000]."""
    audio = pad_or_trim(np.asarray(audio, dtype=np.float32))
    power = _power(np.pad(audio, N_FFT // 2, mode="reflect"))[:, :-1]
    log_spec = np.log10(np.maximum(mel_filters(n_mels) @ power, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def windows(audio: np.ndarray, min_seconds: float = 0.1) -> list[np.ndarray]:
    """Split audio into consecutive 30-s windows (long audio is transcribed, not truncated)."""
    out = []
    for start in range(0, max(len(audio), 1), N_SAMPLES):
        chunk = audio[start:start + N_SAMPLES]
        if start == 0 or len(chunk) >= min_seconds * SAMPLE_RATE:
            out.append(chunk)
    return out


def features_for(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """[n_windows, n_mels, 3000] features for a whole recording."""
    return np.stack([log_mel(w, n_mels) for w in windows(audio)])


def check_features(features: np.ndarray, n_mels: int, source: str = "features") -> np.ndarray:
    """Refuse features whose mel-bin count or frame count does not fit the model."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 2:
        features = features[None]
    if features.ndim != 3:
        raise ToolkitError(f"{source} must be [mels, frames] or [batch, mels, frames], got shape "
                           f"{tuple(features.shape)}")
    if features.shape[1] != n_mels:
        hint = ("large-v3 and turbo take 128, other Whisper sizes 80"
                if features.shape[1] in (80, 128) else "Whisper takes 80 or 128")
        raise ToolkitError(f"{source} have {features.shape[1]} mel bins but this model expects "
                           f"{n_mels} ({hint}); compute features for this model or pass audio")
    if features.shape[2] != N_FRAMES:
        raise ToolkitError(f"{source} have {features.shape[2]} frames; Whisper's encoder takes "
                           f"{N_FRAMES} (30 s, padded) — pass audio instead")
    if not np.isfinite(features).all():
        raise ToolkitError(f"{source} contain NaN or infinite values; compute them again or pass "
                           "audio")
    return features


LONG_CHUNK_FRAMES = 3000   # frames of log-mel computed at a time for a whole recording


def log_mel_long(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Log-mel of a whole recording followed by 30 s of silence: float32 [n_mels, frames].

    The same spectrogram as one STFT over ``audio`` + 30 s of zeros (openai-whisper's
    ``log_mel_spectrogram(audio, padding=N_SAMPLES)``), normalised by the maximum of the whole
    file, so any 3000 frames from a frame before the end are a full window. Computed
    ``LONG_CHUNK_FRAMES`` frames at a time from index arithmetic on ``audio`` (the reflected
    edge included): an hour of audio never has a padded copy or its whole STFT in memory, only
    the result (115 MB for an hour at 80 bins).
    """
    audio = np.asarray(audio, dtype=np.float32)
    n = len(audio)
    half = N_FFT // 2
    total = n + N_SAMPLES                         # samples after the silence padding
    n_frames = total // HOP_LENGTH                # the STFT's last frame is dropped (Whisper)
    filters = mel_filters(n_mels)
    out = np.empty((n_mels, n_frames), np.float32)
    top = -np.inf
    for f0 in range(0, n_frames, LONG_CHUNK_FRAMES):
        f1 = min(n_frames, f0 + LONG_CHUNK_FRAMES)
        # samples of the centre-padded signal that frames f0..f1-1 read
        idx = np.arange(f0 * HOP_LENGTH, (f1 - 1) * HOP_LENGTH + N_FFT) - half
        idx = np.abs(idx)                          # reflection at the start
        # reflection at the end falls in the silence padding: zeros, like the padding itself
        seg = np.where(idx < n, audio[np.minimum(idx, n - 1)], 0.0).astype(np.float32)
        chunk = np.log10(np.maximum(filters @ _power(seg), 1e-10))
        out[:, f0:f1] = chunk
        top = max(top, float(chunk.max()))
    np.maximum(out, top - 8.0, out=out)
    out += 4.0
    out /= 4.0
    return out
