"""Dynamic batching: a bounded queue in front of one worker thread per pipeline.

Requests are ``Work`` items. The worker owns the pipeline's sessions — no other thread runs
them, so two batches never share a session — and works in rounds: when it is idle it waits
for a first item and then up to ``max_wait_ms`` for more (up to ``max_batch``); between rounds
it takes whatever has queued meanwhile without waiting, so a short clip that arrives while a
long recording is being transcribed joins at the next window instead of waiting for the end
(continuous batching). One round is ``run_round(payloads)``: for Whisper, one window of every
active recording, encoded and decoded together (``runtime.whisper.longform.advance``).

A full queue refuses new work (``QueueFull``: the server answers 429 with ``Retry-After``); a
request whose client gave up (timeout, disconnect) is dropped at the next round. When a batch
fails, its items run again one by one, so one bad item fails alone.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


class QueueFull(Exception):
    def __init__(self, depth: int, retry_after: int):
        super().__init__(f"{depth} requests are waiting")
        self.depth = depth
        self.retry_after = retry_after


@dataclass
class Work:
    payload: object                                  # has ``done`` once finished
    future: cf.Future = field(default_factory=cf.Future)
    counted: bool = True                             # still counted as waiting in the queue


class Batcher:
    def __init__(self, name: str, run_round: Callable[[list], None], max_batch: int = 8,
                 max_wait_ms: float = 10.0, max_queue: int = 128,
                 on_round: Callable[[int, int], None] | None = None):
        self.name = name
        self.run_round = run_round
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1e3
        self.max_queue = max(1, max_queue)
        self.on_round = on_round          # (items in the round, items still queued)
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0
        self._stop = threading.Event()
        self._round_s = 1.0               # a moving average, for Retry-After
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    # -- the requests' side ---------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Items queued and not yet taken into a round."""
        return self._pending

    def retry_after(self) -> int:
        """Seconds until the queue has room, from the recent rounds' length."""
        return max(1, round((self._pending / self.max_batch + 1) * self._round_s))

    def submit(self, payload) -> cf.Future:
        with self._lock:
            if self._stop.is_set():
                raise QueueFull(self._pending, 5)      # shutting down: try another server
            if self._pending >= self.max_queue:
                raise QueueFull(self._pending, self.retry_after())
            self._pending += 1
        work = Work(payload)
        # a request that gives up while queued frees its place at once; one given up while
        # its round runs is marked, so the round drops it at the next decoder step
        work.future.add_done_callback(lambda f, w=work: self._given_up(w))
        self._queue.put(work)
        return work.future

    def _given_up(self, work: Work) -> None:
        self._uncount(work)
        if work.future.cancelled() and hasattr(work.payload, "cancelled"):
            work.payload.cancelled = True

    def _uncount(self, work: Work) -> None:
        with self._lock:
            if work.counted:
                work.counted = False
                self._pending -= 1

    def close(self, timeout: float = 60.0) -> bool:
        """Stop taking work and fail what is queued; whether the worker has finished."""
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout)
        while True:
            try:
                work = self._queue.get_nowait()
            except queue.Empty:
                break
            if work is not None:
                _resolve(work.future, error=RuntimeError("the server is shutting down"))
        return not self._thread.is_alive()

    # -- the worker -----------------------------------------------------------------------
    def _take(self, block: bool, timeout: float | None = None) -> Work | None:
        """The next queued work whose client still waits (None: nothing, or stopping)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.perf_counter())
            try:
                work = self._queue.get(block=block and left != 0, timeout=left)
            except queue.Empty:
                return None
            if work is None:
                return None
            self._uncount(work)
            if not work.future.cancelled():
                return work

    def _loop(self) -> None:
        active: list[Work] = []
        while not self._stop.is_set():
            if not active:
                first = self._take(True)
                if first is None:
                    if self._stop.is_set():
                        break
                    continue
                active.append(first)
                deadline = time.perf_counter() + self.max_wait
                while len(active) < self.max_batch:
                    left = deadline - time.perf_counter()
                    work = self._take(left > 0, max(left, 0))
                    if work is None:
                        break
                    active.append(work)
            else:
                while len(active) < self.max_batch:
                    work = self._take(False)
                    if work is None:
                        break
                    active.append(work)
            active = [w for w in active if not w.future.cancelled()]
            if not active:
                continue
            t0 = time.perf_counter()
            self._round(active)
            self._round_s = 0.8 * self._round_s + 0.2 * (time.perf_counter() - t0)
            if self.on_round:
                self.on_round(len(active), self._pending)
            still = []
            for w in active:
                if getattr(w.payload, "done", False) and not w.future.done():
                    _resolve(w.future, result=w.payload)
                elif not w.future.done():
                    still.append(w)
            active = still
        for w in active:
            _resolve(w.future, error=RuntimeError("the server is shutting down"))

    def _round(self, active: list[Work]) -> None:
        try:
            self.run_round([w.payload for w in active])
            return
        except Exception as exc:          # noqa: BLE001 — isolate the item that fails
            if len(active) == 1:
                _resolve(active[0].future, error=exc)
                return
        for w in active:
            try:
                self.run_round([w.payload])
            except Exception as exc:      # noqa: BLE001
                _resolve(w.future, error=exc)


def _resolve(future: cf.Future, result=None, error: BaseException | None = None) -> None:
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except cf.InvalidStateError:          # the client gave up meanwhile (cancelled)
        pass
