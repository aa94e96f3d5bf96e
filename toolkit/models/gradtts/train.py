"""``toolkit train gradtts``: duration + prior + diffusion losses, progress, resumable checkpoints.

The output directory is a checkpoint directory (config.json + model.pt + train.pt) that is
rewritten every ``save_every`` steps; running the command again with a larger ``--steps``
resumes from it. Losses are appended to ``train_log.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape

from ...core.errors import ToolkitError, check_positive
from ...core.files import check_replaceable
from ...core.threads import default_threads
from ...core.progress import Steps, console
from ..base import load_tensors
from .checkpoint import is_checkpoint, is_run_dir, load_checkpoint, save_checkpoint
from .data import collate, load_dataset
from .model import PRESETS, build_model

DEFAULT_LR = {"paper": 1e-4, "tiny": 1e-3}


def train(data, out, steps: int = 300, preset: str | None = None, batch_size: int = 4,
          lr: float | None = None, seed: int = 0, save_every: int = 100,
          limit: int | None = None) -> dict:
    check_positive(steps=steps, batch_size=batch_size, save_every=save_every, limit=limit)
    if preset is not None and preset not in PRESETS:
        raise ToolkitError(f"unknown Grad-TTS preset {preset!r}; choose one of {', '.join(PRESETS)}")

    out = check_replaceable(out, is_run_dir, hint="choose another --out directory")  # before training
    torch.set_num_threads(default_threads())   # TOOLKIT_THREADS overrides (shared machines)
    torch.manual_seed(seed)
    start = 0
    if is_checkpoint(out):
        model, meta = load_checkpoint(out)
        start = int(meta.get("step", 0))
        saved = meta.get("preset")
        if preset is not None and saved is not None and preset != saved:
            console.print(f"[yellow]note:[/] resuming a {saved!r} checkpoint; --preset {preset} "
                          "is ignored (choose a new --out to train another architecture)")
        preset = saved or preset or "tiny"
        console.print(f"resuming {escape(str(out))} at step {start} (preset {preset})")
    else:
        preset = preset or "tiny"
        model = build_model(PRESETS[preset], seed=seed)
    given_lr = lr
    lr = lr or DEFAULT_LR.get(preset, 1e-4)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if start and (out / "train.pt").is_file():
        state = load_tensors(out / "train.pt", "delete it or choose a new --out")
        try:
            opt.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ToolkitError(f"cannot resume the optimizer from {out / 'train.pt'} "
                               f"({str(exc).splitlines()[0][:120]}); it is corrupt or not a "
                               "toolkit training state — delete it or choose a new --out") from None
        saved_lr = opt.param_groups[0]["lr"]
        if given_lr is None:
            lr = saved_lr   # the optimizer state carries the learning rate it was trained with
        elif given_lr != saved_lr:
            for group in opt.param_groups:
                group["lr"] = given_lr
            console.print(f"[yellow]note:[/] --lr {given_lr:g} replaces the checkpoint's "
                          f"{saved_lr:g}")
    if start >= steps:
        console.print(f"{escape(str(out))} is already at step {start} ≥ --steps {steps}; nothing to do")
        return {"step": start, "log": []}
    items = load_dataset(data, add_blank=model.config.add_blank, limit=limit)
    rng = np.random.default_rng(seed + start)
    gen = torch.Generator().manual_seed(seed + start)
    model.train()
    log = []
    log_path = out / "train_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with Steps(f"train gradtts ({preset}, {len(items)} utterances)", total=steps - start) as bar:
        for step in range(start + 1, steps + 1):
            batch = [items[i] for i in rng.choice(len(items), size=min(batch_size, len(items)),
                                                  replace=False)]
            ids, x_len, mel, y_len = collate(batch)
            dur, prior, diff = model.compute_loss(ids, x_len, mel, y_len, generator=gen)
            loss = dur + prior + diff
            if not torch.isfinite(loss):
                raise ToolkitError(f"loss became {loss.item()} at step {step}; lower --lr")
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            rec = {"step": step, "dur": dur.item(), "prior": prior.item(), "diff": diff.item(),
                   "total": loss.item()}
            log.append(rec)
            with open(log_path, "a") as logf:  # reopened: a save swaps the directory in whole
                logf.write(json.dumps(rec) + "\n")
            bar.advance(f"dur {rec['dur']:.3f} prior {rec['prior']:.3f} diff {rec['diff']:.3f}")
            if step % save_every == 0 or step == steps:
                model.eval()
                save_checkpoint(model, out, step, opt, extra={"preset": preset, "lr": lr,
                                                              "data": str(Path(data).resolve())})
                model.train()
    model.eval()
    k = max(1, len(log) // 10)
    first = {n: float(np.mean([r[n] for r in log[:k]])) for n in ("dur", "prior", "diff", "total")}
    last = {n: float(np.mean([r[n] for r in log[-k:]])) for n in ("dur", "prior", "diff", "total")}
    console.print(f"losses (mean of first/last {k} steps): " + ", ".join(
        f"{n} {first[n]:.3f} → {last[n]:.3f}" for n in first) +
        f"  [{time.perf_counter() - t0:.0f} s]")
    console.print(f"[green]✓[/] checkpoint {escape(str(out))} (step {steps}); export it with "
                  f"`toolkit export gradtts --checkpoint {out}`")
    return {"step": steps, "first": first, "last": last, "log": log}
