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

from ..bench.metrics import corpus_cer, corpus_wer
from ..core.errors import ToolkitError, check_positive
from ..core.files import atomic_dir, atomic_write_bytes, check_writable
from ..core.progress import Steps, console
from ..core.threads import default_threads
from ..export.whisper.plan import build_plan
from ..models.base import load_tensors
from ..models.whisper.audio import HOP_LENGTH, N_SAMPLES, load_audio, log_mel
from ..models.whisper.data import load_labelled_folder
from ..models.whisper.loading import LoadedWhisper, load_model
from ..runtime.from_model import open_model
from ..runtime.graphs import make_pipeline
from ..runtime.torch_session import torch_device
from ..runtime.whisper.pipeline import from_graphs

# Learning rates usual for fine-tuning each size (about 1/40 of Whisper's pre-training rates),
# keyed by d_model: tiny, base, small, medium, large.
DEFAULT_LR = {384: 3.75e-5, 512: 2.5e-5, 768: 1.25e-5, 1024: 6.25e-6, 1280: 4.375e-6}
DEFAULT_EPOCHS = 3
LORA_TARGETS = ("q_proj", "v_proj")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json",
                   "special_tokens_map.json", "tokenizer_config.json", "normalizer.json",
                   "preprocessor_config.json")
RUN_FILES = {"train_log.jsonl", "eval.json", "resume", "config.json", "model.safetensors",
             "model.safetensors.index.json", "generation_config.json", *TOKENIZER_FILES}
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
            raise ToolkitError(f"nothing to resume in {out} (no resume/state.pt); drop --resume "
                               "to start a new run there")
        return check_writable(out)
    if out.is_dir() and any(out.iterdir()):
        if is_run_dir(out):
            raise ToolkitError(f"{out} already holds a training run; add --resume to continue "
                               "it, or choose another --out")
        raise ToolkitError(f"{out} is not empty and not a toolkit training run; choose another "
                           "--out (nothing there is replaced)")
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
    for names, why in ((bad, "unreadable or silent"), (long_, "longer than 30 s (cut them into "
                                                               "≤ 30-s clips)")):
        if names:
            console.print(f"[yellow]warning:[/] skipped {len(names)} {what} file(s), {why}: "
                          + ", ".join(names[:5]) + (", …" if len(names) > 5 else ""))
    if cut:
        console.print(f"[yellow]warning:[/] {cut} {what} transcript(s) cut to {limit} tokens")
    if not out:
        raise ToolkitError(f"no usable {what} audio (all {len(items)} files skipped)")
    return out


def spec_augment(feats: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """Two time masks (≤ 30 frames, within the first ``frames`` frames: the speech) and two
    frequency masks (≤ 30 bins), filled with the example's mean."""
    feats = feats.copy()
    fill = float(feats[:, :max(1, frames)].mean())
    n_mels = feats.shape[0]
    for _ in range(N_MASKS):
        w = int(rng.integers(0, MASK_WIDTH + 1))
        if frames > w:
            t0 = int(rng.integers(0, frames - w))
            feats[:, t0:t0 + w] = fill
        w = int(rng.integers(0, min(MASK_WIDTH, n_mels // 2) + 1))
        f0 = int(rng.integers(0, n_mels - w + 1))
        feats[f0:f0 + w, :] = fill
    return feats


def _batch(examples: list[Example], prompt: list[int], eot: int, n_mels: int,
           augment: bool, rng: np.random.Generator):
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
        ids[i, :len(s)] = s
        target = s[1:] + [eot]                    # position j predicts token j + 1
        labels[i, :len(s)] = target
        labels[i, :len(prompt) - 1] = -100        # predicting the prompt is not learned
    return (torch.from_numpy(np.stack(feats)), torch.from_numpy(ids), torch.from_numpy(labels))


def evaluate(pipe, examples: list[Example], prompt: list[int]) -> dict:
    """Greedy transcripts of ``examples`` with the toolkit's decode loop; CER/WER in pp."""
    hyps = []
    for ex in examples:
        res = pipe.decode(ex.audio, prompt, max_new_tokens=224)
        hyps.append("".join(pipe.tokenizer.decode(w) for w in res.tokens).strip())
    refs = [ex.text for ex in examples]
    cer = corpus_cer(hyps, refs)
    if cer is None:
        raise ToolkitError("the evaluation transcripts hold no letters or digits once "
                           "punctuation is removed; nothing to score CER against — check them")
    return {"cer": cer, "wer": corpus_wer(hyps, refs), "texts": hyps}


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
    merged.config.use_cache = True            # off only while training with checkpointing
    src = Path(loaded.source.get("checkpoint") or "")
    with tempfile.TemporaryDirectory(prefix=".save-", dir=out) as tmp, \
            warnings.catch_warnings():
        # transformers notes that suppress_tokens also sit in the model config: harmless
        warnings.simplefilter("ignore", UserWarning)
        merged.save_pretrained(tmp, safe_serialization=True)
        for name in TOKENIZER_FILES:
            if src.is_dir() and (src / name).is_file():
                shutil.copy2(src / name, Path(tmp) / name)
        for f in sorted(Path(tmp).iterdir(), key=lambda p: p.name == "config.json"):
            os.replace(f, out / f.name)           # config.json last: a complete set before it


def train(data, out, checkpoint: str | None = None, preset: str | None = None,
          eval_data=None, eval_split: int | None = None, language: str | None = None,
          task: str = "transcribe", steps: int | None = None, epochs: int | None = None,
          batch_size: int = 8, grad_accum: int = 1, lr: float | None = None,
          warmup: int | None = None, augment: bool = False, lora: bool = False,
          lora_rank: int = 8, eval_every: int | None = None, resume: bool = False,
          gradient_checkpointing: bool | None = None, seed: int = 0) -> dict:
    check_positive(batch_size=batch_size, grad_accum=grad_accum, steps=steps, epochs=epochs,
                   eval_every=eval_every, lora_rank=lora_rank, eval_split=eval_split)
    if steps is not None and epochs is not None:
        raise ToolkitError("give --steps or --epochs, not both")
    if warmup is not None and warmup < 0:
        raise ToolkitError(f"--warmup must be 0 or more (got {warmup})")
    if lr is not None and not lr > 0:
        raise ToolkitError(f"--lr must be above 0 (got {lr})")
    if task not in ("transcribe", "translate"):
        raise ToolkitError(f"--task must be transcribe or translate (got {task!r})")
    out = _check_out(Path(out), resume)
    train_items = load_labelled_folder(data)
    eval_items = load_labelled_folder(eval_data) if eval_data else None
    if eval_items is None:
        n_eval = eval_split if eval_split is not None else max(1, round(0.1 * len(train_items)))
        if n_eval >= len(train_items):
            raise ToolkitError(f"--eval-split {n_eval} leaves no training data ({len(train_items)}"
                               " clips); give fewer, or --eval-data")
        # the last clips of the folder's order are held out (a fixed, documented split)
        train_items, eval_items = train_items[:-n_eval], train_items[-n_eval:]

    torch.set_num_threads(default_threads())
    torch.manual_seed(seed)
    loaded = load_model(checkpoint, preset, seed)
    tok, cfg = loaded.tokenizer, loaded.config
    if tok.multilingual:
        if language is None:
            raise ToolkitError("this model is multilingual: give --language, the language of "
                               "the data (e.g. ko)")
        tok.language_token(language)
    elif language not in (None, "en") or task != "transcribe":
        raise ToolkitError(f"this is an English-only model (.en): it cannot learn "
                           f"{'--language ' + language if language not in (None, 'en') else '--task translate'}"
                           "; start from a multilingual checkpoint")
    prompt = tok.sot_sequence(language if tok.multilingual else None, task)
    train_ex = _examples(train_items, tok, len(prompt), cfg.max_target_positions, "training")
    eval_ex = _examples(eval_items, tok, len(prompt), cfg.max_target_positions, "evaluation")

    per_epoch = math.ceil(len(train_ex) / (batch_size * grad_accum))
    total = steps if steps is not None else per_epoch * (epochs or DEFAULT_EPOCHS)
    warmup = warmup if warmup is not None else min(500, total // 10)
    eval_every = eval_every or max(1, min(total, 10 * per_epoch))
    lr = lr or DEFAULT_LR.get(cfg.d_model, 1e-5)
    device = torch_device()            # the evaluation pipeline runs on the same device
    amp = None
    if device == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    model = loaded.model.to(device)
    if gradient_checkpointing is None:
        gradient_checkpointing = cfg.d_model >= 1024
    if gradient_checkpointing:
        model.config.use_cache = False
        # non-reentrant: with LoRA the encoder's inputs need no gradient, and the reentrant
        # variant would then cut the encoder adapters off from the loss
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable = model
    if lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ToolkitError("--lora needs peft: pip install 'toolkit[train]' (or peft)") from None
        trainable = get_peft_model(model, LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank,
                                                     lora_dropout=0.05,
                                                     target_modules=list(LORA_TARGETS)))
        if gradient_checkpointing:
            model.enable_input_require_grads()
    params = [p for p in trainable.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(warmup, total))
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None

    start, best, evals = 0, None, []
    if resume:
        state = load_tensors(out / "resume" / "state.pt", "delete resume/ or choose a new --out")
        try:
            trainable.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start, best = int(state["step"]), state.get("best_cer")
            best = None if best is None else float(best)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ToolkitError(f"cannot resume from {out / 'resume' / 'state.pt'} "
                               f"({str(exc).splitlines()[0][:120]}); it belongs to another model "
                               "or setting (--lora?) — drop --resume and choose a new --out") from None
        # what was logged after the saved state (a crash between the two) is dropped
        if (out / "eval.json").is_file():
            evals = [e for e in json.loads((out / "eval.json").read_text())
                     if e["step"] <= start]
        if (out / "train_log.jsonl").is_file():
            kept = [line for line in (out / "train_log.jsonl").read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= start]
            atomic_write_bytes(out / "train_log.jsonl", "".join(k + "\n" for k in kept).encode())
        console.print(f"resuming {escape(str(out))} at step {start} of {total}")
        if start >= total:
            console.print(f"{escape(str(out))} is already at step {start} ≥ {total}; nothing "
                          "to do")
            return {"step": start, "evals": evals, "out": str(out)}
    out.mkdir(parents=True, exist_ok=True)
    pipe = make_pipeline(open_model(loaded, build_plan, "torch"), from_graphs)
    log_path = out / "train_log.jsonl"
    n_params = sum(p.numel() for p in params)
    console.print(f"train whisper from {loaded.weights}: {len(train_ex)} training / "
                  f"{len(eval_ex)} evaluation clips, "
                  f"{total} steps × {batch_size} × {grad_accum}, lr {lr:g} (warm-up {warmup}), "
                  f"{n_params / 1e6:.1f} M trainable parameters{' (LoRA)' if lora else ''}, "
                  f"{device}{' ' + str(amp).split('.')[-1] if amp else ' fp32'}"
                  f"{', SpecAugment' if augment else ''}"
                  f"{', gradient checkpointing' if gradient_checkpointing else ''}")

    def run_eval(step: int, loss: float | None) -> dict:
        model.eval()
        res = evaluate(pipe, eval_ex, prompt)
        model.train()
        rec = {"step": step, "cer": res["cer"], "wer": res["wer"], "train_loss": loss,
               "texts": res["texts"]}
        evals.append(rec)
        atomic_write_bytes(out / "eval.json", (json.dumps(evals, indent=1) + "\n").encode())
        return rec

    def save_state(step: int) -> None:
        with atomic_dir(out / "resume", owned=lambda p: (p / "state.pt").is_file()) as tmp:
            torch.save({"model": trainable.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "step": step, "best_cer": best},
                       tmp / "state.pt")

    if start == 0:
        first = run_eval(0, None)
        console.print(f"before training: CER {first['cer']:.2f} %, WER {first['wer']:.2f} % "
                      f"on {len(eval_ex)} clips")
        best = first["cer"]
        _save_checkpoint(trainable, loaded, out, lora)  # the starting point until one beats it
        save_state(0)                                   # a run stopped early resumes from here
    rng = np.random.default_rng(seed + start)
    order: list[int] = []
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    last_cer = best
    with Steps(f"train whisper ({loaded.name})", total=total - start) as bar:
        for step in range(start + 1, total + 1):
            step_t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss_sum = 0.0
            for _ in range(grad_accum):
                if len(order) < batch_size:
                    order += list(rng.permutation(len(train_ex)))
                idx, order = order[:batch_size], order[batch_size:]
                feats, ids, labels = _batch([train_ex[i] for i in idx], prompt, tok.eot,
                                            cfg.num_mel_bins, augment, rng)
                feats, ids, labels = feats.to(device), ids.to(device), labels.to(device)
                with torch.autocast(device, dtype=amp, enabled=amp is not None):
                    logits = model(input_features=feats, decoder_input_ids=ids,
                                   use_cache=False).logits
                loss = torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                    ignore_index=-100)
                if not torch.isfinite(loss):
                    raise ToolkitError(f"loss became {loss.item()} at step {step}; lower --lr")
                (scaler.scale(loss / grad_accum) if scaler else loss / grad_accum).backward()
                loss_sum += loss.item() / grad_accum
            if scaler:
                scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            losses.append(loss_sum)
            rec = {"step": step, "loss": round(loss_sum, 5), "lr": sched.get_last_lr()[0],
                   "seconds": round(time.perf_counter() - step_t, 3)}
            with open(log_path, "a") as logf:
                logf.write(json.dumps(rec) + "\n")
            info = f"loss {loss_sum:.3f} lr {rec['lr']:.2e}"
            if step % eval_every == 0 or step == total:
                ev = run_eval(step, loss_sum)
                last_cer = ev["cer"]
                if best is None or ev["cer"] < best:
                    best = ev["cer"]
                    _save_checkpoint(trainable, loaded, out, lora)
                save_state(step)
            bar.advance(info + (f" CER {last_cer:.2f}" if last_cer is not None else ""))
    k = max(1, len(losses) // 5)
    summary = {"step": total, "loss_first": float(np.mean(losses[:k])) if losses else None,
               "loss_last": float(np.mean(losses[-k:])) if losses else None,
               "cer_before": evals[0]["cer"] if evals else None, "cer_best": best,
               "seconds_per_step": (time.perf_counter() - t0) / max(1, len(losses)),
               "evals": evals, "out": str(out)}
    console.print(f"loss {summary['loss_first']:.3f} → {summary['loss_last']:.3f}; CER "
                  f"{summary['cer_before']:.2f} → best {best:.2f} % "
                  f"[{summary['seconds_per_step']:.1f} s/step]")
    console.print(f"[green]✓[/] {escape(str(out))}: the checkpoint with the best CER; export it "
                  f"with `toolkit export whisper --checkpoint {out}`")
    return summary
