"""The Marian ExportPlan: the encoder and the cached decoder step, TensorRT profiles, and
validation / int8 calibration on real sentences (the shared en–pt pairs, else built-in ones),
decoded greedily by the PyTorch modules themselves so the feeds have the runtime's shapes."""

from __future__ import annotations

import numpy as np

from ...core.errors import ToolkitError
from ...models.marian.data import read_pairs
from ...models.marian.loading import LoadedMarian
from ..generate import decoder_axes
from ..onnx import torch_outputs
from ..spec import ExportPlan, GraphSpec, Profile
from .graphs import (
    BergamotDecoderGraph,
    BergamotEncoderGraph,
    HFMarianDecoderGraph,
    HFMarianEncoderGraph,
    cache_entries,
    cross_names,
    decoder_inputs,
    decoder_outputs,
)
from .revision import EXPORT_REVISION

MAX_SOURCE = 256      # pieces per sentence (with </s>): the profiles' and the runtime's limit
MAX_TARGET = 512      # decoder steps (2.5 × the source, capped)
MAX_BATCH = 32        # sentences encoded together (TensorRT profile max)
MAX_ROWS = 128        # decoder rows = sentences × beams
LENGTH_FACTOR = 2.5   # Marian's max-length-factor: output ≤ 2.5 × the source
SHORTLIST_GRAPH = "decoder_shortlist"

TOLERANCE = {
    "fp32": {"rel_l2": 1e-3, "cosine": 0.99999},
    "fp16": {"rel_l2": 2e-2, "cosine": 0.999},
    "int8": {"rel_l2": 0.35, "cosine": 0.94},
}
INT8_BUDGET = {"encoder": 0.15, "decoder": 0.08}

# used when the shared pairs are not there (a wheel installed elsewhere): real software messages
BUILT_IN = ["The file could not be opened.", "Do you want to save the changes to this document?",
            "No network connection is available.", "Unable to mount the volume: permission "
            "denied.", "Show hidden files", "The operation was cancelled by the user."]


def _texts(loaded: LoadedMarian, n: int, data=None) -> list[str]:
    try:
        pairs = read_pairs(data, *loaded.pair) if loaded.pair[0] in ("en", "pt") else []
    except ToolkitError:
        if data is not None:
            raise
        pairs = []
    texts = [s for s, _ in pairs[:n]] or BUILT_IN
    return texts[:n]


def model_config(loaded: LoadedMarian) -> dict:
    m, kind = loaded.model, loaded.kind
    if kind == "bergamot":
        c = m.config
        dims = dict(d_model=c.d_model, heads=c.heads, decoder_layers=c.decoder_layers,
                    vocab_size=c.vocab_size)
    else:
        c = m.config
        dims = dict(d_model=c.d_model, heads=c.decoder_attention_heads,
                    decoder_layers=c.decoder_layers, vocab_size=c.vocab_size)
    vocab = loaded.vocab
    hf_vocab = hasattr(vocab, "directory")
    pad = getattr(vocab, "pad_id", None)
    return {
        "architecture": kind, **dims, "head_dim": dims["d_model"] // dims["heads"],
        "eos_id": int(vocab.eos_id), "unk_id": int(vocab.unk_id),
        "pad_id": None if pad is None else int(pad), "start_id": int(m.start_id),
        "pair": list(loaded.pair), "length_factor": LENGTH_FACTOR,
        "max_source_tokens": min(MAX_SOURCE, loaded.max_source_tokens or MAX_SOURCE),
        "max_target_tokens": MAX_TARGET,
        "batch_limits": {"sentences": MAX_BATCH, "rows": MAX_ROWS},
        "vocab": {"kind": "hf" if hf_vocab else "spm",
                  "files": "vocab/" if hf_vocab else "vocab.spm"},
        "shortlist": "lex.s2t.bin" if loaded.shortlist is not None else None,
    }


def _specs(loaded: LoadedMarian, cfg: dict) -> list[GraphSpec]:
    kind, n, h, dh = cfg["architecture"], cfg["decoder_layers"], cfg["heads"], cfg["head_dim"]
    enc_cls, dec_cls = ((BergamotEncoderGraph, BergamotDecoderGraph) if kind == "bergamot"
                        else (HFMarianEncoderGraph, HFMarianDecoderGraph))
    src = (1, 24, MAX_SOURCE)
    enc_out = cross_names(n)
    enc = GraphSpec(
        name="encoder", module=enc_cls(loaded.model).eval(),
        input_names=["input_ids", "attention_mask"], output_names=enc_out,
        dynamic_axes={"input_ids": {0: "batch", 1: "source"},
                      "attention_mask": {0: "batch", 1: "source"},
                      "source_bias": {0: "batch", 1: "source"},
                      **{o: {0: "batch", 2: "source"} for o in enc_out[1:]}},
        example_inputs=lambda: _example_source(cfg),
        profiles={k: Profile([1, src[0]], [1, src[1]], [MAX_BATCH, src[2]])
                  for k in ("input_ids", "attention_mask")},
        tolerance=TOLERANCE, input_dtypes={"input_ids": "int64", "attention_mask": "int64"},
        int8_budget=INT8_BUDGET["encoder"], int8_cpu_scheme="dynamic")
    cache = ({"position": ()} | {f"cell_{i}": (cfg["d_model"],) for i in range(n)}
             if kind == "bergamot" else {e: (h, None, dh) for e in cache_entries(kind, n)})
    cross = {"source_bias": ((None,), src)} | {c: ((h, None, dh), src) for c in enc_out[1:]}
    axes, profiles = decoder_axes(cache, cross, MAX_ROWS, MAX_BATCH,
                                  1 if kind == "bergamot" else MAX_TARGET, 32)
    if kind == "bergamot":
        profiles["input_ids"] = Profile([1, 1], [1, 1], [MAX_ROWS, 1])
    dec = GraphSpec(
        name="decoder", module=dec_cls(loaded.model).eval(), input_names=decoder_inputs(kind, n),
        output_names=decoder_outputs(kind, n), dynamic_axes=axes,
        example_inputs=lambda: _example_step(loaded, cfg, enc), profiles=profiles,
        tolerance=TOLERANCE, input_dtypes={"input_ids": "int64", "past_position": "int64"},
        int8_budget=INT8_BUDGET["decoder"], int8_cpu_scheme="blockwise")
    if not cfg.get("shortlist"):
        return [enc, dec]
    # the same step over the shortlisted rows of the output layer only (Marian's lexical
    # shortlist, chosen per batch by the runtime): ``vocab_ids`` [K], logits [R, K]
    short = GraphSpec(
        name=SHORTLIST_GRAPH, module=dec_cls(loaded.model, shortlist=True).eval(),
        input_names=decoder_inputs(kind, n, shortlist=True), output_names=dec.output_names,
        dynamic_axes={**axes, "vocab_ids": {0: "shortlist"},
                      "logits": {0: "batch", 1: "shortlist"}},
        example_inputs=lambda: (*_example_step(loaded, cfg, enc), _example_vocab(loaded)),
        profiles={**profiles, "vocab_ids": Profile([8], [512], [cfg["vocab_size"]])},
        tolerance=TOLERANCE, input_dtypes={"input_ids": "int64", "past_position": "int64",
                                           "vocab_ids": "int64"},
        int8_budget=INT8_BUDGET["decoder"], int8_cpu_scheme="blockwise")
    return [enc, dec, short]


def _example_vocab(loaded):
    import torch

    return torch.from_numpy(loaded.shortlist.allowed([40, 41, 42], loaded.model.config.vocab_size)
                            .astype(np.int64))


def _example_source(cfg: dict):
    import torch

    ids = torch.tensor([[40, 41, 42, cfg["eos_id"]], [43, 44, cfg["eos_id"], 0]])
    return ids, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])


def _example_step(loaded, cfg, enc_spec):
    import torch

    cross = torch_outputs(enc_spec, {k: v.numpy() for k, v in zip(
        ("input_ids", "attention_mask"), _example_source(cfg))})
    feeds = _start(cfg, 2)
    feeds["input_ids"] = np.array([[7], [8]], np.int64)
    if cfg["architecture"] == "bergamot":
        feeds["past_position"] = np.array([1, 3], np.int64)
    else:
        feeds.update({k: np.random.default_rng(0).standard_normal(
            (2, cfg["heads"], 2, cfg["head_dim"])).astype(np.float32)
            for k in feeds if k.startswith("past_")})
    names = decoder_inputs(cfg["architecture"], cfg["decoder_layers"])
    return tuple(torch.from_numpy(np.ascontiguousarray({**feeds, **cross}[k])) for k in names)


def _start(cfg: dict, rows: int) -> dict:
    """The decoder's first feed for ``rows`` rows: the start token and an empty cache."""
    n = cfg["decoder_layers"]
    feeds = {"input_ids": np.full((rows, 1), cfg["start_id"], np.int64)}
    if cfg["architecture"] == "bergamot":
        feeds["past_position"] = np.zeros(rows, np.int64)
        feeds |= {f"past_cell_{i}": np.zeros((rows, cfg["d_model"]), np.float32)
                  for i in range(n)}
    else:
        feeds |= {f"past_{e}": np.zeros((rows, cfg["heads"], 0, cfg["head_dim"]), np.float32)
                  for e in cache_entries("hf", n)}
    return feeds


def source_batch(vocab, texts: list[str], pad_id: int) -> dict[str, np.ndarray]:
    ids = [vocab.encode(t)[:MAX_SOURCE] for t in texts]
    width = max(len(r) for r in ids)
    out = np.full((len(ids), width), pad_id, np.int64)
    mask = np.zeros((len(ids), width), np.int64)
    for i, r in enumerate(ids):
        out[i, :len(r)], mask[i, :len(r)] = r, 1
    return {"input_ids": out, "attention_mask": mask}


def real_feeds(loaded: LoadedMarian, texts: list[str], steps: int,
               per_batch: int = 4) -> dict[str, list[dict]]:
    """Encoder feeds (batches of padded sentences) and the decoder feeds of a greedy decode of
    them (``steps`` steps), plus one step with two rows per sentence (beams share a
    sentence's cross K/V)."""
    cfg = model_config(loaded)
    enc, dec, *short = _specs(loaded, cfg)
    feeds: dict[str, list[dict]] = {g.name: [] for g in (enc, dec, *short)}
    for at in range(0, len(texts), per_batch):
        src = source_batch(loaded.vocab, texts[at:at + per_batch], loaded.pad_id)
        feeds["encoder"].append(src)
        cross = torch_outputs(enc, src)
        if short:     # the shortlist graph gets the same steps with the batch's shortlist
            cross_short = {**cross, "vocab_ids": loaded.shortlist.allowed(
                src["input_ids"][src["attention_mask"] > 0], cfg["vocab_size"]).astype(np.int64)}
        step = _start(cfg, src["input_ids"].shape[0])
        for _ in range(steps):
            feeds["decoder"].append({**step, **cross})
            if short:
                feeds[SHORTLIST_GRAPH].append({**step, **cross_short})
            out = torch_outputs(dec, {**step, **cross})
            nxt = np.argmax(out["logits"], axis=-1).astype(np.int64)[:, None]
            step = {"input_ids": nxt, **{k.replace("present_", "past_", 1): v
                                         for k, v in out.items() if k != "logits"}}
        two = {k: np.repeat(v, 2, axis=0) for k, v in step.items()}
        feeds["decoder"].append({**two, **cross})
        if short:
            feeds[SHORTLIST_GRAPH].append({**two, **cross_short})
    return feeds


def build_plan(loaded: LoadedMarian, calib_data=None) -> ExportPlan:
    cfg = model_config(loaded)

    def extra_files() -> dict:
        vocab = loaded.vocab
        files = ({f"vocab/{n}": vocab.directory / n for n in
                  ("source.spm", "target.spm", "vocab.json")} if hasattr(vocab, "directory")
                 else {"vocab.spm": vocab.path})
        if loaded.shortlist is not None:
            files["lex.s2t.bin"] = loaded.shortlist_path
        return files

    return ExportPlan(
        family="marian", graphs=_specs(loaded, cfg),
        validation_feeds=lambda: real_feeds(loaded, _texts(loaded, 6), steps=3, per_batch=3),
        calibration_feeds=lambda: real_feeds(loaded, _texts(loaded, 32, calib_data), steps=8),
        source=loaded.source, model_config=cfg, extra_files=extra_files,
        revision=EXPORT_REVISION)
