"""Monotonic alignment search (training only), vectorised over the batch and the text axis.

``log_p[b, i, j]``: log-likelihood of mel frame j under text token i. Finds the monotonic,
surjective alignment (every token gets >= 1 frame, frames in order) maximising the sum — the
Viterbi pass of Glow-TTS / Grad-TTS, as a NumPy loop over frames only.
"""

from __future__ import annotations

import numpy as np

NEG = -1e9


def maximum_path(log_p: np.ndarray, x_lengths, y_lengths) -> np.ndarray:
    """Return a 0/1 array like ``log_p`` (B, Tx, Ty) with the best monotonic path."""
    log_p = np.asarray(log_p, dtype=np.float64)
    b, tx, ty = log_p.shape
    x_lengths = np.asarray(x_lengths, dtype=np.int64)
    y_lengths = np.asarray(y_lengths, dtype=np.int64)
    v = np.full((b, tx, ty), NEG)
    v[:, 0, 0] = log_p[:, 0, 0]
    for j in range(1, ty):
        prev = v[:, :, j - 1]
        shifted = np.concatenate([np.full((b, 1), NEG), prev[:, :-1]], axis=1)
        v[:, :, j] = np.maximum(prev, shifted) + log_p[:, :, j]
    path = np.zeros((b, tx, ty), dtype=np.float32)
    idx = x_lengths - 1
    rows = np.arange(b)
    for j in range(ty - 1, -1, -1):
        active = j < y_lengths
        path[rows[active], idx[active], j] = 1.0
        if j == 0:
            break
        prev_idx = np.maximum(idx - 1, 0)
        move = active & (idx > 0) & ((idx == j) | (v[rows, prev_idx, j - 1] > v[rows, idx, j - 1]))
        idx = idx - move.astype(np.int64)
    return path
