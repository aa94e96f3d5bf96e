"""Whisper on the server: OpenAI's audio API, decoded by ``toolkit transcribe``'s loop.

``POST /v1/audio/transcriptions`` and ``/v1/audio/translations``: multipart ``file``,
``model``, ``language``, ``prompt``, ``temperature``, ``response_format`` = json | text | srt |
vtt | verbose_json, ``timestamp_granularities[]`` = segment | word (with verbose_json, as
OpenAI's API: ``word`` adds the top-level ``words`` list, from the align graph; ``segments``
come back unless only ``word`` was asked for). A round of the model's batcher is one 30-s
window of every active request, encoded and decoded together (``longform.advance``): a short
clip joins a long recording at its next window.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ...core.errors import Cancelled, ToolkitError
from ...models.whisper.audio import N_FRAMES, SAMPLE_RATE, TooLong, load_audio, log_mel_long
from ...runtime.whisper.longform import LongFormJob, TranscribeOptions, advance
from ...runtime.whisper.subtitles import to_srt, to_vtt
from ..batching import QueueFull
from ..http import Http, error_response
from ..served import ServedModel
from ..service import AudioBudget
from ..uploads import UploadError, check_length, receive_upload

log = logging.getLogger("toolkit.serve")

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TRANSCRIBE = "/v1/audio/transcriptions"
TRANSLATE = "/v1/audio/translations"


class WhisperModel(ServedModel):
    family = "whisper"
    aliases = ("whisper-1",)
    routes = (TRANSCRIBE, TRANSLATE)

    def load(self) -> None:
        super().load()
        self.pipe.windows_per_batch(self.beam_size)   # a TensorRT profile check, early

    @property
    def beam_size(self) -> int:
        return getattr(self.options(), "beam_size", 5)

    @property
    def best_of(self) -> int:
        return getattr(self.options(), "best_of", 5)

    def check_word_timestamps(self) -> None:
        """A 400 when the served model cannot give word times (no align graph)."""
        try:
            self.pipe.check_word_timestamps()
        except ToolkitError as exc:
            err = ToolkitError(str(exc).replace("--word-timestamps", "timestamp_granularities"
                                                "[]=word"))
            err.status = 400
            raise err from None

    def transcribe_options(self, **fields) -> TranscribeOptions:
        options = TranscribeOptions(beam_size=self.beam_size, best_of=self.best_of, **fields)
        options.check()
        options.language = self.pipe.check_language(options.language, options.task)
        return options

    def read_audio(self, path: Path, watch) -> np.ndarray:
        """Decoded like any audio, as a stream: 415 for what is not audio, 400 for silent or
        corrupt, 413 past --max-audio-s; ``watch`` holds the audio budget and the client."""
        limit = self.service.settings.max_audio_s
        try:
            return load_audio(path, max_seconds=limit, untrusted=True, watch=watch)
        except TooLong:
            err = ToolkitError(f"the uploaded audio is longer than this server's limit of "
                               f"{limit:g} s (--max-audio-s); split it")
            err.status = 413
            raise err from None
        except (Cancelled, AudioBudget.Exceeded):
            raise
        except ToolkitError as exc:
            if "cannot decode" in str(exc):     # (the decoder's own words name our path)
                err = ToolkitError("the uploaded file cannot be decoded as audio; send WAV, "
                                   "FLAC, MP3, OGG, M4A or another FFmpeg-readable format")
                err.status = 415
            else:
                err = ToolkitError(str(exc).replace(f"audio file {path} ", "the uploaded file ")
                                   .replace(str(path), "the uploaded file"))
                err.status = 400
            raise err from None

    def job(self, audio: np.ndarray, options: TranscribeOptions) -> LongFormJob:
        mel = log_mel_long(audio, self.pipe.n_mels)
        return LongFormJob.start(self.pipe, mel, mel.shape[1] - N_FRAMES,
                                 len(audio) / SAMPLE_RATE, replace(options))

    def run_round(self, jobs: list[LongFormJob]) -> None:
        s = self.service.settings
        advance(self.pipe, jobs, self.pipe.batch_capacity(self.beam_size, s.max_batch))

    async def transcribe(self, audio: np.ndarray, options: TranscribeOptions):
        """An awaitable of the ``LongFormResult`` (raises ``QueueFull`` at once)."""
        job = await asyncio.to_thread(self.job, audio, options)
        return self.service.submit(self, job, lambda j: j.result)

    @classmethod
    def router(cls, http: Http) -> APIRouter:
        router = APIRouter()

        @router.post(TRANSCRIBE)
        async def transcriptions(request: Request):
            return await http.guarded(request, TRANSCRIBE,
                                      lambda: _audio(http, request, "transcribe"))

        @router.post(TRANSLATE)
        async def translations(request: Request):
            return await http.guarded(request, TRANSLATE,
                                      lambda: _audio(http, request, "translate"))

        return router


async def _receive(http: Http, request: Request):
    """The upload, streamed into the server's private directory (408 when it trickles)."""
    service = http.service
    check_length(request.headers.get("content-length"), service.max_upload_bytes)
    try:    # a client that trickles its body in does not hold a handler forever
        return await asyncio.wait_for(
            receive_upload(request.stream(), request.headers.get("content-type"),
                           service.max_upload_bytes, service.upload_dir), service.timeout_s)
    except asyncio.TimeoutError:
        raise UploadError(408, f"the upload took longer than {service.timeout_s:g} s "
                               "(--timeout-s); send it again") from None


async def _decode(request: Request, model: WhisperModel, path: Path, reservation):
    """The audio decoded in a worker thread, which stops between blocks when the client goes
    away or the server's audio budget is spent."""
    gone = threading.Event()

    def watch(seconds: float) -> None:
        if gone.is_set():
            raise Cancelled("the client went away")
        reservation.grow(seconds)

    async def watch_client():
        while True:
            if await request.is_disconnected():
                gone.set()
                return
            await asyncio.sleep(0.25)

    watcher = asyncio.ensure_future(watch_client())
    try:
        return await run_in_threadpool(model.read_audio, path, watch)
    except Cancelled:
        raise ClientDisconnect from None
    finally:
        watcher.cancel()


async def _audio(http: Http, request: Request, task: str) -> Response:
    refusal = http.refused(request)
    if refusal is not None:
        return refusal
    service = http.service
    upload, reservation = None, service.audio.reserve()
    try:
        try:
            upload = await _receive(http, request)
            fields = upload.fields
            fmt = fields.get("response_format") or "json"
            if fmt not in RESPONSE_FORMATS:
                raise UploadError(400, f"response_format {fmt!r} is not one of "
                                       f"{', '.join(RESPONSE_FORMATS)}")
            granularity = _granularities(upload, fmt)
            model = service.pick("whisper", fields.get("model"))
            options = _options(model, fields, task)
            if "word" in granularity:
                options.word_timestamps = True
                model.check_word_timestamps()
            audio = await _decode(request, model, upload.file, reservation)
        except UploadError as exc:
            return error_response(exc.status, exc.message, exc.headers)
        except AudioBudget.Exceeded as exc:
            return error_response(429, str(exc), {"Retry-After": str(service.retry_after())})
        except ToolkitError as exc:
            return error_response(getattr(exc, "status", 400), str(exc))
        finally:
            if upload is not None:
                upload.discard()
        return await _transcribed(http, request, model, audio, options, fmt, task,
                                  granularity)
    finally:
        reservation.release()


async def _transcribed(http: Http, request: Request, model: WhisperModel, audio, options,  # noqa: PLR0913
                       fmt: str, task: str, granularity: set[str] = frozenset()) -> Response:
    try:
        result = await http.wait(request, await model.transcribe(audio, options))
    except QueueFull as exc:
        return http.queue_full(exc)
    except asyncio.TimeoutError:
        return error_response(504, f"the transcription took longer than the server's "
                                   f"{http.service.timeout_s:g} s limit (--timeout-s); send "
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
    seconds = len(audio) / SAMPLE_RATE
    http.metrics.audio.labels(TRANSLATE if task == "translate" else TRANSCRIBE).inc(seconds)
    return _format(result, fmt, task, seconds, granularity)


GRANULARITIES = ("segment", "word")


def _granularities(upload, fmt: str) -> set[str]:
    """``timestamp_granularities[]`` (repeatable; OpenAI's SDKs send the brackets, curl users
    often do not): a set of segment / word, or a 400 as OpenAI's API answers."""
    asked = {v.strip() for k, vs in upload.repeated.items()
             if k.startswith("timestamp_granularities") for v in vs if v.strip()}
    bad = sorted(asked - set(GRANULARITIES))
    if bad:
        raise UploadError(400, f"timestamp_granularities {bad[0]!r} is not one of segment, word")
    if asked and fmt != "verbose_json":
        raise UploadError(400, "timestamp_granularities needs response_format=verbose_json "
                               f"(got {fmt}); ask for verbose_json, or leave them out")
    return asked


def _options(model: WhisperModel, fields: dict, task: str) -> TranscribeOptions:
    """The request's form fields as decoding options (the server's defaults otherwise)."""
    temperature = fields.get("temperature")
    try:
        t = float(temperature) if temperature not in (None, "") else 0.0
    except ValueError:
        raise UploadError(400, f"temperature must be a number from 0 to 1 (got "
                               f"{temperature!r})") from None
    if not 0 <= t <= 1:                       # (NaN fails this too)
        raise UploadError(400, f"temperature must be from 0 to 1 (got {t:g})")
    language = (fields.get("language") or "").strip().lower() or None
    prompt = (fields.get("prompt") or "").strip() or None
    return model.transcribe_options(language=language, task=task, initial_prompt=prompt,
                                    temperature=t)


def _format(result, fmt: str, task: str, duration: float,
            granularity: set[str] = frozenset()) -> Response:
    segments = [s.as_dict() for s in result.segments]
    words = [{"word": w["word"], "start": w["start"], "end": w["end"]}
             for s in segments for w in s.pop("words", None) or []]
    if fmt == "json":
        return JSONResponse({"text": result.text})
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt({"segments": segments}))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt({"segments": segments}), media_type="text/vtt")
    body = {"task": task, "language": result.language, "duration": round(duration, 3),
            "text": result.text}
    if "word" in granularity:
        body["words"] = words
    if "segment" in granularity or "word" not in granularity:
        body["segments"] = segments
    return JSONResponse(body)


SERVED = WhisperModel
