"""Resident memory: what a step peaked at, and whether a job fits before it starts.

A step's peak is sampled by a thread (``/proc/self/statm`` every 20 ms), so each step of an
export reports its own peak — the process's high-water mark (VmHWM) only ever grows, and
resetting it would make ``/usr/bin/time`` under-report.
"""

from __future__ import annotations

import ctypes
import gc
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


def _inactive_file(stat: Path) -> int:
    """Page cache the kernel can drop (counted as used by the cgroup's usage figure)."""
    for line in stat.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key in ("inactive_file", "total_inactive_file"):
            return int(value)
    return 0


def _cgroup_free() -> int | None:
    """Room left under this process's cgroup memory limit (v2, else v1), if it has one; page
    cache that can be dropped counts as room."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        try:
            if controllers == "":  # v2
                base = Path("/sys/fs/cgroup") / rel.lstrip("/")
                limit = (base / "memory.max").read_text().strip()
                if limit == "max":
                    continue
                used = int((base / "memory.current").read_text())
            elif "memory" in controllers.split(","):  # v1
                base = Path("/sys/fs/cgroup/memory") / rel.lstrip("/")
                limit = (base / "memory.limit_in_bytes").read_text().strip()
                if int(limit) >= 1 << 60:  # "no limit"
                    continue
                used = int((base / "memory.usage_in_bytes").read_text())
            else:
                continue
            return int(limit) - used + _inactive_file(base / "memory.stat")
        except (OSError, ValueError):
            continue
    return None


def _cap() -> int | None:
    cap = os.environ.get(MEMORY_CAP_ENV)
    if not cap:
        return None
    try:
        value = float(cap)
    except ValueError:
        value = float("nan")
    if not (0 < value < 1e6):
        raise ToolkitError(f"{MEMORY_CAP_ENV}={cap!r} is not a positive number of GB; set it "
                           "to e.g. 16, or unset it")
    return int(value * GB)


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
    cap = _cap()
    if cap is not None:
        found.append(cap)
    return min(found) if found else None


def check_fits(need: int, what: str, fix: str) -> None:
    """Refuse, in one line, a job estimated to need more memory than is available — before it
    starts, rather than after the machine has begun to swap or the kernel has killed it."""
    have = available_bytes()
    if have is not None and need > have:
        where = (f"{MEMORY_CAP_ENV}={os.environ.get(MEMORY_CAP_ENV)}" if _cap() == have
                 else "available on this machine")
        raise ToolkitError(f"{what} needs about {need / GB:.1f} GB of memory, but only "
                           f"{have / GB:.1f} GB is {where}; {fix}")


def give_back() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc keeps them otherwise, so
    a large protobuf or array freed by Python still counts as resident)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
