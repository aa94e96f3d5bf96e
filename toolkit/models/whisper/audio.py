"""Audio decoding and Whisper log-mel features.

Any common format, sample rate and channel count is decoded (libsndfile for WAV/FLAC/OGG,
PyAV/FFmpeg for the rest), down-mixed to mono and resampled to 16 kHz.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from math import gcd
from pathlib import Path

import numpy as np

from ...core.errors import ToolkitError

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE      # 480 000 samples per window
N_FRAMES = N_SAMPLES // HOP_LENGTH           # 3 000 mel frames per window
SILENCE_PEAK = 1e-4                          # ≈ −80 dBFS: below this a file counts as silent


# FFmpeg demuxers of audio files; a file from a client (``untrusted``) is opened with only
# these and only the file protocol, so a playlist (HLS, concat) cannot make FFmpeg open other
# files or URLs
AUDIO_DEMUXERS = ("wav,w64,flac,mp3,ogg,mov,mp4,m4a,3gp,matroska,webm,aac,aiff,caf,au,"
                  "amr,ac3,eac3,wv,ape,tta,dsf,asf")


class TooLong(ToolkitError):
    """Audio longer than the caller's limit (``max_seconds``)."""


def _decode_soundfile(path: Path, max_seconds: float | None = None):
    import soundfile as sf

    if max_seconds is not None:
        info = sf.info(str(path))
        if info.frames > max_seconds * info.samplerate:
            raise TooLong(f"audio file {path} is {info.frames / info.samplerate:.0f} s long, "
                          f"over the limit of {max_seconds:g} s")
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data, sr


def _decode_av(path: Path, max_seconds: float | None = None, untrusted: bool = False):
    import av

    options = ({"protocol_whitelist": "file", "format_whitelist": AUDIO_DEMUXERS}
               if untrusted else None)
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    with av.open(str(path), options=options) as container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise ValueError("no audio stream")
        stream = streams[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks, n = [], 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                n += chunks[-1].size
            if limit is not None and n > limit:     # stop decoding: never hold hours of it
                raise TooLong(f"audio file {path} is over the limit of {max_seconds:g} s")
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return data[:, None], SAMPLE_RATE


def resample(audio: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    if sr == target:
        return audio.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = gcd(int(sr), int(target))
    return resample_poly(audio, target // g, int(sr) // g).astype(np.float32)


def load_audio(path: str | Path, sr: int = SAMPLE_RATE, max_seconds: float | None = None,
               untrusted: bool = False) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``sr`` Hz. One-line ToolkitError on bad input.

    ``max_seconds``: refuse longer audio (``TooLong``) before or while decoding it, so a small
    compressed file cannot decode to hours of samples. ``untrusted``: a file from a client —
    FFmpeg may only read it as one of ``AUDIO_DEMUXERS`` and open no other file or URL."""
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"audio file {path} does not exist")
    if path.stat().st_size == 0:
        raise ToolkitError(f"audio file {path} is empty (0 bytes)")
    try:
        data, file_sr = _decode_soundfile(path, max_seconds)
    except TooLong:
        raise
    except Exception:  # noqa: BLE001 - libsndfile does not know every container; try FFmpeg
        try:
            data, file_sr = _decode_av(path, max_seconds, untrusted)
        except TooLong:
            raise
        except Exception as exc:  # noqa: BLE001
            raise ToolkitError(f"cannot decode {path} as audio ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:120] if str(exc) else 'unknown format'})"
                               "; give a WAV, FLAC, MP3, OGG, M4A or other FFmpeg-readable file"
                               ) from None
    mono = data.mean(axis=1) if data.ndim == 2 else data
    if mono.size == 0:
        raise ToolkitError(f"audio file {path} contains no samples")
    if not np.isfinite(mono).all():
        raise ToolkitError(f"audio file {path} contains NaN or infinite samples; it is corrupt "
                           "(a float WAV written from a failed computation?)")
    audio = resample(mono, file_sr, sr)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < SILENCE_PEAK:
        raise ToolkitError(f"audio file {path} is silent (peak {peak:.1e} < {SILENCE_PEAK:g}); "
                           "there is nothing to transcribe")
    return audio


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


def log_mel(audio: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Whisper log-mel spectrogram of one 30-s window: float32 [n_mels, 3000]."""
    import torch

    audio = pad_or_trim(np.asarray(audio, dtype=np.float32))
    x = torch.from_numpy(audio)
    window = torch.hann_window(N_FFT)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.from_numpy(mel_filters(n_mels)) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).numpy().astype(np.float32)


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
    import torch

    audio = np.asarray(audio, dtype=np.float32)
    n = len(audio)
    half = N_FFT // 2
    total = n + N_SAMPLES                         # samples after the silence padding
    n_frames = total // HOP_LENGTH                # the STFT's last frame is dropped, as Whisper does
    filters = torch.from_numpy(mel_filters(n_mels))
    window = torch.hann_window(N_FFT)
    out = np.empty((n_mels, n_frames), np.float32)
    top = -np.inf
    for f0 in range(0, n_frames, LONG_CHUNK_FRAMES):
        f1 = min(n_frames, f0 + LONG_CHUNK_FRAMES)
        # samples of the centre-padded signal that frames f0..f1-1 read
        idx = np.arange(f0 * HOP_LENGTH, (f1 - 1) * HOP_LENGTH + N_FFT) - half
        idx = np.abs(idx)                          # reflection at the start
        # reflection at the end falls in the silence padding: zeros, like the padding itself
        seg = np.where(idx < n, audio[np.minimum(idx, n - 1)], 0.0).astype(np.float32)
        stft = torch.stft(torch.from_numpy(seg), N_FFT, HOP_LENGTH, window=window,
                          center=False, return_complex=True)
        mel = filters @ (stft.abs() ** 2)
        chunk = torch.clamp(mel, min=1e-10).log10().numpy()
        out[:, f0:f1] = chunk
        top = max(top, float(chunk.max()))
    np.maximum(out, top - 8.0, out=out)
    out += 4.0
    out /= 4.0
    return out
