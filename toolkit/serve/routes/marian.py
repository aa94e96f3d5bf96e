"""Marian on the server: LibreTranslate's API, which its clients (argos, the
``libretranslate`` Python/JS packages, browser add-ons, LibreOffice) already call.

``POST /translate`` — JSON or form fields ``q`` (a string, or a list of strings), ``source``
(a language code, or ``auto``: the model's source language), ``target``, ``format`` (``text``;
``html`` is refused; the server's --api-key goes as a bearer token, LibreTranslate's
``api_key`` field is not read) → ``{"translatedText": "…"}`` (a list for a list ``q``).
``GET /languages`` → ``[{"code", "name", "targets"}]``. Errors are LibreTranslate's
``{"error": "…"}`` with its status codes. The sentences of every request waiting in a
round are translated together (one length-sorted batch loop), within the server's limits.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from ...core.errors import ToolkitError
from ..batching import QueueFull
from ..http import Http, small_body
from ..served import ServedModel
from ..uploads import UploadError

log = logging.getLogger("toolkit.serve")

TRANSLATE = "/translate"
LANGUAGES = "/languages"
MAX_BODY = 256 * 1024          # one request: 256 KiB of text
MAX_SENTENCES = 128            # entries of a list ``q``
NAMES = {"en": "English", "pt": "Portuguese", "de": "German", "es": "Spanish",
         "fr": "French", "it": "Italian"}


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class TranslateJob:
    def __init__(self, texts: list[str]):
        self.texts = texts
        self.cancelled = False
        self.done = False                     # the batcher resolves a job once it is done
        self.result: list[str] | None = None


class MarianModel(ServedModel):
    family = "marian"
    routes = (TRANSLATE, LANGUAGES)

    def check(self, texts: list[str]) -> None:
        for i, t in enumerate(texts):   # the pipeline's own rules, before queueing
            self.pipe.encode_text(t, "q" if len(texts) == 1 else f"q[{i}]")

    def run_round(self, jobs: list[TranslateJob]) -> None:
        live = [j for j in jobs if not j.cancelled]
        texts = [t for j in live for t in j.texts]
        if not texts:
            return
        res = self.pipe.translate(texts, batch_size=32)
        at = 0
        for j in live:
            j.result = [t.text for t in res.translations[at:at + len(j.texts)]]
            j.done = True
            at += len(j.texts)

    @classmethod
    def router(cls, http: Http) -> APIRouter:
        router = APIRouter()

        @router.post(TRANSLATE)
        async def translate(request: Request):
            return await http.guarded(request, TRANSLATE, lambda: _translate(http, request))

        @router.get(LANGUAGES)
        async def languages(request: Request):
            return _languages(http)

        return router


def _languages(http: Http) -> JSONResponse:
    targets: dict[str, set] = {}
    for m in http.service.served("marian"):
        src, tgt = m.pipe.pair
        targets.setdefault(src, set()).add(tgt)
    return JSONResponse([{"code": c, "name": NAMES.get(c, c), "targets": sorted(t)}
                         for c, t in sorted(targets.items())])


async def _fields(request: Request) -> dict:
    body = await small_body(request, MAX_BODY, "send at most 256 KiB of text per request")
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind == "application/json":
        try:
            doc = json.loads(body)
        except ValueError:
            raise UploadError(400, "the body is not JSON") from None
        if not isinstance(doc, dict):
            raise UploadError(400, "the JSON body must be an object with q, source, target")
        return doc
    if kind in ("application/x-www-form-urlencoded", ""):
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v if k == "q" and len(v) > 1 else v[0] for k, v in form.items()}
    raise UploadError(400, f"content type {kind} is not read here; send JSON or a form")


def _model_for(http: Http, source: str, target: str):
    served = http.service.served("marian")
    for m in served:
        src, tgt = m.pipe.pair
        if source in ("auto", src) and target == tgt:
            return m
    have = ", ".join(f"{m.pipe.pair[0]}→{m.pipe.pair[1]}" for m in served)
    raise UploadError(400, f"{source}→{target} is not served; this server translates {have}")


def _request(doc: dict) -> tuple[list[str], bool, str, str]:
    q = doc.get("q")
    many = isinstance(q, list)
    texts = q if many else [q]
    if q is None or not all(isinstance(t, str) for t in texts):
        raise UploadError(400, "Invalid request: missing q parameter (a string or a list)")
    if len(texts) > MAX_SENTENCES:
        raise UploadError(400, f"q holds {len(texts)} texts; one request takes at most "
                               f"{MAX_SENTENCES}")
    source, target = doc.get("source"), doc.get("target")
    if not isinstance(source, str) or not source:
        raise UploadError(400, "Invalid request: missing source parameter")
    if not isinstance(target, str) or not target:
        raise UploadError(400, "Invalid request: missing target parameter")
    if (doc.get("format") or "text") != "text":
        raise UploadError(400, f"format {doc.get('format')!r} is not supported; send plain "
                               "text (format: text)")
    return texts, many, source.lower(), target.lower()


async def _translate(http: Http, request: Request):
    refusal = http.refused(request)
    if refusal is not None:
        return refusal
    try:
        doc = await _fields(request)
        texts, many, source, target = _request(doc)
        model = _model_for(http, source, target)
        model.check(texts)
        job = TranslateJob(texts)
        out = await http.wait(request, http.service.submit(model, job, lambda j: j.result))
    except UploadError as exc:
        return error(exc.status, exc.message)
    except QueueFull as exc:
        return error(429, f"the server is busy ({exc.depth} requests waiting); retry after "
                          f"{exc.retry_after} s", {"Retry-After": str(exc.retry_after)})
    except asyncio.TimeoutError:
        return error(504, f"translation took longer than the server's "
                          f"{http.service.timeout_s:g} s limit (--timeout-s)")
    except (ClientDisconnect, asyncio.CancelledError):
        raise
    except ToolkitError as exc:
        return error(getattr(exc, "status", 400), str(exc))
    except Exception:                        # noqa: BLE001 — logged, not shown
        log.exception("translation failed")
        return error(500, "translation failed on the server; the details are in its log")
    return JSONResponse({"translatedText": out if many else out[0]})


SERVED = MarianModel
