"""The dynamic batcher: rounds of up to max_batch, continuous admission, one round at a time,
a failing item fails alone, a full queue refuses, a cancelled request is dropped."""

import threading
import time

import pytest

from toolkit.serve.batching import Batcher, QueueFull


class Item:
    """Done after ``rounds`` rounds; ``bad`` raises in any round it is part of."""

    def __init__(self, name, rounds=1, bad=False):
        self.name, self.left, self.bad = name, rounds, bad
        self.done = False
        self.seen_with: list[list[str]] = []


class Recorder:
    def __init__(self, delay=0.0):
        self.delay = delay
        self.rounds: list[list[str]] = []
        self.running = 0
        self.overlap = False
        self.lock = threading.Lock()

    def __call__(self, items):
        with self.lock:
            self.running += 1
            self.overlap |= self.running > 1
        try:
            time.sleep(self.delay)
            names = [i.name for i in items]
            self.rounds.append(names)
            if any(i.bad for i in items):
                raise ValueError(f"bad item in {names}")
            for i in items:
                i.left -= 1
                i.done = i.left == 0
        finally:
            with self.lock:
                self.running -= 1


def test_requests_arriving_together_are_one_round():
    rec = Recorder()
    b = Batcher("t", rec, max_batch=4, max_wait_ms=200)
    futures = [b.submit(Item(f"r{i}")) for i in range(4)]
    results = [f.result(5) for f in futures]
    b.close()
    assert [r.name for r in results] == ["r0", "r1", "r2", "r3"]
    assert rec.rounds == [["r0", "r1", "r2", "r3"]]


def test_at_most_max_batch_per_round_and_never_two_rounds_at_once():
    rec = Recorder(delay=0.01)
    b = Batcher("t", rec, max_batch=3, max_wait_ms=50)
    futures = [b.submit(Item(f"r{i}")) for i in range(10)]
    for f in futures:
        f.result(10)
    b.close()
    assert max(len(r) for r in rec.rounds) == 3
    assert sorted(n for r in rec.rounds for n in r) == sorted(f"r{i}" for i in range(10))
    assert not rec.overlap


def test_a_request_joins_a_long_one_at_the_next_round():
    rec = Recorder(delay=0.05)
    b = Batcher("t", rec, max_batch=4, max_wait_ms=0)
    long = b.submit(Item("long", rounds=6))
    time.sleep(0.12)                       # the long one is in its second or third round
    short = b.submit(Item("short"))
    assert short.result(5).name == "short"
    assert not long.done()                 # the short one did not wait for the long one
    long.result(5)
    b.close()
    joined = [r for r in rec.rounds if "short" in r]
    assert joined == [["long", "short"]]


def test_a_failing_item_fails_alone():
    rec = Recorder()
    b = Batcher("t", rec, max_batch=4, max_wait_ms=200)
    good = [b.submit(Item(f"g{i}")) for i in range(2)]
    bad = b.submit(Item("bad", bad=True))
    assert all(f.result(5).done for f in good)
    with pytest.raises(ValueError, match="bad item"):
        bad.result(5)
    b.close()


def test_full_queue_refuses_with_a_retry_time():
    gate = threading.Event()

    def run(items):
        gate.wait(5)
        for i in items:
            i.done = True
    b = Batcher("t", run, max_batch=1, max_wait_ms=0, max_queue=2)
    first = b.submit(Item("running"))
    time.sleep(0.1)                       # taken by the worker: no longer queued
    queued = [b.submit(Item("q1")), b.submit(Item("q2"))]
    with pytest.raises(QueueFull) as exc:
        b.submit(Item("q3"))
    assert exc.value.depth == 2 and exc.value.retry_after >= 1
    gate.set()
    for f in [first, *queued]:
        f.result(5)
    b.close()


def test_a_cancelled_request_is_dropped():
    gate = threading.Event()
    rec = Recorder()

    def run(items):
        gate.wait(5)
        rec(items)
    b = Batcher("t", run, max_batch=1, max_wait_ms=0)
    first = b.submit(Item("first"))
    time.sleep(0.1)
    gone = b.submit(Item("gone"))
    assert gone.cancel()
    gate.set()
    first.result(5)
    kept = b.submit(Item("kept"))
    kept.result(5)
    b.close()
    assert ["gone"] not in rec.rounds and rec.rounds == [["first"], ["kept"]]
