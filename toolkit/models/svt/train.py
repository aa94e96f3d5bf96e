"""SVT self-supervised training (Ranasinghe et al., CVPR 2022): self-distillation with a student
and an EMA teacher over space-time views of the same video.

Views per clip (paper Sec. 3.1–3.2):
- 2 global views at ``global_size`` px with the native frame count; the first samples the whole
  clip, the second a random half of it (a different frame rate).
- 8 local views at ``local_size`` px: 4 *spatially local* (small crops, native frame count,
  random window) and 4 *temporally varied* (larger crops with 1/4, 1/2, 1× or 2× the native
  frame count over random windows — different frame counts and rates).

The teacher sees only the global views; the student sees all ten. Every student view predicts
every teacher global view other than itself with the DINO objective: cross-entropy between the
teacher's centred and sharpened distribution and the student's (temperature 0.1).
- cross-view correspondence loss: pairs whose student view has the teacher view's frame count
  and rate but a different spatial field of view (local crops, the other global view's crop);
- motion correspondence loss: pairs whose student view has a different frame count or rate.
The reported loss is the mean over all pairs (= the weighted sum of the two).
Teacher: EMA of the student (momentum cosine-scheduled 0.996 → 1); centre: EMA (0.9) of the
teacher's batch mean. The entropy of the teacher's distribution (per sample, and of the batch
mean) is logged: collapse shows as the per-sample entropy going to its maximum (uniform) or the
batch-mean entropy going to zero (one prototype).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import ToolkitError
from ...core.options import check_fields, option
from ...core.progress import Steps, console
from ...core.threads import default_threads
from ..base import load_tensors
from .checkpoint import save_checkpoint
from .model import SVTBackbone, preset_config
from .video import clip_from_frames, decode_frames, list_videos

STATE = "train_state.pt"


@dataclass
class TrainOptions:
    """``toolkit train svt``."""

    data: Path = option(help="Folder of video clips.")
    steps: int = option(100, "Optimizer steps (total, including resumed ones).", min=1,
                        max=10**9)
    out: Path = option(Path("runs/svt"), "Run directory (checkpoints).", flag="--out")
    preset: str = option("vit-base", "Architecture: vit-base or tiny.", flag="--preset",
                         choices=("vit-base", "tiny"))
    batch_size: int = option(2, "Clips per step.", min=1, max=4096)
    lr: float = option(2e-4, "Peak AdamW learning rate (warm-up, cosine decay).", min=1e-9,
                       max=1.0)
    global_size: int | None = option(None, "Global view size (default 224; tiny: 32).", min=16,
                                     max=1024)
    local_size: int | None = option(None, "Local view size (default 96; tiny: 16).", min=16,
                                    max=1024)
    save_every: int = option(50, "Checkpoint every N steps.", min=1, max=10**9)
    resume: bool = option(True, "Continue from OUT/train_state.pt if present.", negatable=True)
    seed: int = option(0, "Seed of the weights and the views.", min=0, max=2**32 - 1)
    out_dim: int | None = option(None, cli=False)
    teacher_temp: float = option(0.04, cli=False)
    student_temp: float = option(0.1, cli=False)
    center_momentum: float = option(0.9, cli=False)
    ema_start: float | None = option(None, cli=False)   # 0.996 (vit-base, as DINO); tiny 0.99
    weight_decay: float = option(0.04, cli=False)


class DINOHead(nn.Module):
    """3-layer MLP → L2-normalised bottleneck → weight-normalised prototypes (DINO)."""

    def __init__(self, dim: int, out_dim: int, hidden: int, bottleneck: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, hidden),
                                 nn.GELU(), nn.Linear(hidden, bottleneck))
        self.last = nn.utils.parametrizations.weight_norm(
            nn.Linear(bottleneck, out_dim, bias=False))
        self.last.parametrizations.weight.original0.data.fill_(1.0)
        self.last.parametrizations.weight.original0.requires_grad = False
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.last(F.normalize(self.mlp(x), dim=-1))


class Student(nn.Module):
    def __init__(self, backbone: SVTBackbone, head: DINOHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, clip):
        return self.head(self.backbone(clip))


# -------------------------------------------------------------------------------------------
# views
# -------------------------------------------------------------------------------------------

@dataclass
class ViewSpec:
    frames: int
    size: int
    scale: tuple[float, float]   # crop side as a fraction of the short side
    span: tuple[float, float]    # temporal window as a fraction of the clip
    is_global: bool
    kind: str                    # "global" | "spatial" | "temporal"


def view_specs(t: int, gsize: int, lsize: int) -> list[ViewSpec]:
    specs = [ViewSpec(t, gsize, (0.6, 1.0), (1.0, 1.0), True, "global"),
             ViewSpec(t, gsize, (0.6, 1.0), (0.5, 0.5), True, "global")]
    for _ in range(4):
        specs.append(ViewSpec(t, lsize, (0.2, 0.45), (1.0, 1.0), False, "spatial"))
    for f in (max(1, t // 4), max(1, t // 2), t, 2 * t):
        specs.append(ViewSpec(f, lsize, (0.4, 0.8), (0.3, 1.0), False, "temporal"))
    return specs


def make_view(frames: list, spec: ViewSpec, rng: random.Random) -> torch.Tensor:
    span = rng.uniform(*spec.span)
    if len(frames) * span < spec.frames:
        span = min(1.0, spec.frames / len(frames))
    start = rng.uniform(0.0, 1.0 - span)
    crop = (rng.uniform(*spec.scale), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))
    n = min(spec.frames, len(frames))
    clip = clip_from_frames(frames, n, spec.size, start=start, span=span, crop=crop)
    if rng.random() < 0.5:
        clip = clip[..., ::-1]
    # brightness/contrast jitter in normalised space
    clip = clip * rng.uniform(0.8, 1.2) + rng.uniform(-0.2, 0.2)
    return torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))


def pair_kind(tv: ViewSpec, sv: ViewSpec, t_idx: int) -> str:
    """cross-view (same frames and rate, different field of view) or motion (frames/rate differ)."""
    same_time = sv.frames == tv.frames and sv.span == tv.span
    return "cross_view" if same_time else "motion"


# -------------------------------------------------------------------------------------------
# training
# -------------------------------------------------------------------------------------------

def _cos_schedule(step: int, total: int, start: float, end: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))


def _lr(step: int, total: int, peak: float) -> float:
    warm = max(1, total // 10)
    if step < warm:
        return peak * (step + 1) / warm
    return _cos_schedule(step - warm, total - warm, peak, peak * 0.01)


def entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


@dataclass
class _Run:
    """Everything a run holds between steps (what ``save`` writes and a resume reads)."""

    student: nn.Module
    teacher: nn.Module
    optim: torch.optim.Optimizer
    params: list
    center: torch.Tensor
    rng: random.Random
    out: Path
    start: int = 0
    history: list = field(default_factory=list)


def train(opts: TrainOptions) -> dict:
    """Self-distillation from ``opts.data`` into ``opts.out``; returns the summary (losses,
    teacher entropies, the checkpoint) and prints it."""
    check_fields(opts)
    cfg = preset_config(opts.preset)
    tiny = opts.preset == "tiny"
    gsize = opts.global_size or (cfg.img_size if tiny else 224)
    lsize = opts.local_size or (16 if tiny else 96)
    for s in (gsize, lsize):
        if s < cfg.patch_size or s % cfg.patch_size:
            raise ToolkitError(f"view size {s} px is not a multiple of the {cfg.patch_size}-px "
                               "patch; pass --global-size/--local-size multiples of 16")
    videos = list_videos(opts.data)
    out_dim = opts.out_dim or (64 if tiny else 4096)
    torch.set_num_threads(default_threads())
    torch.manual_seed(opts.seed)
    run = _new_run(cfg, out_dim, tiny, opts)
    if opts.resume and (run.out / STATE).is_file():
        _resume(run, opts)
    with console.status(f"decoding {len(videos)} videos"):
        decoded = [decode_frames(v) for v in videos]
    specs = view_specs(cfg.num_frames, gsize, lsize)
    ema_start = opts.ema_start if opts.ema_start is not None else (0.99 if tiny else 0.996)
    run.student.train()
    run.teacher.train()
    ln_k = math.log(out_dim)
    center_ready = run.start > 0
    with Steps(f"train svt ({opts.preset})", total=max(0, opts.steps - run.start)) as bar:
        for step_no in range(run.start, opts.steps):
            rec = _step(run, decoded, specs, step_no, opts, ema_start, center_ready)
            center_ready = True
            run.history.append(rec)
            with (run.out / "log.jsonl").open("a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.advance(f"loss {rec['loss']:.3f} (cv {rec['cross_view_loss']:.3f}, motion "
                        f"{rec['motion_loss']:.3f}) H_t {rec['teacher_entropy']:.2f}/"
                        f"{rec['teacher_marginal_entropy']:.2f} of {ln_k:.2f}")
            if (step_no + 1) % opts.save_every == 0 or step_no + 1 == opts.steps:
                _save(run, step_no + 1, opts)
    if not (run.out / "backbone").is_dir():
        _save(run, len(run.history), opts)
    return _summary(run, ln_k)


def _new_run(cfg, out_dim: int, tiny: bool, opts: TrainOptions) -> _Run:
    hidden, bottleneck = (128, 64) if tiny else (2048, 256)
    student = Student(SVTBackbone(cfg), DINOHead(cfg.dim, out_dim, hidden, bottleneck))
    teacher = Student(SVTBackbone(cfg), DINOHead(cfg.dim, out_dim, hidden, bottleneck))
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    params = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": opts.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}], lr=opts.lr)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    return _Run(student, teacher, optim, params, torch.zeros(1, out_dim),
                random.Random(opts.seed), out)


def _resume(run: _Run, opts: TrainOptions) -> None:
    state_path = run.out / STATE
    try:
        st = load_tensors(state_path, "pass --no-resume or a new --out")
        run.student.load_state_dict(st["student"])
        run.teacher.load_state_dict(st["teacher"])
        run.optim.load_state_dict(st["optim"])
        run.center = st["center"]
        run.start, run.history = int(st["step"]), list(st["history"])
        run.rng.setstate(st["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ToolkitError(f"cannot resume from {state_path} ({str(exc).splitlines()[0][:120]}); "
                           "it is from another preset or corrupt — pass --no-resume or a new "
                           "--out") from None
    console.print(f"resuming from step {run.start} ({state_path})")
    if run.start >= opts.steps:
        raise ToolkitError(f"nothing to train: {state_path} is already at step {run.start}; "
                           "raise --steps")


def _step(run: _Run, decoded, specs, step_no: int, opts: TrainOptions, ema_start: float,
          center_ready: bool) -> dict:
    """One optimizer step over a batch of views; the teacher's EMA and centre updated."""
    n_global = sum(s.is_global for s in specs)
    pairs = [(ti, si) for ti in range(n_global) for si in range(len(specs)) if si != ti]
    kinds = [pair_kind(specs[ti], specs[si], ti) for ti, si in pairs]
    batch = [decoded[run.rng.randrange(len(decoded))] for _ in range(opts.batch_size)]
    views = [torch.stack([make_view(f, s, run.rng) for f in batch]) for s in specs]
    lr = _lr(step_no, opts.steps, opts.lr)
    for g in run.optim.param_groups:
        g["lr"] = lr
    with torch.no_grad():
        t_logits = [run.teacher(views[i]) for i in range(n_global)]
        if not center_ready:  # start the centre at the first batch's mean, not at 0
            run.center = torch.cat(t_logits).mean(0, keepdim=True)
        t_probs = [F.softmax((tl - run.center) / opts.teacher_temp, dim=-1) for tl in t_logits]
    s_logp = [F.log_softmax(run.student(v) / opts.student_temp, dim=-1) for v in views]
    terms = {"cross_view": [], "motion": []}
    for (ti, si), kind in zip(pairs, kinds):
        terms[kind].append(torch.sum(-t_probs[ti] * s_logp[si], dim=-1).mean())
    loss = torch.stack(terms["cross_view"] + terms["motion"]).mean()
    run.optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.params, 3.0)
    run.optim.step()
    with torch.no_grad():
        m = _cos_schedule(step_no, opts.steps, ema_start, 1.0)
        for ps, pt in zip(run.student.parameters(), run.teacher.parameters()):
            pt.mul_(m).add_(ps.detach(), alpha=1 - m)
        batch_center = torch.cat(t_logits).mean(0, keepdim=True)
        run.center = run.center * opts.center_momentum + batch_center * (1 - opts.center_momentum)
        tp = torch.cat(t_probs)
    return {"step": step_no + 1, "loss": loss.item(),
            "cross_view_loss": torch.stack(terms["cross_view"]).mean().item(),
            "motion_loss": torch.stack(terms["motion"]).mean().item(),
            "teacher_entropy": float(entropy(tp).mean()),
            "teacher_marginal_entropy": float(entropy(tp.mean(0))), "lr": lr}


def _save(run: _Run, step_no: int, opts: TrainOptions) -> None:
    state_path = run.out / STATE
    torch.save({"student": run.student.state_dict(), "teacher": run.teacher.state_dict(),
                "optim": run.optim.state_dict(), "center": run.center, "step": step_no,
                "history": run.history, "rng": run.rng.getstate(), "options": {
                    k: str(v) for k, v in asdict(opts).items()}}, state_path.with_suffix(".tmp"))
    state_path.with_suffix(".tmp").replace(state_path)
    save_checkpoint(run.teacher.backbone, run.out / "backbone",
                    extra={"trained_steps": step_no, "preset": opts.preset,
                           "method": "SVT self-distillation (teacher backbone)"})


def _summary(run: _Run, ln_k: float) -> dict:
    history = run.history
    k = min(3, len(history))
    summary = {
        "first_loss": float(np.mean([h["loss"] for h in history[:k]])),
        "last_loss": float(np.mean([h["loss"] for h in history[-k:]])),
        "teacher_entropy": history[-1]["teacher_entropy"],
        "teacher_marginal_entropy": history[-1]["teacher_marginal_entropy"],
        "max_entropy": ln_k, "steps": history[-1]["step"],
        "checkpoint": str(run.out / "backbone"), "history": history,
    }
    (run.out / "summary.json").write_text(json.dumps({k: v for k, v in summary.items()
                                                      if k != "history"}, indent=2) + "\n")
    console.print(f"loss {summary['first_loss']:.4f} → {summary['last_loss']:.4f}; teacher "
                  f"entropy {summary['teacher_entropy']:.3f} nats (batch-mean distribution "
                  f"{summary['teacher_marginal_entropy']:.3f} of max {ln_k:.3f}); backbone "
                  f"saved to {summary['checkpoint']}")
    return summary
