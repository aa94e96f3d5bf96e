"""``toolkit train gradtts``: duration + prior + diffusion losses, progress, resumable checkpoints.

The output directory is a checkpoint directory (config.json + model.pt + train.pt) that is
rewritten every ``save_every`` steps; running the command again with a larger ``--steps``
resumes from it. Losses are appended to ``train_log.jsonl``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape

from ...core.errors import ToolkitError
from ...core.files import check_replaceable
from ...core.options import check_fields, option
from ...core.progress import Steps, console
from ...core.threads import default_threads
from ..base import load_tensors
from .checkpoint import is_checkpoint, is_run_dir, load_checkpoint, save_checkpoint
from .data import collate, load_dataset
from .model import PRESETS, build_model

DEFAULT_LR = {"paper": 1e-4, "tiny": 1e-3}


@dataclass
class TrainOptions:
    """``toolkit train gradtts``."""

    data: Path = option(help="LJSpeech-style folder: metadata.csv + wavs/.")
    steps: int = option(300, "Total training steps (resumes up to this many).", min=1,
                        max=10**9)
    out: Path = option(Path("checkpoints/gradtts"), "Checkpoint directory (resumed if it "
                                                    "exists).", flag="--out")
    preset: str | None = option(None, "Architecture: tiny (CPU demo, the default for a new "
                                      "run) or paper.", choices=tuple(PRESETS))
    batch_size: int = option(4, "Utterances per step.", min=1, max=4096)
    lr: float | None = option(None, "Adam learning rate (default: 1e-3 tiny, 1e-4 paper).",
                              min=1e-9, max=1.0)
    save_every: int = option(100, "Write the checkpoint every N steps.", min=1, max=10**9)
    seed: int = option(0, "Seed of the weights, batches and noise.", min=0, max=2**32 - 1)
    limit: int | None = option(None, cli=False)       # at most this many utterances (tests)


def train(opts: TrainOptions) -> dict:
    """Train (or resume) into ``opts.out``; returns the step, the first/last mean losses and
    the log."""
    check_fields(opts)
    out = check_replaceable(opts.out, is_run_dir, hint="choose another --out directory")
    torch.set_num_threads(default_threads())   # TOOLKIT_THREADS overrides (shared machines)
    torch.manual_seed(opts.seed)
    model, opt, start, preset, lr = _model_and_optimizer(out, opts)
    if start >= opts.steps:
        console.print(f"{escape(str(out))} is already at step {start} ≥ --steps {opts.steps}; "
                      "nothing to do")
        return {"step": start, "log": []}
    t0 = time.perf_counter()
    log = _loop(model, opt, out, opts, start, preset, lr)
    model.eval()
    k = max(1, len(log) // 10)
    first = {n: float(np.mean([r[n] for r in log[:k]])) for n in ("dur", "prior", "diff", "total")}
    last = {n: float(np.mean([r[n] for r in log[-k:]])) for n in ("dur", "prior", "diff", "total")}
    console.print(f"losses (mean of first/last {k} steps): " + ", ".join(
        f"{n} {first[n]:.3f} → {last[n]:.3f}" for n in first) +
        f"  [{time.perf_counter() - t0:.0f} s]")
    console.print(f"[green]✓[/] checkpoint {escape(str(out))} (step {opts.steps}); export it "
                  f"with `toolkit export gradtts --checkpoint {out}`")
    return {"step": opts.steps, "first": first, "last": last, "log": log}


def _model_and_optimizer(out: Path, opts: TrainOptions):
    """(model, optimizer, start step, preset, lr): a new model, or the run in ``out`` resumed."""
    preset, start = opts.preset, 0
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
        model = build_model(PRESETS[preset], seed=opts.seed)
    lr = opts.lr or DEFAULT_LR.get(preset, 1e-4)
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
        if opts.lr is None:
            lr = saved_lr   # the optimizer state carries the learning rate it was trained with
        elif opts.lr != saved_lr:
            for group in opt.param_groups:
                group["lr"] = opts.lr
            console.print(f"[yellow]note:[/] --lr {opts.lr:g} replaces the checkpoint's "
                          f"{saved_lr:g}")
    return model, opt, start, preset, lr


def _loop(model, opt, out: Path, opts: TrainOptions, start: int, preset: str,
          lr: float) -> list[dict]:
    items = load_dataset(opts.data, add_blank=model.config.add_blank, limit=opts.limit)
    rng = np.random.default_rng(opts.seed + start)
    gen = torch.Generator().manual_seed(opts.seed + start)
    model.train()
    log = []
    log_path = out / "train_log.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    steps = opts.steps
    with Steps(f"train gradtts ({preset}, {len(items)} utterances)", total=steps - start) as bar:
        for step in range(start + 1, steps + 1):
            batch = [items[i] for i in rng.choice(len(items), size=min(opts.batch_size,
                                                                       len(items)),
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
            if step % opts.save_every == 0 or step == steps:
                model.eval()
                save_checkpoint(model, out, step, opt, extra={
                    "preset": preset, "lr": lr, "data": str(Path(opts.data).resolve())})
                model.train()
    return log
