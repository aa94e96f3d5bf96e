"""Loading and saving SVT backbones.

Toolkit checkpoints are a directory: ``config.json`` (the ``SVTConfig`` fields) beside
``model.pt`` (the backbone state dict in this package's key layout).

Users also bring the official SVT / TimeSformer checkpoints: a ``.pth`` file (or a directory
holding one) whose state dict may sit under ``teacher`` / ``student`` / ``state_dict`` / ``model``
and whose keys carry ``module.`` / ``backbone.`` / ``model.`` prefixes (DDP, DINO's
MultiCropWrapper, TimeSformer's wrapper). Those keys map onto ours one to one — same names for
``blocks.N.{temporal_norm1,temporal_attn,temporal_fc,norm1,attn,norm2,mlp}``, ``pos_embed``,
``time_embed``, ``cls_token``, ``norm`` — except ``patch_embed.proj`` → ``patch_embed``. The
classifier / DINO head is dropped. The architecture (dim, depth, native grid and frames) is read
off the tensors, so no config file is needed for them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ...core.errors import ToolkitError
from ...core.files import atomic_dir, sha256_file
from ..base import LoadedModel, load_tensors
from .model import SVTBackbone, SVTConfig, preset_config

CONFIG = "config.json"
DEFAULT_PRESET = "vit-base"
WEIGHTS = "model.pt"
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")
_CONTAINERS = ("teacher", "state_dict", "model", "model_state", "student")
_DROP = ("head.", "fc_norm.", "dino_head.", "mlp_head.")


def _unwrap(obj) -> dict:
    if not isinstance(obj, dict):
        raise ToolkitError("checkpoint does not hold a state dict; expected a dict of tensors")
    for key in _CONTAINERS:
        if key in obj and isinstance(obj[key], dict) and not isinstance(obj[key], torch.Tensor):
            inner = obj[key]
            if any(isinstance(v, torch.Tensor) for v in inner.values()) or \
                    any(k in inner for k in _CONTAINERS):
                return _unwrap(inner)
    return obj


def map_official_keys(state: dict) -> dict:
    """Official SVT/TimeSformer key names → this package's names (head weights dropped)."""
    state = _unwrap(state)
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        k = key
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        if k.startswith(_DROP):
            continue
        k = k.replace("patch_embed.proj.", "patch_embed.")
        out[k] = value
    return out


def infer_config(state: dict, base: SVTConfig | None = None) -> SVTConfig:
    """Architecture from tensor shapes (for checkpoints without a config.json)."""
    cfg = SVTConfig(**(base.to_dict() if base else {}))
    try:
        w = state["patch_embed.weight"]
        cfg.dim, cfg.in_chans, cfg.patch_size = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
        cfg.depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        n = int(state["pos_embed"].shape[1]) - 1
        g = int(round(n ** 0.5))
        if g * g != n:
            raise ToolkitError(f"pos_embed has {n} patch positions, not a square grid")
        cfg.img_size = g * cfg.patch_size
        cfg.num_frames = int(state["time_embed"].shape[1])
        cfg.mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / cfg.dim
        cfg.qkv_bias = "blocks.0.attn.qkv.bias" in state
    except KeyError as exc:
        raise ToolkitError(f"checkpoint lacks {exc.args[0]!r}; it is not an SVT/TimeSformer "
                           "backbone") from None
    # Head count is not visible in the tensors; ViTs use 64-d heads (ViT-B: 12).
    if cfg.dim % 64 == 0:
        cfg.heads = cfg.dim // 64
    return cfg


def load_state_into(model: SVTBackbone, state: dict) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ToolkitError(f"checkpoint does not match the SVT backbone: missing {missing[:4]}"
                           f"{'…' if len(missing) > 4 else ''}, unexpected {unexpected[:4]}"
                           f"{'…' if len(unexpected) > 4 else ''}")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise ToolkitError(f"checkpoint tensor {k} has shape {list(state[k].shape)}, the model "
                           f"expects {list(own[k].shape)}; check config.json")
    model.load_state_dict({k: v.float() for k, v in state.items()})


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in (WEIGHTS, "checkpoint.pth", "model.pth", "pytorch_model.bin"):
        if (path / name).is_file():
            return path / name
    cands = sorted(list(path.glob("*.pth")) + list(path.glob("*.pt")))
    if len(cands) == 1:
        return cands[0]
    raise ToolkitError(f"no SVT weights in {path}: expected {WEIGHTS} (+ {CONFIG}) or one "
                       "official .pth checkpoint")


def load_checkpoint(path: str | Path) -> tuple[SVTBackbone, dict]:
    """Returns (backbone in eval mode, source info for the manifest)."""
    path = Path(path)
    if not path.exists():
        raise ToolkitError(f"checkpoint {path} does not exist; pass a directory with "
                           f"{CONFIG} + {WEIGHTS} or an official SVT .pth file")
    wfile = _weights_file(path)
    raw = load_tensors(wfile, "pass a toolkit or official SVT checkpoint")
    state = map_official_keys(raw)
    cfg_file = (path if path.is_dir() else path.parent) / CONFIG
    # Architecture from the tensors; a config.json beside the weights (complete for toolkit
    # checkpoints, or e.g. just {"heads": 8} next to an official .pth) overrides it.
    cfg = infer_config(state)
    if cfg_file.is_file():
        try:
            given = json.loads(cfg_file.read_text())
            cfg = SVTConfig.from_dict({**cfg.to_dict(), **given})
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ToolkitError(f"{cfg_file} is not a valid SVT config ({exc})") from None
    model = SVTBackbone(cfg)
    load_state_into(model, state)
    source = {"checkpoint": str(path.resolve()), "weights_file": wfile.name,
              "sha256": sha256_file(wfile), "random_init": False}
    return model.eval(), source


def save_checkpoint(model: SVTBackbone, out: str | Path, extra: dict | None = None) -> Path:
    out = Path(out)
    def ours(d: Path) -> bool:  # a backbone checkpoint and nothing else
        return {p.name for p in d.iterdir()} <= {CONFIG, WEIGHTS, "info.json"}

    with atomic_dir(out, owned=ours, hint="choose another --out directory") as tmp:
        (tmp / CONFIG).write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")
        torch.save(model.state_dict(), tmp / WEIGHTS)
        if extra:
            (tmp / "info.json").write_text(json.dumps(extra, indent=2) + "\n")
    return out


def load_model(checkpoint: str | Path | None = None, preset: str | None = None,
               seed: int = 0) -> LoadedModel:
    """A backbone from a checkpoint or a preset (seeded random init, labelled)."""
    if checkpoint is not None and preset is not None:
        raise ToolkitError("pass either --checkpoint or --preset, not both")
    if checkpoint is not None:
        model, source = load_checkpoint(checkpoint)
        return LoadedModel("svt", model, source, seed=seed)
    name = preset or DEFAULT_PRESET
    torch.manual_seed(seed)
    model = SVTBackbone(preset_config(name)).eval()
    return LoadedModel("svt", model, {"preset": name, "seed": seed, "random_init": True},
                       seed=seed)
