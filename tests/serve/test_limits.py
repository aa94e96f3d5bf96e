"""What a hostile client could cost the server (issue 23): decoding is streamed into 16 kHz and
stops when its budget or client is gone, the audio held at once is bounded, given-up work
stops at the next decoder step, slow headers are cut off, and every limit is finite."""

import contextlib
import math
import socket
import threading
import time
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import uvicorn
from test_app import FakeService, fake_settings, one_line, post, wav_bytes

from support.zoo import tiny
from toolkit import registry
from toolkit.core.errors import Cancelled, ToolkitError
from toolkit.models.whisper.audio import SAMPLE_RATE, load_audio, log_mel_long
from toolkit.runtime.whisper.longform import LongFormJob, TranscribeOptions, advance
from toolkit.serve.app import create_app
from toolkit.serve.server import check_settings, server_config
from toolkit.serve.service import AudioBudget


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory):
    """Five minutes of 48 kHz stereo: 115 MB as float32 if it were decoded whole."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", 48000, 2, subtype="PCM_16") as f:
        for _ in range(30):
            f.write((0.1 * rng.standard_normal((480000, 2))).astype(np.float32))
    return path


def test_decoding_is_streamed_into_16_khz(long_wav):
    tracemalloc.start()
    audio = load_audio(long_wav)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(audio) == 300 * SAMPLE_RATE
    whole = 300 * 48000 * 2 * 4                 # the file decoded at once, as float32
    assert peak < 2.5 * audio.nbytes + 16e6 and peak < whole / 2, peak / 1e6


def test_a_watch_that_raises_stops_decoding_between_blocks(long_wav):
    seen = []

    def watch(seconds):
        seen.append(seconds)
        if seconds > 15:
            raise Cancelled("the client went away")

    with pytest.raises(Cancelled):
        load_audio(long_wav, watch=watch)
    assert len(seen) <= 3 and seen[-1] < 30      # stopped after a block or two of 30


def test_the_audio_budget_holds_across_requests():
    budget = AudioBudget(100.0)
    a, b = budget.reserve(), budget.reserve()
    a.grow(60)
    with pytest.raises(AudioBudget.Exceeded, match="--max-audio-total-s"):
        b.grow(50)
    b.grow(40)
    a.release()
    b.grow(90)
    assert budget.held_s == 90
    b.release()
    assert budget.held_s == 0


def test_a_request_past_the_audio_budget_is_429(tmp_path):
    service = FakeService(fake_settings(tmp_path, max_audio_total_s=2.0))
    from fastapi.testclient import TestClient
    with TestClient(create_app(service)) as client:
        for _ in range(100):
            if service.ready:
                break
            time.sleep(0.02)
        r = post(client, wav_bytes(3))
        one_line(r, 429, "decoded audio")
        assert r.headers["retry-after"]
        assert post(client, wav_bytes(1.5)).status_code == 200
        assert service.audio.held_s == 0         # given back after each answer


@pytest.mark.parametrize("field, value", [("max_audio_s", math.nan), ("timeout_s", math.inf),
                                          ("max_wait_ms", math.nan), ("max_batch", 10**20)])
def test_settings_must_be_finite_and_in_range(tmp_path, field, value):
    settings = fake_settings(tmp_path, **{field: value})
    with pytest.raises(ToolkitError, match="must be"):
        check_settings(settings, "127.0.0.1", 8000)


def test_given_up_work_stops_at_the_next_decoder_step(shared_data):
    pipe = registry.get("whisper").open_pipeline(loaded=tiny("whisper"), backend="torch")
    audio = load_audio(shared_data / "audio" / "jfk.flac")
    mel = log_mel_long(audio, pipe.n_mels)
    steps = []
    step = pipe.step

    def counting(*args):
        steps.append(1)
        if len(steps) == 3 and cancel:
            job.cancelled = True         # what the batcher does when its request is dropped
        return step(*args)

    pipe.step = counting
    options = TranscribeOptions(language="en", beam_size=2, seed=0)
    cancel = False
    job = LongFormJob.start(pipe, mel, mel.shape[1] - 3000, len(audio) / SAMPLE_RATE, options)
    advance(pipe, [job])
    full = len(steps)
    steps.clear()
    cancel = True
    job = LongFormJob.start(pipe, mel, mel.shape[1] - 3000, len(audio) / SAMPLE_RATE, options)
    advance(pipe, [job])
    assert job.done and job.cancelled
    assert len(steps) == 3 < full, (len(steps), full)   # not one step more


@contextlib.contextmanager
def _running(tmp_path, header_timeout_s: float, connections: int):
    """A real uvicorn server on a free port with the fake service, as `toolkit serve` configures
    it (serve/server.py: server_config); yields the port once it answers."""
    service = FakeService(fake_settings(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(server_config(create_app(service), "127.0.0.1", port,
                                          header_timeout_s, connections))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if service.ready and server.started:
                break
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def test_slow_headers_are_cut_off(tmp_path):
    conns = []
    with _running(tmp_path, 1.0, 200) as port:
        try:
            for _ in range(50):
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                conns.append(c)
            t0 = time.perf_counter()
            closed = set()
            while len(closed) < len(conns) and time.perf_counter() - t0 < 6:
                for i, c in enumerate(conns):
                    if i in closed:
                        continue
                    try:
                        c.sendall(b"a")                   # trickling: one byte now and then
                        c.settimeout(0.01)
                        if c.recv(100) == b"":
                            closed.add(i)
                    except socket.timeout:
                        pass
                    except OSError:
                        closed.add(i)
                time.sleep(0.2)
            assert len(closed) == 50, len(closed)
            assert time.perf_counter() - t0 < 4
            with socket.create_connection(("127.0.0.1", port), timeout=5) as ok:  # still serving
                ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert ok.recv(100).startswith(b"HTTP/1.1 200")
        finally:
            for c in conns:
                c.close()


def test_connections_past_the_cap_get_503(tmp_path):
    """--max-connections: past the cap (here 3 connections stalled in their headers) a new
    request is answered 503 at once instead of queueing without bound."""
    stalled = []
    with _running(tmp_path, 5.0, 3) as port:
        try:
            for _ in range(3):
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                stalled.append(c)
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
                extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert extra.recv(100).startswith(b"HTTP/1.1 503")
            for c in stalled:
                c.close()
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as ok:  # room again
                ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                assert ok.recv(100).startswith(b"HTTP/1.1 200")
        finally:
            for c in stalled:
                c.close()
