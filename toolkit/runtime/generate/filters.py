"""Logit rules as small pieces, applied in order to each step's logits (in place), and the
log-probability arithmetic the searches share.

Greedy decoding, sampling, beam search and teacher-forced scoring build their step from the
same pieces, the way openai-whisper and Hugging Face ``generate`` compose their logit
processors. Each piece sees the step's logits [rows, vocab], the index of the step (0 = the
first generated token) and the tokens each row has generated so far [rows, step]. A family's
own rules (Whisper's timestamp grammar) are more pieces of the same kind, kept with the family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

NEG_INF = -np.inf


class LogitFilter:
    """Changes ``logits`` [rows, vocab] in place before the next token is chosen."""

    def apply(self, logits: np.ndarray, step: int, tokens: np.ndarray) -> None:
        raise NotImplementedError


@dataclass
class SuppressTokens(LogitFilter):
    """Never emit these tokens (Whisper's ``suppress_tokens``, Marian's ``<pad>``)."""

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
    """No end-of-text (and, with ``first_special``, no token from that id up: Whisper keeps its
    special tokens after end-of-text): decoding runs its full length (benchmarks on random
    weights, teacher forcing)."""

    eot: int
    first_special: int | None = None

    def apply(self, logits: np.ndarray, step: int, tokens: np.ndarray) -> None:
        logits[:, self.eot] = NEG_INF
        if self.first_special is not None:
            logits[:, self.first_special:] = NEG_INF


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


def apply_filters(filters: Sequence[LogitFilter], logits: np.ndarray, step: int,
                  tokens: np.ndarray | None = None) -> np.ndarray:
    """A float32 copy of ``logits`` with every rule applied (``tokens``: [rows, step])."""
    out = np.array(logits, dtype=np.float32, copy=True)
    if tokens is None:
        tokens = np.zeros((out.shape[0], step), np.int64)
    for f in filters:
        f.apply(out, step, tokens)
    return out
