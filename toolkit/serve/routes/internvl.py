"""InternVL on the server: OpenAI's ``POST /v1/chat/completions`` with image content parts.

A request is one user turn holding **one image** as an ``image_url`` content part whose ``url``
is a ``data:image/…;base64,…`` URL, and optionally text parts (the question; default InternVL's
caption prompt). Remote URLs (``http://``, ``https://``, anything but ``data:``) are refused
with a 400: the server fetches nothing on a client's behalf. The encoded image is capped (the
server's ``--max-upload-mb``) before it is decoded, and decoded with the models layer's checks
(not an image, truncated, zero size, more than ``MAX_PIXELS`` pixels: a decompression bomb,
checked from the header before any pixel is decoded); grayscale, CMYK and alpha images are
converted to RGB as ``toolkit caption`` does. ``max_tokens`` (or ``max_completion_tokens``)
1 … the model's limit (default 30, InternVL's caption evaluation); decoding is greedy and
deterministic (``temperature``/``top_p`` are not used; ``n`` must be 1, ``stream`` is refused).
The answer is OpenAI's ``chat.completion``: ``choices[0].message.content``, ``finish_reason``
(``stop`` / ``length``), ``usage`` (prompt tokens with the image tokens, completion tokens).

Requests waiting together are one round of the server's batcher; within a round the images are
captioned one after another (prompts differ with each image's tiles; the pipeline has no
left-padded batch yet), on the pipeline's one set of sessions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from ...core.errors import ToolkitError
from ...models.internvl.image import open_image
from ...models.internvl.prompt import CAPTION_PROMPT
from ..batching import QueueFull
from ..http import Http, error_response, small_body
from ..served import ServedModel
from ..uploads import UploadError

log = logging.getLogger("toolkit.serve")

CHAT = "/v1/chat/completions"
MAX_PIXELS = 16_777_216         # 4096 × 4096: a served image (the CLI allows Pillow's 89 M)
MAX_QUESTION_CHARS = 2000
DEFAULT_MAX_TOKENS = 30         # InternVL's caption evaluation
MIN_NEW_TOKENS = 8


class ChatJob:
    def __init__(self, image, question: str, max_tokens: int):
        self.image, self.question, self.max_tokens = image, question, max_tokens
        self.done = False
        self.cancelled = False
        self.caption = None
        self.prompt_tokens = 0


class InternVLModel(ServedModel):
    family = "internvl"
    routes = (CHAT,)

    def run_round(self, jobs: list[ChatJob]) -> None:
        for job in jobs:
            if job.cancelled:
                continue
            c = self.pipe.caption_one(job.image, beam_size=1, max_new_tokens=job.max_tokens,
                                      min_new_tokens=min(MIN_NEW_TOKENS, job.max_tokens),
                                      question=job.question)
            job.caption = c
            job.prompt_tokens = len(self.pipe.prompt_ids(c.tiles, job.question))
            job.image = None
            job.done = True

    @classmethod
    def router(cls, http: Http) -> APIRouter:
        router = APIRouter()

        @router.post(CHAT)
        async def chat(request: Request):
            return await http.guarded(request, CHAT, lambda: _chat(http, request))

        return router


# -- the request ------------------------------------------------------------------------------

def _parts(content) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise UploadError(400, "a message's content must be a string or a list of content "
                               "parts ({\"type\": \"text\"} / {\"type\": \"image_url\"})")
    return content


def _question_and_url(messages) -> tuple[str, str]:
    """(the question, the image's URL) of a request's messages: one user turn, one image."""
    if not isinstance(messages, list) or not messages:
        raise UploadError(400, "'messages' must be a non-empty list of chat messages")
    texts, urls = [], []
    for m in messages:
        if not isinstance(m, dict):
            raise UploadError(400, "each message must be an object with role and content")
        role = m.get("role")
        if role != "user":
            raise UploadError(400, f"a {role!r} message is not supported: this server answers "
                                   "one user message (an image and an optional question) with "
                                   "the model's own system prompt")
        for p in _parts(m.get("content")):
            kind = p.get("type")
            if kind == "text":
                if not isinstance(p.get("text"), str):
                    raise UploadError(400, "a text part needs 'text': a string")
                texts.append(p["text"])
            elif kind == "image_url":
                iu = p.get("image_url")
                url = iu.get("url") if isinstance(iu, dict) else iu
                if not isinstance(url, str):
                    raise UploadError(400, "an image_url part needs 'image_url': {\"url\": "
                                           "\"data:image/jpeg;base64,…\"}")
                urls.append(url)
            else:
                raise UploadError(400, f"content part type {kind!r} is not supported (text, "
                                       "image_url)")
    if len(urls) != 1:
        raise UploadError(400, f"the messages hold {len(urls)} images; send exactly one image "
                               "per request (an image_url part with a data: URL)")
    question = " ".join(t.strip() for t in texts if t.strip()) or CAPTION_PROMPT
    if len(question) > MAX_QUESTION_CHARS:
        raise UploadError(400, f"the text is {len(question)} characters; at most "
                               f"{MAX_QUESTION_CHARS}")
    return question, urls[0]


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/…;base64,…`` URL; a remote URL is refused, never fetched."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        raise UploadError(400, "remote image URLs are not fetched (the server fetches nothing "
                               "on a client's behalf); send the image inline as a data: URL "
                               "(data:image/jpeg;base64,…)")
    if scheme != "data":
        raise UploadError(400, "the image URL must be a data: URL (data:image/jpeg;base64,…)")
    head, sep, payload = url[5:].partition(",")
    if not sep:
        raise UploadError(400, "the data: URL has no ',' before its data")
    params = [s.strip().lower() for s in head.split(";")]
    if not params[0].startswith("image/"):
        raise UploadError(400, f"the data: URL's type is {params[0] or 'missing'!r}; send "
                               "an image (data:image/jpeg;base64,…)")
    if "base64" not in params[1:]:
        raise UploadError(400, "the data: URL must be base64 (data:image/…;base64,…)")
    if len(payload) * 3 // 4 > max_bytes:
        raise UploadError(413, f"the image is over {max_bytes / 1e6:g} MB (the server's "
                               "--max-upload-mb)")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise UploadError(400, "the data: URL's base64 is not valid") from None


def _max_tokens(body: dict, limit: int) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return min(DEFAULT_MAX_TOKENS, limit)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise UploadError(400, f"max_tokens must be a whole number from 1 to {limit} (got "
                               f"{value!r})")
    return value


def _check(body: dict) -> None:
    if body.get("stream"):
        raise UploadError(400, "stream is not supported; leave it out (one answer per request)")
    n = body.get("n", 1)
    if n not in (1, None):
        raise UploadError(400, f"n must be 1 (got {n!r}): decoding is deterministic")


async def _chat(http: Http, request: Request):
    refusal = http.refused(request)
    if refusal is not None:
        return refusal
    limit = http.service.max_upload_bytes
    try:
        raw = await small_body(request, limit * 4 // 3 + 65536,
                               "send one image of at most --max-upload-mb")
        try:
            body = json.loads(raw)
        except ValueError:
            raise UploadError(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise UploadError(400, "the JSON body must be an object with model and messages")
        _check(body)
        model = http.service.pick("internvl", body.get("model"))
        max_tokens = _max_tokens(body, model.pipe.max_new)
        question, url = _question_and_url(body.get("messages"))
        data = decode_data_url(url, limit)
        image = await asyncio.to_thread(open_image, data, MAX_PIXELS, "the image")
        job = ChatJob(image, question, max_tokens)
        done = await http.wait(request, http.service.submit(model, job, lambda j: j))
    except UploadError as exc:
        return error_response(exc.status, exc.message)
    except QueueFull as exc:
        return http.queue_full(exc)
    except asyncio.TimeoutError:
        return error_response(504, f"captioning took longer than the server's "
                                   f"{http.service.timeout_s:g} s limit (--timeout-s)")
    except (ClientDisconnect, asyncio.CancelledError):
        raise
    except ToolkitError as exc:
        return error_response(getattr(exc, "status", 400), str(exc))
    except Exception:                        # noqa: BLE001 — logged, not shown
        log.exception("captioning failed")
        return error_response(500, "captioning failed on the server; the details are in its "
                                   "log")
    c = done.caption
    n = len(c.tokens)
    return JSONResponse({
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": model.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text},
                     "finish_reason": "length" if n >= done.max_tokens else "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": n,
                  "total_tokens": done.prompt_tokens + n}})


SERVED = InternVLModel
