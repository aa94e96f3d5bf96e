"""The chat-completions route on InternVL, called by the official ``openai`` client with an
image as a data: URL; remote URLs, bad base64, non-images and oversized images refused in
OpenAI's error shape."""

import base64
import io
import time

import openai
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from toolkit import registry
from toolkit.runtime.graphs import make_pipeline, open_artifact
from toolkit.runtime.internvl.pipeline import from_graphs
from toolkit.serve.app import create_app
from toolkit.serve.served import ModelSource
from toolkit.serve.service import Service, Settings


@pytest.fixture(scope="module")
def http(internvl_artifact):
    service = Service(Settings(models=[ModelSource(registry.get("internvl"),
                                                   artifact=str(internvl_artifact))],
                               max_upload_mb=1))
    with TestClient(create_app(service)) as c:
        for _ in range(600):
            if c.get("/health").status_code == 200:
                break
            time.sleep(0.1)
        yield c


@pytest.fixture(scope="module")
def client(http):
    """The openai client over the in-process app (TestClient is an httpx.Client)."""
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", max_retries=0,
                         http_client=http)


@pytest.fixture(scope="module")
def images(shared_data):
    return sorted((shared_data / "captions" / "test").glob("*.jpg"))[:2]


def data_url(path, mime="image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def image_message(url: str, text: str | None = None) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url}}]
    if text is not None:
        parts.insert(0, {"type": "text", "text": text})
    return [{"role": "user", "content": parts}]


def test_the_openai_client_gets_the_caption_of_toolkit_caption(client, images,
                                                               internvl_artifact):
    pipe = make_pipeline(open_artifact(internvl_artifact, "internvl", "ort"), from_graphs)
    want = [pipe.caption_one(p, beam_size=1) for p in images]
    short = pipe.caption_one(images[0], beam_size=1, max_new_tokens=5, min_new_tokens=5)
    pipe.close()
    for path, cap in zip(images, want):
        r = client.chat.completions.create(
            model="internvl-tiny-fp32",
            messages=image_message(data_url(path),
                                   "Provide a one-sentence caption for the provided image."))
        assert r.object == "chat.completion" and r.model == "internvl-tiny-fp32"
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].message.content == cap.text
        assert r.usage.completion_tokens == len(cap.tokens)
        assert r.usage.prompt_tokens > 64          # the image's 64 tokens are in the prompt
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    r = client.chat.completions.create(model="internvl-tiny-fp32", max_tokens=5,
                                       messages=image_message(data_url(images[0])))
    assert r.choices[0].message.content == short.text
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5


def test_a_png_with_alpha_is_converted(client, images):
    buf = io.BytesIO()
    Image.open(images[0]).convert("RGBA").save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    r = client.chat.completions.create(model="internvl-tiny-fp32", messages=image_message(url))
    assert r.choices[0].message.content.strip()


@pytest.mark.parametrize("url,message", [
    ("https://example.com/cat.jpg", "remote image URLs are not fetched"),
    ("http://127.0.0.1:1/cat.jpg", "remote image URLs are not fetched"),
    ("file:///etc/passwd", "must be a data: URL"),
    ("data:image/jpeg;base64,@@@not base64@@@", "base64 is not valid"),
    ("data:text/plain;base64,aGVsbG8=", "send an image"),
    ("data:image/jpeg;base64," + base64.b64encode(b"not an image at all").decode(),
     "not an image Pillow can read"),
])
def test_refusals_are_openai_errors(client, url, message):
    with pytest.raises(openai.BadRequestError, match=message):
        client.chat.completions.create(model="internvl-tiny-fp32", messages=image_message(url))


def test_limits_and_shape_errors(http, client, images):
    big = Image.new("RGB", (5000, 4000))              # 20 M pixels: over the served 16 M
    buf = io.BytesIO()
    big.save(buf, "PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    with pytest.raises(openai.BadRequestError, match="more than the limit of 16,777,216"):
        client.chat.completions.create(model="internvl-tiny-fp32", messages=image_message(url))
    huge = "data:image/jpeg;base64," + "A" * 1_380_000   # 1.03 MB decoded: over 1 MB
    r = http.post("/v1/chat/completions", json={"messages": image_message(huge)})
    assert r.status_code == 413 and "over 1 MB" in r.json()["error"]["message"]
    two = [{"role": "user", "content": image_message(data_url(images[0]))[0]["content"] * 2}]
    cases = [({"messages": two}, 400, "send exactly one image"),
             ({"messages": [{"role": "user", "content": "hello"}]}, 400, "hold 0 images"),
             ({"messages": image_message(data_url(images[0])), "max_tokens": 0}, 400,
              "max_tokens must be"),
             ({"messages": image_message(data_url(images[0])), "stream": True}, 400,
              "stream is not supported"),
             ({"messages": [{"role": "system", "content": "hi"}]}, 400, "'system' message"),
             ({"model": "gpt-4o", "messages": image_message(data_url(images[0]))}, 404,
              "not served here")]
    for body, status, message in cases:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == status, r.text
        err = r.json()["error"]
        assert message in err["message"] and "\n" not in err["message"]


def test_the_console_script_server_answers_the_openai_client(internvl_artifact, images,
                                                             tmp_path):
    """`toolkit serve --model internvl=ARTIFACT` on a real socket, the openai client over it."""
    import os
    import socket
    import subprocess

    import httpx

    from support.cli import SCRIPT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(SCRIPT), "serve", "--port", str(port), "--model",
                             f"internvl={internvl_artifact}"], cwd=tmp_path,
                            env={**os.environ, "TMPDIR": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        r = client.chat.completions.create(model=internvl_artifact.name,
                                           messages=image_message(data_url(images[0])))
        assert r.choices[0].message.content.strip() and r.usage.completion_tokens >= 8
        with pytest.raises(openai.BadRequestError, match="not fetched"):
            client.chat.completions.create(
                model=internvl_artifact.name,
                messages=image_message("https://example.com/cat.jpg"))
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    assert "POST" in out and "/v1/chat/completions" in out
