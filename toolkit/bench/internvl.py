"""``toolkit bench --model internvl``: what is captioning-specific in the benchmark.

One workload: the images of a Karpathy caption split (default: the shared set's ``test`` split,
``../shared/data/captions``; ``--data`` a folder laid out the same way or a real COCO Karpathy
folder; ``--limit`` the first N images), each captioned once per case, one image per call as
InternVL's evaluation does (``cycle`` mode: ``max(runs, images)`` timed calls after the
warm-up). Figures per case: latency per image end to end (decode + preprocess + vision + search),
its parts — vision ms (encoder + projector), prefill ms (the decoder over the prompt with the
image spliced in), ms/token (the cached steps) —, images/s, peak RSS (the harness's); quality
with pycocoevalcap (CIDEr, BLEU-1..4, METEOR, ROUGE-L against the references; SPICE off) and
against PyTorch fp32 — CIDEr taking its captions as the only reference, and the share of
identical captions. Greedy unless ``--beam-size``; 8–30 new tokens (InternVL's evaluation).

Stock-path row ``hf``: Hugging Face ``generate()`` in PyTorch eager — transformers'
``Qwen2ForCausalLM.generate(inputs_embeds=…)`` (the LLM InternVL2-1B and the small captioner
use) over the prompt embeddings with the image spliced in, the image encoded by the toolkit's
PyTorch InternViT + ``mlp1`` (equal to transformers' ``InternVLModel`` image features, tested in
``tests/models``): the path of InternVL's own ``chat()``. Its prefill and per-token times are
read from a logits processor's clock (called once per generated token).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ..core.errors import ToolkitError
from ..core.threads import default_threads
from .captions import METRICS, _need_java, caption_scores, cider_against, read_split
from .harness import BenchSpec, Workload
from .plots import Panel

SPLIT = "test"
MAX_NEW_TOKENS = 30
MIN_NEW_TOKENS = 8
MAX_TILES = 6            # the caption command's default (a 224-px caption image is one tile)
# the targets (checked in the lines after the table)
CIDER_DRIFT = {"fp16": 0.005, "int8": 0.02, "int8-cpu": 0.02}
HF_SPEEDUP = 1.3
METRIC_FIELDS = {"CIDEr": "cider", "BLEU-1": "bleu_1", "BLEU-2": "bleu_2", "BLEU-3": "bleu_3",
                 "BLEU-4": "bleu_4", "METEOR": "meteor", "ROUGE-L": "rouge_l"}


def default_data() -> Path:
    env = os.environ.get("TOOLKIT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return root / "captions"


class HFCaptioner:
    """The ``hf`` backend: transformers' ``generate()`` on the PyTorch model (see the module
    docstring), one image at a time, with the same prompt, limits and preprocessing."""

    sessions: list = []

    def __init__(self, loaded, beam_size: int):
        import torch
        from transformers import LogitsProcessor, LogitsProcessorList
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        torch.set_num_threads(default_threads())
        self.loaded, self.beam = loaded, beam_size
        self.clock: list[float] = []
        clock = self.clock

        class Clock(LogitsProcessor):
            def __call__(self, input_ids, scores):
                clock.append(time.perf_counter())
                return scores

        self.processors = LogitsProcessorList([Clock()])

    def caption_one(self, source):
        import torch

        lo = self.loaded
        values, tiling = lo.preprocess(source, min(MAX_TILES, lo.max_tiles))
        with torch.inference_mode():
            t0 = time.perf_counter()
            image = lo.encode_image(values)
            t1 = time.perf_counter()
            ids = torch.tensor([lo.prompt_ids(tiling.count)], dtype=torch.long)
            embeds = lo.model.splice(ids, image)
            mask = torch.ones(embeds.shape[:2], dtype=torch.long)
            self.clock.clear()
            t2 = time.perf_counter()
            gen = lo.model.language_model.generate(
                inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                num_beams=self.beam, max_new_tokens=MAX_NEW_TOKENS,
                min_new_tokens=MIN_NEW_TOKENS, eos_token_id=lo.eos_id, pad_token_id=lo.pad_id,
                logits_processor=self.processors)
        out = [int(t) for t in gen[0]]
        out = out[:out.index(lo.eos_id)] if lo.eos_id in out else out
        ticks = [t2] + self.clock
        steps = [(b - a) * 1e3 for a, b in zip(ticks[1:], ticks[2:])]
        prefill = (ticks[1] - t2) * 1e3 if len(ticks) > 1 else 0.0
        return lo.tokenizer.decode(out), len(out), (t1 - t0) * 1e3, prefill, steps

    def close(self) -> None:
        self.loaded = None


class InternVLBench(BenchSpec):
    family = "internvl"
    mode = "cycle"
    extra_backends = {"hf": ("fp32",)}
    ratios = (("torch", "fp32"), ("hf", "fp32"), ("ort", "fp32"))
    fields = ("images", "beam_size", "vision_ms", "prefill_ms", "ms_per_token", "images_per_s",
              "tokens_per_caption", *METRIC_FIELDS.values(), "cider_vs_torch_fp32",
              "exact_match_vs_torch_fp32", "captions")
    columns = (("vision ms", "vision_ms", ".1f"), ("prefill ms", "prefill_ms", ".1f"),
               ("ms/token", "ms_per_token", ".2f"), ("img/s", "images_per_s", ".2f"))
    quality_header = "CIDEr"
    quality_format = ".3f"
    quality_columns = (("BLEU-1", "bleu_1", ".3f"), ("BLEU-4", "bleu_4", ".3f"),
                       ("METEOR", "meteor", ".3f"), ("ROUGE-L", "rouge_l", ".3f"),
                       ("CIDEr vs fp32", "cider_vs_torch_fp32", ".3f"),
                       ("same as fp32", "exact_match_vs_torch_fp32", ".3f"))
    plot_panels = (Panel("images_per_s", "images / s"), Panel("cider", "CIDEr vs references"))
    default_out = "results/internvl-bench.json"

    def default_backends(self) -> tuple[str, ...]:
        return ("torch", "ort", "hf")

    def check_options(self, options: dict) -> dict:
        beam = options.get("beam_size") or 1
        if not 1 <= beam <= 8:
            raise ToolkitError(f"--beam-size must be from 1 to 8 (got {beam})")
        return {"beam_size": beam}

    def workloads(self, family, loaded, data, limit, options):
        items = read_split(Path(data) if data else default_data(), SPLIT, limit)
        _need_java()        # before minutes of captioning: the scoring needs it
        self.refs = {it.image_id: list(it.references) for it in items}
        info = {"random_init": loaded.random_init, "ids": [it.image_id for it in items]}
        return [Workload(f"{SPLIT}-{len(items)}", [str(it.image) for it in items],
                         {"images": len(items), "beam_size": options["beam_size"]}, info)]

    # -- child ------------------------------------------------------------------------------
    def open(self, case):
        if case.backend == "hf":
            return HFCaptioner(case.family.load_model(**case.load_args),
                               case.options["beam_size"])
        return super().open(case)

    def work(self, runner, path, shape, case):
        if isinstance(runner, HFCaptioner):
            text, n, vision, prefill, steps = runner.caption_one(path)
        else:
            c = runner.caption_one(path, beam_size=case.options["beam_size"],
                                   max_tiles=min(MAX_TILES, runner.max_tiles),
                                   max_new_tokens=MAX_NEW_TOKENS, min_new_tokens=MIN_NEW_TOKENS)
            text, n, vision, prefill, steps = (c.text, len(c.tokens), c.vision_ms,
                                               c.prefill_ms, c.step_ms)
        return text, {"vision_ms": [vision], "prefill_ms": [prefill], "step_ms": steps,
                      "tokens": [n]}

    # -- parent -----------------------------------------------------------------------------
    def figures(self, shape, result, reference, options):
        ids = shape.info["ids"]
        texts = list(result["outputs"])
        ref_texts = list(reference["outputs"])
        hyps = dict(zip(ids, texts))
        scores = caption_scores(hyps, {k: self.refs[k] for k in ids})
        ex = result["extras"]
        lat = result["latency_ms"]
        rec = {"images": len(ids), "beam_size": options["beam_size"],
               "vision_ms": float(np.median(ex["vision_ms"])),
               "prefill_ms": float(np.median(ex["prefill_ms"])),
               "ms_per_token": float(np.mean(ex["step_ms"])) if ex.get("step_ms") else None,
               "images_per_s": 1e3 / float(np.mean(lat)),
               "tokens_per_caption": float(np.mean(ex["tokens"])),
               **{METRIC_FIELDS[k]: scores.get(k) for k in METRICS},
               "cider_vs_torch_fp32": _cider_vs(hyps, dict(zip(ids, ref_texts))),
               "exact_match_vs_torch_fp32": float(np.mean([a == b for a, b in
                                                           zip(texts, ref_texts)])),
               "captions": texts, "rtf": None}
        why = ("the split's reference captions (pycocoevalcap CIDEr-D, PTB tokenizer)"
               + (" — random weights: read CIDEr vs fp32 and same-as-fp32 instead"
                  if shape.info.get("random_init") else ""))
        rec.update(quality_metric="cider", quality_value=rec["cider"], quality_reference=why)
        return rec

    def notes(self, records, loaded, shapes, options, env):
        return [f"{shapes[0].fields['images']} images of the {SPLIT} split, one per call; "
                f"beam {options['beam_size']}; {MIN_NEW_TOKENS}–{MAX_NEW_TOKENS} new tokens; "
                "p50 = one image end to end (decode, preprocess, vision, prefill, cached steps)",
                "vision ms = InternViT + mlp1 per image, prefill ms = the decoder over the "
                "prompt, ms/token = mean cached step (medians/means over the images)",
                "quality: pycocoevalcap CIDEr(-D), BLEU-1..4, METEOR, ROUGE-L (SPICE off); "
                "CIDEr vs fp32 = CIDEr with PyTorch fp32's caption as the only reference",
                "hf = transformers' Qwen2ForCausalLM.generate(inputs_embeds=…) in PyTorch eager "
                "over the spliced prompt (image by the toolkit's PyTorch InternViT + mlp1): "
                "InternVL's chat() path; torch = the export plan's modules on the shared search",
                f"python {sys.version.split()[0]}"]

    def finish(self, records):
        ok = [r for r in records if r.get("error") is None]
        get = {(r["backend"], r["precision"]): r for r in ok}
        ref = get.get(("torch", "fp32"))
        if ref is None:
            return []
        random = ref["random_init"]
        lines = ["targets" + (" (RANDOM WEIGHTS: checked for the mechanics, not the model)"
                              if random else "") + ":"]
        ort = get.get(("ort", "fp32"))
        if ort:
            same = ort["exact_match_vs_torch_fp32"]
            lines.append(f"  ort fp32 captions equal torch fp32: {same:.1%} "
                         f"{'pass' if same == 1.0 else 'FAIL'}")
        for p, limit in CIDER_DRIFT.items():
            r = get.get(("ort", p))
            if r and ref.get("cider"):
                drift = abs(r["cider"] - ref["cider"]) / ref["cider"]
                lines.append(f"  CIDEr drift {p} vs fp32: {drift:.2%} (≤ {limit:.1%}) "
                             f"{'pass' if drift <= limit else 'FAIL'}")
            elif r:
                lines.append(f"  CIDEr drift {p} vs fp32: torch fp32 CIDEr is 0, no ratio")
        r = get.get(("ort", "int4"))
        if r and ref.get("cider"):  # the issue sets no bound for 4-bit weights: reported
            drift = abs(r["cider"] - ref["cider"]) / ref["cider"]
            lines.append(f"  CIDEr drift int4 vs fp32: {drift:.2%} (no target set)")
        hf = get.get(("hf", "fp32"))
        if ort and hf:
            x = hf["latency_ms_p50"] / ort["latency_ms_p50"]
            lines.append(f"  ort fp32 vs hf generate() end to end: {x:.2f}× (≥ {HF_SPEEDUP}×) "
                         f"{'pass' if x >= HF_SPEEDUP else 'FAIL'}")
        return lines


def _cider_vs(hyps: dict, reference: dict) -> float | None:
    """CIDEr against the reference row's captions; None when its captions give no n-grams
    (random weights can give the same caption, or nothing the tokenizer keeps, everywhere)."""
    try:
        value = cider_against(hyps, reference)
    except (ZeroDivisionError, ValueError):
        return None
    return value if np.isfinite(value) else None


SPEC = InternVLBench()
