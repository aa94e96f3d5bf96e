"""Long-form transcription: seeking through a recording of any length, written once for every
backend (openai-whisper's ``transcribe`` algorithm over the toolkit's Session step).

- The log-mel of the whole file is computed once (normalised by the file's maximum); a window
  is the next 30 s from ``seek``, zero-padded after the content as openai-whisper and
  faster-whisper do.
- Each window is decoded with timestamps. Complete segments (a timestamp pair) are kept and
  the next window starts at the end of the last complete one, so a word cut by the window's
  edge is decoded again in the next window instead of being split or lost. A window that ends
  on a single timestamp was fully consumed.
- Windows whose text compresses too well (repetition loops, ``compression_ratio_threshold``)
  or whose average log-probability is too low (``logprob_threshold``) are decoded again at the
  next temperature (sampling, best of N); a window whose no-speech probability is above
  ``no_speech_threshold`` and whose text is not confident is skipped as silence.
- The previous windows' tokens (up to half the context) are the prompt of the next one
  (``condition_on_previous_text``), reset after a window that needed a temperature above
  ``prompt_reset_on_temperature``.
- Only one window's features and cross-attention cache exist at a time: memory does not grow
  with the length of the file beyond its log-mel (115 MB per hour at 80 bins).
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...core.errors import Cancelled, ToolkitError
from ...core.options import check_fields, check_number, option
from ...models.whisper.audio import HOP_LENGTH, N_FRAMES, SAMPLE_RATE, log_mel_long
from ..generate import SearchOptions
from .decoding import SECONDS_PER_TIMESTAMP
from .timing import (
    APPEND_PUNCTUATIONS,
    PREPEND_PUNCTUATIONS,
    WordTiming,
    add_word_timestamps,
)

FRAMES_PER_TIMESTAMP = 2      # one timestamp step = two mel frames (the encoder's stride)
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH   # mel frames
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MAX_BEAMS = 64                # beams (and samples) per window: 64 × windows decoder rows at most
MAX_NEW_TOKENS = 448          # Whisper's positions: no window decodes more


def fallback_temperatures(start: float = 0.0, increment: float = 0.2) -> tuple[float, ...]:
    """openai-whisper's CLI: ``start``, then steps of ``increment`` up to 1.0 (0 = no fallback)."""
    check_number("--temperature", start, 0, 5)
    check_number("--temperature-increment-on-fallback", increment, 0, 1)
    if increment == 0:
        return (start,)
    if increment < 0.01:
        raise ToolkitError(f"--temperature-increment-on-fallback must be 0 (no fallback) or at "
                           f"least 0.01 (got {increment:g})")
    temps, t = [], start
    while t <= 1.0 + 1e-9:
        temps.append(round(t, 6))
        t += increment
    return tuple(temps) or (start,)


def parse_clip_timestamps(spec: str) -> list[float]:
    """``"0"`` / ``"3.5,10,20"`` → seconds, in order (a one-line error otherwise)."""
    try:
        points = [float(x) for x in str(spec).split(",") if x.strip()]
    except ValueError:
        raise ToolkitError(f"--clip-timestamps takes comma-separated seconds, like 0,30.5,60 "
                           f"(got {spec!r})") from None
    if any(not 0 <= p < 1e7 for p in points):
        raise ToolkitError(f"--clip-timestamps must be seconds from 0 (got {spec!r})")
    if any(b <= a for a, b in zip(points, points[1:])):
        raise ToolkitError(f"--clip-timestamps must increase: start,end,start,end,… "
                           f"(got {spec!r})")
    return points or [0.0]


def clip_frames(spec: str, content: int) -> list[tuple[int, int]]:
    """The (start, end) mel frames of each clip, within the content (openai-whisper's
    ``seek_clips``)."""
    points = [round(t * SAMPLE_RATE / HOP_LENGTH) for t in parse_clip_timestamps(spec)]
    if len(points) % 2:
        points.append(content)
    return [(min(a, content), min(b, content)) for a, b in zip(points[::2], points[1::2])]


@dataclass
class TranscribeOptions:
    """How a recording is decoded (``toolkit transcribe``'s options and the server's)."""

    language: str | None = option(None, "Language code, e.g. en, ko (default: detected; "
                                        "English-only models: en).")
    task: str = option("transcribe", "transcribe, or translate (to English).",
                       choices=("transcribe", "translate"))
    beam_size: int = option(5, "Beams at temperature 0 (1 = greedy).", min=1, max=MAX_BEAMS)
    best_of: int = option(5, "Samples per window at temperature > 0.", min=1, max=MAX_BEAMS)
    patience: float = option(1.0, "Beam search patience (finished candidates = beam size × "
                                  "patience).", min=0.1, max=10)
    length_penalty: float | None = option(None, "0..1: rank by log-prob / ((5+len)/6)^α "
                                                "(default: / len).", min=0, max=1)
    temperature: float = option(0.0, "First decoding temperature.", min=0, max=5)
    temperature_increment_on_fallback: float = option(
        0.2, "Step of the temperature when a window fails the thresholds below (0: no "
             "fallback).", min=0, max=1)
    compression_ratio_threshold: float | None = option(
        2.4, "A window whose text compresses better than this failed (repetition).", min=0,
        max=100)
    logprob_threshold: float | None = option(
        -1.0, "A window whose average log-probability is below this failed.", min=-100, max=0)
    no_speech_threshold: float | None = option(
        0.6, "A window with <|nospeech|> probability above this, and not confident, is "
             "silence.", min=0, max=1)
    condition_on_previous_text: bool = option(True, "Prompt each window with the text before "
                                                    "it.", negatable=True)
    prompt_reset_on_temperature: float = option(0.5, cli=False)
    initial_prompt: str | None = option(None, "Text to prompt the first window with "
                                              "(spelling, names).")
    without_timestamps: bool = option(False, "Decode without timestamp tokens (one segment "
                                             "per window).")
    max_initial_timestamp: float = option(1.0, cli=False)
    max_new_tokens: int = option(224, "Most tokens decoded per 30-s window.", min=1,
                                 max=MAX_NEW_TOKENS)
    seed: int = option(0, "Seed of fallback sampling (and of preset weights).", min=0,
                       max=2**32 - 1)
    clip_timestamps: str = option("0", "Stretches to transcribe: comma-separated start,end,"
                                       "start,end,… seconds (a last end left out: the end of "
                                       "the file), as openai-whisper's.")
    word_timestamps: bool = option(False, "Word-level times (cross-attention alignment, as "
                                          "openai-whisper): `words` in each segment; needs an "
                                          "artifact with the align graph.")
    hallucination_silence_threshold: float | None = option(
        None, "With --word-timestamps: a segment that looks hallucinated (its words improbable, "
              "very short or very long) with more than this many seconds of silence around it "
              "is dropped and the silence skipped (openai-whisper's).", min=0, max=3600)
    # the fallback schedule; default: ``temperature`` then steps of the increment up to 1.0
    temperatures: tuple[float, ...] | None = option(None, cli=False)
    # voice-activity detection (``vad.py``); faster-whisper's names and defaults, but for the
    # padding: 1000 ms, not 400 (after long music or noise Silero v6 finds the speech 0.7-1.4 s
    # late, and 400 ms lost the first words; vad.py says what was measured)
    vad_filter: bool = option(False, "Decode only the speech Silero VAD finds (skips silence, "
                                     "noise and music; times stay those of the file).")
    vad_threshold: float = option(0.5, "With --vad-filter: speech probability at which speech "
                                       "starts (it ends below this − 0.15).", min=0.01, max=0.99)
    min_silence_ms: int = option(2000, "With --vad-filter: silence that ends a stretch of "
                                       "speech, ms.", min=0, max=60_000)
    speech_pad_ms: int = option(1000, "With --vad-filter: audio kept on each side of a stretch "
                                     "of speech, ms.", min=0, max=5000)
    batch_size: int = option(1, "With --vad-filter: decode the speech in chunks of up to 30 s, "
                                "this many at a time through one batched loop (each chunk "
                                "without the previous chunk's text as prompt, as faster-"
                                "whisper's BatchedInferencePipeline); 1: the speech joined and "
                                "decoded window after window.", min=1, max=MAX_BEAMS)

    def __post_init__(self) -> None:
        if self.temperatures is None:
            self.temperatures = fallback_temperatures(self.temperature,
                                                      self.temperature_increment_on_fallback)

    def check(self) -> None:
        check_fields(self)
        clips = parse_clip_timestamps(self.clip_timestamps)
        if self.hallucination_silence_threshold is not None and not self.word_timestamps:
            raise ToolkitError("--hallucination-silence-threshold finds hallucinations by their "
                               "words and needs --word-timestamps")
        if self.vad_filter and clips != [0.0]:
            raise ToolkitError("--clip-timestamps and --vad-filter both choose what is decoded; "
                               "give one of them")
        if self.batch_size > 1 and not self.vad_filter:
            raise ToolkitError("--batch-size decodes the speech chunks --vad-filter finds side "
                               "by side; without --vad-filter each window starts where the "
                               "last one ended, so give --vad-filter too")
        SearchOptions(beam_size=self.beam_size, best_of=self.best_of,
                      patience=self.patience, length_penalty=self.length_penalty).check()
        if not self.temperatures or any(not 0 <= t <= 5 for t in self.temperatures):
            raise ToolkitError(f"temperatures must be from 0 to 5 (got {list(self.temperatures)})")


@dataclass
class Segment:
    id: int
    seek: int                       # mel frame where its window started
    start: float
    end: float
    text: str
    tokens: list[int]               # text and timestamp tokens, as decoded
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float | None
    words: list[WordTiming] | None = None   # with word_timestamps (timing.py)

    def as_dict(self) -> dict:
        words = {} if self.words is None else {"words": [w.as_dict() for w in self.words]}
        return {"id": self.id, "seek": self.seek, "start": round(self.start, 3),
                "end": round(self.end, 3), "text": self.text, "tokens": self.tokens,
                "temperature": self.temperature, "avg_logprob": round(self.avg_logprob, 4),
                "compression_ratio": round(self.compression_ratio, 3),
                "no_speech_prob": None if self.no_speech_prob is None
                else round(self.no_speech_prob, 4), **words}


@dataclass
class LongFormResult:
    segments: list[Segment]
    language: str | None
    windows: int = 0                # windows decoded (fallbacks counted once)
    fallbacks: int = 0              # windows decoded again at a higher temperature
    encoder_ms: float = 0.0
    step_ms: list[float] = field(default_factory=list)
    vad: dict | None = None         # with --vad-filter: what the VAD kept (vad.py: SpeechMap)

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


def word_anomaly(word: WordTiming) -> float:
    """How unlike speech a word is (openai-whisper's score): 1 if its probability is below
    0.15, plus a penalty growing as it gets shorter than 0.133 s or longer than 2 s."""
    duration = word.end - word.start
    score = 1.0 if word.probability < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def looks_hallucinated(segment: Segment) -> bool:
    """A segment whose first 8 words (punctuation left out) score 3 or more, or about 1 each;
    one of punctuation alone counts too (as in openai-whisper), one without words does not."""
    if not segment.words:
        return False
    marks = set(PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS)
    words = [w for w in segment.words
             if w.word.strip() and not set(w.word.strip()) <= marks][:8]
    score = sum(word_anomaly(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def transcribe_long(pipe, audio: np.ndarray, options: TranscribeOptions,
                    progress: Callable[[float], None] | None = None) -> LongFormResult:
    """Segments of a whole recording; ``progress(seconds_done)`` after each window."""
    options.check()
    pipe.check_language(options.language, options.task)
    mel = log_mel_long(audio, pipe.n_mels)
    return transcribe_mel(pipe, mel, mel.shape[1] - N_FRAMES, len(audio) / SAMPLE_RATE,
                          options, progress)


def transcribe_mel(pipe, mel: np.ndarray, content: int, duration: float,
                   options: TranscribeOptions,
                   progress: Callable[[float], None] | None = None) -> LongFormResult:
    """Segments of ``content`` frames of log-mel ``mel`` [n_mels, frames ≥ content]."""
    job = LongFormJob.start(pipe, mel, content, duration, options, progress)
    while not job.done:
        advance(pipe, [job])
    return job.result


@dataclass
class LongFormJob:
    """One recording being transcribed, between two windows: where it has got to (``seek``),
    its segments so far and the text that prompts its next window. ``advance`` moves several
    jobs on by one window each, encoded and decoded together (the server's dynamic batching);
    one job on its own is ``transcribe_mel``."""

    mel: np.ndarray
    content: int
    duration: float
    options: TranscribeOptions
    result: LongFormResult
    rng: np.random.Generator
    max_initial: int
    progress: Callable[[float], None] | None = None
    all_tokens: list[int] = field(default_factory=list)
    prompt_reset: int = 0
    seek: int = 0
    cancelled: bool = False         # set when its request is given up: stops at the next step
    last_speech: float = 0.0        # word timestamps: where the last words ended (seconds)
    clips: list[tuple[int, int]] = field(default_factory=list)   # --clip-timestamps, frames
    clip: int = 0                   # the clip being decoded

    @classmethod
    def start(cls, pipe, mel: np.ndarray, content: int, duration: float,
              options: TranscribeOptions,
              progress: Callable[[float], None] | None = None) -> "LongFormJob":
        options.check()
        if options.vad_filter:
            raise ToolkitError("--vad-filter decodes the speech of the audio (vad.py: "
                               "transcribe_speech, through the pipeline's transcribe); a "
                               "log-mel job cannot apply it")
        tok = pipe.tokenizer
        language = pipe.check_language(options.language, options.task)
        if options.word_timestamps:
            pipe.check_word_timestamps()
        rows = getattr(pipe, "windows_per_batch", None)
        if rows is not None:  # beams and best-of samples are decoder rows: within the profile
            rows(options.beam_size, "--beam-size")
            if max(options.temperatures) > 0:
                rows(options.best_of, "--best-of")
        job = cls(mel, content, duration, options, LongFormResult([], language),
                  np.random.default_rng(options.seed),
                  round(options.max_initial_timestamp / SECONDS_PER_TIMESTAMP), progress)
        if options.initial_prompt:
            job.all_tokens += tok.encode(" " + options.initial_prompt.strip())
        job.clips = clip_frames(options.clip_timestamps, content)
        return job

    def _settle(self) -> None:
        """Move ``seek`` into the current clip, or on to the next clip when it is past it."""
        while self.clip < len(self.clips):
            start, end = self.clips[self.clip]
            self.seek = max(self.seek, start)
            if self.seek < min(end, self.content):
                return
            self.clip += 1

    @property
    def done(self) -> bool:
        if self.clips:
            self._settle()
            return self.cancelled or self.clip >= len(self.clips)
        return self.cancelled or self.seek >= self.content

    def window(self, n_mels: int) -> tuple[np.ndarray, int]:
        """The next 30-s window [n_mels, 3000] (zero-padded after the content, and after the
        clip's end) and its frames."""
        end = self.clips[self.clip][1] if self.clip < len(self.clips) else self.content
        size = min(N_FRAMES, self.content - self.seek, end - self.seek)
        window = np.zeros((n_mels, N_FRAMES), np.float32)
        window[:, :size] = self.mel[:, self.seek:self.seek + size]
        return window, size

    def prompt(self, pipe) -> tuple[list[int], int]:
        """The next window's prompt and where its ``<|startoftranscript|>`` sits."""
        tok = pipe.tokenizer
        prev = self.all_tokens[self.prompt_reset:]
        prefix = [tok.sot_prev] + prev[-(pipe.max_length // 2 - 1):] if prev else []
        language = self.result.language
        prompt = prefix + tok.sot_sequence(language if tok.multilingual else None,
                                           self.options.task,
                                           timestamps=not self.options.without_timestamps)
        return prompt, len(prefix)

    def finish_window(self, pipe, size: int, hyp, temperature: float, ratio: float,
                      cross: Callable[[], dict] | None = None) -> None:
        """Keep the window's complete segments and seek past them; with word timestamps,
        align their words (``cross()``: the window's cross K/V) and seek to the last word's
        end, as openai-whisper does."""
        tok, options, result = pipe.tokenizer, self.options, self.result
        result.windows += 1
        offset = self.seek * HOP_LENGTH / SAMPLE_RATE
        silent = False
        # hyp.probe: the no-speech probability (the prompt probe at <|startoftranscript|>)
        if options.no_speech_threshold is not None and hyp.probe is not None:
            silent = hyp.probe > options.no_speech_threshold
            if (options.logprob_threshold is not None
                    and hyp.avg_logprob > options.logprob_threshold):
                silent = False
        if silent:
            self.seek += size
        else:
            pieces, consumed = _split_segments(hyp.tokens, tok.timestamp_begin, size,
                                               options.without_timestamps)
            new: list[Segment] = []
            for toks, start, end in pieces:
                text = tok.decode([t for t in toks if t < tok.eot])
                start_s = offset + start * SECONDS_PER_TIMESTAMP
                end_s = min(offset + end * SECONDS_PER_TIMESTAMP, self.duration)
                if not text.strip() or end_s <= start_s:
                    continue                  # instantaneous or empty: not a segment, and not
                                              # part of the next window's prompt either
                new.append(Segment(len(result.segments) + len(new), self.seek, start_s, end_s,
                                   text, toks, temperature, hyp.avg_logprob, ratio, hyp.probe))
            seek = self.seek + consumed
            if options.word_timestamps and new:
                if cross is None:
                    raise ToolkitError("word timestamps need the window's cross-attention K/V")
                last_speech = add_word_timestamps(
                    pipe, new, cross(), size, offset, result.language, options.task,
                    self.last_speech)
                toks = hyp.tokens
                single_ending = (len(toks) >= 2 and toks[-2] < tok.timestamp_begin <= toks[-1]
                                 and not options.without_timestamps)
                ends = [w.end for s in new for w in (s.words or [])]
                if not single_ending and ends and ends[-1] > offset:
                    seek = max(self.seek + 1, round(ends[-1] * FRAMES_PER_SECOND))
                if options.hallucination_silence_threshold is not None:
                    new, seek = self._skip_hallucinations(new, seek, size, single_ending)
                    ends = [w.end for s in new for w in (s.words or [])]
                    last_speech = ends[-1] if ends else self.last_speech
                self.last_speech = last_speech
            for segment in new:
                segment.id = len(result.segments)
                result.segments.append(segment)
                self.all_tokens += segment.tokens
            self.seek = seek
            if (not options.condition_on_previous_text
                    or temperature > options.prompt_reset_on_temperature):
                self.prompt_reset = len(self.all_tokens)
        if self.progress:
            self.progress(min(self.duration, self.seek * HOP_LENGTH / SAMPLE_RATE))

    def _skip_hallucinations(self, new: list[Segment], seek: int, size: int,
                             single_ending: bool) -> tuple[list[Segment], int]:
        """``--hallucination-silence-threshold`` (openai-whisper's rule): the window's segments
        (words aligned) up to the first that looks hallucinated with silence on both sides,
        and where the next window starts (past the silence)."""
        threshold = self.options.hallucination_silence_threshold
        offset = self.seek * HOP_LENGTH / SAMPLE_RATE
        window_end = (self.seek + N_FRAMES) * HOP_LENGTH / SAMPLE_RATE
        ends = [w.end for s in new for w in (s.words or [])]
        if not single_ending and ends and ends[-1] > offset:
            # after the last word: decode it again only if it is long enough to be silence
            # worth skipping, else take the window as consumed
            seek = (round(ends[-1] * FRAMES_PER_SECOND) if window_end - ends[-1] > threshold
                    else self.seek + size)
        worded = [s for s in new if s.words]
        if worded and looks_hallucinated(worded[0]) and worded[0].start - offset > threshold:
            # a doubtful first segment after a long lead-in: drop the window, start again at
            # the segment (the silence before it is skipped)
            return [], max(self.seek + 1,
                           self.seek + round((worded[0].start - offset) * FRAMES_PER_SECOND))
        speech_end = self.last_speech
        for i, segment in enumerate(new):
            if not segment.words:
                continue
            if looks_hallucinated(segment):
                later = next((s for s in new[i + 1:] if s.words), None)
                later_start = (later.words[0].start if later is not None
                               else offset + size * HOP_LENGTH / SAMPLE_RATE)
                quiet_before = (segment.start - speech_end > threshold
                                or segment.start < threshold or segment.start - offset < 2.0)
                quiet_after = (later_start - segment.end > threshold
                               or (later is not None and looks_hallucinated(later))
                               or window_end - segment.end < 2.0)
                if quiet_before and quiet_after:
                    if self.duration - segment.end < threshold:
                        return new[:i], self.content       # only silence is left
                    return new[:i], max(self.seek + 1, round(
                        max(offset + 1, segment.start) * FRAMES_PER_SECOND))
            speech_end = segment.end
        return new, max(self.seek + 1, seek)


def advance(pipe, jobs: list[LongFormJob], max_windows: int | None = None) -> None:
    """Decode the next window of every unfinished job in ``jobs``.

    Their windows go through the encoder together (``max_windows`` at a time); windows whose
    prompts and search options are the same (every first window of a short clip, say) are
    decoded as one batch at temperature 0. A window that fails the thresholds falls back on
    its own, with its job's own random generator, so a job's transcript does not depend on
    which other jobs shared its batches."""
    active = [j for j in jobs if not j.done]
    per = max_windows or max(1, len(active))
    for i in range(0, len(active), per):
        _advance_chunk(pipe, active[i:i + per])


def _advance_chunk(pipe, chunk: list[LongFormJob]) -> None:
    windows, sizes = zip(*(job.window(pipe.n_mels) for job in chunk))
    t0 = time.perf_counter()
    per = pipe.encoder_windows(len(chunk)) if hasattr(pipe, "encoder_windows") else len(chunk)
    parts = [pipe.encode(np.stack(windows[i:i + per])) for i in range(0, len(chunk), per)]
    cross = parts[0] if len(parts) == 1 else {
        k: np.concatenate([pipe.decoder.to_host(p[k]) for p in parts]) for k in parts[0]}
    ms = (time.perf_counter() - t0) * 1e3 / len(chunk)
    for job in chunk:
        job.result.encoder_ms += ms
    unknown = [r for r, job in enumerate(chunk) if job.result.language is None]
    if unknown:      # multilingual, no language given: each job's first window tells
        langs = pipe.detect_language(cross if len(unknown) == len(chunk)
                                     else pipe.take(cross, np.array(unknown)))
        for r, lang in zip(unknown, langs):
            chunk[r].result.language = lang
    prompts = [job.prompt(pipe) for job in chunk]
    groups: dict[tuple, list[int]] = {}
    for r, job in enumerate(chunk):
        prompt, sot_index = prompts[r]
        o = job.options
        # alone: sampling from the first temperature (it draws from the job's own generator),
        # and beam search with patience < 1 (a window whose finals are in still ranks its live
        # beams, which go on stepping while its batch-mates decode)
        key = ((tuple(prompt), sot_index, o.beam_size, o.patience, o.length_penalty,
                o.temperatures[0], o.without_timestamps, o.max_new_tokens, job.max_initial)
               if o.temperatures[0] == 0 and o.patience >= 1 else ("alone", r))
        groups.setdefault(key, []).append(r)
    for rows in groups.values():
        try:
            _decode_group(pipe, [chunk[r] for r in rows], [sizes[r] for r in rows],
                          cross if len(rows) == len(chunk) else pipe.take(cross, np.array(rows)),
                          *prompts[rows[0]])
        except Cancelled:       # every job of the group was given up: the others go on
            pass


def _decode_group(pipe, jobs: list[LongFormJob], sizes: list[int], cross, prompt,
                  sot_index) -> None:
    """One window of each job (same prompt and options) searched together, then each one's
    temperature fallback alone. A job given up meanwhile stops at the next decoder step."""
    first = _search(pipe, cross, prompt, sot_index, jobs[0], jobs[0].options.temperatures[0],
                    stop=lambda: all(j.cancelled for j in jobs))
    for k, job in enumerate(jobs):
        if job.cancelled:
            continue
        job.result.step_ms += first.step_ms
        # the window's own cross K/V, copied out of the batch only if it falls back
        own = ((lambda: cross) if len(jobs) == 1
               else (lambda k=k: pipe.take(cross, np.array([k]))))
        try:
            hyp, temperature, ratio = _decode_with_fallback(
                pipe, own, prompt, sot_index, job, first.hypotheses[k])
        except Cancelled:
            continue
        job.finish_window(pipe, sizes[k], hyp, temperature, ratio, own)


def _search(pipe, cross, prompt, sot_index, job: LongFormJob, temperature: float,
            stop: Callable[[], bool] | None = None):
    o = job.options
    limit = min(o.max_new_tokens, pipe.max_length - len(prompt))
    search = SearchOptions(beam_size=o.beam_size if temperature == 0 else 1,
                           best_of=o.best_of if temperature > 0 else 1,
                           temperature=temperature, patience=o.patience,
                           length_penalty=o.length_penalty)
    return pipe.search(cross, prompt, search, limit, sot_index=sot_index, rng=job.rng,
                       timestamps=not o.without_timestamps, max_initial=job.max_initial,
                       suppress_special=True, stop=stop or (lambda: job.cancelled))


def _decode_with_fallback(pipe, own: Callable[[], dict], prompt, sot_index,
                          job: LongFormJob, hyp):
    """(hypothesis, temperature, compression ratio) of the first temperature that passes;
    ``hyp`` is the first temperature's (decoded already, perhaps in a batch); ``own()``
    gives the window's cross K/V for a fallback."""
    tok, options = pipe.tokenizer, job.options
    cross = None
    for k, temperature in enumerate(options.temperatures):
        if k > 0:
            cross = own() if cross is None else cross
            res = _search(pipe, cross, prompt, sot_index, job, temperature)
            job.result.step_ms += res.step_ms
            hyp = res.hypotheses[0]
        ratio = compression_ratio(tok.decode([t for t in hyp.tokens if t < tok.eot]))
        failed = ((options.compression_ratio_threshold is not None
                   and ratio > options.compression_ratio_threshold)
                  or (options.logprob_threshold is not None
                      and hyp.avg_logprob < options.logprob_threshold))
        if (options.no_speech_threshold is not None and hyp.probe is not None
                and hyp.probe > options.no_speech_threshold
                and options.logprob_threshold is not None
                and hyp.avg_logprob < options.logprob_threshold):
            failed = False                     # silence: not worth another temperature
        if not failed or k == len(options.temperatures) - 1:
            return hyp, temperature, ratio
        job.result.fallbacks += 1
    raise AssertionError("unreachable")


def _split_segments(tokens: list[int], timestamp_begin: int, size: int,
                    without_timestamps: bool) -> tuple[list[tuple[list[int], int, int]], int]:
    """Complete segments of one window as (tokens, start step, end step) and how many mel
    frames of the window they consumed."""
    if without_timestamps or not tokens:
        return ([(tokens, 0, size // FRAMES_PER_TIMESTAMP)] if tokens else []), size
    is_ts = [t >= timestamp_begin for t in tokens]
    single_ending = len(is_ts) >= 2 and is_ts[-2:] == [False, True]
    pairs = [i + 1 for i in range(len(is_ts) - 1) if is_ts[i] and is_ts[i + 1]]
    if pairs:
        cuts = pairs + ([len(tokens)] if single_ending else [])
        pieces, last = [], 0
        for cut in cuts:
            piece = tokens[last:cut]
            pieces.append((piece, piece[0] - timestamp_begin, piece[-1] - timestamp_begin))
            last = cut
        if single_ending:
            return pieces, size            # the window was fully consumed
        consumed = (tokens[last - 1] - timestamp_begin) * FRAMES_PER_TIMESTAMP
        if consumed > 0:
            return pieces, consumed
        # the only complete pair ends at 0 s: seeking there would not move — take the window
        # as one segment (below) rather than drop its text

    # no complete pair: one segment for the whole window (ended at its last timestamp, if any)
    stamps = [t - timestamp_begin for t in tokens if t >= timestamp_begin]
    end = stamps[-1] if stamps and stamps[-1] > 0 else size // FRAMES_PER_TIMESTAMP
    return [(tokens, 0, end)], size


