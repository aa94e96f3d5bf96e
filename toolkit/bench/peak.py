"""The machine's measured fp32 peak: a large matrix product, timed in the same run as the
benchmark, so a model's FLOP rate can be quoted as a share of what this hardware does."""

from __future__ import annotations

import time

import torch

from ..core.threads import default_threads


def measured_peak_gflops(n: int = 2048, repeats: int = 5, threads: int | None = None,
                         device: str = "cpu") -> float:
    """Best-of-``repeats`` GFLOP/s of an n×n×n fp32 matmul (2n³ FLOP)."""
    torch.set_num_threads(threads or default_threads())
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9
