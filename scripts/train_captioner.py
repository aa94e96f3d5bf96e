"""Train the small captioner committed at ``toolkit/assets/internvl/captioner/``.

InternVL's caption fine-tuning workflow, replayed on a small InternVL-architecture model
(``internvl-tiny``) and the synthetic shapes set of ``../shared/data/captions`` (no trained
captioning weights or real caption data are reachable offline):

1. ``pretrain``: full training from the random ``internvl-tiny`` preset on the tag-style answers
   (``shapes_train_tags.jsonl``) — the "pre-trained model that has not seen this caption style";
2. ``lora``: zero-shot CIDEr of that model on the sentence-style test split (step 0), then LoRA
   (rank 128, vision frozen) on the sentence captions (``shapes_train_chat.jsonl``), scored again,
   merged into plain weights (``--merge``);
3. ``commit``: the merged checkpoint in fp16 at ``toolkit/assets/internvl/captioner/`` (+ NOTICE),
   scored there once more (the committed weights), and ``results/internvl-train.json``.

Usage (one thread, as measured)::

    OMP_NUM_THREADS=1 python scripts/train_captioner.py pretrain lora commit

Each stage is ``toolkit train internvl`` through its library call (the command line of each is
printed). Run directory: ``runs/captioner/`` (not committed).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CAPTIONS", ROOT.parent / "shared" / "data" / "captions"))
RUNS = ROOT / "runs" / "captioner"
ASSET = ROOT / "toolkit" / "assets" / "internvl" / "captioner"
RESULTS = ROOT / "results" / "internvl-train.json"
EVAL_LIMIT = int(os.environ.get("EVAL_LIMIT", "250"))

PRETRAIN = dict(preset="internvl-tiny", steps=300, batch_size=16, lr=1e-3, warmup=15, save_every=50)
LORA = dict(steps=90, batch_size=16, lr=1e-3, warmup=5, lora=True, lora_rank=128,
            lora_embeddings=True, freeze_vision=True, merge=True, eval_every=45)


def _cmd(data: str, out: Path, **kw) -> str:
    parts = ["toolkit train internvl", f"--data {data}", f"--out {out}"]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"{flag} {v}")
    return " ".join(parts)


def _train(data: Path, out: Path, **kw) -> dict:
    import torch

    from toolkit.train.internvl import TrainOptions, train

    torch.set_num_threads(1)
    print("$", _cmd(str(data), out, **kw), flush=True)
    opts = TrainOptions(data=data, out=out, threads=1, **kw)
    if out.is_dir() and (out / "resume" / "state.pt").is_file():
        opts.resume = True
    return train(opts)


def pretrain() -> None:
    got = _train(DATA / "annotations" / "shapes_train_tags.jsonl", RUNS / "pretrain", **PRETRAIN)
    (RUNS / "pretrain.json").write_text(json.dumps(got, indent=1))


def lora() -> None:
    got = _train(DATA / "annotations" / "shapes_train_chat.jsonl", RUNS / "lora",
                 checkpoint=str(RUNS / "pretrain"),
                 eval_data=DATA / "annotations" / "shapes_karpathy_test.json",
                 eval_limit=EVAL_LIMIT, **LORA)
    (RUNS / "lora.json").write_text(json.dumps(got, indent=1))


NOTICE = """# The toolkit's small captioner (trained here — not InternVL2)

`toolkit caption` uses this checkpoint when no model is given. It is **not** InternVL2 and knows
nothing of real photographs: it is a {params:,d}-parameter model of InternVL2's *architecture*
(`internvl-tiny`: InternViT, pixel shuffle, `mlp1`, a Qwen2 LLM; 448-px tiles, 28-px patches, 64
image tokens per tile, the 624-token caption tokenizer) trained on this machine's CPU, from random
weights, on the **synthetic** shapes captioning set of `../shared/data/captions` (generated for
this project: 224 × 224 scenes of coloured shapes). It captions such scenes, nothing else.

How (`scripts/train_captioner.py`, {minutes:.0f} min on one CPU thread in all):

1. full training of the random `internvl-tiny` preset on the tag-style answers
   (`shapes_train_tags.jsonl`): {pre_steps} steps × {pre_batch}, lr {pre_lr:g};
2. LoRA (rank {rank}, alpha {alpha}, vision frozen, the token embeddings trained too:
   `--lora-embeddings`, the sentence words are new to it) on the sentence captions
   (`shapes_train_chat.jsonl`): {lora_steps} steps × {lora_batch}, lr {lora_lr:g}; the best-CIDEr
   adapter merged into plain weights (`toolkit train internvl --lora --merge`);
3. stored here in fp16 (`model.safetensors`; the loader computes in fp32), in InternVL2's own
   checkpoint layout (`config.json` + `model.safetensors` + `tokenizer.json`).

Scores on the sentence test split (first {n} images, greedy): see `results/internvl-train.md`.
Licence: the weights were produced by the toolkit from data generated for the project; they are
distributed with the toolkit under its licence.
"""


def commit() -> None:
    import torch

    from toolkit.models.internvl.loading import load_model
    from toolkit.train.internvl import eval_items, evaluate, write_checkpoint

    torch.set_num_threads(1)
    pre = json.loads((RUNS / "pretrain.json").read_text())
    lo = json.loads((RUNS / "lora.json").read_text())
    loaded = load_model(str(RUNS / "lora"))
    ASSET.mkdir(parents=True, exist_ok=True)
    write_checkpoint(loaded, ASSET, dtype=torch.float16)
    params = sum(p.numel() for p in loaded.model.parameters())
    items = eval_items(DATA / "annotations" / "shapes_karpathy_test.json", EVAL_LIMIT)
    t0 = time.perf_counter()
    committed = load_model(str(ASSET))
    scores, caps = evaluate(committed, items)
    eval_s = time.perf_counter() - t0
    minutes = (pre["seconds"] + lo["seconds"]) / 60
    (ASSET / "NOTICE.md").write_text(NOTICE.format(
        params=params, minutes=minutes, pre_steps=PRETRAIN["steps"],
        pre_batch=PRETRAIN["batch_size"], pre_lr=PRETRAIN["lr"], rank=LORA["lora_rank"],
        alpha=2 * LORA["lora_rank"], lora_steps=LORA["steps"], lora_batch=LORA["batch_size"],
        lora_lr=LORA["lr"], n=len(items)))
    zero = lo["evals"][0]
    best = max(lo["evals"][1:], key=lambda e: e["CIDEr"])
    cpu = "unknown"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in
                   subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
                   if ln.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    pick = ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L", "BLEU-1")
    rec = {
        "what": "internvl-tiny trained here on the synthetic shapes captions: tag pre-training, "
                "zero-shot on sentence captions, LoRA on sentences, merged (not InternVL2)",
        "data": str(DATA), "eval_split": "test", "eval_images": len(items),
        "decoding": "greedy, 8-30 new tokens (InternVL's caption evaluation settings)",
        "zero_shot": {k: zero[k] for k in pick},
        "lora": {k: best[k] for k in pick} | {"step": best["step"]},
        "merged_fp16_committed": {k: round(scores[k], 5) for k in pick},
        "evals": lo["evals"],
        "pretrain": {**PRETRAIN, "seconds": round(pre["seconds"], 1),
                     "seconds_per_step": round(pre["seconds_per_step"], 3),
                     "loss_first": pre["loss_first"], "loss_last": pre["loss_last"],
                     "trainable_params": pre["trainable_params"],
                     "all_params": pre["all_params"]},
        "lora_run": {**{k: v for k, v in LORA.items()}, "lora_alpha": 2 * LORA["lora_rank"],
                     "seconds": round(lo["seconds"], 1),
                     "seconds_per_step": round(lo["seconds_per_step"], 3),
                     "loss_first": lo["loss_first"], "loss_last": lo["loss_last"],
                     "trainable_params": lo["trainable_params"], "all_params": lo["all_params"]},
        "committed_eval_seconds": round(eval_s, 1),
        "sample_captions": caps[:5],
        "checkpoint": {"path": str(ASSET.relative_to(ROOT)), "dtype": "float16",
                       "bytes": (ASSET / "model.safetensors").stat().st_size,
                       "parameters": params},
        "machine": {"cpu": cpu, "threads": 1, "load_avg_1m_at_end": os.getloadavg()[0],
                    "python": platform.python_version(), "torch": torch.__version__,
                    "note": "2 cores shared with three other sessions"},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps({k: rec[k] for k in ("zero_shot", "lora", "merged_fp16_committed")},
                     indent=1))


def export() -> None:
    """The committed checkpoint exported (ONNX fp32, the export layer's own validation) and
    captioning the same images on onnxruntime: CIDEr and seconds a caption (a small bench)."""
    import torch

    from toolkit.export.internvl.plan import build_plan
    from toolkit.export.onnx import export_plan
    from toolkit.models.internvl.loading import load_model
    from toolkit.runtime.graphs import open_artifact
    from toolkit.runtime.internvl.pipeline import from_graphs
    from toolkit.train.internvl import caption_scores, eval_items

    torch.set_num_threads(1)
    out = RUNS / "export-fp32"
    t0 = time.perf_counter()
    if not (out / "manifest.json").is_file():
        export_plan(build_plan(load_model(str(ASSET))), "fp32", out)
    export_s = time.perf_counter() - t0
    pipe = from_graphs(open_artifact(out, "internvl", "ort", threads=1))
    items = eval_items(DATA / "annotations" / "shapes_karpathy_test.json", EVAL_LIMIT)
    t0 = time.perf_counter()
    caps = [c.text for c in pipe.caption([it.image for it in items])]
    per = (time.perf_counter() - t0) / len(items)
    scores = caption_scores({it.image_id: c for it, c in zip(items, caps)},
                            {it.image_id: list(it.references) for it in items})
    rec = json.loads(RESULTS.read_text())
    rec["exported_ort_fp32"] = {**{k: round(v, 5) for k, v in scores.items()
                                   if k in ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L", "BLEU-1")},
                                "seconds_per_caption": round(per, 4),
                                "export_seconds": round(export_s, 1),
                                "note": "greedy, ort fp32, 1 thread, incl. JPEG decode"}
    RESULTS.write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec["exported_ort_fp32"], indent=1))


if __name__ == "__main__":
    stages = {"pretrain": pretrain, "lora": lora, "commit": commit, "export": export}
    for name in sys.argv[1:] or list(stages):
        if name not in stages:
            sys.exit(f"unknown stage {name!r}; stages: {', '.join(stages)}")
        stages[name]()
