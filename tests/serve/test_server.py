"""`toolkit serve` as a user runs it: the console script on 127.0.0.1 with the trained tiny.en,
called by the official `openai` client and by raw sockets that misbehave while other clients
keep it busy. Afterwards nothing is left in its temporary directory or anywhere else."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.cli import SCRIPT, fails_cleanly, run_toolkit
from toolkit import registry

open_pipeline = registry.get("whisper").open_pipeline


KEY = "test-key-0123456789"
ENV_VAR = "TOOLKIT_TEST_SERVE_KEY"
ASSETS = Path(__file__).resolve().parents[2] / "toolkit" / "assets" / "speech" / "wavs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, tmp: Path, timeout=240):
    """The console script in its own empty cwd and TMPDIR; waits for /health = 200."""
    port = free_port()
    (tmp / "cwd").mkdir()
    (tmp / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), ENV_VAR: KEY}
    proc = subprocess.Popen([str(SCRIPT), "serve", "--port", str(port), *map(str, args)],
                            cwd=tmp / "cwd", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, port
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("the server did not become ready")


def stop(proc, sig=signal.SIGTERM, timeout=60):
    proc.send_signal(sig)
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="module")
def served(tiny_en_artifact, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("served")
    proc, url, port = start_server(["--artifact", tiny_en_artifact, "--api-key-env", ENV_VAR,
                                    "--max-batch", "4", "--max-upload-mb", "8"], tmp)
    yield {"url": url, "port": port, "tmp": tmp, "proc": proc}
    if proc.poll() is None:
        stop(proc)


@pytest.fixture(scope="module")
def cli_text(tiny_en_artifact, shared_data):
    """What `toolkit transcribe` prints for each clip, from the same artifact."""
    pipe = open_pipeline(artifact=tiny_en_artifact)
    texts = {p.name: pipe.transcribe(p)["text"]
             for p in [shared_data / "audio" / "jfk.flac", *sorted(ASSETS.glob("LJ*.flac"))]}
    pipe.close()
    return texts


def test_openai_client_gets_the_text_of_toolkit_transcribe(served, cli_text, shared_data):
    client = openai.OpenAI(base_url=served["url"] + "/v1", api_key=KEY, max_retries=0)
    jfk = shared_data / "audio" / "jfk.flac"
    with jfk.open("rb") as f:
        r = client.audio.transcriptions.create(model="whisper-1", file=f)
    assert r.text == cli_text["jfk.flac"]
    assert "ask not what your country can do for you" in r.text
    with jfk.open("rb") as f:
        v = client.audio.transcriptions.create(model="whisper-1", file=f,
                                               response_format="verbose_json")
    assert v.text == r.text and v.duration == pytest.approx(11.0, abs=0.1)
    assert v.segments[0].start == 0.0 and v.segments[-1].end <= 11.0
    with jfk.open("rb") as f:
        srt = client.audio.transcriptions.create(model="whisper-1", file=f,
                                                 response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> ")
    with jfk.open("rb") as f, pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.translations.create(model="whisper-1", file=f)
    with jfk.open("rb") as f, pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served["url"] + "/v1", api_key="wrong", max_retries=0
                      ).audio.transcriptions.create(model="whisper-1", file=f)


def _raw(port, head: bytes, body_chunks, read=True):
    """Send a request by hand; returns (status or None, what went wrong while sending)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    problem = None
    try:
        s.sendall(head)
        for chunk in body_chunks:
            s.sendall(chunk)
    except OSError as exc:          # the server answered and closed while we were sending
        problem = type(exc).__name__
    if not read:
        s.close()
        return None, problem
    try:
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, problem
    except OSError as exc:
        return None, type(exc).__name__
    finally:
        s.close()


def _head(port, length=None, boundary="b0undary", key=KEY):
    lines = ["POST /v1/audio/transcriptions HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Authorization: Bearer {key}",
             f"Content-Type: multipart/form-data; boundary={boundary}"]
    lines.append(f"Content-Length: {length}" if length is not None
                 else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _file_part(name="clip.wav", boundary="b0undary"):
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"{name}\"\r\nContent-Type: audio/wav\r\n\r\n").encode()


def test_faults_under_load(served, cli_text, shared_data):
    url, port, tmp = served["url"], served["port"], served["tmp"]
    auth = {"Authorization": f"Bearer {KEY}"}
    clips = sorted(ASSETS.glob("LJ*.flac"))
    answers, stop_load = [], threading.Event()

    def load(c):
        with httpx.Client(base_url=url, headers=auth, timeout=120) as client:
            i = 0
            while not stop_load.is_set():
                clip = clips[(c + i) % len(clips)]
                r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                                files={"file": (clip.name, clip.read_bytes())})
                answers.append((clip.name, r.status_code, r.json().get("text")))
                i += 1
    workers = [threading.Thread(target=load, args=(c,)) for c in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        # 1. a client that disconnects mid-upload
        status, _ = _raw(port, _head(port, length=2_000_000),
                         [_file_part(), b"\0" * 100_000], read=False)
        # 2. a 1 GB upload, declared: refused before its body is read
        status, _ = _raw(port, _head(port, length=1_000_000_000),
                         (b"\0" * (1 << 20) for _ in range(4)))
        assert status == 413
        # ... and streamed without a length (chunked): cut off at --max-upload-mb (8 MB)
        def chunked():
            yield b"%x\r\n%s\r\n" % (len(_file_part()), _file_part())
            for _ in range(1024):         # up to 1 GB, lazily
                yield b"100000\r\n" + b"\1" * (1 << 20) + b"\r\n"
        status, problem = _raw(port, _head(port), chunked())
        # 413, or the server closed the connection on us while we were still sending
        assert status == 413 or problem in ("BrokenPipeError", "ConnectionResetError"), \
            (status, problem)
        # 3. a malformed multipart body
        with httpx.Client(base_url=url, headers=auth, timeout=60) as client:
            r = client.post("/v1/audio/transcriptions", content=b"--x\r\ngarbage\r\n\r\n",
                            headers={"content-type": "multipart/form-data; boundary=zzz"})
            assert r.status_code == 400 and "\n" not in r.json()["error"]["message"]
            # 4. a file that is not audio
            r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                            files={"file": ("notes.wav", b"MZ\x90\x00 not audio " * 500)})
            assert r.status_code == 415, r.text
            assert "uploaded file" in r.json()["error"]["message"]
            assert str(tmp) not in r.json()["error"]["message"]     # no server path leaks
            # 5. a path-traversal file name: just a name, never a path
            jfk = (shared_data / "audio" / "jfk.flac").read_bytes()
            r = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                            files={"file": ("../../etc/passwd", jfk)})
            assert r.status_code == 200 and r.json()["text"] == cli_text["jfk.flac"]
            # 6. a wrong API key
            r = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", jfk)},
                            headers={"Authorization": "Bearer nope"})
            assert r.status_code == 401
        time.sleep(1.0)
    finally:
        stop_load.set()
        for w in workers:
            w.join(120)
    # the others were served throughout, with the right text
    assert len(answers) >= 6
    assert all(status == 200 for _, status, _ in answers), answers
    assert all(text == cli_text[name] for name, _, text in answers)
    assert httpx.get(url + "/health").status_code == 200
    # nothing written outside the server's private directory, and nothing left in it
    # (onnxruntime itself leaves a 51-byte ``.ses`` marker in $TMPDIR; not ours, not uploads)
    private = [p for p in (tmp / "tmp").iterdir() if p.name != ".ses"]
    assert [p.name[:14] for p in private] == ["toolkit-serve-"]
    assert private[0].stat().st_mode & 0o777 == 0o700
    for _ in range(50):                    # the disconnected upload is cleaned up too
        if not list(private[0].iterdir()):
            break
        time.sleep(0.1)
    assert list(private[0].iterdir()) == []
    assert list((tmp / "cwd").iterdir()) == []
    metrics = httpx.get(url + "/metrics", headers=auth).text
    for status in ("200", "400", "401", "413", "415"):
        assert f'route="/v1/audio/transcriptions",status="{status}"' in metrics


def test_load_test_reports_every_request_once(served, tmp_path):
    out = tmp_path / "load.jsonl"
    r = run_toolkit("load-test", "--url", served["url"], "--clients", "1,3", "--requests", "2",
                    "--api-key-env", ENV_VAR, "--label", "t", "--out", out,
                    env={ENV_VAR: KEY}, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(x["clients"], x["requests"], x["ok"]) for x in rows] == [(1, 2, 2), (3, 6, 6)]
    assert all(x["lost"] == 0 and x["duplicated"] == 0 and x["same_text"] == x["ok"]
               and x["counted"] == x["requests"] and x["throughput"] > 0 for x in rows)
    assert rows[1]["mean_batch"] >= 1
    report = run_toolkit("load-test", "--report", out)
    assert report.returncode == 0 and "load test" in report.stdout
    fails_cleanly("load-test", "--url", served["url"], "--clients", "0", contains="--clients")


def test_stopping_removes_the_private_directory(served):
    out = stop(served["proc"])
    # uvicorn shuts down gracefully, then re-raises SIGTERM (exit -15) as a plain process would
    assert served["proc"].returncode in (0, -signal.SIGTERM), out
    assert "Traceback" not in out, out
    assert [p.name for p in (served["tmp"] / "tmp").iterdir()] in ([], [".ses"])


def test_bad_options_fail_before_serving(tmp_path, tiny_en_artifact):
    fails_cleanly("serve", "--api-key-env", "TOOLKIT_NO_SUCH_VARIABLE", contains="not set")
    fails_cleanly("serve", "--max-batch", "0", contains="--max-batch")
    fails_cleanly("serve", "--port", "70000", contains="--port")
    fails_cleanly("serve", "--max-upload-mb", "0", contains="--max-upload-mb")
    fails_cleanly("serve", "--engine", "k8s", contains="--engine")
    fails_cleanly("serve", "--artifact", tmp_path / "missing", contains="missing")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        fails_cleanly("serve", "--artifact", tiny_en_artifact, "--port",
                      s.getsockname()[1], contains="pick another --port")


def test_speech_route_with_grad_tts(tmp_path):
    proc, url, _ = start_server(["--model", "gradtts=preset:tiny@torch"], tmp_path)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        normal = client.audio.speech.create(model="tts-1", voice="alloy", response_format="wav",
                                            input="The birch canoe slid on the smooth planks.")
        fast = client.audio.speech.create(model="tts-1", voice="alloy", response_format="wav",
                                          speed=2.0,
                                          input="The birch canoe slid on the smooth planks.")
        import io

        import soundfile as sf
        a, sr = sf.read(io.BytesIO(normal.content))
        b, _ = sf.read(io.BytesIO(fast.content))
        assert sr == 22050 and len(a) / sr > 0.5
        assert 0.35 < len(b) / len(a) < 0.65            # speed 2 = half the durations
        with pytest.raises(openai.BadRequestError, match="answers wav"):
            client.audio.speech.create(model="tts-1", voice="alloy", input="hi",
                                       response_format="mp3")
        r = httpx.post(url + "/v1/audio/speech", json={"input": "", "voice": "alloy"})
        assert r.status_code == 400 and "\n" not in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", b"x")})
        assert r.status_code == 404 and "nothing is served at /v1/audio/transcriptions" in \
            r.json()["error"]["message"]
        assert httpx.get(url + "/health").json()["models"]["gradtts-tiny"]["random_init"] is True
    finally:
        out = stop(proc)
    assert "random-initialised weights" in out      # a preset is labelled where it is served


@pytest.mark.slow
def test_ray_serve_answers_the_openai_client(tiny_en_artifact, cli_text, shared_data,
                                             tmp_path):
    pytest.importorskip("ray.serve")
    short = Path(tempfile.mkdtemp(prefix="tk-ray-", dir="/tmp"))  # Ray's socket paths: < 108 B
    proc, url, _ = start_server(["--engine", "ray", "--artifact", tiny_en_artifact,
                                 "--replicas", "1", "--api-key-env", ENV_VAR], short)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
        with (shared_data / "audio" / "jfk.flac").open("rb") as f:
            r = client.audio.transcriptions.create(model="whisper-1", file=f)
        assert r.text == cli_text["jfk.flac"]
        with (shared_data / "audio" / "jfk.flac").open("rb") as f, \
                pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0
                          ).audio.transcriptions.create(model="whisper-1", file=f)
    finally:
        out = stop(proc, signal.SIGINT, timeout=120)
        shutil.rmtree(short, ignore_errors=True)
        assert "Traceback" not in out, out


def test_an_artifact_of_an_older_decoder_contract_is_refused(tiny_en_artifact, tmp_path,
                                                             shared_data):
    """An artifact exported before decoder rows shared their window's cross K/V (revision 3)
    would fail inside onnxruntime on the first batch of two windows with beams."""
    old = tmp_path / "old"
    shutil.copytree(tiny_en_artifact, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["export_revision"] = 3
    (old / "manifest.json").write_text(json.dumps(manifest))
    fails_cleanly("transcribe", shared_data / "audio" / "jfk.flac", "--artifact", old,
                  contains="re-export it")
    r = run_toolkit("serve", "--artifact", old, "--port", free_port(), timeout=120)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "older toolkit" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
