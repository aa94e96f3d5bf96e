"""Timing: warm-up, repeated runs, percentiles. Wall-clock (perf_counter) in milliseconds."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times; return samples in ms."""
    for _ in range(max(0, warmup)):
        fn()
    samples = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def percentiles(samples_ms, prefix: str = "latency_ms") -> dict:
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {f"{prefix}_p50": None, f"{prefix}_p90": None, f"{prefix}_p99": None,
                f"{prefix}_mean": None}
    return {f"{prefix}_p50": float(np.percentile(a, 50)), f"{prefix}_p90": float(np.percentile(a, 90)),
            f"{prefix}_p99": float(np.percentile(a, 99)), f"{prefix}_mean": float(a.mean())}
