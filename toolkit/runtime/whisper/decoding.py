"""Whisper's logit rules: its checkpoint's suppression lists and its timestamp grammar, as
pieces of the shared generation layer (``runtime/generate/filters.py``), applied in
openai-whisper's order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..generate.filters import (
    NEG_INF,
    LogitFilter,
    SuppressAtBegin,
    SuppressTokens,
    TextOnly,
    logsumexp,
)

SECONDS_PER_TIMESTAMP = 0.02   # one timestamp token = 20 ms (two encoder frames)


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
        filters.append(TextOnly(eot, first_special=eot))
    if timestamps is not None:
        filters.append(timestamps)
    return filters
