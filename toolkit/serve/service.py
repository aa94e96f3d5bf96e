"""The models behind the HTTP API and how requests reach them.

``Service`` keeps a table of served models (``Settings.models``: one ``ModelSource`` each, of
any family that has serving routes), loads them in the background (``/health`` says 503 until
they are in), admits requests, and hands each model's work to its ``Batcher`` (one worker
thread per model, continuous batching) through ``submit``. In a Ray Serve replica
(``ray_app.py``) requests reach the same batchers through ``@serve.batch``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..core.errors import ToolkitError
from .batching import Batcher
from .metrics import Metrics
from .served import ModelSource, ServedModel, not_served

log = logging.getLogger("toolkit.serve")


class AudioBudget:
    """Seconds of decoded audio the requests in flight may hold together: a small compressed
    upload of hours decodes to hundreds of MB, so admission by count alone is not a memory
    bound. A request reserves as it decodes (``grow``) and gives it back when answered."""

    class Exceeded(ToolkitError):
        status = 429

    def __init__(self, limit_s: float):
        self.limit_s = limit_s
        self.held_s = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> "Reservation":
        return Reservation(self)


class Reservation:
    def __init__(self, budget: AudioBudget):
        self.budget, self.seconds = budget, 0.0

    def grow(self, seconds: float) -> None:
        b = self.budget
        with b._lock:
            more = seconds - self.seconds
            if b.held_s + more > b.limit_s:
                raise AudioBudget.Exceeded(
                    f"the server holds {b.held_s / 3600:.1f} h of decoded audio for other "
                    f"requests (its limit is {b.limit_s / 3600:.1f} h, --max-audio-total-s); "
                    "retry later")
            b.held_s += more
            self.seconds = seconds

    def release(self) -> None:
        with self.budget._lock:
            self.budget.held_s -= self.seconds
            self.seconds = 0.0


@dataclass
class Settings:
    models: list[ModelSource] = field(default_factory=list)
    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_queue: int = 128
    max_upload_mb: float = 25.0
    max_audio_s: float = 3 * 3600.0  # longest recording (checked before and while decoding)
    max_audio_total_s: float = 4 * 3600.0   # decoded audio held by all requests at once
    timeout_s: float = 300.0
    upload_root: str | None = None   # where the private upload directory is made
    options: dict = field(default_factory=dict)   # family → its serving options


class Service:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.models: dict[str, ServedModel] = {}
        for source in settings.models:
            model = source.family.served(source, self)
            if model.name in self.models:
                raise ToolkitError(f"two served models are named {model.name!r}; give one "
                                   "another name")
            self.models[model.name] = model
        families = [m.family for m in self.models.values()]
        for m in self.models.values():   # the only model of its family: labelled by the family
            if families.count(m.family) > 1:
                m.label = f"{m.family}:{m.name}"
        self.ready = False
        self.failed: str | None = None
        self.timeout_s = settings.timeout_s
        self.max_upload_bytes = int(settings.max_upload_mb * 1e6)
        self.upload_dir: Path | None = None
        self._batchers: dict[str, Batcher] = {}
        self._loader: threading.Thread | None = None
        self.admitted = 0                # requests past the door: reading, decoding, queued…
        self.max_admitted = settings.max_queue + settings.max_batch
        self.audio = AudioBudget(settings.max_audio_total_s)

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
        for model in self.models.values():
            model.load()
            self._batchers[model.name] = self.make_batcher(model.label, model.run_round,
                                                           model.max_batch)

    def make_batcher(self, label: str, run_round, max_batch: int | None = None) -> Batcher:
        s = self.settings
        return Batcher(label, run_round, max_batch or s.max_batch, s.max_wait_ms, s.max_queue,
                       on_round=self.metrics.on_round(label))

    def stop(self) -> None:
        running = False
        for b in self._batchers.values():
            running |= not b.close()
        if not running:       # a round still going holds the sessions: leave them to the exit
            for model in self.models.values():
                model.close()
        self._batchers = {}
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
        return max([b.retry_after() for b in self._batchers.values()] or [1])

    # -- the table -----------------------------------------------------------------------------
    def served(self, family: str) -> list[ServedModel]:
        return [m for m in self.models.values() if m.family == family]

    def families(self) -> list[type[ServedModel]]:
        """One ServedModel class per family served (their routes are mounted once)."""
        classes: dict[str, type[ServedModel]] = {}
        for m in self.models.values():
            classes.setdefault(m.family, type(m))
        return list(classes.values())

    def pick(self, family: str, model: str | None) -> ServedModel:
        """The model a request names (or the family's first), or a 404 naming what is served."""
        served = self.served(family)
        for m in served:
            if m.answers_to(model):
                return m
        raise not_served(family, model, served)

    def model_names(self) -> list[str]:
        return [n for m in self.models.values() for n in (m.name, *m.aliases)]

    def describe(self) -> dict:
        return {m.name: m.describe() for m in self.models.values() if m.pipe is not None}

    def update_gauges(self) -> None:
        for model in self.models.values():
            b = self._batchers.get(model.name)
            if b is not None:
                self.metrics.queue.labels(model.label).set(b.depth)

    # -- the work --------------------------------------------------------------------------
    def submit(self, model: ServedModel, job, result: Callable):
        """An awaitable of ``result(job)`` once the model's batcher has run it (raises
        ``QueueFull`` at once)."""
        future = asyncio.wrap_future(self._batchers[model.name].submit(job))

        async def wait():
            return result(await future)
        return wait()
