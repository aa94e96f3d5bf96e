"""Tensor parity metrics shared by export validation and the benchmarks."""

from __future__ import annotations

import numpy as np


def rel_l2(a: np.ndarray, ref: np.ndarray) -> float:
    """‖a − ref‖ / ‖ref‖ (‖a‖ when ref is all zeros)."""
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    denom = np.linalg.norm(ref)
    return float(np.linalg.norm(a - ref) / denom) if denom > 0 else float(np.linalg.norm(a))


def cosine(a: np.ndarray, ref: np.ndarray) -> float:
    """Cosine similarity of the flattened tensors (1 when both are zero)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    na, nr = np.linalg.norm(a), np.linalg.norm(ref)
    if na == 0 or nr == 0:
        return 1.0 if na == nr else 0.0
    return float(a @ ref / (na * nr))


def max_abs(a: np.ndarray, ref: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.max(np.abs(a - np.asarray(ref, dtype=np.float64)))) if a.size else 0.0
