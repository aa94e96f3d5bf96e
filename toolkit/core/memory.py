"""Resident memory: what a step peaked at, and whether a job fits before it starts.

A step's peak is sampled by a thread (``/proc/self/statm`` every 20 ms), so each step of an
export reports its own peak — the process's high-water mark (VmHWM) only ever grows, and
resetting it would make ``/usr/bin/time`` under-report.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .errors import ToolkitError

GB = 1e9
# A cap the user may set (GB) on what the toolkit plans to use, below what the machine has free
# (a shared machine, a container whose limit /proc does not show).
MEMORY_CAP_ENV = "TOOLKIT_MAX_MEMORY_GB"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def high_water_bytes() -> int:
    """This process's peak resident set so far (VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss_bytes()


class PeakSampler:
    """``with PeakSampler() as s: ...`` then ``s.peak`` (bytes): the largest resident set seen
    while the block ran."""

    def __init__(self, interval: float = 0.02, on_tick=None, tick_every: float = 1.0):
        self.interval, self.peak = interval, 0
        self._on_tick, self._every = on_tick, max(1, round(tick_every / interval))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            now = rss_bytes()
            self.peak = max(self.peak, now)
            n += 1
            if self._on_tick is not None and n % self._every == 0:
                self._on_tick(now)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakSampler":
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def _cgroup_free() -> int | None:
    """Room left under this process's cgroup (v2) memory limit, if it has one."""
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (base / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((base / "memory.current").read_text())
    except (OSError, IndexError, ValueError):
        return None


def available_bytes() -> int | None:
    """Memory a new job may use: MemAvailable, the cgroup's remaining room, and the user's cap
    (``TOOLKIT_MAX_MEMORY_GB``), whichever is least; None if nothing is known."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    if (cg := _cgroup_free()) is not None:
        found.append(cg)
    cap = os.environ.get(MEMORY_CAP_ENV)
    if cap:
        try:
            found.append(int(float(cap) * GB))
        except ValueError:
            raise ToolkitError(f"{MEMORY_CAP_ENV}={cap!r} is not a number of GB; set it to e.g. "
                               "16, or unset it") from None
    return min(found) if found else None


def check_fits(need: int, what: str, fix: str) -> None:
    """Refuse, in one line, a job estimated to need more memory than is available — before it
    starts, rather than after the machine has begun to swap or the kernel has killed it."""
    have = available_bytes()
    if have is not None and need > have:
        cap = os.environ.get(MEMORY_CAP_ENV)
        where = f"{MEMORY_CAP_ENV}={cap}" if cap and int(float(cap) * GB) == have else \
            "available on this machine"
        raise ToolkitError(f"{what} needs about {need / GB:.1f} GB of memory, but only "
                           f"{have / GB:.1f} GB is {where}; {fix}")
