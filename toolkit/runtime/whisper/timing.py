"""Word-level timestamps from the cross-attention of the alignment heads (openai-whisper's
``timing.py`` and faster-whisper's ``word_timestamps=True``, written here in NumPy alone).

For one window, after its segments are final:

1. the align graph runs once, teacher-forced, over ``sot sequence, <|notimestamps|>, the text
   tokens of the window's segments, <|endoftext|>`` with the window's cross K/V, giving the
   alignment heads' scaled QKᵀ [A, T, 1500] and each next token's log-probability;
2. the scores are cut to the window's content frames (mel frames // 2), softmaxed over those
   frames, standardised per frame over the tokens, median-filtered along time (width 7) and
   averaged over the heads;
3. dynamic time warping over the negated [text tokens + 1, frames] matrix gives a monotonic
   path; a token starts where the path first reaches its row;
4. tokens are grouped into words (split on spaces; a punctuation token is a word of its own,
   then merged into its neighbour as openai-whisper does), each word's probability being the
   mean of its tokens' probabilities;
5. clean-ups: words longer than twice the median word duration are clamped at sentence ends,
   the first word after a long pause is shortened, and each segment's start and end are
   snapped to its words (or the words to the segment when the words run too far past it).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np

TOKENS_PER_SECOND = 50           # encoder positions per second (one per two mel frames)
MEDIAN_FILTER_WIDTH = 7
PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END_MARKS = ".。!！?？"
# languages written without spaces: words are the tokens' unicode pieces (openai-whisper's list)
UNSPACED_LANGUAGES = ("zh", "ja", "th", "lo", "my", "yue")


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float
    end: float
    probability: float

    def as_dict(self) -> dict:
        return {"word": self.word, "start": round(self.start, 3), "end": round(self.end, 3),
                "probability": round(float(self.probability), 4)}


# -- the attention matrix ---------------------------------------------------------------------

def median_filter(x: np.ndarray, width: int) -> np.ndarray:
    """Median over a sliding window of odd ``width`` along the last axis, edges reflected
    (what openai-whisper's filter does; scipy is not a runtime dependency)."""
    pad = width // 2
    if x.shape[-1] <= pad:           # too short to reflect: nothing to filter
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.median(windows, axis=-1)


def alignment_matrix(qk: np.ndarray, frames: int, width: int = MEDIAN_FILTER_WIDTH) -> np.ndarray:
    """[A, T, ≥ frames] raw scores → [T, frames] matrix: softmax over the content frames,
    standardised per frame over the tokens, median-filtered along time, mean of the heads."""
    w = qk[:, :, :frames].astype(np.float64)
    w = np.exp(w - w.max(axis=-1, keepdims=True))
    w /= w.sum(axis=-1, keepdims=True)
    mean = w.mean(axis=-2, keepdims=True)
    std = w.std(axis=-2, keepdims=True)
    w = (w - mean) / np.where(std > 0, std, 1.0)
    return median_filter(w, width).mean(axis=0)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic path through ``cost`` [N, M] (steps: diagonal, down, right) minimising the
    summed cost: (row indices, column indices) from (0, 0) to (N-1, M-1). Ties go as in
    openai-whisper (the diagonal only when strictly cheapest, then down, else right). The
    recurrence runs along anti-diagonals, each one vectorised."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), np.int8)
    for d in range(2, n + m + 1):             # cells (i, j), 1-based, with i + j = d
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        t = np.where((c0 < c1) & (c0 < c2), 0, np.where((c1 < c0) & (c1 < c2), 1, 2))
        acc[i, j] = cost[i - 1, j - 1] + np.choose(t, [c0, c1, c2])
        trace[i, j] = t
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = n, m
    rows, cols = [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1]), np.array(cols[::-1])


# -- tokens → words ---------------------------------------------------------------------------

def split_unicode(tokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Pieces that decode to whole characters (a character may span several byte tokens)."""
    full = tokenizer.decode(tokens)
    words, groups, current, offset = [], [], [], 0
    for tok in tokens:
        current.append(tok)
        text = tokenizer.decode(current)
        bad = text.find("\ufffd")
        if bad < 0 or (offset + bad < len(full) and full[offset + bad] == "\ufffd"):
            words.append(text)
            groups.append(current)
            current = []
            offset += len(text)
    if current:                       # a trailing incomplete character: its own piece
        words.append(tokenizer.decode(current))
        groups.append(current)
    return words, groups


def split_words(tokenizer, tokens: list[int],
                language: str | None = None) -> tuple[list[str], list[list[int]]]:
    """Text tokens → words (each with its tokens): a new word at a leading space or at a
    punctuation piece; languages without spaces split into characters."""
    pieces, groups = split_unicode(tokenizer, tokens)
    if language in UNSPACED_LANGUAGES:
        return pieces, groups
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for piece, toks in zip(pieces, groups):
        if piece.startswith(" ") or piece.strip() in string.punctuation or not words:
            words.append(piece)
            word_tokens.append(list(toks))
        else:
            words[-1] += piece
            word_tokens[-1] += toks
    return words, word_tokens


def merge_punctuations(words: list[WordTiming], prepended: str = PREPEND_PUNCTUATIONS,
                       appended: str = APPEND_PUNCTUATIONS) -> None:
    """Opening marks join the word after them, closing marks the word before (in place; the
    emptied entries keep their place with no text)."""
    j = len(words) - 1
    for i in range(len(words) - 2, -1, -1):
        prev, nxt = words[i], words[j]
        if prev.word.startswith(" ") and prev.word.strip() in prepended:
            nxt.word = prev.word + nxt.word
            nxt.tokens = prev.tokens + nxt.tokens
            prev.word, prev.tokens = "", []
        else:
            j = i
    i = 0
    for j in range(1, len(words)):
        prev, nxt = words[i], words[j]
        if not prev.word.endswith(" ") and nxt.word in appended:
            prev.word += nxt.word
            prev.tokens = prev.tokens + nxt.tokens
            nxt.word, nxt.tokens = "", []
        else:
            i = j


# -- one window -------------------------------------------------------------------------------

def find_alignment(tokenizer, text_tokens: list[int], prefix_len: int, qk: np.ndarray,
                   logprobs: np.ndarray, frames: int, language: str | None = None,
                   width: int = MEDIAN_FILTER_WIDTH) -> list[WordTiming]:
    """Words of ``text_tokens`` with times in seconds from the window's start.

    ``qk`` [A, T, ≥ frames//2] and ``logprobs`` [T] are the align graph's outputs for the
    sequence ``prefix`` (``prefix_len`` tokens: the sot sequence and <|notimestamps|>), the
    text tokens and <|endoftext|>; ``frames``: the window's content in mel frames."""
    if not text_tokens:
        return []
    n = len(text_tokens)
    matrix = alignment_matrix(qk, max(1, frames // 2), width)
    # row p predicts token p + 1: the rows from the last prefix token to the last text token
    matrix = matrix[prefix_len - 1: prefix_len + n]
    probs = np.exp(logprobs[prefix_len - 1: prefix_len - 1 + n].astype(np.float64))
    rows, cols = dtw(-matrix)
    words, word_tokens = split_words(tokenizer, text_tokens, language)
    if not words:
        return []
    jumps = np.diff(rows, prepend=-1).astype(bool)
    jump_times = cols[jumps] / TOKENS_PER_SECOND       # one per row: n + 1 (the last: eot)
    bounds = np.concatenate([[0], np.cumsum([len(t) for t in word_tokens])])
    return [WordTiming(w, list(t), float(jump_times[a]), float(jump_times[b]),
                       float(np.mean(probs[a:b])))
            for w, t, a, b in zip(words, word_tokens, bounds[:-1], bounds[1:])]


def median_word_duration(words: list[WordTiming]) -> float:
    durations = np.array([w.end - w.start for w in words])
    durations = durations[durations.nonzero()]
    return min(0.7, float(np.median(durations))) if len(durations) else 0.0


def clamp_long_words(words: list[WordTiming], max_duration: float) -> None:
    """A word longer than ``max_duration`` next to a sentence end is cut to it (the attention
    smears over pauses there)."""
    for i in range(1, len(words)):
        w = words[i]
        if w.end - w.start > max_duration:
            if w.word in SENTENCE_END_MARKS:
                w.end = w.start + max_duration
            elif words[i - 1].word in SENTENCE_END_MARKS:
                w.start = w.end - max_duration


def attach_words(segments: list, text_tokens: list[list[int]], alignment: list[WordTiming],
                 offset: float, median: float, last_speech: float) -> float:
    """Give each segment (``start``, ``end`` in seconds, assignable; ``words`` set here) its
    words, times shifted by ``offset``, and snap the segment's times to them. Returns the
    end of the last speech, for the next window."""
    max_duration = median * 2
    k = 0
    for segment, tokens in zip(segments, text_tokens):
        words: list[WordTiming] = []
        used = 0
        while k < len(alignment) and used < len(tokens):
            a = alignment[k]
            if a.word:
                words.append(WordTiming(a.word, a.tokens, round(offset + a.start, 2),
                                        round(offset + a.end, 2), a.probability))
            used += len(a.tokens)
            k += 1
        if words:
            first = words[0]
            # the first (and second) word after a long pause is not longer than the limit
            if first.end - last_speech > median * 4 and (
                    first.end - first.start > max_duration
                    or (len(words) > 1 and words[1].end - first.start > max_duration * 2)):
                if len(words) > 1 and words[1].end - words[1].start > max_duration:
                    boundary = max(words[1].end / 2, words[1].end - max_duration)
                    first.end = words[1].start = boundary
                first.start = max(0.0, first.end - max_duration)
            # a first word that starts well before the segment: the segment's start wins
            if segment.start < first.end and segment.start - 0.5 > first.start:
                first.start = max(0.0, min(first.end - median, segment.start))
            else:
                segment.start = first.start
            last = words[-1]
            if segment.end > last.start and segment.end + 0.5 < last.end:
                last.end = max(last.start + median, segment.end)
            else:
                segment.end = last.end
            last_speech = segment.end
        segment.words = words
    return last_speech


def add_word_timestamps(pipe, segments: list, cross: dict, frames: int, offset: float,
                        language: str | None, task: str, last_speech: float) -> float:
    """Words for one window's final ``segments`` (``tokens`` as decoded, times in seconds),
    through the pipeline's align graph with the window's ``cross`` K/V. Returns the end of
    the last speech (openai-whisper's ``last_speech_timestamp``)."""
    if not segments:
        return last_speech
    tok = pipe.tokenizer
    per_segment = [[t for t in s.tokens if t < tok.eot] for s in segments]
    text = [t for toks in per_segment for t in toks]
    prefix = tok.sot_sequence(language if tok.multilingual else None, task)
    qk, logprobs = pipe.align_scores(cross, [*prefix, *text, tok.eot])
    alignment = find_alignment(tok, text, len(prefix), qk, logprobs, frames, language)
    median = median_word_duration(alignment)
    if alignment and median > 0:
        clamp_long_words(alignment, median * 2)
    merge_punctuations(alignment)
    return attach_words(segments, per_segment, alignment, offset, median, last_speech)
