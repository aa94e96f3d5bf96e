"""One model behind the server: a family's ``ServedModel`` (``serve/routes/<family>.py``).

The ``Service`` keeps a table of them, one per ``ModelSource`` it is given. A served model
opens its pipeline, runs one round of its batcher (``run_round``: the batcher's worker thread
is the only caller, so a session never runs two batches), and brings the family's HTTP routes
(``router``, one per family however many of its models are served).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ToolkitError


@dataclass
class ModelSource:
    """What to serve: a family's artifact, checkpoint, preset (or its default model)."""

    family: Any                      # the registry's Family: name, served, open_pipeline
    artifact: str | None = None
    checkpoint: str | None = None
    preset: str | None = None
    backend: str = "ort"
    threads: int | None = None       # intra-op threads (default: the machine's)
    name: str | None = None          # the model id clients send (default: from the source)

    @property
    def model_id(self) -> str:
        if self.name:
            return self.name
        for v in (self.artifact, self.checkpoint):
            if v:
                return Path(v).name
        return f"{self.family.name}-{self.preset or self.family.default_tag()}"


class ServedModel:
    """Subclasses set ``family``, ``aliases``, ``routes`` and implement ``run_round``."""

    family: str = ""
    aliases: tuple[str, ...] = ()    # the names OpenAI-style clients send (whisper-1, tts-1…)
    routes: tuple[str, ...] = ()     # the paths it answers, for the start-up message
    max_batch: int | None = None     # requests per round (None: the server's --max-batch)

    def __init__(self, source: ModelSource, service):
        self.source = source
        self.service = service
        self.name = source.model_id
        self.label = self.family     # the batcher's name in /metrics
        self.pipe = None

    # -- life ---------------------------------------------------------------------------------
    def load(self) -> None:
        s = self.source
        self.pipe = s.family.open_pipeline(artifact=s.artifact, checkpoint=s.checkpoint,
                                           preset=s.preset, backend=s.backend, threads=s.threads)

    def close(self) -> None:
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None

    def run_round(self, jobs: list) -> None:
        raise NotImplementedError

    @classmethod
    def router(cls, http):
        """The family's FastAPI ``APIRouter`` (built over the shared ``Http`` helpers)."""
        raise NotImplementedError

    # -- what the routes ask --------------------------------------------------------------------
    def answers_to(self, model: str | None) -> bool:
        return model in (None, "", self.name) or model in self.aliases

    def describe(self) -> dict:
        p = self.pipe
        return {"name": self.name, "family": self.family, "backend": p.backend,
                "precision": p.precision, "random_init": bool(p.random_init)}

    def options(self):
        """The family's serving options (``--beam-size`` …) the server was started with."""
        return self.service.settings.options.get(self.family)


def not_served(family: str, model: str | None, served: list[ServedModel]) -> ToolkitError:
    names = ", ".join(f"{m.name} (also {', '.join(m.aliases)})" if m.aliases else m.name
                      for m in served)
    err = ToolkitError(f"model {model!r} is not served here; this server's {family} models: "
                       f"{names}")
    err.status = 404
    return err
