"""Whisper's logit rules as small pieces, applied in order to each step's logits (in place).

Greedy decoding, sampling, beam search and teacher-forced scoring all build their step from the
same pieces, the way openai/whisper composes its ``LogitFilter``s. Each piece sees the step's
logits [rows, vocab], the index of the step (0 = first sampled token) and the tokens each row
has generated so far [rows, step].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

NEG_INF = -np.inf
SECONDS_PER_TIMESTAMP = 0.02   # one timestamp token = 20 ms (two encoder frames)


class LogitFilter:
    """Changes ``logits`` [rows, vocab] in place before the next token is chosen."""

    def apply(self, logits: np.ndarray, step: int, tokens: np.ndarray) -> None:
        raise NotImplementedError


@dataclass
class SuppressTokens(LogitFilter):
    """Never emit these tokens (the checkpoint's ``suppress_tokens``)."""

    tokens: np.ndarray

    def apply(self, logits: np.ndarray, step: int, tokens: np.ndarray) -> None:
        if self.tokens.size:
            logits[:, self.tokens[self.tokens < logits.shape[1]]] = NEG_INF


@dataclass
class SuppressAtBegin(LogitFilter):
    """Not as the first generated token (``begin_suppress_tokens``: blank, end-of-text)."""

    tokens: np.ndarray

    def apply(self, logits: np.ndarray, step: int, tokens: np.ndarray) -> None:
        if step == 0 and self.tokens.size:
            logits[:, self.tokens] = NEG_INF


@dataclass
class TextOnly(LogitFilter):
    """No end-of-text and no special token: decoding runs its full length (benchmarks on random
    weights, teacher forcing)."""

    eot: int

    def apply(self, logits: np.ndarray, step: int, tokens: np.ndarray) -> None:
        logits[:, self.eot:] = NEG_INF


@dataclass
class TimestampRules(LogitFilter):
    """Whisper's timestamp grammar (openai-whisper's ``ApplyTimestampRules``).

    - ``<|notimestamps|>`` is never emitted; the first token is a timestamp, at most
      ``max_initial`` steps of 20 ms from the window's start;
    - timestamps come in pairs (end of a segment, start of the next): after a lone timestamp
      only a timestamp or end-of-text may follow, after a pair only text;
    - timestamps never decrease (a pair may repeat the same time; a new start may not go back);
    - when the total probability of all timestamps beats the most likely text token, a
      timestamp is forced.
    """

    eot: int
    no_timestamps: int
    timestamp_begin: int
    max_initial: int | None = 50          # 1.0 s

    def apply(self, logits: np.ndarray, step: int, tokens: np.ndarray) -> None:
        tb = self.timestamp_begin
        logits[:, self.no_timestamps] = NEG_INF
        for k in range(logits.shape[0]):
            seq = tokens[k]
            last_ts = len(seq) >= 1 and seq[-1] >= tb
            penult_ts = len(seq) < 2 or seq[-2] >= tb
            if last_ts:
                if penult_ts:            # a pair just closed (or the window's first timestamp)
                    logits[k, tb:] = NEG_INF
                else:                    # a lone timestamp: the next is one too, or the end
                    logits[k, :self.eot] = NEG_INF
            stamps = seq[seq >= tb]
            if stamps.size:
                # never decrease; right after a segment's end the next start may equal it
                last = stamps[-1] if (last_ts and not penult_ts) else stamps[-1] + 1
                logits[k, tb:last] = NEG_INF
        if step == 0:
            logits[:, :tb] = NEG_INF
            if self.max_initial is not None:
                logits[:, tb + self.max_initial + 1:] = NEG_INF
        # the timestamps' total probability against the best text token: both sides share the
        # softmax normaliser, so the raw scores compare the same (no full-vocabulary softmax)
        ts_total = logsumexp(logits[:, tb:])
        best_text = logits[:, :tb].max(axis=-1)
        logits[ts_total > best_text, :tb] = NEG_INF


def log_softmax(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    shifted = x - top
    with np.errstate(divide="ignore"):
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def log_softmax_at(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``log_softmax(x)`` at ``index`` (per row) only, with the same arithmetic as
    ``log_softmax`` — (x − max) − log Σ exp(x − max) — so the values are bit-identical."""
    top = np.max(x, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        norm = np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True))
    return (np.take_along_axis(x, index, axis=-1) - top) - norm


def logsumexp(x: np.ndarray) -> np.ndarray:
    top = np.max(x, axis=-1)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return safe + np.log(np.sum(np.exp(x - safe[:, None]), axis=-1))


def logit_filters(generation: dict, eot: int, text_only: bool = False,
                  timestamps: TimestampRules | None = None,
                  extra_suppress: Sequence[int] = ()) -> list[LogitFilter]:
    """The rules of a checkpoint's generation settings, in Hugging Face ``generate``'s order;
    with ``timestamps``, the timestamp grammar last (as openai-whisper applies it)."""
    suppress = set(generation["suppress_tokens"]) | set(extra_suppress)
    filters: list[LogitFilter] = [
        SuppressTokens(np.array(sorted(suppress), dtype=np.int64)),
        SuppressAtBegin(np.array(sorted(set(generation["begin_suppress_tokens"])),
                                 dtype=np.int64)),
    ]
    if text_only:
        filters.append(TextOnly(eot))
    if timestamps is not None:
        filters.append(timestamps)
    return filters


def apply_filters(filters: Sequence[LogitFilter], logits: np.ndarray, step: int,
                  tokens: np.ndarray | None = None) -> np.ndarray:
    """A float32 copy of ``logits`` with every rule applied (``tokens``: [rows, step])."""
    out = np.array(logits, dtype=np.float32, copy=True)
    if tokens is None:
        tokens = np.zeros((out.shape[0], step), np.int64)
    for f in filters:
        f.apply(out, step, tokens)
    return out
