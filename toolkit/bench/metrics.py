"""Quality metrics: CER (edit distance), token exact-match, tensor parity."""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import numpy as np


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = np.arange(len(b) + 1, dtype=np.int64)
    for i, ca in enumerate(a, 1):
        cur = np.empty_like(prev)
        cur[0] = i
        sub = prev[:-1] + np.array([ca != cb for cb in b], dtype=np.int64)
        # vectorised except for the insertion chain, resolved by a running minimum below
        cur[1:] = np.minimum(sub, prev[1:] + 1)
        for j in range(1, len(b) + 1):
            if cur[j - 1] + 1 < cur[j]:
                cur[j] = cur[j - 1] + 1
        prev = cur
    return int(prev[-1])


def normalize_text(text: str) -> str:
    """Case-fold, strip punctuation and collapse whitespace (scores words, not formatting)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(ch if not unicodedata.category(ch).startswith("P") else " " for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def corpus_cer(hyps: Sequence[str], refs: Sequence[str], normalize: bool = True) -> float | None:
    """Corpus CER: total edits over total reference characters, in percent points (None when
    the references hold no characters: nothing to measure against)."""
    edits = chars = 0
    for h, r in zip(hyps, refs):
        if normalize:
            h, r = normalize_text(h), normalize_text(r)
        edits += edit_distance(list(h), list(r))
        chars += len(r)
    return 100.0 * edits / chars if chars else None  # no reference text: n/a, not 0 %


def token_exact_match(hyps: Sequence[Sequence[int]],
                      refs: Sequence[Sequence[int]]) -> float | None:
    """Share of sequences whose tokens equal the reference exactly (0..1); None when the
    reference has no tokens at all (an empty transcript matches anything: n/a, not 1.0)."""
    if not any(len(r) for r in refs):
        return None
    return sum(list(h) == list(r) for h, r in zip(hyps, refs)) / len(refs)
