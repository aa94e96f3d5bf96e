"""How many threads every backend gets (the same for all, so comparisons are fair)."""

from __future__ import annotations

import os


def default_threads() -> int:
    """Threads per session: all cores of this process, or ``TOOLKIT_THREADS``."""
    env = os.environ.get("TOOLKIT_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
