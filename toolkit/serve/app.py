"""The OpenAI-compatible HTTP API, on FastAPI (``toolkit serve``; the Ray Serve replicas mount
the same app).

Routes: ``POST /v1/audio/transcriptions`` and ``/v1/audio/translations`` (multipart: file,
model, language, prompt, response_format = json | text | srt | vtt | verbose_json,
temperature), ``POST /v1/audio/speech`` (Grad-TTS; JSON: input, voice, response_format wav,
speed), ``GET /health`` (200 once the models are loaded, 503 before) and ``GET /metrics``
(Prometheus). Errors are OpenAI's shape, ``{"error": {"message", "type", "code"}}``, with a
one-line message that names the problem and the fix.

The routes talk to a ``Service`` (``service.py``): the models and how requests reach them —
the local dynamic batcher, or Ray Serve's ``@serve.batch``.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import json
import logging
import time
from contextlib import asynccontextmanager

import soundfile as sf
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ..core.errors import ToolkitError
from ..runtime.whisper.longform import fallback_temperatures
from ..runtime.whisper.subtitles import to_srt, to_vtt
from .batching import QueueFull
from .metrics import Metrics
from .uploads import UploadError, check_length, receive_upload

log = logging.getLogger("toolkit.serve")

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TRANSCRIBE = "/v1/audio/transcriptions"
TRANSLATE = "/v1/audio/translations"
SPEECH = "/v1/audio/speech"
MAX_SPEECH_BODY = 64 * 1024


def error_response(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    kind = ("invalid_request_error" if status < 500 else "server_error")
    if status == 401:
        kind = "authentication_error"
    elif status == 429:
        kind = "rate_limit_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": None,
                                   "code": status}}, status_code=status, headers=headers)


def create_app(service, *, api_key: str | None = None, manage: bool = True) -> FastAPI:
    """The app over ``service``; ``manage``: the app starts the service (its models load in
    the background) and stops it with the server (Ray replicas manage their own)."""
    metrics: Metrics = service.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage:
            service.start()
        try:
            yield
        finally:
            if manage:
                service.stop()

    app = FastAPI(title="toolkit", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.service = service

    def authorized(request: Request) -> bool:
        if not api_key:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                                  api_key.encode())

    def denied() -> JSONResponse:
        return error_response(401, "missing or wrong API key: send 'Authorization: Bearer "
                                   "<key>' with the key the server was started with",
                              {"WWW-Authenticate": "Bearer"})

    def answered(route: str, response: Response, t0: float, request: Request) -> Response:
        rid = request.headers.get("x-client-request-id")
        if rid and len(rid) <= 128 and rid.isprintable():
            response.headers["x-client-request-id"] = rid   # echoed: clients match answers
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - t0)
        if response.status_code >= 400:
            metrics.errors.labels(route, str(response.status_code)).inc()
        return response

    @app.get("/health")
    async def health():
        if service.failed:
            return error_response(503, "the models failed to load; the reason is in the "
                                       "server's log")
        if not service.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "models": service.describe()}

    @app.get("/metrics")
    async def prometheus(request: Request):
        if not authorized(request):
            return denied()
        service.update_gauges()
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models(request: Request):
        if not authorized(request):
            return denied()
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "toolkit"}
                                           for name in service.model_names()]}

    def busy() -> JSONResponse:
        retry = service.retry_after()
        return error_response(429, f"the server is busy ({service.admitted} requests in "
                                   f"progress); retry after {retry} s",
                              {"Retry-After": str(retry)})

    def queue_full(exc: QueueFull) -> JSONResponse:
        return error_response(429, f"the server is busy ({exc.depth} requests waiting); "
                                   f"retry after {exc.retry_after} s",
                              {"Retry-After": str(exc.retry_after)})

    async def guarded(request: Request, route: str, handler) -> Response:
        """``handler()`` admitted (before its body is read, decoded or written anywhere),
        counted in flight, and answered 499 if its client goes away."""
        t0 = time.perf_counter()
        if not service.admit():
            return answered(route, busy(), t0, request)
        metrics.inflight.inc()
        try:
            return answered(route, await handler(), t0, request)
        except ClientDisconnect:
            metrics.requests.labels(route, "499").inc()
            metrics.errors.labels(route, "disconnect").inc()
            return Response(status_code=499)
        finally:
            metrics.inflight.dec()
            service.release()

    def refused(request: Request, pipe, missing: str) -> Response | None:
        """The answer to a request that cannot be served yet or here, if any."""
        if not authorized(request):
            return denied()
        if not service.ready:
            return error_response(503, "the models are still loading; retry when GET /health "
                                       "answers 200", {"Retry-After": "5"})
        if pipe is None:
            return error_response(404, missing)
        return None

    async def _audio(request: Request, task: str) -> Response:
        refusal = refused(request, service.whisper, "no Whisper model is served here; start "
                          "the server with --artifact/--checkpoint of a Whisper model")
        if refusal is not None:
            return refusal
        upload = None
        try:
            check_length(request.headers.get("content-length"), service.max_upload_bytes)
            try:    # a client that trickles its body in does not hold a handler forever
                upload = await asyncio.wait_for(
                    receive_upload(request.stream(), request.headers.get("content-type"),
                                   service.max_upload_bytes, service.upload_dir),
                    service.timeout_s)
            except asyncio.TimeoutError:
                raise UploadError(408, f"the upload took longer than {service.timeout_s:g} s "
                                       "(--timeout-s); send it again") from None
            fields = upload.fields
            fmt = fields.get("response_format") or "json"
            if fmt not in RESPONSE_FORMATS:
                raise UploadError(400, f"response_format {fmt!r} is not one of "
                                       f"{', '.join(RESPONSE_FORMATS)}")
            granularity = {v for k, vs in upload.repeated.items()
                           if k.startswith("timestamp_granularities") for v in vs}
            if "word" in granularity:
                raise UploadError(400, "word timestamps are not supported; use "
                                       "timestamp_granularities[]=segment")
            service.check_model(fields.get("model"), "whisper")
            options = _options(service, fields, task)
            audio = await run_in_threadpool(service.read_audio, upload.file)
        except UploadError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except ToolkitError as exc:
            return error_response(getattr(exc, "status", 400), str(exc))
        finally:
            if upload is not None:
                upload.discard()
        try:
            result = await _wait(request, await service.transcribe(audio, options))
        except QueueFull as exc:
            return queue_full(exc)
        except asyncio.TimeoutError:
            return error_response(504, f"the transcription took longer than the server's "
                                       f"{service.timeout_s:g} s limit (--timeout-s); send "
                                       "shorter audio")
        except (ClientDisconnect, asyncio.CancelledError):
            raise
        except ToolkitError as exc:              # the model failed on valid input (NaN …)
            log.error("transcription failed: %s", exc)
            return error_response(500, str(exc))
        except Exception:                        # noqa: BLE001 — logged, not shown
            log.exception("transcription failed")
            return error_response(500, "transcription failed on the server; the details are "
                                       "in its log")
        metrics.audio.labels(TRANSLATE if task == "translate" else TRANSCRIBE).inc(
            len(audio) / 16000)
        return _format(result, fmt, task, len(audio) / 16000)

    async def _wait(request: Request, future):
        """The result, or a timeout; a client that disconnects cancels its work."""
        waiter = asyncio.ensure_future(future)
        deadline = time.perf_counter() + service.timeout_s
        try:
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise asyncio.TimeoutError
                done, _ = await asyncio.wait({waiter}, timeout=min(left, 0.5))
                if done:
                    return waiter.result()
                if await request.is_disconnected():
                    raise ClientDisconnect
        finally:
            if not waiter.done():
                waiter.cancel()

    @app.post(TRANSCRIBE)
    async def transcriptions(request: Request):
        return await guarded(request, TRANSCRIBE, lambda: _audio(request, "transcribe"))

    @app.post(TRANSLATE)
    async def translations(request: Request):
        return await guarded(request, TRANSLATE, lambda: _audio(request, "translate"))

    @app.post(SPEECH)
    async def speech(request: Request):
        return await guarded(request, SPEECH, lambda: _speech(request))

    async def _speech(request: Request) -> Response:
        refusal = refused(request, service.tts, "no Grad-TTS model is served here; start the "
                          "server with --tts-artifact/--tts-checkpoint/--tts-preset")
        if refusal is not None:
            return refusal
        try:
            body = json.loads(await _small_body(request, MAX_SPEECH_BODY))
        except UploadError as exc:
            return error_response(exc.status, exc.message)
        except ValueError:
            return error_response(400, "the body is not JSON; send {\"input\": \"text\", "
                                       "\"voice\": \"default\"}")
        if not isinstance(body, dict) or not isinstance(body.get("input"), str):
            return error_response(400, "the JSON body needs 'input': the text to speak")
        fmt = body.get("response_format") or "wav"
        if fmt != "wav":
            return error_response(400, f"response_format {fmt!r} is not available; this server "
                                       "answers wav")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            return error_response(400, f"speed must be a number from 0.25 to 4.0 (got {speed!r})")
        try:
            service.check_model(body.get("model"), "tts")
            service.check_text(body["input"])
            wav, rate = await _wait(request, await service.speak(body["input"], 1.0 / speed))
        except QueueFull as exc:
            return queue_full(exc)
        except asyncio.TimeoutError:
            return error_response(504, f"synthesis took longer than the server's "
                                       f"{service.timeout_s:g} s limit (--timeout-s)")
        except (ClientDisconnect, asyncio.CancelledError):
            raise
        except ToolkitError as exc:
            return error_response(getattr(exc, "status", 400), str(exc))
        except Exception:                        # noqa: BLE001 — logged, not shown
            log.exception("synthesis failed")
            return error_response(500, "synthesis failed on the server; the details are in "
                                       "its log")
        metrics.audio.labels(SPEECH).inc(len(wav) / rate)
        buf = io.BytesIO()
        sf.write(buf, wav, rate, format="WAV", subtype="PCM_16")
        return Response(buf.getvalue(), media_type="audio/wav")

    return app


async def _small_body(request: Request, limit: int) -> bytes:
    """The whole body of a JSON request, refused (413) past ``limit`` bytes."""
    too_big = UploadError(413, f"the request body is over {limit // 1024} KiB; one speech "
                               "request takes one utterance of text")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


def _options(service, fields: dict, task: str):
    """The request's form fields as decoding options (the server's defaults otherwise)."""
    temperature = fields.get("temperature")
    try:
        t = float(temperature) if temperature not in (None, "") else 0.0
    except ValueError:
        raise UploadError(400, f"temperature must be a number from 0 to 1 (got "
                               f"{temperature!r})") from None
    if not 0 <= t <= 1:
        raise UploadError(400, f"temperature must be from 0 to 1 (got {t:g})")
    language = (fields.get("language") or "").strip().lower() or None
    prompt = (fields.get("prompt") or "").strip() or None
    return service.options(language=language, task=task, initial_prompt=prompt,
                           temperatures=fallback_temperatures(t, 0.2))


def _format(result, fmt: str, task: str, duration: float) -> Response:
    segments = [s.as_dict() for s in result.segments]
    if fmt == "json":
        return JSONResponse({"text": result.text})
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt({"segments": segments}))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt({"segments": segments}), media_type="text/vtt")
    return JSONResponse({"task": task, "language": result.language,
                         "duration": round(duration, 3), "text": result.text,
                         "segments": segments})

