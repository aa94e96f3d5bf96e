"""The Whisper ExportPlan: graph specs, TensorRT profiles, real-audio validation/calibration."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ...core.errors import ToolkitError
from ...core.progress import console
from ...models.whisper.audio import features_for, load_audio
from ...models.whisper.data import bundled_dir, default_calibration_files
from ...models.whisper.loading import LoadedWhisper
from ..generate import decoder_axes, kv_entries
from ..onnx import torch_outputs
from ..spec import ExportPlan, GraphSpec, Profile
from .graphs import (
    ALIGN_OUTPUTS,
    WhisperAlignGraph,
    WhisperDecoderGraph,
    WhisperEncoderGraph,
    align_inputs,
    decoder_inputs,
    decoder_outputs,
    encoder_io,
)
from .revision import EXPORT_REVISION

MAX_BATCH = 8   # windows decoded together (TensorRT profile max) for tiny…small
OPT_PAST = 32

# Whisper-specific tolerances (rel L2 / cosine of each output vs PyTorch fp32). int8 QDQ with
# static activation ranges is an approximation: its real check is CER drift in `toolkit bench`.
TOLERANCE = {
    "fp32": {"rel_l2": 1e-3, "cosine": 0.99999},
    "fp16": {"rel_l2": 2e-2, "cosine": 0.999},
    "int8": {"rel_l2": 0.35, "cosine": 0.94},
}
# int8 (TensorRT form) layer-selection budget: worst output rel L2 vs fp32 with Q/DQ evaluated in
# float. Set from trained tiny.en on the 32 LJ clips (docs/int8.md): encoder 0.2 keeps 32/34
# layers int8 at 0.06-0.13 pt CER drift; the decoder's argmax is more fragile, so 0.08 and the
# vocabulary projection kept float give teacher-forced top-1 0.991 against fp32.
INT8_BUDGET = {"encoder": 0.2, "decoder": 0.08}


def batch_limits(cfg) -> dict:
    """TensorRT profile maxima per model size: ``windows`` (30-s windows encoded at once, and
    the cross K/V they yield) and ``rows`` (decoder rows = windows × beams).

    Chosen so that an engine's weights plus its largest bindings (fp32 cross K/V per window,
    past + present K/V per row at 447 tokens, one layer's fp16 activations) fit a Jetson Orin,
    whose memory the GPU shares with the CPU and the OS — the sizes per model and board are in
    docs/large-models.md. Past length always spans the whole 448-token context (Whisper's own
    limit)."""
    if cfg.d_model <= 768:
        return {"windows": MAX_BATCH, "rows": MAX_BATCH}
    if cfg.d_model <= 1024:
        return {"windows": 4, "rows": MAX_BATCH}
    return {"windows": 2, "rows": 5 if cfg.decoder_layers > 8 else MAX_BATCH}


ALIGN_TOKENS = 24   # greedy tokens of each validation/calibration clip fed to the align graph


def alignment_heads(loaded: LoadedWhisper) -> list[list[int]] | None:
    """The checkpoint's cross-attention heads that follow the speech — (layer, head) pairs from
    its generation config (Hugging Face's ``generation_config.json``, a CTranslate2
    ``config.json``) — sorted, or None: then no align graph and no word timestamps."""
    heads = getattr(loaded.model.generation_config, "alignment_heads", None)
    if not heads:
        return None
    cfg = loaded.config
    pairs = sorted({(int(layer), int(head)) for layer, head in heads})
    bad = [p for p in pairs if not (0 <= p[0] < cfg.decoder_layers
                                    and 0 <= p[1] < cfg.decoder_attention_heads)]
    if bad:
        raise ToolkitError(f"the checkpoint's alignment_heads name {bad[0]}, outside its "
                           f"{cfg.decoder_layers} decoder layers × {cfg.decoder_attention_heads} "
                           "heads; fix its generation config")
    return [list(p) for p in pairs]


def model_config(loaded: LoadedWhisper) -> dict:
    cfg = loaded.config
    tok = loaded.tokenizer
    return {
        "architecture": "whisper",
        "num_mel_bins": cfg.num_mel_bins,
        "d_model": cfg.d_model,
        "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers,
        "decoder_attention_heads": cfg.decoder_attention_heads,
        "head_dim": cfg.d_model // cfg.decoder_attention_heads,
        "vocab_size": cfg.vocab_size,
        "max_source_positions": cfg.max_source_positions,
        "max_target_positions": cfg.max_target_positions,
        "generation": loaded.generation.as_dict(),
        "batch_limits": batch_limits(cfg),
        "alignment_heads": alignment_heads(loaded),
        "tokenizer": {"source": tok.source, "vocab_size": tok.vocab_size,
                      "num_languages": tok.num_languages,
                      "files": "tokenizer/" if not tok.source.startswith("built-in") else None},
    }


def build_graphs(loaded: LoadedWhisper) -> list[GraphSpec]:
    cfg = loaded.config
    n, h = cfg.decoder_layers, cfg.decoder_attention_heads
    dh = cfg.d_model // h
    mels, frames, src = cfg.num_mel_bins, 3000, cfg.max_source_positions
    max_tok = cfg.max_target_positions
    limits = batch_limits(cfg)
    windows, rows = limits["windows"], limits["rows"]
    enc_out = encoder_io(n)
    enc = GraphSpec(
        name="encoder", module=WhisperEncoderGraph(loaded.model).eval(),
        input_names=["input_features"], output_names=enc_out,
        dynamic_axes={"input_features": {0: "batch"}, **{o: {0: "batch"} for o in enc_out}},
        example_inputs=lambda: (torch.randn(1, mels, frames),),
        profiles={"input_features": Profile([1, mels, frames], [1, mels, frames],
                                            [windows, mels, frames])},
        tolerance=TOLERANCE, int8_budget=INT8_BUDGET["encoder"], int8_cpu_scheme="dynamic")
    dec_in, dec_out = decoder_inputs(n), decoder_outputs(n)
    # rows (batch) = windows (cross_batch) × hypotheses per window
    axes, profiles = decoder_axes({e: (h, None, dh) for e in kv_entries(n)},
                                  {c: ((h, src, dh), None) for c in enc_out},
                                  rows, windows, max_tok, OPT_PAST)

    def dec_example():
        ids = torch.tensor([[loaded.tokenizer.sot, loaded.tokenizer.no_timestamps, 400]])
        past = [torch.randn(1, h, 2, dh) for _ in range(2 * n)]
        cross = [torch.randn(1, h, src, dh) for _ in range(2 * n)]
        return (ids, *past, *cross)

    dec = GraphSpec(name="decoder", module=WhisperDecoderGraph(loaded.model).eval(),
                    input_names=dec_in, output_names=dec_out, dynamic_axes=axes,
                    example_inputs=dec_example, profiles=profiles, tolerance=TOLERANCE,
                    input_dtypes={"input_ids": "int64"}, int8_budget=INT8_BUDGET["decoder"],
                    int8_cpu_scheme="blockwise", int8_float_layers=("proj_out",))
    heads = alignment_heads(loaded)
    if heads is None:
        return [enc, dec]
    align_in = align_inputs(n)
    align_axes = {"input_ids": {0: "batch", 1: "tokens"},
                  **{c: {0: "batch"} for c in enc_out},
                  "alignment_qk": {0: "batch", 2: "tokens"},
                  "token_logprobs": {0: "batch", 1: "tokens"}}
    align_profiles = {"input_ids": Profile([1, 1], [1, 64], [windows, max_tok]),
                      **{c: Profile([1, h, src, dh], [1, h, src, dh], [windows, h, src, dh])
                         for c in enc_out}}

    def align_example():
        tok = loaded.tokenizer
        ids = torch.tensor([[tok.sot, tok.no_timestamps, 400, 401, tok.eot]])
        return (ids, *[torch.randn(1, h, src, dh) for _ in range(2 * n)])

    align = GraphSpec(name="align",
                      module=WhisperAlignGraph(loaded.model, heads, loaded.tokenizer.eot).eval(),
                      input_names=align_in, output_names=ALIGN_OUTPUTS, dynamic_axes=align_axes,
                      example_inputs=align_example, profiles=align_profiles,
                      tolerance=TOLERANCE, input_dtypes={"input_ids": "int64"},
                      int8_budget=INT8_BUDGET["decoder"], int8_cpu_scheme="blockwise",
                      int8_float_layers=("proj_out",))
    return [enc, dec, align]


# Calibration keeps every clip's cross K/V (the decoder's inputs) until the graphs are
# quantized; above this many bytes in all they are kept as float16 (large-v3: 8 clips × 491 MB
# → 2.0 GB instead of 3.9 GB). Ranges barely move; tiny…small stay float32 as measured.
CALIBRATION_CROSS_FP32_MAX = 1 << 30


def real_feeds(loaded: LoadedWhisper, audio_files: list[Path], steps: int = 2,
               prompt: list[int] | None = None,
               compact: bool = False) -> dict[str, list[dict]]:
    """Encoder and decoder inputs taken from running the fp32 PyTorch model on real audio.

    Decoder feeds follow a real greedy decode (prompt step with an empty cache, then ``steps - 1``
    single-token steps with the growing cache), so validation and calibration see the same
    shapes and value ranges the runtime produces. ``compact``: keep the cross K/V as float16
    when they would exceed ``CALIBRATION_CROSS_FP32_MAX`` in all (runtimes cast them back).
    """
    cfg = loaded.config
    n, h = cfg.decoder_layers, cfg.decoder_attention_heads
    dh = cfg.d_model // h
    enc_spec, dec_spec, *align = build_graphs(loaded)
    tok = loaded.tokenizer
    prompt = prompt or tok.sot_sequence("en" if tok.multilingual else None)
    feeds: dict[str, list[dict]] = {"encoder": [], "decoder": [],
                                    **({"align": []} if align else {})}
    for f in audio_files:
        feats = features_for(load_audio(f), cfg.num_mel_bins)[:1]
        feeds["encoder"].append({"input_features": feats})
        cross = torch_outputs(enc_spec, {"input_features": feats})
        kept = cross
        if compact and sum(a.nbytes for a in cross.values()) * len(audio_files) > \
                CALIBRATION_CROSS_FP32_MAX:
            kept = {k: a.astype(np.float16) for k, a in cross.items()}
        past = {f"past_{kv}_{i}": np.zeros((1, h, 0, dh), np.float32)
                for i in range(n) for kv in ("key", "value")}
        ids = np.array([prompt], dtype=np.int64)
        decoded = []
        # the decoder's feeds: its first ``steps`` calls; the align graph's: the prompt, the
        # first ALIGN_TOKENS greedy tokens and <|endoftext|> (a window's teacher-forced pass)
        for k in range(max(steps, ALIGN_TOKENS if align else 0)):
            if k < steps:
                feeds["decoder"].append({"input_ids": ids, **past, **kept})
            out = torch_outputs(dec_spec, {"input_ids": ids, **past, **cross})
            nxt = int(np.argmax(out["logits"][0][: loaded.tokenizer.eot]))
            decoded.append(nxt)
            ids = np.array([[nxt]], dtype=np.int64)
            past = {f"past_{kv}_{i}": out[f"present_{kv}_{i}"] for i in range(n)
                    for kv in ("key", "value")}
        if align:
            seq = [*prompt, *decoded[:ALIGN_TOKENS], tok.eot]
            feeds["align"].append({"input_ids": np.array([seq], np.int64), **kept})
    return feeds


def build_plan(loaded: LoadedWhisper, calib_data=None, calib_steps: int = 12) -> ExportPlan:
    """Validation on two bundled recordings; int8 calibration on ``calib_data`` (a folder of
    real speech) or the bundled clips, decoded greedily for ``calib_steps`` steps each."""
    bundled = bundled_dir() / "wavs"
    validation = [bundled / "jfk.flac", bundled / "LJ001-0002.flac"]
    def calibration_feeds():  # int8 only: other precisions never read --calib-data
        files = default_calibration_files(calib_data)
        if len(files) < 4:
            console.print(f"[yellow]warning:[/] int8 calibration on {len(files)} clip(s): the "
                          "activation ranges will not cover other speakers and content; give "
                          "--calib-data a folder with at least 4 (8 are used) real recordings")
        return real_feeds(loaded, files, steps=calib_steps, compact=True)

    def extra_files() -> dict:
        return {} if loaded.tokenizer.source.startswith("built-in") else _tokenizer_files(loaded)

    return ExportPlan(
        family="whisper", graphs=build_graphs(loaded),
        validation_feeds=lambda: real_feeds(loaded, validation, steps=2),
        calibration_feeds=calibration_feeds, source=loaded.source,
        model_config=model_config(loaded), extra_files=extra_files, revision=EXPORT_REVISION)


def _tokenizer_files(loaded: LoadedWhisper) -> dict:
    from transformers import WhisperTokenizerFast

    src = loaded.tokenizer.source.split("(", 1)[1].rstrip(")")
    tok = WhisperTokenizerFast.from_pretrained(src)
    with tempfile.TemporaryDirectory(prefix="toolkit-tok-") as tmp:
        tok.save_pretrained(tmp)
        return {f"tokenizer/{p.name}": p.read_bytes() for p in Path(tmp).iterdir()
                if p.is_file()}
