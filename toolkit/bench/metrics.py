"""Quality metrics: CER (edit distance), token exact-match, tensor parity."""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import numpy as np


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1).

    Myers/Hyyrö's bit-vector algorithm with Python integers as bit vectors: one pass over ``a``
    with O(1) big-integer operations per symbol, so the CER of a 4 000-character long-form
    transcript takes milliseconds, not the seconds of the cell-by-cell table.
    """
    if len(b) == 0:
        return len(a)
    m = len(b)
    peq: dict = {}
    for i, c in enumerate(b):
        peq[c] = peq.get(c, 0) | (1 << i)
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for c in a:
        eq = peq.get(c, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & mask) ^ pv) | eq
        ph = (mv | ~(xh | pv)) & mask
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = (mh | ~(xv | ph)) & mask
        mv = ph & xv
    return score


def word_errors(hyp: str, ref: str, normalize: bool = True) -> dict:
    """Word-level alignment of ``hyp`` against ``ref``: substitutions, words dropped (in the
    reference, missing from the hypothesis), words inserted, and the reference's word count."""
    if normalize:
        hyp, ref = normalize_text(hyp), normalize_text(ref)
    h, r = hyp.split(), ref.split()
    n, m = len(r), len(h)
    d = np.zeros((n + 1, m + 1), np.int32)
    d[0, :] = np.arange(m + 1)
    d[:, 0] = np.arange(n + 1)
    hv = np.array(h, dtype=object)
    for i in range(1, n + 1):
        sub = d[i - 1, :-1] + (hv != r[i - 1])
        row = np.minimum(sub, d[i - 1, 1:] + 1)
        row = np.concatenate([[i], row])
        # insertions chain along the row: a running minimum of (row[j] - j) + j
        row = np.minimum.accumulate(row - np.arange(m + 1)) + np.arange(m + 1)
        d[i] = row
    subs = dels = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (r[i - 1] != h[j - 1]):
            subs += int(r[i - 1] != h[j - 1])
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            dels += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return {"substitutions": subs, "deleted": dels, "inserted": ins, "ref_words": n}


def corpus_word_errors(hyps: Sequence[str], refs: Sequence[str]) -> dict:
    """``word_errors`` summed over a corpus, plus ``wer`` in percentage points (None without
    reference words)."""
    total = {"substitutions": 0, "deleted": 0, "inserted": 0, "ref_words": 0}
    for h, r in zip(hyps, refs):
        for k, v in word_errors(h, r).items():
            total[k] += v
    edits = total["substitutions"] + total["deleted"] + total["inserted"]
    total["wer"] = 100.0 * edits / total["ref_words"] if total["ref_words"] else None
    return total


def corpus_wer(hyps: Sequence[str], refs: Sequence[str]) -> float | None:
    """Corpus WER in percentage points (None without reference words)."""
    return corpus_word_errors(hyps, refs)["wer"]


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
