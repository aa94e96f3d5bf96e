"""``toolkit train whisper``: fine-tune a Whisper checkpoint on a folder of recordings.

From any checkpoint the toolkit loads (Hugging Face or CTranslate2 directory, hub id, preset) to
a Hugging Face checkpoint directory that ``export``/``bench``/``transcribe`` take directly:

- data: LJSpeech, Hugging Face audiofolder or AIHub (audio + JSON) folders
  (``models/whisper/data.py: load_labelled_folder``), decoded and resampled like ``transcribe``;
  log-mel with the model's own mel-bin count;
- labels: decoder input ``<|startoftranscript|> [language] task <|notimestamps|> text``, targets
  shifted by one; the loss is on the text tokens and the end-of-text only (the prompt and the
  padding are masked), and the start token is given once (the model's own label shifting is
  not used);
- SpecAugment (``--spec-augment``): two time masks (≤ 30 frames, inside the speech) and two
  frequency masks (≤ 30 mel bins) per training example, never on evaluation data;
- evaluation with the toolkit's own greedy decode loop (``runtime/whisper``, the ``torch``
  backend over the live weights): CER and WER before training and every ``--eval-every``
  steps; the checkpoint with the best CER is the one written to ``--out``;
- AdamW, linear warm-up then linear decay, gradient clipping at 1, gradient accumulation;
  bf16 (or fp16 with loss scaling) autocast on CUDA, fp32 on CPU; gradient checkpointing
  (default on from ``medium`` up);
- ``--lora``: low-rank adapters (peft) on the attention projections; the written checkpoint
  has them merged, so it is an ordinary Whisper checkpoint;
- resumable: ``--out/resume/state.pt`` (model, optimizer, schedule, step, best CER) is swapped
  in atomically at every evaluation and read back with ``weights_only=True``.

It lives above the runtime (layer 4, beside ``bench``) because its evaluation runs the toolkit's
decode loop; the Grad-TTS and SVT trainers need nothing above ``models``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape

from ..bench.metrics import scores
from ..core.errors import ToolkitError
from ..core.files import atomic_dir, atomic_write_bytes, check_writable
from ..core.options import check_fields, option
from ..core.progress import Steps, console
from ..core.threads import default_threads
from ..export.whisper.plan import build_plan
from ..models.base import load_tensors
from ..models.whisper.audio import HOP_LENGTH, N_SAMPLES, load_audio, log_mel
from ..models.whisper.data import load_labelled_folder
from ..models.whisper.loading import PRESETS, LoadedWhisper, load_model
from ..runtime.from_model import open_model
from ..runtime.graphs import make_pipeline
from ..runtime.torch_session import torch_device
from ..runtime.whisper.pipeline import from_graphs

# Learning rates usual for fine-tuning each size (about 1/40 of Whisper's pre-training rates),
# keyed by d_model: tiny, base, small, medium, large.
DEFAULT_LR = {384: 3.75e-5, 512: 2.5e-5, 768: 1.25e-5, 1024: 6.25e-6, 1280: 4.375e-6}
DEFAULT_EPOCHS = 3
LORA_TARGETS = ("q_proj", "v_proj")
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "normalizer.json",
    "preprocessor_config.json",
)
RUN_FILES = {
    "train_log.jsonl",
    "eval.json",
    "resume",
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "generation_config.json",
    *TOKENIZER_FILES,
}
MASK_WIDTH, N_MASKS = 30, 2


@dataclass
class Example:
    name: str
    audio: np.ndarray
    text: str
    tokens: list[int]


def is_run_dir(directory: Path) -> bool:
    """A directory this trainer wrote (it may be resumed): its files only (and the temporary
    folder of a save that was interrupted)."""
    names = {p.name for p in directory.iterdir() if not p.name.startswith(".")}  # temp/locks
    names = {n for n in names if not (n.startswith("model-") and n.endswith(".safetensors"))}
    return "train_log.jsonl" in names and names <= RUN_FILES


def _check_out(out: Path, resume: bool) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"--out {out} is a file; choose a directory")
    if resume:
        if not (out / "resume" / "state.pt").is_file():
            raise ToolkitError(
                f"nothing to resume in {out} (no resume/state.pt); drop --resume "
                "to start a new run there"
            )
        return check_writable(out)
    if out.is_dir() and any(out.iterdir()):
        if is_run_dir(out):
            raise ToolkitError(
                f"{out} already holds a training run; add --resume to continue "
                "it, or choose another --out"
            )
        raise ToolkitError(
            f"{out} is not empty and not a toolkit training run; choose another "
            "--out (nothing there is replaced)"
        )
    return check_writable(out)


def _examples(items, tok, prompt_len: int, max_positions: int, what: str) -> list[Example]:
    """Decode every item; skip (and list) unreadable and over-long audio — one broken file of
    thousands should not stop a run — and fail if nothing is left."""
    out, bad, long_, cut = [], [], [], 0
    limit = max_positions - prompt_len - 1
    for u in items:
        try:
            audio = load_audio(u.path)
        except ToolkitError:
            bad.append(u.path.name)
            continue
        if len(audio) > N_SAMPLES:
            long_.append(u.path.name)
            continue
        tokens = tok.encode(" " + u.text.strip())
        if len(tokens) > limit:
            tokens, cut = tokens[:limit], cut + 1
        out.append(Example(u.path.name, audio, u.text, tokens))
    for names, why in (
        (bad, "unreadable or silent"),
        (long_, "longer than 30 s (cut them into ≤ 30-s clips)"),
    ):
        if names:
            console.print(
                f"[yellow]warning:[/] skipped {len(names)} {what} file(s), {why}: "
                + ", ".join(names[:5])
                + (", …" if len(names) > 5 else "")
            )
    if cut:
        console.print(f"[yellow]warning:[/] {cut} {what} transcript(s) cut to {limit} tokens")
    if not out:
        raise ToolkitError(f"no usable {what} audio (all {len(items)} files skipped)")
    return out


def spec_augment(feats: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Two time masks (≤ 30 frames, within the first ``frames`` frames: the speech) and two
    frequency masks (≤ 30 bins), filled with the example's mean."""
    feats = feats.copy()
    fill = float(feats[:, : max(1, frames)].mean())
    n_mels = feats.shape[0]
    for _ in range(N_MASKS):
        w = int(rng.integers(0, MASK_WIDTH + 1))
        if frames > w:
            t0 = int(rng.integers(0, frames - w))
            feats[:, t0 : t0 + w] = fill
        w = int(rng.integers(0, min(MASK_WIDTH, n_mels // 2) + 1))
        f0 = int(rng.integers(0, n_mels - w + 1))
        feats[f0 : f0 + w, :] = fill
    return feats


def _batch(
    examples: list[Example],
    prompt: list[int],
    eot: int,
    n_mels: int,
    augment: bool,
    rng: np.random.Generator,
):
    feats = []
    for ex in examples:
        f = log_mel(ex.audio, n_mels)
        if augment:
            f = spec_augment(f, len(ex.audio) // HOP_LENGTH, rng)
        feats.append(f)
    seqs = [prompt + ex.tokens for ex in examples]
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), eot, np.int64)
    labels = np.full((len(seqs), width), -100, np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        target = s[1:] + [eot]  # position j predicts token j + 1
        labels[i, : len(s)] = target
        labels[i, : len(prompt) - 1] = -100  # predicting the prompt is not learned
    return (torch.from_numpy(np.stack(feats)), torch.from_numpy(ids), torch.from_numpy(labels))


def evaluate(pipe, examples: list[Example], prompt: list[int],
             language: str | None = None) -> dict:
    """Greedy transcripts of ``examples`` with the toolkit's decode loop; CER/WER in pp after
    Whisper's normaliser for ``language`` (``bench/metrics.py``), and the raw figures."""
    hyps = []
    for ex in examples:
        res = pipe.decode(ex.audio, prompt, max_new_tokens=224)
        hyps.append("".join(pipe.tokenizer.decode(w) for w in res.tokens).strip())
    got = scores(hyps, [ex.text for ex in examples], language)
    if got["cer"] is None:
        raise ToolkitError(
            "the evaluation transcripts hold no letters or digits once "
            "normalised (punctuation removed); nothing to score CER against — check them"
        )
    return {"cer": got["cer"], "wer": got["wer"], "cer_raw": got["cer_raw"],
            "wer_raw": got["wer_raw"], "cer_nospace": got["cer_nospace"],
            "normalizer": got["normalizer"], "texts": hyps}


def _schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _save_checkpoint(model, loaded: LoadedWhisper, out: Path, lora: bool) -> None:
    """The Hugging Face checkpoint files, written into ``out`` file by file (each atomically:
    a temporary sibling renamed into place), everything else in ``out`` left alone."""
    merged = copy.deepcopy(model).merge_and_unload() if lora else model
    merged.config.use_cache = True  # off only while training with checkpointing
    src = Path(loaded.source.get("checkpoint") or "")
    with tempfile.TemporaryDirectory(prefix=".save-", dir=out) as tmp, warnings.catch_warnings():
        # transformers notes that suppress_tokens also sit in the model config: harmless
        warnings.simplefilter("ignore", UserWarning)
        merged.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if src.is_dir() and (src / name).is_file():
                shutil.copy2(src / name, Path(tmp) / name)
        for f in sorted(Path(tmp).iterdir(), key=lambda p: p.name == "config.json"):
            os.replace(f, out / f.name)  # config.json last: a complete set before it


@dataclass
class TrainOptions:
    """``toolkit train whisper``: every option, its help and its range, written once here (the
    command line is generated from it)."""

    data: Path = option(help="Training folder: LJSpeech (metadata.csv + wavs/), audiofolder "
                             "(metadata.csv with file_name) or audio + AIHub JSON.")
    out: Path = option(Path("runs/whisper-finetune"), "Output: a Hugging Face checkpoint (the "
                       "best CER) + train_log.jsonl, eval.json, resume/.", flag="--out")
    checkpoint: str | None = option(None, "Start from this Hugging Face / CTranslate2 directory "
                                    "or hub id (default: the built-in tiny.en).")
    preset: str | None = option(None, "Start from random weights of this size (tests).",
                                choices=tuple(PRESETS))
    eval_data: Path | None = option(None, "Evaluation folder (default: the last clips of "
                                    "--data, see --eval-split).")
    eval_split: int | None = option(None, "Hold out the last N clips of --data for evaluation "
                                    "(default 10 %).", min=1, max=10**9)
    language: str | None = option(None, "Language of the data (multilingual models), e.g. ko.")
    task: str = option("transcribe", "transcribe or translate.",
                       choices=("transcribe", "translate"))
    steps: int | None = option(None, "Optimizer steps (default: 3 epochs).", min=1, max=10**9)
    epochs: int | None = option(None, "Passes over the training clips.", min=1, max=10**6)
    batch_size: int = option(8, "Clips per micro-batch.", min=1, max=4096)
    grad_accum: int = option(1, "Micro-batches per optimizer step.", min=1, max=4096)
    lr: float | None = option(None, "Peak learning rate (default by size: tiny 3.75e-5 … large "
                              "4.4e-6).", min=1e-9, max=1.0)
    warmup: int | None = option(None, "Linear warm-up steps (default 10 %, at most 500).", min=0,
                                max=10**9)
    spec_augment: bool = option(False, "Time and frequency masking of training features.")
    lora: bool = option(False, "Train low-rank adapters on the attention projections (merged "
                               "when saved).")
    lora_rank: int = option(8, "LoRA rank.", min=1, max=1024)
    eval_every: int | None = option(None, "Evaluate (greedy decode, CER/WER) every N steps "
                                    "(default: 10 epochs).", min=1, max=10**9)
    resume: bool = option(False, "Continue the run in --out from its last evaluation.")
    gradient_checkpointing: bool | None = option(None, "Recompute activations in backward "
                                                 "(default: on from medium up).", negatable=True)
    seed: int = option(0, "Seed of the weights (presets), the order and the augmentation.",
                       min=0, max=2**32 - 1)

    def check(self) -> None:
        check_fields(self)
        if self.steps is not None and self.epochs is not None:
            raise ToolkitError("give --steps or --epochs, not both")


def _split(opts: TrainOptions) -> tuple[list, list]:
    """The training and evaluation items: --eval-data, or the last clips of --data."""
    train_items = load_labelled_folder(opts.data)
    if opts.eval_data:
        return train_items, load_labelled_folder(opts.eval_data)
    n_eval = opts.eval_split
    if n_eval is None:
        n_eval = max(1, round(0.1 * len(train_items)))
    if n_eval >= len(train_items):
        raise ToolkitError(f"--eval-split {n_eval} leaves no training data ({len(train_items)}"
                           " clips); give fewer, or --eval-data")
    # the last clips of the folder's order are held out (a fixed, documented split)
    return train_items[:-n_eval], train_items[-n_eval:]


def _prompt(tok, opts: TrainOptions) -> list[int]:
    """The decoder prompt of every example; the model must be able to learn the language."""
    language, task = opts.language, opts.task
    if tok.multilingual:
        if language is None:
            raise ToolkitError(
                "this model is multilingual: give --language, the language of the data (e.g. ko)")
        tok.language_token(language)
    elif language not in (None, "en") or task != "transcribe":
        what = "--language " + language if language not in (None, "en") else "--task translate"
        raise ToolkitError(f"this is an English-only model (.en): it cannot learn {what}; start "
                           "from a multilingual checkpoint")
    return tok.sot_sequence(language if tok.multilingual else None, task)


def _trainable(model, cfg, opts: TrainOptions):
    """The module whose parameters learn: the model, or its LoRA wrapper; checkpointing on."""
    checkpointing = opts.gradient_checkpointing
    if checkpointing is None:
        checkpointing = cfg.d_model >= 1024
    if checkpointing:
        model.config.use_cache = False
        # non-reentrant: with LoRA the encoder's inputs need no gradient, and the reentrant
        # variant would then cut the encoder adapters off from the loss
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not opts.lora:
        return model, checkpointing
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ToolkitError("--lora needs peft: pip install 'toolkit[export]' (or peft)") from None
    config = LoraConfig(r=opts.lora_rank, lora_alpha=2 * opts.lora_rank, lora_dropout=0.05,
                        target_modules=list(LORA_TARGETS))
    wrapped = get_peft_model(model, config)
    if checkpointing:
        model.enable_input_require_grads()
    return wrapped, checkpointing


class _Trainer:
    """One run: the model, its optimizer and schedule, the evaluations, the saved state."""

    def __init__(self, opts: TrainOptions, loaded: LoadedWhisper, out: Path):
        self.opts, self.loaded, self.out = opts, loaded, out
        self.tok, self.cfg = loaded.tokenizer, loaded.config
        self.prompt = _prompt(self.tok, opts)
        train_items, eval_items = _split(opts)
        limit = self.cfg.max_target_positions
        self.train_ex = _examples(train_items, self.tok, len(self.prompt), limit, "training")
        self.eval_ex = _examples(eval_items, self.tok, len(self.prompt), limit, "evaluation")
        per_epoch = math.ceil(len(self.train_ex) / (opts.batch_size * opts.grad_accum))
        self.total = opts.steps if opts.steps is not None else per_epoch * (
            opts.epochs or DEFAULT_EPOCHS)
        self.warmup = opts.warmup if opts.warmup is not None else min(500, self.total // 10)
        self.eval_every = opts.eval_every or max(1, min(self.total, 10 * per_epoch))
        self.lr = opts.lr or DEFAULT_LR.get(self.cfg.d_model, 1e-5)
        self.device = torch_device()  # the evaluation pipeline runs on the same device
        self.amp = None
        if self.device == "cuda":
            self.amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.model = loaded.model.to(self.device)
        self.trainable, self.checkpointing = _trainable(self.model, self.cfg, opts)
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _schedule(self.warmup, self.total))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.start, self.best, self.evals = 0, None, []
        self.pipe = None

    def resume(self) -> None:
        out = self.out
        state = load_tensors(out / "resume" / "state.pt", "delete resume/ or choose a new --out")
        try:
            self.trainable.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.start, best = int(state["step"]), state.get("best_cer")
            self.best = None if best is None else float(best)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ToolkitError(
                f"cannot resume from {out / 'resume' / 'state.pt'} "
                f"({str(exc).splitlines()[0][:120]}); it belongs to another model "
                "or setting (--lora?) — drop --resume and choose a new --out"
            ) from None
        # what was logged after the saved state (a crash between the two) is dropped
        if (out / "eval.json").is_file():
            self.evals = [e for e in json.loads((out / "eval.json").read_text())
                          if e["step"] <= self.start]
        if (out / "train_log.jsonl").is_file():
            kept = [line for line in (out / "train_log.jsonl").read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.start]
            atomic_write_bytes(out / "train_log.jsonl", "".join(k + "\n" for k in kept).encode())
        console.print(f"resuming {escape(str(out))} at step {self.start} of {self.total}")

    def describe(self) -> str:
        o, amp = self.opts, self.amp
        n_params = sum(p.numel() for p in self.params)
        return (f"train whisper from {self.loaded.weights}: {len(self.train_ex)} training / "
                f"{len(self.eval_ex)} evaluation clips, "
                f"{self.total} steps × {o.batch_size} × {o.grad_accum}, lr {self.lr:g} "
                f"(warm-up {self.warmup}), {n_params / 1e6:.1f} M trainable parameters"
                f"{' (LoRA)' if o.lora else ''}, "
                f"{self.device}{' ' + str(amp).split('.')[-1] if amp else ' fp32'}"
                f"{', SpecAugment' if o.spec_augment else ''}"
                f"{', gradient checkpointing' if self.checkpointing else ''}")

    def evaluate(self, step: int, loss: float | None) -> dict:
        self.model.eval()
        res = evaluate(self.pipe, self.eval_ex, self.prompt, self.opts.language)
        self.model.train()
        rec = {"step": step, "cer": res["cer"], "wer": res["wer"], "cer_raw": res["cer_raw"],
               "wer_raw": res["wer_raw"], "normalizer": res["normalizer"], "train_loss": loss,
               "texts": res["texts"]}
        if res["cer_nospace"] is not None:
            rec["cer_nospace"] = res["cer_nospace"]
        self.evals.append(rec)
        atomic_write_bytes(self.out / "eval.json",
                           (json.dumps(self.evals, indent=1) + "\n").encode())
        if self.best is None or rec["cer"] < self.best:
            self.best = rec["cer"]
            _save_checkpoint(self.trainable, self.loaded, self.out, self.opts.lora)
        self.save_state(step)
        return rec

    def save_state(self, step: int) -> None:
        with atomic_dir(self.out / "resume", owned=lambda p: (p / "state.pt").is_file()) as tmp:
            torch.save({"model": self.trainable.state_dict(), "optimizer": self.opt.state_dict(),
                        "scheduler": self.sched.state_dict(), "step": step,
                        "best_cer": self.best}, tmp / "state.pt")

    def micro_batch(self, idx: list[int], rng: np.random.Generator, step: int) -> float:
        """Forward and backward of one micro-batch; its loss."""
        feats, ids, labels = _batch([self.train_ex[i] for i in idx], self.prompt, self.tok.eot,
                                    self.cfg.num_mel_bins, self.opts.spec_augment, rng)
        feats, ids, labels = (t.to(self.device) for t in (feats, ids, labels))
        with torch.autocast(self.device, dtype=self.amp, enabled=self.amp is not None):
            logits = self.model(input_features=feats, decoder_input_ids=ids,
                                use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                 labels.reshape(-1), ignore_index=-100)
        if not torch.isfinite(loss):
            raise ToolkitError(f"loss became {loss.item()} at step {step}; lower --lr")
        scaled = loss / self.opts.grad_accum
        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return loss.item() / self.opts.grad_accum

    def optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.sched.step()

    def run(self) -> list[float]:
        """The steps from ``start`` to ``total``; the loss of each."""
        opts, bs = self.opts, self.opts.batch_size
        rng = np.random.default_rng(opts.seed + self.start)
        order: list[int] = []
        losses: list[float] = []
        self.model.train()
        last_cer = self.best
        with Steps(f"train whisper ({self.loaded.name})", total=self.total - self.start) as bar:
            for step in range(self.start + 1, self.total + 1):
                step_t = time.perf_counter()
                self.opt.zero_grad(set_to_none=True)
                loss = 0.0
                for _ in range(opts.grad_accum):
                    if len(order) < bs:
                        order += list(rng.permutation(len(self.train_ex)))
                    idx, order = order[:bs], order[bs:]
                    loss += self.micro_batch(idx, rng, step)
                self.optimizer_step()
                losses.append(loss)
                rec = {"step": step, "loss": round(loss, 5), "lr": self.sched.get_last_lr()[0],
                       "seconds": round(time.perf_counter() - step_t, 3)}
                with open(self.out / "train_log.jsonl", "a") as logf:
                    logf.write(json.dumps(rec) + "\n")
                if step % self.eval_every == 0 or step == self.total:
                    last_cer = self.evaluate(step, loss)["cer"]
                bar.advance(f"loss {loss:.3f} lr {rec['lr']:.2e}"
                            + (f" CER {last_cer:.2f}" if last_cer is not None else ""))
        return losses


def train(opts: TrainOptions) -> dict:
    """Fine-tune as ``opts`` says; the summary (losses, CERs, seconds per step, the output)."""
    opts.check()
    out = _check_out(Path(opts.out), opts.resume)
    torch.set_num_threads(default_threads())
    torch.manual_seed(opts.seed)
    run = _Trainer(opts, load_model(opts.checkpoint, opts.preset, opts.seed), out)
    if opts.resume:
        run.resume()
        if run.start >= run.total:
            console.print(f"{escape(str(out))} is already at step {run.start} ≥ {run.total}; "
                          "nothing to do")
            return {"step": run.start, "evals": run.evals, "out": str(out)}
    out.mkdir(parents=True, exist_ok=True)
    run.pipe = make_pipeline(open_model(run.loaded, build_plan, "torch"), from_graphs)
    console.print(run.describe())
    if run.start == 0:
        run.best = None
        first = run.evaluate(0, None)   # the starting point is the checkpoint until one beats it
        console.print(f"before training: CER {first['cer']:.2f} %, WER {first['wer']:.2f} % "
                      f"on {len(run.eval_ex)} clips")
    t0 = time.perf_counter()
    losses = run.run()
    k = max(1, len(losses) // 5)
    summary = {
        "step": run.total,
        "loss_first": float(np.mean(losses[:k])) if losses else None,
        "loss_last": float(np.mean(losses[-k:])) if losses else None,
        "cer_before": run.evals[0]["cer"] if run.evals else None,
        "cer_best": run.best,
        "seconds_per_step": (time.perf_counter() - t0) / max(1, len(losses)),
        "evals": run.evals,
        "out": str(out),
    }
    console.print(
        f"loss {summary['loss_first']:.3f} → {summary['loss_last']:.3f}; CER "
        f"{summary['cer_before']:.2f} → best {run.best:.2f} % "
        f"[{summary['seconds_per_step']:.1f} s/step]")
    console.print(f"[green]✓[/] {escape(str(out))}: the checkpoint with the best CER; export it "
                  f"with `toolkit export whisper --checkpoint {out}`")
    return summary
