"""How many threads every backend gets (the same for all, so comparisons are fair)."""

from __future__ import annotations

import os

from .errors import ToolkitError


def default_threads() -> int:
    """Threads per session: all cores of this process, or ``TOOLKIT_THREADS``."""
    env = os.environ.get("TOOLKIT_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ToolkitError(f"TOOLKIT_THREADS must be a whole number of threads, not {env!r}; "
                               "unset it to use every core") from None
        if n < 1:
            raise ToolkitError(f"TOOLKIT_THREADS must be at least 1 (got {n})")
        return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
