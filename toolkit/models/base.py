"""What every family's ``load_model`` returns: the PyTorch model and where its weights came from."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import ToolkitError
from ..core.memory import give_back


def load_tensors(path: str | Path, fix: str):
    """``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted file
    runs nothing; every way it can fail is one line ending in ``fix``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # garbage, or a pickle of objects other than tensors
        raise ToolkitError(f"{path} is not a plain tensor file: torch refused to unpickle it "
                           f"(it is corrupt, or holds Python objects that could run code) — "
                           f"{fix}") from None
    except (EOFError, RuntimeError, ValueError, OSError) as exc:
        why = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ToolkitError(f"cannot read {path} ({why}); it is corrupt or not a PyTorch file — "
                           f"{fix}") from None


@dataclass
class LoadedModel:
    """A model ready to export or run.

    ``source`` is the manifest's "source" block: ``{"preset", "seed", "random_init": True}`` for
    seeded presets, ``{"checkpoint", "sha256", "random_init": False, ...}`` for real weights
    (optionally ``name``, and ``weights``: a one-line description for tables and records).
    """

    family: str
    model: object
    source: dict
    seed: int = 0        # the run's --seed (presets: their weights; sampling noise elsewhere)

    @property
    def random_init(self) -> bool:
        return bool(self.source.get("random_init"))

    @property
    def name(self) -> str:
        """Short name for artifact and record names: preset, model name or checkpoint folder."""
        return (self.source.get("name") or self.source.get("preset")
                or Path(str(self.source.get("checkpoint", "model"))).name)

    @property
    def cache_tag(self) -> str:
        """Name of cached exports of these weights (the manifest's source is checked as well)."""
        return f"{self.name}-s{self.seed}" if self.random_init else self.name

    @property
    def weights(self) -> str:
        """What the weights are, for every table and record."""
        if self.random_init:
            return (f"preset {self.source.get('preset')} — RANDOM INITIALISATION (seed "
                    f"{self.source.get('seed')}), not a trained model")
        return self.source.get("weights") or f"checkpoint {self.source.get('checkpoint')}"

    def release(self) -> None:
        """Free the PyTorch weights (after an export has taken what it needs from them): the
        parameters move to the "meta" device, which holds shapes and no data. The model
        cannot run afterwards."""
        to = getattr(self.model, "to", None)
        if to is not None:
            to("meta")
        give_back()
