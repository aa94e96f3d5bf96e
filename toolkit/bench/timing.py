"""Percentiles of wall-clock samples (milliseconds)."""

from __future__ import annotations

import numpy as np


def percentiles(samples_ms, prefix: str = "latency_ms") -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {f"{prefix}_p50": None, f"{prefix}_p90": None, f"{prefix}_p99": None,
                f"{prefix}_mean": None}
    return {f"{prefix}_p50": float(np.percentile(a, 50)),
            f"{prefix}_p90": float(np.percentile(a, 90)),
            f"{prefix}_p99": float(np.percentile(a, 99)), f"{prefix}_mean": float(a.mean())}
