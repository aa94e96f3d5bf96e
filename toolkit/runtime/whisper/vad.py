"""Voice-activity detection (``--vad-filter``): decode only the speech of a recording.

Whisper decodes whatever a window holds; on silence, noise and music it writes text that was
never said. With the filter:

1. **Speech probabilities**: Silero VAD (v6, the 16-kHz "sequence" ONNX graph of the
   ``silero-vad`` 6.2.3 package, MIT; ``toolkit/assets/vad/NOTICE.md``) gives one probability
   per 32-ms frame (512 samples, each seen with the 64 samples before it), run as one
   onnxruntime ``Session`` call per block of frames with the LSTM state carried between
   blocks — numpy and onnxruntime only, no PyTorch.
2. **Speech spans** (faster-whisper's options): a span starts at a frame at or above
   ``vad_threshold`` (0.5) and ends where the probability stays below ``vad_threshold − 0.15``
   for ``min_silence_ms`` (2000); each span is widened by ``speech_pad_ms`` on both sides (two
   spans closer than twice that meet half-way). A span too long to fit a 30-s window once
   padded is cut at its least speech-like frame in the second half of the allowed length.
   The padding defaults to 1000 ms, not faster-whisper's 400: after 20–30 s of music or noise
   this Silero model crossed 0.5 only 0.7–1.4 s into the speech ("Printing" of an LJ clip and
   "And so" of jfk.flac were lost on the test recording: CER 3.50 % with 400 ms, 0.39 % with
   1000 ms, 2.33 % without the filter); in a chunk the extra padding costs no window.
3. **Chunks**: consecutive spans are grouped, in order, into chunks whose first start and
   last end are at most 30 s apart — one window each — and everything in a chunk between its
   spans is silenced (zeros), so Whisper sees only speech and the chunk's times are the
   file's plus the chunk's offset. (Joining the spans' audio end to end instead, as
   faster-whisper's sequential VAD path does, packs more speech into a window, but on the
   test recording tiny.en then dropped the words after each join — "Printing," and a whole
   11-s clip — and started segments in the padding before a join.)
4. Each chunk is transcribed by the long-form loop (``longform.py``: timestamps, fallback,
   the previous text as prompt — carried from chunk to chunk), and every time is shifted back
   by the chunk's offset.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Callable

import numpy as np

from ...core.errors import ToolkitError
from ...models.whisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, SAMPLE_RATE, log_mel_long
from ..session import OrtSession
from .longform import LongFormJob, LongFormResult, TranscribeOptions, advance

MODEL_FILE = "silero_vad_16k_sequence.onnx"
FRAME = 512                 # samples per speech probability (32 ms at 16 kHz)
CONTEXT = 64                # samples of the frame before that the model sees with each frame
BLOCK_FRAMES = 4096         # frames per session call (131 s of audio)
STATE = (1, 1, 128)         # the LSTM's hidden and cell state
NEG_OFFSET = 0.15           # a span ends below threshold − 0.15 (Silero's hysteresis)


@functools.lru_cache(maxsize=1)
def _session() -> OrtSession:
    path = resources.files("toolkit.assets").joinpath("vad", MODEL_FILE)
    # one thread: the graph is small (an LSTM over 32-ms frames); more threads only contend
    # with the encoder's
    return OrtSession(str(path), threads=1)


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """One speech probability per 512-sample frame of 16-kHz ``audio`` (the last frame
    zero-padded)."""
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    n = -(-len(audio) // FRAME)
    if n == 0:
        return np.zeros(0, np.float32)
    frames = np.zeros((n, FRAME), np.float32)
    frames.reshape(-1)[:len(audio)] = audio
    rows = np.empty((n, CONTEXT + FRAME), np.float32)
    rows[:, CONTEXT:] = frames
    rows[0, :CONTEXT] = 0.0
    rows[1:, :CONTEXT] = frames[:-1, -CONTEXT:]
    sess = _session()
    h = np.zeros(STATE, np.float32)
    c = np.zeros(STATE, np.float32)
    out = []
    for i in range(0, n, BLOCK_FRAMES):
        res = sess.run({"input": rows[i:i + BLOCK_FRAMES], "h": h, "c": c})
        out.append(res["speech_probs"].reshape(-1))
        h, c = res["hn"], res["cn"]
    return np.concatenate(out).astype(np.float32)


def speech_spans(probs: np.ndarray, n_samples: int, threshold: float = 0.5,
                 min_silence_ms: int = 2000, speech_pad_ms: int = 1000,
                 max_samples: int = N_SAMPLES) -> list[tuple[int, int]]:
    """Speech as sample ranges [start, end) of the recording, padded, each at most
    ``max_samples`` long, in order and not overlapping."""
    low = max(threshold - NEG_OFFSET, 0.01)
    min_silence = round(min_silence_ms * SAMPLE_RATE / 1000 / FRAME)
    pad = round(speech_pad_ms * SAMPLE_RATE / 1000)
    # frames: [start, end)
    raw: list[tuple[int, int]] = []
    start, quiet_from = None, None
    for i, p in enumerate(probs):
        if start is None:
            if p >= threshold:
                start, quiet_from = i, None
            continue
        if p >= threshold:
            quiet_from = None
        elif p < low and quiet_from is None:
            quiet_from = i
        if quiet_from is not None and i - quiet_from >= min_silence:
            raw.append((start, quiet_from))
            start, quiet_from = None, None
    if start is not None:
        raw.append((start, len(probs) if quiet_from is None else quiet_from))
    longest = max(1, (max_samples - 2 * pad) // FRAME)
    frames = [piece for a, b in raw for piece in _cut(probs, a, b, longest)]
    spans = [(a * FRAME, min(b * FRAME, n_samples)) for a, b in frames]
    spans = [(a, b) for a, b in spans if b > a]
    return _padded(spans, pad, n_samples)


def _cut(probs: np.ndarray, a: int, b: int, longest: int) -> list[tuple[int, int]]:
    """Frames [a, b) in pieces of at most ``longest``, each cut at the least speech-like frame
    of the second half of the allowed length."""
    pieces = []
    while b - a > longest:
        lo, hi = a + longest // 2, a + longest
        cut = lo + int(np.argmin(probs[lo:hi]))
        pieces.append((a, cut))
        a = cut
    pieces.append((a, b))
    return pieces


def _padded(spans: list[tuple[int, int]], pad: int, n: int) -> list[tuple[int, int]]:
    out = [list(s) for s in spans]
    for i, s in enumerate(out):
        s[0] = max(0, s[0] - pad) if i == 0 else s[0]
        if i + 1 < len(out):
            gap = out[i + 1][0] - s[1]
            if gap < 2 * pad:               # meet half-way
                s[1] += gap // 2
                out[i + 1][0] -= gap - gap // 2
            else:
                s[1] += pad
                out[i + 1][0] -= pad
        else:
            s[1] = min(n, s[1] + pad)
    return [(a, b) for a, b in out]


@dataclass
class Chunk:
    """Stretches of speech (sample ranges of the recording, in order) that fit one window:
    the audio from the first one's start to the last one's end, at most 30 s, with everything
    between them silenced. ``original`` maps a time in the chunk back to the recording."""

    pieces: list[tuple[int, int]] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.pieces[0][0]

    @property
    def samples(self) -> int:
        return self.pieces[-1][1] - self.pieces[0][0]

    @property
    def speech_samples(self) -> int:
        return sum(b - a for a, b in self.pieces)

    def audio(self, audio: np.ndarray) -> np.ndarray:
        out = np.zeros(self.samples, np.float32)
        for a, b in self.pieces:
            out[a - self.start:b - self.start] = audio[a:b]
        return out

    def add(self, a: int, b: int) -> None:
        if self.pieces and self.pieces[-1][1] == a:     # touching: one piece
            self.pieces[-1] = (self.pieces[-1][0], b)
        else:
            self.pieces.append((a, b))

    def original(self, t: float) -> float:
        """Seconds in the chunk → seconds in the recording (clipped to the chunk)."""
        return (self.start + min(max(t * SAMPLE_RATE, 0.0), self.samples)) / SAMPLE_RATE


def chunks(spans: list[tuple[int, int]], max_samples: int = N_SAMPLES) -> list[Chunk]:
    """Consecutive spans grouped into chunks whose first start and last end are at most
    ``max_samples`` apart (one window each)."""
    out: list[Chunk] = []
    for a, b in spans:
        if not out or b - out[-1].start > max_samples:
            out.append(Chunk())
        out[-1].add(a, b)
    return out


@dataclass
class SpeechMap:
    """What the filter kept: the chunks, the seconds of speech in them, the seconds decoded
    (the chunks' lengths) and the time the VAD took."""

    chunks: list[Chunk]
    vad_ms: float

    @property
    def speech_s(self) -> float:
        return sum(c.speech_samples for c in self.chunks) / SAMPLE_RATE

    @property
    def decoded_s(self) -> float:
        return sum(c.samples for c in self.chunks) / SAMPLE_RATE

    def as_dict(self) -> dict:
        return {"chunks": len(self.chunks), "speech_s": round(self.speech_s, 3),
                "decoded_s": round(self.decoded_s, 3),
                "spans": [[round(a / SAMPLE_RATE, 3), round(b / SAMPLE_RATE, 3)]
                          for c in self.chunks for a, b in c.pieces],
                "vad_ms": round(self.vad_ms, 2)}


def detect_speech(audio: np.ndarray, options: TranscribeOptions) -> SpeechMap:
    t0 = time.perf_counter()
    probs = speech_probabilities(audio)
    spans = speech_spans(probs, len(audio), options.vad_threshold, options.min_silence_ms,
                         options.speech_pad_ms)
    return SpeechMap(chunks(spans), (time.perf_counter() - t0) * 1e3)


def transcribe_speech(pipe, audio: np.ndarray, options: TranscribeOptions,
                      progress: Callable[[float], None] | None = None) -> LongFormResult:
    """Segments of the speech in ``audio`` (times in the recording); what the VAD kept is
    ``result.vad``."""
    options.check()
    if not options.vad_filter:
        raise ToolkitError("transcribe_speech is the --vad-filter path; the options do not ask "
                           "for it")
    speech = detect_speech(audio, options)
    language = pipe.check_language(options.language, options.task)
    plain = replace(options, vad_filter=False)
    result = LongFormResult([], language, vad=speech.as_dict())
    tokens: list[int] = []
    reset = 0
    for chunk in speech.chunks:
        piece = chunk.audio(audio)
        mel = log_mel_long(piece, pipe.n_mels)
        report = (None if progress is None else
                  (lambda t, c=chunk: progress(c.original(t))))
        job = LongFormJob.start(pipe, mel, mel.shape[1] - N_FRAMES, len(piece) / SAMPLE_RATE,
                                replace(plain, language=result.language), report)
        if tokens:                      # the text before: the prompt of the chunk's window
            job.all_tokens, job.prompt_reset = list(tokens), reset
        while not job.done:
            advance(pipe, [job])
        part = job.result
        result.language = result.language or part.language
        for s in part.segments:
            seek_s = chunk.original(s.seek * HOP_LENGTH / SAMPLE_RATE)
            result.segments.append(replace(
                s, id=len(result.segments), seek=round(seek_s * SAMPLE_RATE / HOP_LENGTH),
                start=chunk.original(s.start), end=chunk.original(s.end)))
        result.windows += part.windows
        result.fallbacks += part.fallbacks
        result.encoder_ms += part.encoder_ms
        result.step_ms += part.step_ms
        tokens, reset = job.all_tokens, job.prompt_reset
    if progress is not None:
        progress(len(audio) / SAMPLE_RATE)
    return result
