"""The default InternVL model: the toolkit's own small captioner, trained on the shared caption
set (``toolkit train internvl``) and shipped at ``toolkit/assets/internvl/captioner/`` in the
original InternVL2 layout (``config.json``, ``model.safetensors``, ``tokenizer.json``). Where it
is and what identifies it, without loading it — so that its cached export is found, and
captions, with no PyTorch imported. Until that folder holds a ``config.json``, the default is
the ``internvl-tiny`` preset with random weights (and every output says so)."""

from __future__ import annotations

from pathlib import Path

from ...core.files import weights_hash

CAPTIONER_NAME = "captioner"
FALLBACK_PRESET = "internvl-tiny"


def captioner_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "assets" / "internvl" / CAPTIONER_NAME


def default_checkpoint() -> Path | None:
    """The trained captioner's folder, or None while it is not there (random preset)."""
    path = captioner_dir()
    return path if (path / "config.json").is_file() else None


def captioner_source(path: Path) -> dict:
    """The ``source`` ``load_model()`` records for the captioner (its exports' manifests)."""
    return {"checkpoint": str(path), "format": "original", "random_init": False,
            "sha256": weights_hash(path), "name": CAPTIONER_NAME,
            "weights": "the toolkit's small InternVL captioner (internvl-tiny shapes), trained "
                       "on the shared shapes caption set"}


def default_source() -> tuple[str, dict] | None:
    """(cache tag, source) of the default model, or None when it is the random preset (that
    one is loaded and exported into the cache like any preset)."""
    path = default_checkpoint()
    if path is None:
        return None
    return CAPTIONER_NAME, captioner_source(path)
