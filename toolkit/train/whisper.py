"""``toolkit train whisper``: fine-tune a Whisper checkpoint on a folder of recordings.

From any checkpoint the toolkit loads (Hugging Face or CTranslate2 directory, hub id, preset) to
a Hugging Face checkpoint directory that ``export``/``bench``/``transcribe`` take directly:

- data: LJSpeech, Hugging Face audiofolder or AIHub (audio + JSON) folders
  (``models/whisper/data.py: load_labelled_folder``), listed once with their durations from
  the file headers, then *streamed* (``train/whisper_data.py``): ``--workers`` DataLoader
  processes decode each clip like ``transcribe`` and compute its log-mel (the model's mel-bin
  count) a batch ahead of the training loop, in length-grouped batches; unreadable, silent or
  over-long clips are skipped as they come, counted and named at the end of every epoch (and
  in ``train_log.jsonl``). Memory holds the batches in flight, not the data set;
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
- several processes (``torchrun``; one per GPU, or CPU processes with gloo): PyTorch's own
  ``DistributedDataParallel`` all-reduces the gradients; each process trains on its part of
  every global batch (``--batch-size`` clips each), evaluates its share of the evaluation clips
  (gathered on rank 0), and only rank 0 writes logs, ``eval.json`` and checkpoints;
- resumable exactly: ``--out/resume/state.pt`` (model, optimizer, schedule, step, best CER, the
  stream's position, every process's RNG) is swapped in atomically at every evaluation and
  every ``--save-every`` steps and read back with ``weights_only=True``; a resumed run sees the
  same batches in the same order (and the same SpecAugment masks) from where it stopped.

It lives above the runtime (layer 4, beside ``bench``) because its evaluation runs the toolkit's
decode loop; the Grad-TTS and SVT trainers need nothing above ``models``.
"""

from __future__ import annotations

import contextlib
import copy
import json
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

from ..bench.metrics import RunningScores
from ..core.audio import TooLong
from ..core.errors import ToolkitError
from ..core.files import atomic_dir, atomic_write_bytes, check_writable
from ..core.memory import rss_bytes
from ..core.options import check_fields, option
from ..core.progress import Steps, console
from ..core.threads import default_threads
from ..export.whisper.plan import build_plan
from ..models.base import load_tensors
from ..models.whisper.audio import CHUNK_SECONDS, N_FRAMES, N_SAMPLES, load_audio
from ..models.whisper.data import load_labelled_folder
from ..models.whisper.loading import PRESETS, LoadedWhisper, load_model
from ..runtime.from_model import open_model
from ..runtime.graphs import make_pipeline
from ..runtime.torch_session import torch_device
from ..runtime.whisper.pipeline import from_graphs
from .whisper_data import (
    TOO_LONG,
    UNREADABLE,
    Batch,
    Clips,
    FeatureCache,
    GroupedBatches,
    index_clips,
    loader,
    spec_augment,  # noqa: F401 (re-exported: the library's name for it)
)

# Learning rates usual for fine-tuning each size (about 1/40 of Whisper's pre-training rates),
# keyed by d_model: tiny, base, small, medium, large.
DEFAULT_LR = {384: 3.75e-5, 512: 2.5e-5, 768: 1.25e-5, 1024: 6.25e-6, 1280: 4.375e-6}
DEFAULT_EPOCHS = 3
# transcripts an evaluation keeps (eval.json "texts": the first clips'); its scores count every
# clip without holding their transcripts
EVAL_TEXTS = 100
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
    workers: int = option(2, "Data-loading worker processes per training process (decode audio, "
                          "compute features); 0: in the training process.", min=0, max=64)
    group_by_length: bool = option(True, "Batch clips of similar duration together (less "
                                   "decoder padding).", negatable=True)
    save_every: int | None = option(None, "Write the resume state every N steps (default: at "
                                    "every evaluation).", min=1, max=10**9)
    feature_cache: Path | None = option(None, "Keep each training clip's log-mel in this "
                                        "folder (NumPy .npy, keyed by the audio's SHA-256 and "
                                        "the mel settings; ~0.96 MB a clip at 80 bins) and read "
                                        "it back instead of decoding again.")

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


class _Group:
    """The processes of this run as ``torchrun`` describes them (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``PORT``), or a single process.

    The collectives are PyTorch's own (``torch.distributed``: gloo on CPUs, NCCL on GPUs):
    DDP all-reduces the gradients; this class only sums a few numbers per step (token counts,
    losses, clip counts) and gathers evaluation transcripts."""

    def __init__(self):
        env = os.environ
        try:
            self.world = int(env.get("WORLD_SIZE", "1"))
            self.rank = int(env.get("RANK", "0"))
            self.local_rank = int(env.get("LOCAL_RANK", "0"))
            self.local_world = int(env.get("LOCAL_WORLD_SIZE", str(self.world)))
        except ValueError:
            raise ToolkitError("WORLD_SIZE, RANK, LOCAL_RANK must be whole numbers (torchrun "
                               "sets them); unset them to train in one process") from None
        self.main = self.rank == 0
        self.device = "cpu"

    def start(self) -> None:
        if self.world <= 1:
            return
        import torch.distributed as dist

        backend = "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            backend, self.device = "nccl", "cuda"
        dist.init_process_group(backend)

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def sum(self, values) -> np.ndarray:
        """Element-wise sum over the processes (float64)."""
        values = np.asarray(values, np.float64)
        if self.world <= 1:
            return values
        import torch.distributed as dist

        t = torch.from_numpy(values.copy()).to(self.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def gather(self, obj) -> list:
        if self.world <= 1:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


PROGRESS_EVERY_S = 10.0       # a progress line at most this often when stderr is a log
# the numbers each micro-batch contributes to the step's log (summed over the processes)
ROW = ("loss", "clips", "seconds", "unreadable", "long", "cut")


def _memory(device: str) -> dict:
    rec = {"rss_mb": round(rss_bytes() / 1e6, 1)}
    if device == "cuda":
        rec["gpu_mb"] = round(torch.cuda.max_memory_allocated() / 1e6, 1)      # the peak
        rec["gpu_in_use_mb"] = round(torch.cuda.memory_allocated() / 1e6, 1)
    return rec


class _Trainer:
    """One run: the model, its optimizer and schedule, the data stream, the evaluations, the
    saved state. Every process of a ``torchrun`` group builds one; only rank 0 writes."""

    def __init__(self, opts: TrainOptions, loaded: LoadedWhisper, out: Path, group: _Group):
        self.opts, self.loaded, self.out, self.group = opts, loaded, out, group
        self.tok, self.cfg = loaded.tokenizer, loaded.config
        self.prompt = _prompt(self.tok, opts)
        train_items, eval_items = _split(opts)
        self.train_index, self.eval_index = index_clips(train_items), index_clips(eval_items)
        self.cache = (FeatureCache(opts.feature_cache, self.cfg.num_mel_bins)
                      if opts.feature_cache else None)
        self.clips = Clips(self.train_index, self.tok, self.prompt, self.cfg.num_mel_bins,
                           self.cfg.max_target_positions, opts.spec_augment, opts.seed,
                           self.cache)
        self.global_batch = opts.batch_size * group.world
        self.batches_per_epoch = -(-len(self.train_index) // self.global_batch)
        per_epoch = -(-self.batches_per_epoch // opts.grad_accum)
        self.total = opts.steps if opts.steps is not None else per_epoch * (
            opts.epochs or DEFAULT_EPOCHS)
        self.warmup = opts.warmup if opts.warmup is not None else min(500, self.total // 10)
        self.eval_every = opts.eval_every or max(1, min(self.total, 10 * per_epoch))
        self.save_every = opts.save_every or self.eval_every
        self.lr = opts.lr or DEFAULT_LR.get(self.cfg.d_model, 1e-5)
        self.device = torch_device()  # the evaluation pipeline runs on the same device
        self.amp = None
        if self.device == "cuda":
            self.amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.model = loaded.model.to(self.device)
        self.trainable, self.checkpointing = _trainable(self.model, self.cfg, opts)
        self.params = [p for p in self.trainable.parameters() if p.requires_grad]
        self.forward = self.model
        if group.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            # gradients as views into DDP's all-reduce buckets: no second copy of them
            self.forward = DistributedDataParallel(
                self.model, device_ids=[group.local_rank] if self.device == "cuda" else None,
                gradient_as_bucket_view=True)
        self.opt = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _schedule(self.warmup, self.total))
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.start, self.best, self.evals = 0, None, []
        self.position = (0, 0)          # the next micro-batch of the stream: (epoch, batch)
        self.epoch_stats = _new_epoch(0)
        self.totals = dict.fromkeys(ROW[1:], 0)
        self.pipe = None

    def say(self, text: str) -> None:
        if self.group.main:
            console.print(text)

    # -- saved state ------------------------------------------------------------------------

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
        self._resume_stream(state)
        rng = state.get("rng") or []
        if len(rng) == self.group.world:      # the same processes: each its own generator
            torch.set_rng_state(rng[self.group.rank])
        cuda_rng = state.get("cuda_rng") or []
        if self.device == "cuda" and len(cuda_rng) == self.group.world:
            torch.cuda.set_rng_state(cuda_rng[self.group.rank])
        if not self.group.main:
            return
        # what was logged after the saved state (a crash between the two) is dropped
        if (out / "eval.json").is_file():
            self.evals = [e for e in json.loads((out / "eval.json").read_text())
                          if e["step"] <= self.start]
        if (out / "train_log.jsonl").is_file():
            kept = [line for line in (out / "train_log.jsonl").read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.start]
            atomic_write_bytes(out / "train_log.jsonl", "".join(k + "\n" for k in kept).encode())
        console.print(f"resuming {escape(str(out))} at step {self.start} of {self.total} "
                      f"(epoch {self.position[0] + 1}, batch {self.position[1]} of "
                      f"{self.batches_per_epoch})")

    def _resume_stream(self, state: dict) -> None:
        """The data stream's position: the same data and global batch, or a clear stop."""
        if "position" not in state:          # a state written before the stream was saved
            done = self.start * self.opts.grad_accum
            self.position = divmod(done, self.batches_per_epoch)
            return
        if state.get("data") != self.train_index.digest():
            raise ToolkitError("the training data changed since this run was saved (other "
                               "clips, transcripts or --eval-split); resume with the same data, "
                               "or drop --resume and choose a new --out")
        if int(state.get("global_batch", 0)) != self.global_batch:
            raise ToolkitError(
                f"this run was saved with a global batch of {state.get('global_batch')} clips "
                f"(--batch-size × processes), this one has {self.global_batch}; resume with "
                "the same product so the data order is the same")
        self.position = (int(state["position"][0]), int(state["position"][1]))
        self.epoch_stats = dict(state.get("epoch_stats") or _new_epoch(self.position[0]))
        self.totals.update(state.get("totals") or {})

    def save_state(self, step: int) -> None:
        rng = self.group.gather(torch.get_rng_state())
        cuda_rng = self.group.gather(torch.cuda.get_rng_state()) if self.device == "cuda" else []
        if not self.group.main:
            return
        with atomic_dir(self.out / "resume", owned=lambda p: (p / "state.pt").is_file()) as tmp:
            torch.save({"model": self.trainable.state_dict(), "optimizer": self.opt.state_dict(),
                        "scheduler": self.sched.state_dict(), "step": step,
                        "best_cer": self.best, "position": list(self.position),
                        "data": self.train_index.digest(), "global_batch": self.global_batch,
                        "epoch_stats": self.epoch_stats, "totals": self.totals,
                        "rng": rng, "cuda_rng": cuda_rng}, tmp / "state.pt")

    def describe(self) -> str:
        o, amp, g = self.opts, self.amp, self.group
        n_params = sum(p.numel() for p in self.params)
        hours = float(self.train_index.seconds.sum()) / 3600
        procs = f"{g.world} processes ({'NCCL' if g.device == 'cuda' else 'gloo'}), " \
            if g.world > 1 else ""
        return (f"train whisper from {self.loaded.weights}: {len(self.train_index)} training "
                f"clips ({hours:.2f} h) / {len(self.eval_index)} evaluation clips, "
                f"{self.total} steps × {o.batch_size} × {o.grad_accum}"
                f"{f' × {g.world}' if g.world > 1 else ''}, lr {self.lr:g} "
                f"(warm-up {self.warmup}), {n_params / 1e6:.1f} M trainable parameters"
                f"{' (LoRA)' if o.lora else ''}, {procs}"
                f"{self.device}{' ' + str(amp).split('.')[-1] if amp else ' fp32'}, "
                f"{o.workers} loader worker(s) per process"
                f"{', length-grouped' if o.group_by_length else ''}"
                f"{', SpecAugment' if o.spec_augment else ''}"
                f"{', gradient checkpointing' if self.checkpointing else ''}")

    # -- evaluation -------------------------------------------------------------------------

    def evaluate(self, step: int, loss: float | None) -> dict | None:
        """Each process transcribes its share of the evaluation clips and scores each clip as
        it comes (``RunningScores``: edit and reference counts, no transcript held but the
        first ``EVAL_TEXTS`` clips'); the counts are summed over the processes and rank 0
        writes eval.json and, on a better CER, the checkpoint. Memory stays one clip's audio
        and a few hundred numbers whatever the number of clips. Returns the record (rank 0)."""
        g = self.group
        self.model.eval()
        running = RunningScores(self.opts.language)
        texts: dict[int, str] = {}
        skipped: list[tuple[int, str]] = []       # the first few, named; all of them counted
        n_skipped = {UNREADABLE: 0, TOO_LONG: 0}
        for i in range(g.rank, len(self.eval_index), g.world):
            path = self.eval_index.paths[i]
            try:
                audio = load_audio(path, max_seconds=CHUNK_SECONDS + 0.5)
                if len(audio) > N_SAMPLES:
                    raise TooLong(path)
            except (TooLong, ToolkitError) as exc:
                why = TOO_LONG if isinstance(exc, TooLong) else UNREADABLE
                n_skipped[why] += 1
                if n_skipped[why] <= 5:
                    skipped.append((i, why))
                continue
            res = self.pipe.decode(audio, self.prompt, max_new_tokens=224)
            del audio
            hyp = "".join(self.pipe.tokenizer.decode(w) for w in res.tokens).strip()
            running.add(hyp, self.eval_index.texts[i])
            if i < EVAL_TEXTS:
                texts[i] = hyp
        self.model.train()
        counts = g.sum([*running.counts, n_skipped[UNREADABLE], n_skipped[TOO_LONG]])
        parts = g.gather((texts, skipped))     # small: at most EVAL_TEXTS texts, 10 names
        rec = None
        if g.main:
            all_texts = {i: t for part, _ in parts for i, t in part.items()}
            names = sorted((i, why) for _, part in parts for i, why in part)
            got = RunningScores.from_counts(counts[:-2], self.opts.language)
            rec = self._score(step, loss, got, [all_texts[i] for i in sorted(all_texts)],
                              [(Path(self.eval_index.paths[i]).name, why) for i, why in names],
                              {UNREADABLE: int(counts[-2]), TOO_LONG: int(counts[-1])})
        self.save_state(step)
        return rec

    def _score(self, step: int, loss: float | None, running: RunningScores, hyps: list[str],
               named: list[tuple[str, str]], totals: dict[str, int]) -> dict:
        kept, n_skipped = running.counts[RunningScores.FIELDS.index("pairs")], sum(totals.values())
        if not kept:
            raise ToolkitError(f"no usable evaluation audio (all {n_skipped} files skipped)")
        if named and step == self.start:
            _warn_skipped(named, "evaluation", totals)
        got = running.result()          # Whisper's normaliser (bench/metrics)
        if got["cer"] is None:
            raise ToolkitError(
                "the evaluation transcripts hold no letters or digits once "
                "normalised (punctuation removed); nothing to score CER against — check them"
            )
        rec = {"step": step, "cer": got["cer"], "wer": got["wer"], "cer_raw": got["cer_raw"],
               "wer_raw": got["wer_raw"], "normalizer": got["normalizer"], "train_loss": loss,
               "clips": kept, "skipped": n_skipped, "texts": hyps}
        if len(hyps) < kept:
            rec["texts_of"] = f"the first {len(hyps)} of {kept} clips"
        if got["cer_nospace"] is not None:
            rec["cer_nospace"] = got["cer_nospace"]
        self.evals.append(rec)
        atomic_write_bytes(self.out / "eval.json",
                           (json.dumps(self.evals, indent=1) + "\n").encode())
        if self.best is None or rec["cer"] < self.best:
            self.best = rec["cer"]
            _save_checkpoint(self.trainable, self.loaded, self.out, self.opts.lora)
        return rec

    # -- training ---------------------------------------------------------------------------

    def micro_batch(self, b: Batch, sync: bool, step: int) -> list[float]:
        """Forward and backward of one micro-batch; its row of ``ROW``. The loss is the sum over
        this process's label tokens divided by the tokens of the whole global micro-batch, so
        N processes compute exactly the gradient one process computes for the same clips (DDP
        averages: × world)."""
        g, accum = self.group, self.opts.grad_accum
        n_tokens = float(g.sum([b.n_tokens])[0])
        context = contextlib.nullcontext()
        if g.world > 1 and not sync:
            context = self.forward.no_sync()
        with context:
            if b.feats is None:        # every clip of this part skipped: a zero-weight forward
                feats = torch.zeros(1, self.cfg.num_mel_bins, N_FRAMES)    # keeps DDP in step
                ids = torch.tensor([self.prompt])
                labels = None
            else:
                feats, ids, labels = b.feats, b.ids, b.labels
            feats, ids = feats.to(self.device), ids.to(self.device)
            with torch.autocast(self.device, dtype=self.amp, enabled=self.amp is not None):
                logits = self.forward(input_features=feats, decoder_input_ids=ids,
                                      use_cache=False).logits
            if labels is None:
                ce = logits.float().sum() * 0.0
            else:
                ce = torch.nn.functional.cross_entropy(
                    logits.float().reshape(-1, logits.shape[-1]),
                    labels.to(self.device).reshape(-1), ignore_index=-100, reduction="sum")
            if not torch.isfinite(ce):
                raise ToolkitError(f"loss became {ce.item()} at step {step}; lower --lr")
            scaled = ce * (g.world / max(1.0, n_tokens) / accum)
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        reasons = [r for _, r in b.skipped]
        return [ce.item() / max(1.0, n_tokens) / accum, len(b.clips), b.seconds,
                reasons.count(UNREADABLE), reasons.count(TOO_LONG), b.cut]

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

    def _account(self, batches: list[Batch], rows: np.ndarray) -> None:
        """The step's clips and skips into the epoch's counts; an epoch that ended reported."""
        names = [set() for _ in batches]
        if rows[:, 3:5].sum():            # some process skipped a clip: all learn its name
            for part in self.group.gather([[n for n, _ in b.skipped] for b in batches]):
                for j, got in enumerate(part):
                    names[j].update(got)
        for b, row, skipped in zip(batches, rows, names):
            st = self.epoch_stats
            for k, v in zip(ROW[1:], row[1:]):
                st[k] += float(v) if k == "seconds" else int(v)
                self.totals[k] += float(v) if k == "seconds" else int(v)
            if skipped:
                st["names"] = sorted(set(st.get("names", [])) | skipped)[:5]
            self.position = (b.epoch, b.number + 1)
            if b.number + 1 == b.of:        # the epoch's last batch
                self.position = (b.epoch + 1, 0)
                self._end_epoch(st)
                self.epoch_stats = _new_epoch(b.epoch + 1)

    def _end_epoch(self, st: dict) -> None:
        if not self.group.main:
            return
        skipped = st["unreadable"] + st["long"]
        text = (f"epoch {st['epoch'] + 1}: {st['clips']} clips ({st['seconds'] / 3600:.2f} h) "
                f"trained, {skipped} skipped")
        if skipped:
            text += (f" ({st['unreadable']} {UNREADABLE}, {st['long']} {TOO_LONG}: "
                     + ", ".join(st.get("names", [])) + (", …" if skipped > 5 else "") + ")")
            console.print(f"[yellow]warning:[/] {text}")
        else:
            console.print(text)
        if st["cut"]:
            console.print(f"[yellow]warning:[/] {st['cut']} transcript(s) cut to "
                          f"{self.clips.limit} tokens in epoch {st['epoch'] + 1}")
        st = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in st.items()}
        with open(self.out / "train_log.jsonl", "a") as logf:
            logf.write(json.dumps({"step": self._step, "epoch_end": st}) + "\n")

    def run(self) -> list[float]:
        """The steps from ``start`` to ``total``; the loss of each."""
        opts, g = self.opts, self.group
        sampler = GroupedBatches(self.train_index.seconds, opts.batch_size, g.world, g.rank,
                                 opts.seed, opts.group_by_length, start=self.position)
        stream = iter(loader(self.clips, sampler, opts.workers))   # workers start here
        losses: list[float] = []
        self.model.train()
        last_cer, t_start, worker_rss = self.best, time.perf_counter(), 0
        steps = self.total - self.start
        # a live bar on a terminal; in a log (stderr not a terminal: nohup, a cluster's job
        # log, a pipe) plain lines instead, the first and last step's and one every
        # PROGRESS_EVERY_S seconds between — a bar there is only drawn once, at the end
        live = g.main and console.is_terminal
        bar = Steps(f"train whisper ({self.loaded.name})", total=steps) if live else None
        last_line = None
        with bar or contextlib.nullcontext():
            for step in range(self.start + 1, self.total + 1):
                self._step = step
                step_t = time.perf_counter()
                self.opt.zero_grad(set_to_none=True)
                batches, rows = [], []
                for j in range(opts.grad_accum):
                    b = next(stream)
                    batches.append(b)
                    worker_rss = max(worker_rss, b.worker_rss)
                    rows.append(self.micro_batch(b, j == opts.grad_accum - 1, step))
                self.optimizer_step()
                rows = g.sum(rows).reshape(len(rows), len(ROW))
                loss = float(rows[:, 0].sum())
                losses.append(loss)
                seconds = time.perf_counter() - step_t
                done = step - self.start
                rec = {"step": step, "loss": round(loss, 5), "lr": self.sched.get_last_lr()[0],
                       "seconds": round(seconds, 3), "clips": int(rows[:, 1].sum()),
                       "clips_per_s": round(rows[:, 1].sum() / seconds, 2),
                       "audio_h_per_s": round(rows[:, 2].sum() / 3600 / seconds, 5),
                       "eta_s": round((time.perf_counter() - t_start) / done * (steps - done)),
                       **_memory(self.device), "workers_peak_rss_mb": round(worker_rss / 1e6, 1)}
                if g.main:
                    with open(self.out / "train_log.jsonl", "a") as logf:
                        logf.write(json.dumps(rec) + "\n")
                self._account(batches, rows)
                if step % self.eval_every == 0 or step == self.total:
                    res = self.evaluate(step, loss)
                    last_cer = res["cer"] if res else None
                elif step % self.save_every == 0:
                    self.save_state(step)
                if bar is not None:
                    bar.advance(progress_text(rec, last_cer))      # the bar shows step, ETA
                elif g.main and (last_line is None or step == self.total or
                                 time.perf_counter() - last_line >= PROGRESS_EVERY_S):
                    last_line = time.perf_counter()
                    console.print(f"step {step}/{self.total} " + progress_text(rec, last_cer,
                                                                                eta=True),
                                  soft_wrap=True)
        return losses


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def progress_text(rec: dict, cer: float | None = None, eta: bool = False) -> str:
    """A step's progress from its ``train_log.jsonl`` record: loss, learning rate, samples
    (clips) per second, hours of audio per second, [ETA,] the trainer's resident memory and, on
    CUDA, the GPU memory in use and the peak; the last CER."""
    text = (f"loss {rec['loss']:.4f} lr {rec['lr']:.2e} | {rec['clips_per_s']:.3g} samples/s "
            f"{rec['audio_h_per_s']:.3g} audio-h/s"
            + (f" | ETA {_duration(rec['eta_s'])}" if eta else "")
            + f" | CPU RSS {rec['rss_mb'] / 1e3:.2f} GB")
    if "gpu_mb" in rec:
        text += (f" | GPU {rec.get('gpu_in_use_mb', 0) / 1e3:.2f} GB in use, "
                 f"{rec['gpu_mb'] / 1e3:.2f} GB peak")
    return text + (f" | CER {cer:.2f}" if cer is not None else "")


def _new_epoch(epoch: int) -> dict:
    return {"epoch": epoch, **dict.fromkeys(ROW[1:], 0), "seconds": 0.0}


def _warn_skipped(skipped: list[tuple[str, str]], what: str,
                  totals: dict[str, int] | None = None) -> None:
    """``skipped``: (file name, reason), the first ones at least; ``totals``: how many files
    each reason skipped in all (default: those listed)."""
    for why in (UNREADABLE, TOO_LONG):
        names = [n for n, r in skipped if r == why]
        n = (totals or {}).get(why, len(names))
        if n:
            console.print(f"[yellow]warning:[/] skipped {n} {what} file(s), {why}: "
                          + ", ".join(names[:5]) + (", …" if n > 5 else ""))


def train(opts: TrainOptions) -> dict:
    """Fine-tune as ``opts`` says; the summary (losses, CERs, seconds per step, the output).
    Under ``torchrun`` every process calls this; each trains on its part of every batch."""
    opts.check()
    group = _Group()
    out = _check_out(Path(opts.out), opts.resume)    # every process, before any writes
    group.start()
    try:
        return _train(opts, out, group)
    finally:
        group.close()


def _train(opts: TrainOptions, out: Path, group: _Group) -> dict:
    threads = max(1, default_threads() // max(1, group.local_world))
    if group.world > 1:
        os.environ.setdefault("TOOLKIT_THREADS", str(threads))  # the evaluation sessions too
    torch.set_num_threads(threads)
    torch.manual_seed(opts.seed)
    loaded = load_model(opts.checkpoint, opts.preset, opts.seed)
    torch.manual_seed(opts.seed + 1_000_003 * group.rank)     # dropout: each process its own
    run = _Trainer(opts, loaded, out, group)
    if opts.resume:
        run.resume()
        if run.start >= run.total:
            run.say(f"{escape(str(out))} is already at step {run.start} ≥ {run.total}; "
                    "nothing to do")
            return {"step": run.start, "evals": run.evals, "out": str(out)}
    if group.main:
        out.mkdir(parents=True, exist_ok=True)
    run.pipe = make_pipeline(open_model(run.loaded, build_plan, "torch"), from_graphs)
    run.say(run.describe())
    if run.cache is not None and group.main:       # its size, before anything is written
        console.print(run.cache.plan(len(run.train_index)), soft_wrap=True)
    if run.start == 0:
        run.best = None
        first = run.evaluate(0, None)   # the starting point is the checkpoint until one beats it
        if first:
            run.say(f"before training: CER {first['cer']:.2f} %, WER {first['wer']:.2f} % "
                    f"on {first['clips']} clips")
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
        "skipped": run.totals["unreadable"] + run.totals["long"],
        "evals": run.evals,
        "out": str(out),
    }
    if group.main and losses:
        console.print(
            f"loss {summary['loss_first']:.3f} → {summary['loss_last']:.3f}; CER "
            f"{summary['cer_before']:.2f} → best {run.best:.2f} % "
            f"[{summary['seconds_per_step']:.1f} s/step]")
        console.print(f"[green]✓[/] {escape(str(out))}: the checkpoint with the best CER; "
                      f"export it with `toolkit export whisper --checkpoint {out}`")
    return summary
