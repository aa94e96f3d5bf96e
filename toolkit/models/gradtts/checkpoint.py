"""Checkpoint directories: ``config.json`` (family, model config, training step) + ``model.pt``
(state dict) [+ ``train.pt``: optimizer state, for resuming]."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ...core.errors import ToolkitError
from ...core.files import atomic_dir, sha256_file
from ..base import LoadedModel, load_tensors
from .model import PRESETS, GradTTS, GradTTSConfig, build_model

FAMILY = "gradtts"
DEFAULT_PRESET = "paper"


def is_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` is a Grad-TTS checkpoint this toolkit wrote (so it may be replaced)."""
    try:
        return json.loads((Path(directory) / "config.json").read_text()).get("family") == FAMILY
    except (OSError, ValueError, AttributeError):
        return False


RUN_FILES = ("train_log.jsonl",)   # what a training run keeps beside its checkpoint


def is_run_dir(directory: str | Path) -> bool:
    """A checkpoint, or a training run that has only written its log so far: ours to replace."""
    d = Path(directory)
    return is_checkpoint(d) or {p.name for p in d.iterdir()} <= set(RUN_FILES)


CHECKPOINT_FILES = ("model.pt", "train.pt", "config.json")


def save_checkpoint(model: GradTTS, out: str | Path, step: int = 0, optimizer=None,
                    extra: dict | None = None) -> Path:
    """Write model.pt, train.pt and config.json as one directory swapped in whole, so a crash
    never leaves files of different steps; everything else in ``out`` (the training log, any
    file of the user's) is carried over."""
    out = Path(out)
    with atomic_dir(out, owned=is_run_dir, hint="choose another --out directory") as tmp:
        torch.save(model.state_dict(), tmp / "model.pt")
        if optimizer is not None:
            torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / "train.pt")
        meta = {"family": FAMILY, "config": model.config.to_dict(), "step": step,
                **(extra or {})}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        if out.is_dir():
            for item in out.iterdir():
                if item.name in CHECKPOINT_FILES:
                    continue
                if item.is_dir() and not item.is_symlink():
                    shutil.copytree(item, tmp / item.name, symlinks=True)
                else:
                    shutil.copy2(item, tmp / item.name, follow_symlinks=False)
    return out


def read_config(path: str | Path) -> dict:
    path = Path(path)
    cfg = path / "config.json"
    if not path.is_dir():
        raise ToolkitError(f"checkpoint directory {path} does not exist; train one with "
                           "`toolkit train gradtts --data DIR --out DIR` or use --preset")
    if not cfg.is_file() and (path / "manifest.json").is_file():
        raise ToolkitError(f"{path} is an exported artifact, not a checkpoint; pass it as "
                           "--artifact DIR with --backend ort")
    if not cfg.is_file():
        raise ToolkitError(f"{path} has no config.json; it is not a Grad-TTS checkpoint directory")
    try:
        meta = json.loads(cfg.read_text())
    except json.JSONDecodeError as exc:
        raise ToolkitError(f"{cfg} is not valid JSON ({exc.msg}); the checkpoint is "
                           "corrupt") from None
    fam = meta.get("family") if isinstance(meta, dict) else None
    if fam != FAMILY or "config" not in meta:
        what = fam or (meta.get("model_type") if isinstance(meta, dict) else None) or "unknown"
        raise ToolkitError(f"{path} is a checkpoint of another model ({what!r}), not Grad-TTS; "
                           "point --checkpoint at a directory written by `toolkit train gradtts`")
    return meta


def load_checkpoint(path: str | Path) -> tuple[GradTTS, dict]:
    meta = read_config(path)
    weights = Path(path) / "model.pt"
    if not weights.is_file():
        raise ToolkitError(f"{path} has no model.pt; the checkpoint is incomplete")
    state = load_tensors(weights, "re-train it with `toolkit train gradtts`")
    try:
        config = GradTTSConfig.from_dict(meta["config"])
        model = GradTTS(config)
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ToolkitError(f"{weights} does not match its config.json "
                           f"({str(exc).splitlines()[0][:120]}); the checkpoint is "
                           "corrupt") from None
    return model.eval(), meta


def load_model(checkpoint=None, preset=None, seed: int = 0) -> LoadedModel:
    """A checkpoint directory, or a preset with seeded random weights (``paper`` by default)."""
    if checkpoint and preset:
        raise ToolkitError("pass either --checkpoint or --preset, not both")
    if checkpoint:
        model, meta = load_checkpoint(checkpoint)
        return LoadedModel("gradtts", model, {
            "checkpoint": str(Path(checkpoint).resolve()),
            "sha256": sha256_file(Path(checkpoint) / "model.pt"),
            "train_step": meta.get("step"), "random_init": False}, seed=seed)
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise ToolkitError(f"unknown Grad-TTS preset {preset!r}; choose one of "
                           f"{', '.join(PRESETS)}")
    model = build_model(PRESETS[preset], seed=seed)
    return LoadedModel("gradtts", model, {"preset": preset, "seed": seed, "random_init": True},
                       seed=seed)
