"""Grad-TTS on the server: OpenAI's ``POST /v1/audio/speech`` (JSON: ``input``, ``voice``,
``response_format`` wav, ``speed`` → 1 / length scale), one utterance per round."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import numpy as np
import soundfile as sf
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from ...core.errors import ToolkitError
from ...models.gradtts.constants import AUDIO
from ...models.gradtts.sampler import MAX_TEXT_CHARS
from ...models.gradtts.text import text_to_ids
from ...models.gradtts.vocoder import griffin_lim
from ..batching import QueueFull
from ..http import Http, error_response, small_body
from ..served import ServedModel
from ..uploads import UploadError

log = logging.getLogger("toolkit.serve")

SPEECH = "/v1/audio/speech"
MAX_SPEECH_BODY = 64 * 1024


class TTSJob:
    def __init__(self, text: str, length_scale: float, steps: int):
        self.text, self.length_scale, self.steps = text, length_scale, steps
        self.done = False
        self.cancelled = False
        self.wav: np.ndarray | None = None

    def run(self, pipe) -> None:
        syn = pipe.synthesize(self.text, steps=self.steps, length_scale=self.length_scale)
        if not np.isfinite(syn.mel).all():
            raise ToolkitError(f"the acoustic model ({pipe.backend} {pipe.precision}) produced "
                               "NaN or infinite values for this text")
        self.wav = np.clip(griffin_lim(syn.mel), -1.0, 1.0)
        self.done = True


class TTSModel(ServedModel):
    family = "gradtts"
    aliases = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
    routes = (SPEECH,)
    max_batch = 1

    @property
    def steps(self) -> int:
        return getattr(self.options(), "tts_steps", 10)

    def check_text(self, text: str) -> None:
        if len(text) > MAX_TEXT_CHARS:
            raise ToolkitError(f"the input has {len(text)} characters; one request takes at "
                               f"most {MAX_TEXT_CHARS} — split it into sentences")
        text_to_ids(text)

    def run_round(self, jobs: list[TTSJob]) -> None:
        for job in jobs:
            if not job.cancelled:
                job.run(self.pipe)

    async def speak(self, text: str, length_scale: float):
        job = TTSJob(text, length_scale, self.steps)
        return self.service.submit(self, job, lambda j: (j.wav, AUDIO["sample_rate"]))

    @classmethod
    def router(cls, http: Http) -> APIRouter:
        router = APIRouter()

        @router.post(SPEECH)
        async def speech(request: Request):
            return await http.guarded(request, SPEECH, lambda: _speech(http, request))

        return router


def _request(body: dict) -> tuple[str, float]:
    """(text, length scale) of a speech request, or an ``UploadError``."""
    if not isinstance(body, dict) or not isinstance(body.get("input"), str):
        raise UploadError(400, "the JSON body needs 'input': the text to speak")
    fmt = body.get("response_format") or "wav"
    if fmt != "wav":
        raise UploadError(400, f"response_format {fmt!r} is not available; this server "
                               "answers wav")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4:
        raise UploadError(400, f"speed must be a number from 0.25 to 4.0 (got {speed!r})")
    return body["input"], 1.0 / speed


async def _speech(http: Http, request: Request) -> Response:
    refusal = http.refused(request)
    if refusal is not None:
        return refusal
    try:
        body = json.loads(await small_body(request, MAX_SPEECH_BODY, "one speech request "
                                                                     "takes one utterance"))
        text, length_scale = _request(body)
        model = http.service.pick("gradtts", body.get("model"))
        model.check_text(text)
        wav, rate = await http.wait(request, await model.speak(text, length_scale))
    except UploadError as exc:
        return error_response(exc.status, exc.message)
    except ValueError:
        return error_response(400, "the body is not JSON; send {\"input\": \"text\", "
                                   "\"voice\": \"default\"}")
    except QueueFull as exc:
        return http.queue_full(exc)
    except asyncio.TimeoutError:
        return error_response(504, f"synthesis took longer than the server's "
                                   f"{http.service.timeout_s:g} s limit (--timeout-s)")
    except (ClientDisconnect, asyncio.CancelledError):
        raise
    except ToolkitError as exc:
        return error_response(getattr(exc, "status", 400), str(exc))
    except Exception:                        # noqa: BLE001 — logged, not shown
        log.exception("synthesis failed")
        return error_response(500, "synthesis failed on the server; the details are in "
                                   "its log")
    http.metrics.audio.labels(SPEECH).inc(len(wav) / rate)
    buf = io.BytesIO()
    sf.write(buf, wav, rate, format="WAV", subtype="PCM_16")
    return Response(buf.getvalue(), media_type="audio/wav")


SERVED = TTSModel
