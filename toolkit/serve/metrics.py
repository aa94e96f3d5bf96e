"""Prometheus metrics of one server (its own registry, so two servers in one process — the
tests — do not share counters)."""

from __future__ import annotations

import os
import socket

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("toolkit_requests", "HTTP requests answered",
                                ["route", "status"], registry=r)
        self.latency = Histogram("toolkit_request_seconds", "Time to answer a request",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("toolkit_errors", "Requests answered with an error",
                              ["route", "reason"], registry=r)
        self.batch = Histogram("toolkit_batch_size", "Requests decoded together in one round "
                               "(Whisper: windows)", ["model"], buckets=BATCH_BUCKETS,
                               registry=r)
        self.requests_batched = Histogram("toolkit_serve_batch_requests", "Requests in one "
                                          "Ray @serve.batch call", ["model"],
                                          buckets=BATCH_BUCKETS, registry=r)
        self.queue = Gauge("toolkit_queue_depth", "Requests waiting for a round", ["model"],
                           registry=r)
        self.inflight = Gauge("toolkit_inflight_requests", "Requests being answered",
                              registry=r)
        self.audio = Counter("toolkit_audio_seconds", "Seconds of audio transcribed or "
                             "synthesized", ["route"], registry=r)

        # which process answered /metrics (Ray: one of the replicas): counters of two
        # processes cannot be subtracted
        Gauge("toolkit_process", "The server process that answered", ["id"],
              registry=r).labels(f"{socket.gethostname()}:{os.getpid()}").set(1)

    def on_round(self, model: str):
        def record(size: int, queued: int) -> None:
            self.batch.labels(model).observe(size)
            self.queue.labels(model).set(queued)
        return record

    def render(self) -> bytes:
        return generate_latest(self.registry)
