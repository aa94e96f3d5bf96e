"""Run one benchmark case in a fresh process, so peak resident memory is per backend.

``ru_maxrss`` only grows, so measuring several backends in one process would report the
largest so far for every one of them. Each case runs in a spawned child and returns its record
with ``peak_rss_mb`` of that child.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import resource
import signal
import traceback
from typing import Callable

from ..core.errors import ToolkitError


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Unlike ``ru_maxrss``, which Linux carries
    across fork+exec (a spawned child would report at least its parent's peak), VmHWM
    belongs to the address space and starts afresh in the child."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(fn, args, kwargs, q):
    try:
        result = fn(*args, **kwargs)
        q.put(("ok", result, peak_rss_mb()))
    except BaseException as exc:  # noqa: BLE001 - report any failure back to the parent
        msg = str(exc) if isinstance(exc, ToolkitError) else \
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
        q.put(("error", msg, 0.0))


class CaseFailed(ToolkitError):
    """A benchmark case raised, or its process died (out of memory, a crash in native code)."""


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = "an unknown signal"
        why = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"case died (signal {-exitcode}, {name}){why}"
    return f"case process exited with code {exitcode} without a result"


def run_isolated(fn: Callable, *args, isolate: bool = True, **kwargs):
    """Return ``(result, peak_rss_mb)``; raises CaseFailed if the child failed or died."""
    if not isolate:
        result = fn(*args, **kwargs)
        return result, peak_rss_mb()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, kwargs, q))
    p.start()
    try:
        while True:  # never wait forever: a killed child sends nothing
            try:
                status, payload, peak = q.get(timeout=1.0)
                break
            except queue.Empty:
                if not p.is_alive():
                    try:
                        status, payload, peak = q.get(timeout=1.0)
                        break
                    except queue.Empty:
                        raise CaseFailed(_death(p.exitcode)) from None
    finally:
        p.join()
    if status != "ok":
        raise CaseFailed(f"benchmark case failed: {payload}")
    return payload, peak
