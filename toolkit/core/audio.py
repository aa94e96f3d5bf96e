"""Audio files → float32 mono at a target rate, decoded and resampled as a stream.

libsndfile (WAV/FLAC/OGG…) is read block by block and every block is down-mixed and resampled
before the next is read; every other format goes through FFmpeg (PyAV), whose resampler turns
each decoded frame into the target rate at once. So memory is the output at the target rate
plus one block — a small compressed upload of hours at 48 kHz never exists in memory at 48 kHz
— and a Ctrl-C, the caller's ``watch`` or a length limit stops the work between blocks.

The resampler is scipy's ``resample_poly`` (Kaiser-windowed sinc, β = 5, 10 zero crossings per
side of the slower rate) computed in pieces: each output sample is the same sum over the same
inputs, so the result equals the one-shot call to float32 rounding — without importing
scipy.signal (0.8 s) and without holding the whole input.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import ToolkitError
from .files import check_input_file

MIN_SAMPLE_RATE = 2000        # below 2 kHz no speech band is left: such a file is refused
BLOCK_SECONDS = 10            # input decoded per step (bounded memory, prompt cancellation)
SILENCE_PEAK = 1e-4           # ≈ −80 dBFS: below this a file counts as silent

# FFmpeg demuxers of audio files; a file from a client (``untrusted``) is opened with only
# these and only the file protocol, so a playlist (HLS, concat) cannot make FFmpeg open other
# files or URLs
AUDIO_DEMUXERS = ("wav,w64,flac,mp3,ogg,mov,mp4,m4a,3gp,matroska,webm,aac,aiff,caf,au,"
                  "amr,ac3,eac3,wv,ape,tta,dsf,asf")


class TooLong(ToolkitError):
    """Audio longer than the caller's limit (``max_seconds``)."""


# ------------------------------------------------------------------------------------------
# resampling
# ------------------------------------------------------------------------------------------

def _kaiser_lowpass(up: int, down: int) -> tuple[np.ndarray, int, int]:
    """(zero-padded filter × up, n_pre_remove, half_len): resample_poly's filter design."""
    max_rate = max(up, down)
    cutoff = 1.0 / max_rate                       # relative to Nyquist
    half_len = 10 * max_rate
    taps = 2 * half_len + 1
    m = np.arange(taps) - (taps - 1) / 2
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(taps, 5.0)
    h = (h / h.sum()).astype(np.float32) * np.float32(up)    # scipy casts to the input dtype
    n_pre_pad = down - half_len % down
    n_pre_remove = (half_len + n_pre_pad) // down
    return np.concatenate([np.zeros(n_pre_pad, np.float32), h]), n_pre_remove, half_len


class StreamResampler:
    """``feed`` blocks of samples at ``rate_in``, get blocks at ``rate_out``; ``finish`` returns
    the rest. The concatenated output equals ``scipy.signal.resample_poly`` of the whole input
    (to float32 rounding)."""

    def __init__(self, rate_in: int, rate_out: int, chunk: int = 32768):
        g = gcd(int(rate_in), int(rate_out))
        self.up, self.down = int(rate_out) // g, int(rate_in) // g
        self.identity = self.up == self.down == 1
        self.chunk = chunk
        self.n_in = 0
        self.next_out = 0
        if self.identity:
            return
        h, self.pre, _ = _kaiser_lowpass(self.up, self.down)
        self.k = -(-len(h) // self.up)            # taps per phase
        padded = np.zeros(self.k * self.up, np.float32)
        padded[:len(h)] = h
        # taps[p, K-1-k] = h[p + k·up]: a window of the k newest inputs, oldest first
        self.taps = padded.reshape(self.k, self.up).T[:, ::-1].copy()
        self.buf = np.zeros(self.k - 1, np.float32)   # inputs from ``start`` on (zeros before 0)
        self.start = -(self.k - 1)

    def feed(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        if self.identity:
            return x
        self.buf = np.concatenate([self.buf, x])
        self.n_in += len(x)
        return self._emit(final=False)

    def finish(self) -> np.ndarray:
        if self.identity:
            return np.zeros(0, np.float32)
        self.buf = np.concatenate([self.buf, np.zeros(self.k, np.float32)])  # zeros after the end
        return self._emit(final=True)

    def _emit(self, final: bool) -> np.ndarray:
        total = -(-self.n_in * self.up // self.down)
        # an output may be computed once its newest input (index m // up) has arrived
        last = total if final else min(total, (self.n_in * self.up - 1) // self.down
                                       - self.pre + 1)
        windows = np.lib.stride_tricks.sliding_window_view(self.buf, self.k)
        out = []
        while self.next_out < last:
            j = np.arange(self.next_out, min(last, self.next_out + self.chunk))
            m = (self.pre + j) * self.down
            rows = m // self.up - (self.k - 1) - self.start
            out.append(np.einsum("ij,ij->i", windows[rows], self.taps[m % self.up]))
            self.next_out = int(j[-1]) + 1
        oldest = ((self.pre + self.next_out) * self.down) // self.up - (self.k - 1)
        if oldest > self.start:                    # inputs no later output reads
            drop = min(oldest - self.start, len(self.buf))
            self.buf = self.buf[drop:]
            self.start += drop
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """One-shot resampling (``resample_poly``'s result)."""
    r = StreamResampler(rate_in, rate_out)
    return np.concatenate([r.feed(audio), r.finish()])


# ------------------------------------------------------------------------------------------
# decoding
# ------------------------------------------------------------------------------------------

def _check_rate(path: Path, rate: int) -> None:
    if rate < MIN_SAMPLE_RATE:
        raise ToolkitError(f"audio file {path} has a sample rate of {rate} Hz; below "
                           f"{MIN_SAMPLE_RATE} Hz no speech band is left — resample it from "
                           "the original recording")


def _soundfile_blocks(path: Path, rate: int, max_seconds: float | None
                      ) -> Iterator[np.ndarray]:
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        _check_rate(path, f.samplerate)
        if max_seconds is not None and f.frames > max_seconds * f.samplerate:
            raise TooLong(f"audio file {path} is {f.frames / f.samplerate:.0f} s long, over "
                          f"the limit of {max_seconds:g} s")
        resampler = StreamResampler(f.samplerate, rate)
        while True:
            block = f.read(BLOCK_SECONDS * f.samplerate, dtype="float32", always_2d=True)
            if not len(block):
                break
            yield resampler.feed(block.mean(axis=1))
        yield resampler.finish()


def _av_blocks(path: Path, rate: int, max_seconds: float | None, untrusted: bool
               ) -> Iterator[np.ndarray]:
    import av

    options = ({"protocol_whitelist": "file", "format_whitelist": AUDIO_DEMUXERS}
               if untrusted else None)
    limit = None if max_seconds is None else int(max_seconds * rate)
    av.logging.set_level(av.logging.PANIC)     # libmpg123's "Illegal Audio-MPEG-Header" notes
    with av.open(str(path), options=options) as container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise ValueError("no audio stream")
        stream = streams[0]
        if stream.rate:
            _check_rate(path, stream.rate)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        n = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                n += chunk.size
                yield chunk
            if limit is not None and n > limit:     # stop decoding: never hold hours of it
                raise TooLong(f"audio file {path} is over the limit of {max_seconds:g} s")
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)


# containers libsndfile reads itself, by their first bytes (WAV/RF64/W64, FLAC, Ogg, AIFF,
# AU, CAF)
_SNDFILE_MAGIC = (b"RIFF", b"RF64", b"riff", b"fLaC", b"OggS", b"FORM", b".snd", b"caff")


def _libsndfile_format(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) in _SNDFILE_MAGIC


def _check_finite(path: Path, x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise ToolkitError(f"audio file {path} contains NaN or infinite samples; it is corrupt "
                           "(a float WAV written from a failed computation?)")


class _Samples:
    """The decoded samples, written into one array as they arrive: sized up front when the
    container says how long it is (no list of blocks to join, which held two copies of an
    hour of audio at the end), doubled when it says nothing or too little."""

    def __init__(self, expected: int = 0):
        self.data = np.empty(max(int(expected), 1 << 16), np.float32)
        self.n = 0

    def add(self, block: np.ndarray) -> None:
        end = self.n + block.size
        if end > len(self.data):
            grown = np.empty(max(2 * len(self.data), end), np.float32)
            grown[:self.n] = self.data[:self.n]
            self.data = grown
        self.data[self.n:end] = block
        self.n = end

    def result(self) -> np.ndarray:
        if self.n >= 0.9 * len(self.data):
            return self.data[:self.n]
        return self.data[:self.n].copy()       # (do not keep a much larger buffer alive)


def _collect(path: Path, blocks: Iterator[np.ndarray], rate: int,
             watch: Callable[[float], None] | None, expected: int = 0) -> np.ndarray:
    """The blocks in one array (``expected``: the samples the container announces), each
    checked finite as it comes; ``watch(seconds decoded so far)`` after each block (it may
    raise to stop: a budget exceeded, a client gone)."""
    out = _Samples(expected)
    try:
        for b in blocks:
            if b.size:
                _check_finite(path, b)
                out.add(b)
            if watch is not None:
                watch(out.n / rate)
    except BaseException:
        # the exception's traceback keeps this frame (and ``out``) alive for as long as the
        # exception lives — in a server, until the error response is sent and a collection
        # runs: drop the samples now, so a refused request gives its memory back at once
        out.data = None
        raise
    return out.result()


def _announced(path: Path, rate: int) -> int:
    """Samples at ``rate`` the file says it holds (0 if it does not say): a size hint only."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        return int(info.frames * rate / info.samplerate) + 1 if info.samplerate else 0
    except Exception:  # noqa: BLE001 - only a hint
        return 0


def load_audio(path: str | Path, rate: int, max_seconds: float | None = None,
               untrusted: bool = False, watch: Callable[[float], None] | None = None,
               check_silence: bool = True) -> np.ndarray:
    """Decode ``path`` to float32 mono at ``rate`` Hz. One-line ToolkitError on bad input.

    ``max_seconds``: refuse longer audio (``TooLong``) before or while decoding it, so a small
    compressed file cannot decode to hours of samples. ``untrusted``: a file from a client —
    FFmpeg may only read it as one of ``AUDIO_DEMUXERS`` and open no other file or URL.
    ``watch``: called with the seconds decoded so far between blocks; raising there stops the
    decoding (the server's audio budget, a client that went away)."""
    path = check_input_file(path, "audio file")
    if path.stat().st_size == 0:
        raise ToolkitError(f"audio file {path} is empty (0 bytes)")
    try:
        if not _libsndfile_format(path):   # MP3, M4A, video…: FFmpeg (libsndfile's mpg123
            raise ValueError("not a libsndfile container")   # would print notes on stderr)
        audio = _collect(path, _soundfile_blocks(path, rate, max_seconds), rate, watch,
                         _announced(path, rate))
    except ToolkitError:
        raise
    except Exception:  # noqa: BLE001 - libsndfile does not know every container; try FFmpeg
        try:
            audio = _collect(path, _av_blocks(path, rate, max_seconds, untrusted), rate, watch)
        except ToolkitError:
            raise
        except Exception as exc:  # noqa: BLE001
            first = str(exc).splitlines()[0][:120] if str(exc) else "unknown format"
            raise ToolkitError(f"cannot decode {path} as audio ({type(exc).__name__}: {first}); "
                               "give a WAV, FLAC, MP3, OGG, M4A or other FFmpeg-readable file"
                               ) from None
    if audio.size == 0:
        raise ToolkitError(f"audio file {path} contains no samples")
    peak = max(float(audio.max()), -float(audio.min()))   # (no |audio| copy of an hour)
    if check_silence and peak < SILENCE_PEAK:
        raise ToolkitError(f"audio file {path} is silent (peak {peak:.1e} < {SILENCE_PEAK:g}); "
                           "there is nothing to transcribe")
    return audio
