"""The models behind the HTTP API and how requests reach them.

``Service`` loads the pipelines (in the background: ``/health`` says 503 until they are in),
checks a request's options against the model before anything is queued, and hands the work
to ``submit``: a ``Batcher`` per pipeline (one worker thread, continuous batching). In a Ray
Serve replica (``ray_app.py``) requests reach the same batcher through ``@serve.batch``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import ToolkitError
from ..models.gradtts.audio import griffin_lim
from ..models.gradtts.model import AUDIO
from ..models.gradtts.sampler import MAX_TEXT_CHARS
from ..models.gradtts.text import text_to_ids
from ..models.whisper.audio import N_FRAMES, SAMPLE_RATE, TooLong, load_audio, log_mel_long
from ..runtime.gradtts import open_pipeline as open_tts
from ..runtime.whisper import TranscribeOptions
from ..runtime.whisper import open_pipeline as open_whisper
from ..runtime.whisper.longform import LongFormJob, advance
from .batching import Batcher
from .metrics import Metrics

log = logging.getLogger("toolkit.serve")

ALIASES = {"whisper": ("whisper-1",), "tts": ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")}


@dataclass
class ModelSource:
    """Where a model comes from: an artifact, a checkpoint, a preset (or the default)."""

    artifact: str | None = None
    checkpoint: str | None = None
    preset: str | None = None
    backend: str = "ort"
    threads: int | None = None       # intra-op threads (default: the machine's)

    def name(self, default: str) -> str:
        for v in (self.artifact, self.checkpoint):
            if v:
                return Path(v).name
        return self.preset or default


@dataclass
class Settings:
    whisper: ModelSource | None = field(default_factory=ModelSource)
    tts: ModelSource | None = None
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 128
    max_upload_mb: float = 25.0
    max_audio_s: float = 3 * 3600.0  # longest recording (checked before and while decoding)
    timeout_s: float = 300.0
    beam_size: int = 5               # the decoding of `toolkit transcribe` (its defaults)
    best_of: int = 5
    tts_steps: int = 10
    upload_root: str | None = None   # where the private upload directory is made


class TTSJob:
    def __init__(self, text: str, length_scale: float, steps: int):
        self.text, self.length_scale, self.steps = text, length_scale, steps
        self.done = False
        self.wav: np.ndarray | None = None

    def run(self, pipe) -> None:
        syn = pipe.synthesize(self.text, steps=self.steps, length_scale=self.length_scale)
        if not np.isfinite(syn.mel).all():
            raise ToolkitError(f"the acoustic model ({pipe.backend} {pipe.precision}) produced "
                               "NaN or infinite values for this text")
        self.wav = np.clip(griffin_lim(syn.mel), -1.0, 1.0)
        self.done = True


class Service:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.whisper = None
        self.tts = None
        self.whisper_name = settings.whisper.name("tiny.en") if settings.whisper else None
        self.tts_name = settings.tts.name("gradtts") if settings.tts else None
        self.ready = False
        self.failed: str | None = None
        self.timeout_s = settings.timeout_s
        self.max_upload_bytes = int(settings.max_upload_mb * 1e6)
        self.upload_dir: Path | None = None
        self._batchers: dict[str, Batcher] = {}
        self._loader: threading.Thread | None = None
        self.admitted = 0                # requests past the door: reading, decoding, queued…
        self.max_admitted = settings.max_queue + settings.max_batch

    # -- life ------------------------------------------------------------------------------
    def start(self, background: bool = True) -> None:
        """Make the private upload directory and load the models (in a thread: the HTTP
        port answers ``/health`` with 503 meanwhile)."""
        if self.upload_dir is not None:
            return                        # started already
        self.upload_dir = Path(tempfile.mkdtemp(prefix="toolkit-serve-",
                                                dir=self.settings.upload_root))
        self.upload_dir.chmod(0o700)
        if background:
            self._loader = threading.Thread(target=self._load, name="load-models", daemon=True)
            self._loader.start()
        else:
            self._load()

    def _load(self) -> None:
        try:
            self.load_models()
            self.ready = True
        except ToolkitError as exc:
            self.failed = str(exc)
            log.error("the models failed to load: %s", exc)
        except Exception as exc:       # noqa: BLE001 — logged; the server stops with it
            self.failed = f"{type(exc).__name__}: {exc}"
            log.exception("the models failed to load")

    def load_models(self) -> None:
        s = self.settings
        if s.whisper is not None:
            w = s.whisper
            self.whisper = open_whisper(artifact=w.artifact, checkpoint=w.checkpoint,
                                        preset=w.preset, backend=w.backend, threads=w.threads)
            self.whisper.windows_per_batch(s.beam_size)   # a TensorRT profile check, early
            self._batchers["whisper"] = self.make_batcher("whisper", self._whisper_round)
        if s.tts is not None:
            t = s.tts
            self.tts = open_tts(artifact=t.artifact, checkpoint=t.checkpoint, preset=t.preset,
                                backend=t.backend, threads=t.threads)
            self._batchers["tts"] = self.make_batcher("tts", self._tts_round, max_batch=1)

    def make_batcher(self, name: str, run_round, max_batch: int | None = None) -> Batcher:
        s = self.settings
        return Batcher(name, run_round, max_batch or s.max_batch, s.max_wait_ms, s.max_queue,
                       on_round=self.metrics.on_round(name))

    def stop(self) -> None:
        running = False
        for b in self._batchers.values():
            if b is not None:
                running |= not b.close()
        if not running:       # a round still going holds the sessions: leave them to the exit
            for pipe in (self.whisper, self.tts):
                if pipe is not None:
                    pipe.close()
        self._batchers = {}
        self.whisper = self.tts = None
        if self.upload_dir is not None:
            shutil.rmtree(self.upload_dir, ignore_errors=True)

    # -- admission ---------------------------------------------------------------------------
    def admit(self) -> bool:
        """Whether one more request may come in: at most ``max_queue + max_batch`` are read,
        decoded, queued or decoded at once (the event loop is the only caller: no lock)."""
        if self.admitted >= self.max_admitted:
            return False
        self.admitted += 1
        return True

    def release(self) -> None:
        self.admitted -= 1

    def retry_after(self) -> int:
        busy = [b for b in self._batchers.values() if b is not None]
        return max([b.retry_after() for b in busy] or [1])

    # -- what the routes ask -----------------------------------------------------------------
    def model_names(self) -> list[str]:
        names = []
        if self.whisper_name:
            names += [self.whisper_name, *ALIASES["whisper"]]
        if self.tts_name:
            names += [self.tts_name, *ALIASES["tts"]]
        return names

    def describe(self) -> dict:
        out = {}
        for key, pipe, name in (("whisper", self.whisper, self.whisper_name),
                                ("tts", self.tts, self.tts_name)):
            if pipe is not None:
                out[key] = {"name": name, "backend": pipe.backend, "precision": pipe.precision,
                            "random_init": bool(pipe.random_init)}
        return out

    def check_model(self, model: str | None, kind: str) -> None:
        name = self.whisper_name if kind == "whisper" else self.tts_name
        if model in (None, "", name) or model in ALIASES[kind]:
            return
        err = ToolkitError(f"model {model!r} is not served here; this server serves {name} "
                           f"(also answers to {', '.join(ALIASES[kind])})")
        err.status = 404
        raise err

    def options(self, **fields) -> TranscribeOptions:
        s = self.settings
        options = TranscribeOptions(beam_size=s.beam_size, best_of=s.best_of, **fields)
        options.check()
        options.language = self.whisper.check_language(options.language, options.task)
        return options

    def read_audio(self, path: Path) -> np.ndarray:
        """Decoded like any audio: 415 for what is not audio, 400 for silent or corrupt."""
        try:
            return load_audio(path, max_seconds=self.settings.max_audio_s, untrusted=True)
        except TooLong:
            err = ToolkitError(f"the uploaded audio is longer than this server's limit of "
                               f"{self.settings.max_audio_s:g} s (--max-audio-s); split it")
            err.status = 413
            raise err from None
        except ToolkitError as exc:
            if "cannot decode" in str(exc):     # (the decoder's own words name our path)
                err = ToolkitError("the uploaded file cannot be decoded as audio; send WAV, "
                                   "FLAC, MP3, OGG, M4A or another FFmpeg-readable format")
                err.status = 415
            else:
                err = ToolkitError(str(exc).replace(str(path), "the uploaded file"))
                err.status = 400
            raise err from None

    def check_text(self, text: str) -> None:
        if len(text) > MAX_TEXT_CHARS:
            raise ToolkitError(f"the input has {len(text)} characters; one request takes at "
                               f"most {MAX_TEXT_CHARS} — split it into sentences")
        text_to_ids(text)

    def update_gauges(self) -> None:
        for name, b in self._batchers.items():
            if b is not None:
                self.metrics.queue.labels(name).set(b.depth)

    # -- the work --------------------------------------------------------------------------
    def whisper_job(self, audio: np.ndarray, options: TranscribeOptions) -> LongFormJob:
        mel = log_mel_long(audio, self.whisper.n_mels)
        return LongFormJob.start(self.whisper, mel, mel.shape[1] - N_FRAMES,
                                 len(audio) / SAMPLE_RATE, replace(options))

    def _whisper_round(self, jobs: list[LongFormJob]) -> None:
        advance(self.whisper, jobs, self.whisper.batch_capacity(self.settings.beam_size,
                                                                self.settings.max_batch))

    def _tts_round(self, jobs: list[TTSJob]) -> None:
        for job in jobs:
            job.run(self.tts)

    async def transcribe(self, audio: np.ndarray, options: TranscribeOptions):
        """An awaitable of the ``LongFormResult`` (raises ``QueueFull`` at once)."""
        job = await asyncio.to_thread(self.whisper_job, audio, options)
        return self.submit("whisper", job, lambda j: j.result)

    async def speak(self, text: str, length_scale: float):
        job = TTSJob(text, length_scale, self.settings.tts_steps)
        return self.submit("tts", job, lambda j: (j.wav, AUDIO["sample_rate"]))

    def submit(self, name: str, job, result: Callable):
        future = asyncio.wrap_future(self._batchers[name].submit(job))

        async def wait():
            return result(await future)
        return wait()
