"""The HTTP layer on a stand-in model (the real one is in test_server.py): status codes and
one-line messages of every refusal, the response formats, and that uploads leave nothing
behind. The batcher, the upload parser and the audio decoding are the real ones."""

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fastapi.testclient import TestClient

from toolkit.core.errors import ToolkitError
from toolkit.runtime.whisper.longform import LongFormResult, Segment
from toolkit.serve.app import create_app
from toolkit.serve.routes.gradtts import TTSModel
from toolkit.serve.routes.whisper import WhisperModel
from toolkit.serve.served import ModelSource
from toolkit.serve.service import Service, Settings

SR = 16000


def wav_bytes(seconds=1.0, silent=False) -> bytes:
    t = np.arange(int(SR * seconds)) / SR
    audio = np.zeros_like(t) if silent else 0.3 * np.sin(2 * np.pi * 220 * t)
    buf = io.BytesIO()
    sf.write(buf, audio.astype(np.float32), SR, format="WAV")
    return buf.getvalue()


class FakePipe:
    backend, precision, random_init = "fake", "fp32", False

    def check_language(self, language, task="transcribe"):
        if language not in (None, "en") or task != "transcribe":
            raise ToolkitError("this is an English-only model (.en)")
        return "en"

    def check_word_timestamps(self):
        raise ToolkitError("--word-timestamps needs the align graph, and the stand-in has none")

    def close(self):
        pass


class FakeJob:
    def __init__(self, seconds):
        self.seconds = seconds
        self.done = False
        self.cancelled = False
        self.result = LongFormResult([
            Segment(0, 0, 0.0, 1.5, " Hello there.", [1, 2], 0.0, -0.2, 1.1, 0.01),
            Segment(1, 0, 1.5, min(3.0, seconds), " General.", [3], 0.0, -0.3, 1.0, 0.02)],
            "en")


class FakeWhisper(WhisperModel):
    """The real Whisper routes over a stand-in pipeline; the service's ``gate`` holds rounds."""

    def load(self):
        if self.service.loaded is not None:
            self.service.loaded.wait(10)
        self.pipe = FakePipe()

    def job(self, audio, options):
        job = FakeJob(len(audio) / SR)
        self.service.made.append(job)
        return job

    def run_round(self, jobs):
        self.service.gate.wait(10)
        for j in jobs:
            self.service.ran.append(j)
            j.done = True


class FakeTTS(TTSModel):
    def load(self):
        self.pipe = FakePipe()


class Family:
    """A registry entry's stand-in: what the service asks of a family."""

    def __init__(self, name, served):
        self.name, self.served, self.serve = name, served, "stand-in"

    def default_tag(self, *args):
        return "tiny"


class FakeService(Service):
    def __init__(self, settings, loaded=None):
        self.gate = threading.Event()
        self.gate.set()
        self.loaded = loaded
        self.made, self.ran = [], []
        super().__init__(settings)


def fake_settings(tmp_path, tts=False, **settings) -> Settings:
    models = [ModelSource(Family("whisper", FakeWhisper))]
    if tts:
        models.append(ModelSource(Family("gradtts", FakeTTS)))
    return Settings(models=models, upload_root=str(tmp_path), **settings)


def whisper_batcher(service):
    return service._batchers[service.pick("whisper", None).name]


@pytest.fixture
def server(tmp_path):
    def make(api_key=None, loaded=None, tts=False, **settings):
        service = FakeService(fake_settings(tmp_path, tts, **settings), loaded)
        client = TestClient(create_app(service, api_key=api_key))
        client.__enter__()
        made.append(client)
        if loaded is None:
            for _ in range(100):
                if service.ready:
                    break
                time.sleep(0.02)
        return client, service
    made = []
    yield make
    for c in made:
        c.__exit__(None, None, None)


def post(client, data=b"", name="a.wav", fields=None, **kw):
    return client.post("/v1/audio/transcriptions", files={"file": (name, data, "audio/wav")},
                       data={"model": "whisper-1", **(fields or {})}, **kw)


def one_line(r, status, contains):
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert "\n" not in message and contains in message, message
    return message


def test_formats(server):
    client, _ = server()
    assert post(client, wav_bytes(3)).json() == {"text": "Hello there. General."}
    assert post(client, wav_bytes(3), fields={"response_format": "text"}).text == \
        "Hello there. General.\n"
    srt = post(client, wav_bytes(3), fields={"response_format": "srt"}).text
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n")
    vtt = post(client, wav_bytes(3), fields={"response_format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n00:00.000 --> 00:01.500\nHello there.")
    verbose = post(client, wav_bytes(3), fields={"response_format": "verbose_json"}).json()
    assert verbose["duration"] == 3.0 and verbose["language"] == "en"
    assert [s["end"] for s in verbose["segments"]] == [1.5, 3.0]


def test_refusals_are_one_line_and_leave_no_file(server, tmp_path):
    client, service = server(max_upload_mb=0.05)
    one_line(post(client, b"this is not audio at all" * 10), 415, "cannot be decoded")
    one_line(post(client, wav_bytes(1, silent=True)), 400, "silent")
    one_line(post(client, wav_bytes(1), fields={"response_format": "mp3"}), 400,
             "response_format")
    one_line(post(client, wav_bytes(1), fields={"model": "gpt-4"}), 404, "not served here")
    one_line(post(client, wav_bytes(1), fields={"temperature": "hot"}), 400, "temperature")
    one_line(post(client, wav_bytes(1), fields={"language": "fr"}), 400, "English-only")
    one_line(post(client, wav_bytes(1), fields={"timestamp_granularities[]": "word"}), 400,
             "timestamp_granularities needs response_format=verbose_json")
    one_line(post(client, wav_bytes(1), fields={"timestamp_granularities[]": "letter",
                                                "response_format": "verbose_json"}), 400,
             "'letter' is not one of segment, word")
    one_line(post(client, wav_bytes(1), fields={"timestamp_granularities[]": "word",
                                                "response_format": "verbose_json"}), 400,
             "timestamp_granularities[]=word needs the align graph")
    one_line(client.post("/v1/audio/translations", files={"file": ("a.wav", wav_bytes(1))}),
             400, "English-only")
    one_line(post(client, wav_bytes(80)), 413, "--max-upload-mb")        # Content-Length
    one_line(client.post("/v1/audio/transcriptions", content=iter([wav_bytes(5)]),
                         headers={"content-type": "multipart/form-data; boundary=xyz"}),
             400, "malformed")
    # a 413 found while streaming (no Content-Length: chunked)
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"\r\n" + wav_bytes(5) + b"\r\n--xyz--\r\n")
    one_line(client.post("/v1/audio/transcriptions", content=iter([body[:1000], body[1000:]]),
                         headers={"content-type": "multipart/form-data; boundary=xyz"}),
             413, "--max-upload-mb")
    one_line(client.post("/v1/audio/transcriptions", content=b"{}",
                         headers={"content-type": "application/json"}), 415, "multipart")
    one_line(client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                         files={"other": ("x", b"1")}), 400, "no 'file' part")
    assert list(service.upload_dir.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == [service.upload_dir.name]


def test_the_clients_file_name_is_never_used(server, tmp_path):
    client, service = server()
    passwd = Path("/etc/passwd")
    before = passwd.read_bytes() if passwd.exists() else None
    evil = Path(f"/tmp/toolkit-test-evil-{os.getpid()}.wav")
    names = ["../../etc/passwd", str(evil), "../" * 12 + "tmp/" + evil.name, "x\x00y.wav"]
    for name in names:
        assert post(client, wav_bytes(2), name=name).status_code == 200
    assert list(service.upload_dir.iterdir()) == []
    assert not evil.exists()
    assert (passwd.read_bytes() if passwd.exists() else None) == before
    assert not any("passwd" in p.name or "evil" in p.name for p in tmp_path.rglob("*"))


def test_api_key(server):
    client, _ = server(api_key="s3cret")
    r = post(client, wav_bytes(1))
    one_line(r, 401, "API key")
    assert r.headers["www-authenticate"] == "Bearer"
    one_line(post(client, wav_bytes(1), headers={"Authorization": "Bearer wrong"}), 401,
             "API key")
    assert post(client, wav_bytes(1), headers={"Authorization": "Bearer s3cret"}
                ).status_code == 200
    assert client.get("/metrics").status_code == 401
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}
                      ).json()["data"][1]["id"] == "whisper-1"
    assert client.get("/health").status_code == 200          # probes need no key


def test_health_is_503_until_the_models_are_loaded(server):
    loaded = threading.Event()
    client, service = server(loaded=loaded)
    r = client.get("/health")
    assert r.status_code == 503 and r.json() == {"status": "loading"}
    r = post(client, wav_bytes(1))
    one_line(r, 503, "still loading")
    assert r.headers["retry-after"] == "5"
    loaded.set()
    for _ in range(100):
        if service.ready:
            break
        time.sleep(0.02)
    assert client.get("/health").json()["status"] == "ok"


def test_full_queue_is_429_with_retry_after(server):
    client, service = server(max_batch=1, max_queue=1, max_wait_ms=0)
    service.gate.clear()
    batcher = whisper_batcher(service)
    running = batcher.submit(FakeJob(1))
    time.sleep(0.1)
    queued = batcher.submit(FakeJob(1))
    r = post(client, wav_bytes(1))
    one_line(r, 429, "busy")
    assert int(r.headers["retry-after"]) >= 1
    service.gate.set()
    running.result(5), queued.result(5)
    assert post(client, wav_bytes(1)).status_code == 200


def test_timeout_is_504_and_the_work_is_dropped(server):
    client, service = server(timeout_s=0.3, max_batch=1)
    service.gate.clear()
    blocker = whisper_batcher(service).submit(FakeJob(1))
    time.sleep(0.1)
    one_line(post(client, wav_bytes(1)), 504, "--timeout-s")
    timed_out = service.made[-1]
    assert whisper_batcher(service).depth == 0      # its place in the queue is free
    service.gate.set()
    blocker.result(5)
    assert post(client, wav_bytes(1)).status_code == 200
    assert timed_out not in service.ran and service.made[-1] in service.ran
    metrics = client.get("/metrics").text
    assert 'toolkit_requests_total{route="/v1/audio/transcriptions",status="504"} 1.0' in metrics
    assert 'toolkit_batch_size_count{model="whisper"}' in metrics


def test_speech_without_a_tts_model_is_404(server):
    client, _ = server()
    one_line(client.post("/v1/audio/speech", json={"input": "hi", "voice": "x"}), 404,
             "nothing is served at /v1/audio/speech; this server answers /v1/audio/trans")


def test_a_trickling_upload_is_cut_off(tmp_path):
    """A client that sends its body a few bytes at a time gets 408 after --timeout-s (on a
    real uvicorn: the test client would buffer the body)."""
    import socket

    import uvicorn
    service = FakeService(fake_settings(tmp_path, timeout_s=1.0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if service.ready and server.started:
                break
            time.sleep(0.05)
        head = ("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000"
                "\r\nContent-Type: multipart/form-data; boundary=xyz\r\n\r\n").encode()
        part = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n"
                b"\r\n")
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(head + part)
            reply = b""
            c.settimeout(0.3)
            while time.perf_counter() - t0 < 8 and b"\r\n\r\n" not in reply:
                try:
                    c.sendall(b"\0" * 10)
                    reply += c.recv(65536)
                except socket.timeout:
                    pass
                except OSError:
                    break
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert 0.9 < time.perf_counter() - t0 < 5
        assert list(service.upload_dir.iterdir()) == []
    finally:
        server.should_exit = True
        thread.join(10)


def test_admission_refuses_before_reading_the_body(server):
    client, service = server(max_batch=1, max_queue=1)
    service.admitted = service.max_admitted          # as if that many were in progress
    r = post(client, wav_bytes(1))
    one_line(r, 429, "busy")
    assert int(r.headers["retry-after"]) >= 1
    assert list(service.upload_dir.iterdir()) == []
    service.admitted = 0
    assert post(client, wav_bytes(1)).status_code == 200
    assert service.admitted == 0                       # released after every answer


def test_huge_part_headers_and_speech_bodies_are_refused(server):
    client, service = server(tts=True)       # a speech model "loaded": the body is read
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
            + b"a" * 20000 + b"\"\r\n\r\nxx\r\n--xyz--\r\n")
    one_line(client.post("/v1/audio/transcriptions", content=iter([body]),
                         headers={"content-type": "multipart/form-data; boundary=xyz"}),
             400, "header")
    one_line(client.post("/v1/audio/speech", content=b"{" + b" " * 100_000 + b"}",
                         headers={"content-type": "application/json"}), 413, "KiB")


def test_audio_longer_than_the_limit_is_413(server):
    client, _ = server(max_audio_s=2.0)
    one_line(post(client, wav_bytes(3)), 413, "--max-audio-s")
    assert post(client, wav_bytes(1.5)).status_code == 200
