"""``toolkit train internvl``: fine-tune an InternVL model on InternVL's chat jsonl.

The workflow of InternVL's own caption fine-tuning (``internvl_chat_finetune.py`` on
``coco_karpathy_train_567k.jsonl``), on the toolkit's models layer:

- data: one JSON object a line, ``{"id", "image", "conversations": [{"from": "human", "value":
  "<image>\\n..."}, {"from": "gpt", "value": ...}, ...]}`` (InternVL's layout); ``image`` is
  relative to ``--image-root`` (default: the folder above ``annotations/`` when the jsonl sits in
  one, as in ``../shared/data/captions``, else the jsonl's own folder). Every line is checked
  before training; a bad one is one error naming the file and line;
- the prompt is the model's chat template (``models/internvl/prompt.py``: system message,
  ``<img><IMG_CONTEXT>…</img>`` for each tile, the question), the image embeddings spliced in at
  the ``<IMG_CONTEXT>`` rows as ``InternVLChat.splice`` does; the loss is on the answer tokens and
  the ``<|im_end|>`` that ends each answer only (system, question, image, padding: ``-100``);
- images are decoded and tiled (InternVL's preprocessing) for each sample when its batch comes:
  memory holds one batch of tiles, not the data set;
- AdamW, linear warm-up then cosine decay (InternVL's schedule), gradient clipping at 1; fp32 on
  CPU;
- ``--lora``: peft adapters (rank ``--lora-rank``, default 128 and alpha 2 × rank, dropout 0.05,
  as InternVL's ``wrap_llm_lora``) on the LLM's attention and MLP projections, the LLM's own
  weights frozen; ``--freeze-vision`` / ``--freeze-mlp`` freeze InternViT / the projector. The
  trainable-parameter count is printed as peft (and InternVL's log) print it;
- evaluation (``--eval-data``: a Karpathy split json, or a caption folder): greedy (or
  ``--beam-size``) captions of the first ``--eval-limit`` images, scored with
  ``bench/captions.py`` (pycocoevalcap CIDEr, BLEU-4, METEOR, ROUGE-L) before training and every
  ``--eval-every`` steps; the checkpoint with the best CIDEr is the one kept in ``--out``;
- checkpoints in the **original InternVL2 layout** the loader reads (``config.json`` +
  ``model.safetensors`` + ``tokenizer.json``), file by file atomically, config last. With
  ``--lora`` the adapter is written to ``--out/adapter/`` (peft's files) and, with ``--merge``,
  the adapter merged into plain weights is the checkpoint in ``--out``;
- resumable: ``--out/resume/state.pt`` (weights, optimizer, schedule, step, best CIDEr, RNG) is
  replaced atomically at every evaluation and ``--save-every`` steps and read back with
  ``torch.load(weights_only=True)``; the data order is a function of ``--seed`` and the step, so
  a resumed run sees the batches it would have seen.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.markup import escape

from ..bench.captions import CaptionItem, caption_scores, read_split
from ..core.errors import ToolkitError
from ..core.files import atomic_write_bytes, check_writable
from ..core.memory import rss_bytes
from ..core.options import check_fields, option
from ..core.progress import console
from ..core.threads import default_threads
from ..models.base import load_tensors
from ..models.internvl import image as image_mod
from ..models.internvl.loading import PRESETS, LoadedInternVL, load_model
from ..models.internvl.prompt import IMAGE_PLACEHOLDER, SYSTEM_MESSAGE, image_tokens, template

# InternVL's wrap_llm_lora targets for Qwen2 / Llama LLMs
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json")
RUN_FILES = {"train_log.jsonl", "eval.json", "resume", "adapter", *CHECKPOINT_FILES}
PROGRESS_EVERY_S = 30.0
EVAL_TEXTS = 50           # captions an eval.json record keeps (the first images')


@dataclass
class TrainOptions:
    """``toolkit train internvl``: every option, its help and its range, written once here (the
    command line is generated from it)."""

    data: Path = option(help="Training data: InternVL chat jsonl (one {\"image\", "
                             "\"conversations\"} object a line).")
    image_root: Path | None = option(None, "Folder the jsonl's image paths are relative to "
                                     "(default: the folder above annotations/ when the jsonl is "
                                     "in one, else the jsonl's folder).")
    out: Path = option(Path("runs/internvl-finetune"), "Output: the best-CIDEr checkpoint "
                       "(InternVL2 layout) + train_log.jsonl, eval.json, resume/.")
    checkpoint: str | None = option(None, "Start from this InternVL checkpoint directory.")
    preset: str | None = option(None, "Start from random weights of this preset (default "
                                "internvl-tiny when no --checkpoint).", choices=tuple(PRESETS))
    eval_data: Path | None = option(None, "Karpathy split json (annotations/*_karpathy_<split>"
                                    ".json) or a caption folder (its test split) to score "
                                    "CIDEr on.")
    eval_limit: int = option(200, "Images of --eval-data captioned and scored (the first N).",
                             min=1, max=10**7)
    eval_every: int | None = option(None, "Evaluate every N steps (default: at the end only).",
                                    min=1, max=10**9)
    steps: int | None = option(None, "Optimizer steps (default: 1 epoch).", min=1, max=10**9)
    epochs: float | None = option(None, "Passes over the training lines.", min=0.001, max=10**6)
    batch_size: int = option(8, "Samples per step.", min=1, max=4096)
    lr: float = option(4e-5, "Peak learning rate (InternVL's fine-tuning rate).", min=1e-9,
                       max=1.0)
    warmup: int | None = option(None, "Linear warm-up steps (default 3 %, as InternVL).", min=0,
                                max=10**9)
    weight_decay: float = option(0.05, "AdamW weight decay (InternVL's).", min=0.0, max=10.0)
    lora: bool = option(False, "Train LoRA adapters on the LLM (its own weights frozen).")
    lora_rank: int = option(128, "LoRA rank (InternVL's --use_llm_lora 128).", min=1, max=4096)
    lora_alpha: int | None = option(None, "LoRA alpha (default 2 × rank, as InternVL).", min=1,
                                    max=10**6)
    lora_embeddings: bool = option(False, "With --lora: train the token embeddings too (tied "
                                   "to the output layer when the LLM ties them) — for words "
                                   "the model never saw (the small captioner's case).")
    freeze_vision: bool = option(False, "Freeze the vision encoder (InternViT).")
    freeze_mlp: bool = option(False, "Freeze the MLP projector (mlp1).")
    merge: bool = option(False, "With --lora: write the checkpoint with the adapter merged into "
                                "plain weights (loadable without peft).")
    max_tiles: int = option(1, "Most 448-px tiles per training/evaluation image (dynamic "
                               "tiling; a 224-px image is one tile whatever this says).",
                            min=1, max=40)
    max_new_tokens: int = option(30, "Evaluation: most caption tokens.", min=1, max=4096)
    beam_size: int = option(1, "Evaluation: beams (1: greedy).", min=1, max=64)
    save_every: int | None = option(None, "Write the resume state every N steps (default: at "
                                    "every evaluation).", min=1, max=10**9)
    resume: bool = option(False, "Continue the run in --out from its saved state.")
    force: bool = option(False, "Write into a non-empty --out that is not a training run "
                                "(files of the same names are replaced; nothing else is "
                                "removed).")
    seed: int = option(0, "Seed of the weights (presets), the data order and dropout.", min=0,
                       max=2**32 - 1)
    threads: int | None = option(None, "CPU threads (default: TOOLKIT_THREADS or all cores).",
                                 min=1, max=4096)
    quiet: bool = option(False, "No progress lines.", cli=False)

    def check(self) -> None:
        check_fields(self)
        if self.steps is not None and self.epochs is not None:
            raise ToolkitError("give --steps or --epochs, not both")
        if self.checkpoint and self.preset:
            raise ToolkitError("give either --checkpoint or --preset, not both")
        if self.merge and not self.lora:
            raise ToolkitError("--merge merges a LoRA adapter: add --lora (a full fine-tune "
                               "already writes plain weights)")
        if self.lora_embeddings and not self.lora:
            raise ToolkitError("--lora-embeddings goes with --lora (a full fine-tune trains "
                               "the embeddings already)")
        if self.resume and self.force:
            raise ToolkitError("give --resume or --force, not both")


# --- data ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    image: Path
    turns: tuple[tuple[str, str], ...]     # (question, answer) pairs, in order


def image_root_of(data: Path, image_root: Path | None) -> Path:
    if image_root is not None:
        root = Path(image_root).expanduser()
        if not root.is_dir():
            raise ToolkitError(f"--image-root {root} is not a directory")
        return root
    data = Path(data)
    return data.parent.parent if data.parent.name == "annotations" else data.parent


def _turns(rec, bad) -> tuple[str, list[tuple[str, str]]]:
    """(image path, (question, answer) pairs) of one parsed line, or ``bad(why)`` raised."""
    if not isinstance(rec, dict):
        raise bad("not a JSON object")
    img, conv = rec.get("image"), rec.get("conversations")
    if not isinstance(img, str) or not img:
        raise bad("no \"image\" path (text-only lines are not supported)")
    if not isinstance(conv, list) or not conv:
        raise bad("no \"conversations\" list")
    turns, question = [], None
    for i, t in enumerate(conv):
        if not isinstance(t, dict) or not isinstance(t.get("value"), str) \
                or t.get("from") not in ("human", "gpt"):
            raise bad(f"conversation turn {i + 1} is not {{\"from\": \"human\"|\"gpt\", "
                      "\"value\": text}")
        want = "human" if question is None else "gpt"
        if t["from"] != want:
            raise bad(f"conversation turn {i + 1} is from {t['from']!r}; turns alternate "
                      "human, gpt")
        if question is None:
            question = t["value"]
            continue
        if not t["value"].strip():
            raise bad(f"conversation turn {i + 1}: empty answer")
        turns.append((question, t["value"]))
        question = None
    if question is not None:
        raise bad("the conversation ends with a human turn (no answer to train on)")
    places = sum(q.count(IMAGE_PLACEHOLDER) for q, _ in turns)
    if places > 1:
        raise bad(f"{places} <image> placeholders; one image a line is supported")
    if places == 0:   # InternVL puts the image before the first question
        turns[0] = (IMAGE_PLACEHOLDER + "\n" + turns[0][0], turns[0][1])
    return img, turns


def read_chat(path: Path, image_root: Path | None = None) -> list[Sample]:
    """Every line of an InternVL chat jsonl, checked: a bad one is a one-line error naming the
    file and the line (blank lines are skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ToolkitError(f"--data {path} is not a file; give an InternVL chat jsonl")
    root = image_root_of(path, image_root)
    out, seen = [], {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ToolkitError(f"{path} is not UTF-8 text; give an InternVL chat jsonl") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue

        def bad(why: str, n=n):
            return ToolkitError(f"{path.name} line {n}: {why}")

        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise bad(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        img, turns = _turns(rec, bad)
        file = seen.get(img)
        if file is None:
            file = Path(img) if Path(img).is_absolute() else root / img
            if not file.is_file():
                raise bad(f"image {img} not found under {root} (set --image-root)")
            seen[img] = file
        out.append(Sample(file, tuple(turns)))
    if not out:
        raise ToolkitError(f"{path} holds no training lines")
    return out


def encode_sample(loaded: LoadedInternVL, sample_turns, tiles: int) -> tuple[list, list]:
    """(input ids, labels) of one conversation in the model's chat template: labels are the
    ids at the answers and the separator ending each (``<|im_end|>``), -100 elsewhere (system
    message, questions, image tokens, role headers)."""
    t = template(loaded.template_name)
    tok = loaded.tokenizer
    ids: list[int] = [tok.bos_id] if t.bos and tok.bos_id is not None else []
    labels: list[int] = [-100] * len(ids)

    def add(text: str, learn: bool) -> None:
        got = tok.encode(text)
        ids.extend(got)
        labels.extend(got if learn else [-100] * len(got))

    add(t.system.format(system_message=SYSTEM_MESSAGE) + t.sep, False)
    for question, answer in sample_turns:
        question = question.replace(IMAGE_PLACEHOLDER,
                                    image_tokens(tiles, loaded.num_image_token), 1)
        add(t.user + question + t.sep + t.assistant, False)
        add(answer, True)
        add(t.sep, True)
    return ids, labels


def make_batch(loaded: LoadedInternVL, samples: list[Sample], max_tiles: int):
    """Pixel values of every tile (flattened, in order), right-padded ids, attention mask and
    labels ``[B, T]``."""
    pixels, rows = [], []
    for s in samples:
        img = image_mod.open_image(s.image)
        values, tiling = image_mod.pixel_values(img, max_tiles, loaded.image_size,
                                                loaded.use_thumbnail)
        pixels.append(torch.from_numpy(values))
        rows.append(encode_sample(loaded, s.turns, tiling.count))
    width = max(len(i) for i, _ in rows)
    pad = loaded.pad_id
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (i, lab) in enumerate(rows):
        ids[b, :len(i)] = torch.tensor(i)
        labels[b, :len(lab)] = torch.tensor(lab)
        mask[b, :len(i)] = 1
    return torch.cat(pixels), ids, mask, labels


def batch_loss(model, pixels, ids, mask, labels) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the label tokens (next-token: logits at t predict labels at
    t + 1), and how many there were."""
    logits = model(ids, pixels, attention_mask=mask).logits
    target = labels[:, 1:]
    n = int((target != -100).sum())
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), target.reshape(-1),
        ignore_index=-100, reduction="sum")
    return loss / max(1, n), n


def order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of an epoch: a permutation fixed by the seed and the epoch."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, batch: int, seed: int, step: int) -> list[int]:
    """The sample indices of ``step`` (1-based): consecutive slices of the epochs' orders."""
    start = (step - 1) * batch
    out = []
    while len(out) < batch:
        epoch, pos = divmod(start + len(out), n)
        perm = order(n, seed, epoch)
        out.extend(int(i) for i in perm[pos:pos + batch - len(out)])
    return out


# --- evaluation ----------------------------------------------------------------------------

def eval_items(path: Path, limit: int | None) -> list[CaptionItem]:
    """A Karpathy split file (``annotations/<name>_karpathy_<split>.json``) or a caption folder
    (its test split)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_split(path, "test", limit)
    if not path.is_file():
        raise ToolkitError(f"--eval-data {path} does not exist")
    if "_karpathy_" not in path.stem or path.parent.name != "annotations":
        raise ToolkitError(f"--eval-data {path}: give annotations/<name>_karpathy_<split>.json "
                           "(with its _gt.json beside it) or the folder that holds annotations/")
    return read_split(path.parent.parent, path.stem.rsplit("_karpathy_", 1)[1], limit)


def evaluate(loaded: LoadedInternVL, items: list[CaptionItem], beam_size: int = 1,
             max_new_tokens: int = 30, max_tiles: int = 1) -> tuple[dict, list[str]]:
    """(pycocoevalcap scores, captions) of ``items`` with the live weights."""
    was = loaded.model.training
    loaded.model.eval()
    try:
        caps = loaded.caption([it.image for it in items], beam_size=beam_size,
                              max_new_tokens=max_new_tokens, max_tiles=max_tiles)
    finally:
        loaded.model.train(was)
    scores = caption_scores({it.image_id: c for it, c in zip(items, caps)},
                            {it.image_id: list(it.references) for it in items})
    return scores, caps


# --- model set-up ----------------------------------------------------------------------------

def count_params(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def params_line(model) -> str:
    """peft's ``print_trainable_parameters`` line, over the whole model (vision, projector,
    LLM with its adapters), as InternVL's log prints it."""
    trainable, total = count_params(model)
    return (f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / total:.4f}")


def prepare(loaded: LoadedInternVL, opts: TrainOptions):
    """Freeze what ``opts`` says and wrap the LLM in LoRA adapters; the model to train."""
    model = loaded.model
    if opts.lora:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError:
            raise ToolkitError("--lora needs peft: pip install 'toolkit[export]' (or peft)") \
                from None
        cfg = LoraConfig(r=opts.lora_rank, lora_alpha=opts.lora_alpha or 2 * opts.lora_rank,
                         lora_dropout=0.05, target_modules=list(LORA_TARGETS),
                         task_type="CAUSAL_LM")
        model.language_model = get_peft_model(model.language_model, cfg)
        if opts.lora_embeddings:   # the base model's own table: merged weights keep it
            model.language_model.get_input_embeddings().weight.requires_grad_(True)
    for p in model.vision_model.parameters():
        p.requires_grad_(not opts.freeze_vision)
    for p in model.mlp1.parameters():
        p.requires_grad_(not opts.freeze_mlp)
    return model


def plain_state(loaded: LoadedInternVL, lora: bool) -> dict:
    """The InternVL2-layout state dict of the model (adapters merged, on a copy)."""
    model = loaded.model
    if lora:
        lm = copy.deepcopy(model.language_model).merge_and_unload()
        state = {**{k: v for k, v in model.state_dict().items()
                    if not k.startswith("language_model.")},
                 **{"language_model." + k: v for k, v in lm.state_dict().items()}}
    else:
        state = dict(model.state_dict())
    if getattr(model.llm_config, "tie_word_embeddings", False):
        state.pop("language_model.lm_head.weight", None)   # the loader re-ties it
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def checkpoint_config(loaded: LoadedInternVL) -> dict:
    """``config.json`` in InternVL2's own layout (``InternVLChatModel``), as the loader reads
    it. No ``auto_map``: the toolkit runs no checkpoint code and writes none."""
    m = loaded.model
    llm = m.llm_config
    base = getattr(llm, "to_dict", None)
    llm = dict(base() if base else llm)
    for k in ("_name_or_path", "transformers_version", "torch_dtype", "dtype",
              "_attn_implementation_autoset", "use_cache"):
        llm.pop(k, None)
    arch = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}.get(
        llm.get("model_type"), "LlamaForCausalLM")
    llm["architectures"] = [arch]
    vision = dict(m.vision_config.to_dict(), architectures=["InternVisionModel"],
                  model_type="intern_vit_6b")
    return {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
            "downsample_ratio": m.downsample_ratio, "force_image_size": loaded.image_size,
            "select_layer": m.select_layer, "ps_version": "v2", "dynamic_image_size": True,
            "max_dynamic_patch": loaded.max_tiles, "use_thumbnail": loaded.use_thumbnail,
            "template": loaded.template_name, "img_context_token_id": m.image_token_id,
            "vision_config": vision, "llm_config": llm, "torch_dtype": "float32"}


def write_checkpoint(loaded: LoadedInternVL, out: Path, lora: bool = False,
                     dtype: torch.dtype | None = None, extra: dict | None = None) -> None:
    """The InternVL2-layout files into ``out``, each atomically (a temporary sibling renamed
    into place), ``config.json`` last; nothing else in ``out`` is touched."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = plain_state(loaded, lora)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    cfg = checkpoint_config(loaded)
    if dtype is not None:
        cfg["torch_dtype"] = str(dtype).replace("torch.", "")
    cfg.update(extra or {})
    with tempfile.TemporaryDirectory(prefix=".save-", dir=out) as tmp:
        save_file(state, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
        (Path(tmp) / "tokenizer.json").write_text(loaded.tokenizer.tk.to_str(pretty=False))
        (Path(tmp) / "config.json").write_text(json.dumps(cfg, indent=1) + "\n")
        mask = os.umask(0)
        os.umask(mask)
        for name in ("model.safetensors", "tokenizer.json", "config.json"):
            os.chmod(Path(tmp) / name, 0o666 & ~mask)   # safetensors writes 0600
            os.replace(Path(tmp) / name, out / name)


def is_run_dir(directory: Path) -> bool:
    names = {p.name for p in directory.iterdir() if not p.name.startswith(".")}
    return "train_log.jsonl" in names and names <= RUN_FILES


def check_out(out: Path, resume: bool, force: bool) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"--out {out} is a file; choose a directory")
    if resume:
        if not (out / "resume" / "state.pt").is_file():
            raise ToolkitError(f"nothing to resume in {out} (no resume/state.pt); drop --resume "
                               "to start a new run there")
        return check_writable(out)
    if out.is_dir() and any(out.iterdir()) and not force:
        if is_run_dir(out):
            raise ToolkitError(f"{out} already holds a training run; add --resume to continue "
                               "it, or choose another --out")
        raise ToolkitError(f"{out} is not empty and not a toolkit training run; choose another "
                           "--out (nothing there is replaced), or --force")
    return check_writable(out)


# --- the run ---------------------------------------------------------------------------------

def _schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


class Trainer:
    def __init__(self, opts: TrainOptions, loaded: LoadedInternVL, out: Path):
        self.opts, self.loaded, self.out = opts, loaded, out
        self.samples = read_chat(opts.data, opts.image_root)
        self.items = eval_items(opts.eval_data, opts.eval_limit) if opts.eval_data else []
        n = len(self.samples)
        if opts.steps is not None:
            self.total = opts.steps
        else:
            self.total = max(1, math.ceil((opts.epochs or 1.0) * n / opts.batch_size))
        self.warmup = (opts.warmup if opts.warmup is not None
                       else math.ceil(0.03 * self.total))
        self.eval_every = opts.eval_every or self.total
        self.save_every = opts.save_every or self.eval_every
        self.model = prepare(loaded, opts)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        if not self.params:
            raise ToolkitError("nothing to train: every part is frozen")
        decay = [p for p in self.params if p.ndim >= 2]
        rest = [p for p in self.params if p.ndim < 2]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": opts.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=opts.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt,
                                                       _schedule(self.warmup, self.total))
        self.start, self.best, self.evals, self.saved = 0, None, [], False

    def say(self, text: str) -> None:
        if not self.opts.quiet:
            console.print(text, soft_wrap=True)

    def log(self, rec: dict) -> None:
        with open(self.out / "train_log.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")

    # -- state --
    def save_state(self, step: int) -> None:
        state = {"model": {k: v for k, v in self.model.state_dict().items()},
                 "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                 "step": step, "best_cider": self.best, "saved": self.saved,
                 "rng": torch.get_rng_state(),
                 "samples": len(self.samples), "batch_size": self.opts.batch_size,
                 "seed": self.opts.seed, "lora": self.opts.lora, "total": self.total}
        buf = io.BytesIO()
        torch.save(state, buf)
        (self.out / "resume").mkdir(exist_ok=True)
        atomic_write_bytes(self.out / "resume" / "state.pt", buf.getvalue())

    def resume(self) -> None:
        path = self.out / "resume" / "state.pt"
        state = load_tensors(path, "delete resume/ or choose a new --out")
        try:
            if bool(state.get("lora")) != self.opts.lora:
                raise ValueError("saved with" + ("" if state.get("lora") else "out") + " --lora")
            if (int(state["samples"]), int(state["batch_size"]), int(state["seed"])) != \
                    (len(self.samples), self.opts.batch_size, self.opts.seed):
                raise ValueError("other data, --batch-size or --seed: the data order differs")
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.start = int(state["step"])
            best = state.get("best_cider")
            self.best = None if best is None else float(best)
            self.saved = bool(state.get("saved", self.start > 0))
            torch.set_rng_state(state["rng"])
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise ToolkitError(f"cannot resume from {path} ({str(exc).splitlines()[0][:120]});"
                               " resume with the run's own settings, or drop --resume and "
                               "choose a new --out") from None
        if (self.out / "eval.json").is_file():
            self.evals = [e for e in json.loads((self.out / "eval.json").read_text())
                          if e["step"] <= self.start]
        if (self.out / "train_log.jsonl").is_file():
            kept = [ln for ln in (self.out / "train_log.jsonl").read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= self.start]
            atomic_write_bytes(self.out / "train_log.jsonl",
                               "".join(k + "\n" for k in kept).encode())
        self.say(f"resuming {escape(str(self.out))} at step {self.start} of {self.total}")

    def save_checkpoint(self) -> None:
        opts = self.opts
        if opts.lora:
            self.model.language_model.save_pretrained(str(self.out / "adapter"))
        if not opts.lora or opts.merge:
            write_checkpoint(self.loaded, self.out, lora=opts.lora)

    # -- evaluation --
    def evaluate(self, step: int, loss: float | None) -> dict | None:
        if not self.items:
            return None
        t0 = time.perf_counter()
        scores, caps = evaluate(self.loaded, self.items, self.opts.beam_size,
                                self.opts.max_new_tokens, self.opts.max_tiles)
        rec = {"step": step, **{k: round(v, 5) for k, v in scores.items()}, "train_loss": loss,
               "images": len(self.items), "seconds": round(time.perf_counter() - t0, 1),
               "captions": caps[:EVAL_TEXTS]}
        self.evals.append(rec)
        atomic_write_bytes(self.out / "eval.json", (json.dumps(self.evals, indent=1) + "\n")
                           .encode())
        self.log({k: v for k, v in rec.items() if k != "captions"} | {"eval": True})
        # step 0 scores the starting point (reported, never written: it is the input); the
        # trained evaluations compete for the kept checkpoint, the first one always written
        improved = step > 0 and (self.best is None or scores["CIDEr"] > self.best)
        self.say(f"eval step {step}: CIDEr {scores['CIDEr'] * 100:.1f} BLEU-4 "
                 f"{scores['BLEU-4'] * 100:.1f} METEOR {scores['METEOR'] * 100:.1f} ROUGE-L "
                 f"{scores['ROUGE-L'] * 100:.1f} on {len(self.items)} images "
                 f"({rec['seconds']:.0f} s)" + (" — best so far, kept" if improved else "")
                 + f" | e.g. {caps[0]!r}")
        if improved:
            self.best = scores["CIDEr"]
            self.save_checkpoint()
            self.saved = True
        return rec

    # -- training --
    def run(self) -> list[float]:
        opts = self.opts
        self.model.train()
        losses, t_start, last_line = [], time.perf_counter(), None
        steps = self.total - self.start
        for step in range(self.start + 1, self.total + 1):
            t0 = time.perf_counter()
            batch = [self.samples[i] for i in
                     batch_indices(len(self.samples), opts.batch_size, opts.seed, step)]
            pixels, ids, mask, labels = make_batch(self.loaded, batch, opts.max_tiles)
            self.opt.zero_grad(set_to_none=True)
            loss, n_tokens = batch_loss(self.model, pixels, ids, mask, labels)
            if not torch.isfinite(loss):
                raise ToolkitError(f"loss became {loss.item()} at step {step}; lower --lr")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            self.opt.step()
            self.sched.step()
            losses.append(float(loss.detach()))
            seconds = time.perf_counter() - t0
            done = step - self.start
            rec = {"step": step, "loss": round(losses[-1], 5),
                   "lr": self.sched.get_last_lr()[0], "seconds": round(seconds, 3),
                   "samples_per_s": round(len(batch) / seconds, 2), "tokens": n_tokens,
                   "eta_s": round((time.perf_counter() - t_start) / done * (steps - done)),
                   "rss_mb": round(rss_bytes() / 1e6, 1)}
            self.log(rec)
            if step % self.eval_every == 0 or step == self.total:
                self.evaluate(step, rec["loss"])
                if not self.items:
                    self.save_checkpoint()      # no evaluation: the last weights are kept
                self.save_state(step)
            elif step % self.save_every == 0:
                self.save_state(step)
            if last_line is None or step == self.total or \
                    time.perf_counter() - last_line >= PROGRESS_EVERY_S:
                last_line = time.perf_counter()
                self.say(f"step {step}/{self.total} loss {rec['loss']:.4f} lr {rec['lr']:.2e} | "
                         f"{rec['samples_per_s']:.3g} samples/s | ETA {_duration(rec['eta_s'])}"
                         f" | CPU RSS {rec['rss_mb'] / 1e3:.2f} GB"
                         + (f" | best CIDEr {self.best * 100:.1f}" if self.best is not None
                            else ""))
        return losses


def train(opts: TrainOptions) -> dict:
    """Train as ``opts`` says; the summary (losses, evaluations, seconds, parameters, output)."""
    opts.check()
    out = check_out(Path(opts.out), opts.resume, opts.force)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    else:
        torch.set_num_threads(default_threads())
    torch.manual_seed(opts.seed)
    loaded = load_model(opts.checkpoint, opts.preset, opts.seed)
    run = Trainer(opts, loaded, out)
    trainable, total = count_params(run.model)
    run.say(params_line(run.model))
    out.mkdir(parents=True, exist_ok=True)
    if opts.resume:
        run.resume()
    else:
        for name in ("train_log.jsonl", "eval.json"):      # --force: a fresh log
            if (out / name).is_file() and opts.force:
                os.unlink(out / name)
    run.say(f"train internvl ({escape(loaded.source.get('weights', ''))}): "
            f"{len(run.samples)} lines, {run.total} steps of {opts.batch_size}, lr {opts.lr:g}"
            f" (warm-up {run.warmup}), " + (f"LoRA rank {opts.lora_rank}" if opts.lora
                                           else "full fine-tune")
            + (", vision frozen" if opts.freeze_vision else "")
            + (", mlp1 frozen" if opts.freeze_mlp else ""))
    if run.start == 0 and run.items:
        run.evaluate(0, None)
    t0 = time.perf_counter()
    losses = run.run() if run.start < run.total else []
    seconds = time.perf_counter() - t0
    k = max(1, len(losses) // 5)
    summary = {"step": run.total, "steps_run": len(losses),
               "loss_first": float(np.mean(losses[:k])) if losses else None,
               "loss_last": float(np.mean(losses[-k:])) if losses else None,
               "cider_before": run.evals[0]["CIDEr"] if run.evals else None,
               "cider_best": run.best, "evals": [{k2: v for k2, v in e.items()
                                                   if k2 != "captions"} for e in run.evals],
               "seconds": seconds, "seconds_per_step": seconds / max(1, len(losses)),
               "trainable_params": trainable, "all_params": total, "out": str(out)}
    if losses:
        run.say(f"loss {summary['loss_first']:.3f} → {summary['loss_last']:.3f} "
                f"[{summary['seconds_per_step']:.2f} s/step, {seconds:.0f} s]"
                + (f"; CIDEr {summary['cider_before'] * 100:.1f} → best {run.best * 100:.1f}"
                   if run.evals else ""))
    if opts.lora and not opts.merge:
        run.say(f"[green]✓[/] {escape(str(out / 'adapter'))}: the LoRA adapter (best CIDEr); "
                "--merge writes it merged into a plain checkpoint")
    else:
        run.say(f"[green]✓[/] {escape(str(out))}: InternVL2-layout checkpoint "
                f"({'best CIDEr' if run.items else 'last step'})")
    return summary


def copy_checkpoint(src: Path, dst: Path) -> None:
    """The checkpoint files of a run (config.json, model.safetensors, tokenizer.json)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        shutil.copy2(Path(src) / name, dst / name)
