"""Whisper's logit rules as small pieces, applied in order to each step's logits (in place).

The greedy loop, teacher-forced scoring (and the beam search and timestamp rules to come) all
build their step from the same pieces, the way openai/whisper composes its ``LogitFilter``s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

NEG_INF = -np.inf


class LogitFilter:
    """Changes ``logits`` [batch, vocab] in place before the next token is chosen."""

    def apply(self, logits: np.ndarray, step: int) -> None:
        raise NotImplementedError


@dataclass
class SuppressTokens(LogitFilter):
    """Never emit these tokens (the checkpoint's ``suppress_tokens``)."""

    tokens: np.ndarray

    def apply(self, logits: np.ndarray, step: int) -> None:
        if self.tokens.size:
            logits[:, self.tokens[self.tokens < logits.shape[1]]] = NEG_INF


@dataclass
class SuppressAtBegin(LogitFilter):
    """Not as the first generated token (``begin_suppress_tokens``: blank, end-of-text)."""

    tokens: np.ndarray

    def apply(self, logits: np.ndarray, step: int) -> None:
        if step == 0 and self.tokens.size:
            logits[:, self.tokens] = NEG_INF


@dataclass
class TextOnly(LogitFilter):
    """No end-of-text and no special token: decoding runs its full length (benchmarks on random
    weights, teacher forcing)."""

    eot: int

    def apply(self, logits: np.ndarray, step: int) -> None:
        logits[:, self.eot:] = NEG_INF


def logit_filters(generation: dict, eot: int, text_only: bool = False) -> list[LogitFilter]:
    """The rules of a checkpoint's generation settings, in Hugging Face ``generate``'s order."""
    filters: list[LogitFilter] = [
        SuppressTokens(np.array(sorted(set(generation["suppress_tokens"])), dtype=np.int64)),
        SuppressAtBegin(np.array(sorted(set(generation["begin_suppress_tokens"])),
                                 dtype=np.int64)),
    ]
    if text_only:
        filters.append(TextOnly(eot))
    return filters


def apply_filters(filters: Sequence[LogitFilter], logits: np.ndarray, step: int) -> np.ndarray:
    """A float32 copy of ``logits`` with every rule applied."""
    out = np.array(logits, dtype=np.float32, copy=True)
    for f in filters:
        f.apply(out, step)
    return out
