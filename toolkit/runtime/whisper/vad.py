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
   spans closer than twice that meet half-way).
   The padding defaults to 1000 ms, not faster-whisper's 400: after 20–30 s of music or noise
   this Silero model crossed 0.5 only 0.7–1.4 s into the speech, and with 400 ms the first
   words after the music and the tones were lost on the test recording (CER 3.50 % with
   400 ms, 0.19 % with 1000 ms, 2.33 % without the filter; the same two windows decoded).
3. **Joined**: the spans' audio is joined end to end (the non-speech between them left out)
   and transcribed by the long-form loop (``longform.py``: 30-s windows by seeking,
   timestamps, fallback, the previous text as prompt) — faster-whisper's sequential VAD path
   does the same. Every time is mapped back to the recording piece by piece; a segment that
   runs over a join keeps the piece it overlaps most (its times never cover left-out audio).

   Tried first as the only path, and dropped as the default: 30-s chunks decoded as separate
   jobs. Spans joined within a chunk and decoded chunk by chunk lost a whole 11-s clip after
   a join (the chunk's window ended on a timestamp, which consumes it); chunks kept
   contiguous in time (the audio between their spans silenced) needed 4 windows on the test
   recording where the joined stream needs 2 (1.19× the speed without the filter instead of
   1.56×), at CER 0.39 % against 0.19 %.
4. **Batched** (``--batch-size N`` > 1, ``transcribe_chunks``): faster-whisper's
   ``BatchedInferencePipeline`` semantics. The spans are packed, in order, into chunks of at
   most 30 s of joined speech (a longer span is a chunk of its own); each chunk is a
   ``LongFormJob`` of its own, and N of them at a time go through ``longform.advance`` — the
   server's batched loop: their windows are encoded and decoded together, a finished chunk's
   place taken by the next one. A chunk is decoded without the previous chunk's text as its
   prompt; within a chunk the long-form rules apply (seeking, fallback, word timestamps).
   Segments are merged in file order, each chunk mapping its own times back. On a CPU the
   gain is the decoder's (one call per step for every chunk's beams): 1.24× CPU time at
   ``--batch-size 4`` on 364 s of LJ clips, same CER; the encoder is compute-bound and runs a
   window at a time, and every chunk is a padded 30-s window of its own (16 windows against
   the joined stream's 12). On a GPU the encoder batches too and the batch is the speed
   lever. ``results/whisper-batched.md`` has the figures.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Callable

import numpy as np

from ...core.errors import ToolkitError
from ...models.whisper.audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE, log_mel_long
from ..session import OrtSession
from .longform import LongFormJob, LongFormResult, TranscribeOptions, advance, transcribe_mel

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
                 min_silence_ms: int = 2000, speech_pad_ms: int = 1000
                 ) -> list[tuple[int, int]]:
    """Speech as sample ranges [start, end) of the recording, padded, in order and not
    overlapping."""
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
    spans = [(a * FRAME, min(b * FRAME, n_samples)) for a, b in raw]
    spans = [(a, b) for a, b in spans if b > a]
    return _padded(spans, pad, n_samples)


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
class SpeechMap:
    """What the filter kept: the stretches of speech (sample ranges of the recording, in
    order), joined end to end into the audio that is decoded; ``original`` maps a time in that
    audio back to the recording. ``vad_ms``: the time the VAD took."""

    pieces: list[tuple[int, int]] = field(default_factory=list)
    vad_ms: float = 0.0

    @property
    def samples(self) -> int:
        return sum(b - a for a, b in self.pieces)

    @property
    def speech_s(self) -> float:
        return self.samples / SAMPLE_RATE

    def add(self, a: int, b: int) -> None:
        if self.pieces and self.pieces[-1][1] == a:     # touching: one piece
            self.pieces[-1] = (self.pieces[-1][0], b)
        else:
            self.pieces.append((a, b))

    def audio(self, audio: np.ndarray) -> np.ndarray:
        if not self.pieces:
            return np.zeros(0, np.float32)
        return np.concatenate([audio[a:b] for a, b in self.pieces]).astype(np.float32)

    def original(self, t: float, end: bool = False) -> float:
        """Seconds in the joined speech → seconds in the recording. A time on the border of
        two pieces is the end of the first when ``end``, else the start of the second; times
        past the end are clipped to it."""
        sample = t * SAMPLE_RATE
        done = 0
        for k, (a, b) in enumerate(self.pieces):
            length = b - a
            if (sample < done + length or (end and sample <= done + length)
                    or k == len(self.pieces) - 1):
                return (a + min(max(sample - done, 0.0), length)) / SAMPLE_RATE
            done += length
        return 0.0

    def span(self, start: float, end: float) -> tuple[float, float]:
        """A segment's times (seconds in the joined speech) in the recording. A segment that
        runs over a join (Whisper's segments need not end where a piece does) keeps the piece
        it overlaps most, so its times never cover the audio that was left out."""
        pieces, done = [], 0.0
        for a, b in self.pieces:
            length = (b - a) / SAMPLE_RATE
            pieces.append((done, done + length))
            done += length
        overlap = [min(end, hi) - max(start, lo) for lo, hi in pieces]
        k = int(np.argmax(overlap))
        lo, hi = pieces[k]
        if overlap[k] <= 0 or (start >= lo and end <= hi):
            return self.original(start), self.original(end, end=True)
        offset = self.pieces[k][0] / SAMPLE_RATE
        return offset + max(start, lo) - lo, offset + min(end, hi) - lo

    def as_dict(self) -> dict:
        return {"speech_s": round(self.speech_s, 3),
                "spans": [[round(a / SAMPLE_RATE, 3), round(b / SAMPLE_RATE, 3)]
                          for a, b in self.pieces],
                "vad_ms": round(self.vad_ms, 2)}


def detect_speech(audio: np.ndarray, options: TranscribeOptions) -> SpeechMap:
    t0 = time.perf_counter()
    probs = speech_probabilities(audio)
    speech = SpeechMap()
    for a, b in speech_spans(probs, len(audio), options.vad_threshold, options.min_silence_ms,
                             options.speech_pad_ms):
        speech.add(a, b)
    speech.vad_ms = (time.perf_counter() - t0) * 1e3
    return speech


def speech_chunks(speech: SpeechMap, seconds: float = N_FRAMES * HOP_LENGTH / SAMPLE_RATE
                  ) -> list[SpeechMap]:
    """The pieces of ``speech`` grouped, in order, into chunks of at most ``seconds`` of joined
    speech (one 30-s window each; a piece longer than that is a chunk of its own, decoded by
    seeking like any long recording)."""
    limit = round(seconds * SAMPLE_RATE)
    chunks: list[SpeechMap] = []
    for a, b in speech.pieces:
        if chunks and chunks[-1].samples + (b - a) <= limit:
            chunks[-1].pieces.append((a, b))
        else:
            chunks.append(SpeechMap([(a, b)]))
    return chunks


def transcribe_speech(pipe, audio: np.ndarray, options: TranscribeOptions,
                      progress: Callable[[float], None] | None = None) -> LongFormResult:
    """Segments of the speech in ``audio`` (times in the recording); what the VAD kept is
    ``result.vad``. ``options.batch_size`` > 1: the speech decoded in chunks, that many at a
    time (``transcribe_chunks``)."""
    options.check()
    if not options.vad_filter:
        raise ToolkitError("transcribe_speech is the --vad-filter path; the options do not ask "
                           "for it")
    if options.word_timestamps:
        pipe.check_word_timestamps()
    speech = detect_speech(audio, options)
    pipe.check_language(options.language, options.task)
    if options.batch_size > 1:
        result = transcribe_chunks(pipe, audio, speech, options, options.batch_size, progress)
        if progress is not None:
            progress(len(audio) / SAMPLE_RATE)
        return result
    joined = speech.audio(audio)
    if len(joined) == 0:                # no speech: nothing to decode
        result = LongFormResult([], pipe.check_language(options.language, options.task))
    else:
        mel = log_mel_long(joined, pipe.n_mels)
        report = None if progress is None else (lambda t: progress(speech.original(t, True)))
        result = transcribe_mel(pipe, mel, mel.shape[1] - N_FRAMES, len(joined) / SAMPLE_RATE,
                                replace(options, vad_filter=False), report)
    result.segments = _mapped(result.segments, speech)
    result.vad = speech.as_dict()
    if progress is not None:
        progress(len(audio) / SAMPLE_RATE)
    return result


def transcribe_chunks(pipe, audio: np.ndarray, speech: SpeechMap, options: TranscribeOptions,
                      batch_size: int, progress: Callable[[float], None] | None = None
                      ) -> LongFormResult:
    """The speech decoded as separate chunks of up to 30 s (``speech_chunks``), ``batch_size``
    of them at a time through the server's batched loop (``longform.advance``: their windows
    encoded and searched together), a finished chunk's place taken by the next one. Each chunk
    starts with no previous text (``--initial-prompt`` alone, if given); within a chunk longer
    than a window the options apply as usual. Segments come back in file order, their times in
    the recording; ``batch_size`` 1 is the same chunks one after the other."""
    chunks = speech_chunks(speech)
    inner = replace(options, vad_filter=False, batch_size=1)
    jobs = []
    for chunk in chunks:
        mel = log_mel_long(chunk.audio(audio), pipe.n_mels)
        jobs.append(LongFormJob.start(pipe, mel, mel.shape[1] - N_FRAMES,
                                      chunk.samples / SAMPLE_RATE, inner))
    per = pipe.batch_capacity(options.beam_size, batch_size) if hasattr(
        pipe, "batch_capacity") else batch_size
    waiting, active, done_s = list(range(len(jobs))), [], 0.0
    while waiting or active:
        while waiting and len(active) < per:
            active.append(waiting.pop(0))
        advance(pipe, [jobs[k] for k in active])
        active = [k for k in active if not jobs[k].done]
        if progress is not None:          # the recording up to the first unfinished chunk
            first = min(active + waiting, default=None)
            t = (len(audio) / SAMPLE_RATE if first is None
                 else chunks[first].pieces[0][0] / SAMPLE_RATE)
            done_s = max(done_s, t)
            progress(done_s)
    language = pipe.check_language(options.language, options.task)
    result = LongFormResult([], next((j.result.language for j in jobs), language))
    for chunk, job in zip(chunks, jobs):
        for segment in _mapped(job.result.segments, chunk):
            result.segments.append(replace(segment, id=len(result.segments)))
        result.windows += job.result.windows
        result.fallbacks += job.result.fallbacks
        result.encoder_ms += job.result.encoder_ms
        result.step_ms += job.result.step_ms
    result.vad = {**speech.as_dict(), "chunks": len(chunks), "batch_size": per}
    return result


def _mapped(segments: list, speech: SpeechMap) -> list:
    """Segments (and their words) of the joined speech with the recording's times."""
    return [
        replace(s, seek=round(speech.original(s.seek * HOP_LENGTH / SAMPLE_RATE)
                              * SAMPLE_RATE / HOP_LENGTH),
                start=speech.span(s.start, s.end)[0], end=speech.span(s.start, s.end)[1],
                words=None if s.words is None else [
                    replace(w, start=speech.span(w.start, w.end)[0],
                            end=speech.span(w.start, w.end)[1]) for w in s.words])
        for s in segments]
