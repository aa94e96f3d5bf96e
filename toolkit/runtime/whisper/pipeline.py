"""Whisper transcription over any backend.

The decode loop (greedy; the step function is separate so beam search can reuse it) is written
once against the Session interface: encoder session → cross K/V once per window; decoder session
per step with the self-attention KV cache fed back. Whisper's prompt (sot, language, task,
notimestamps) and suppression rules (``suppress_tokens`` always, ``begin_suppress_tokens`` at
the first sampled position) match Hugging Face ``generate``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ToolkitError
from ...models.whisper.audio import check_features, features_for, load_audio, SAMPLE_RATE
from ..session import Session, TorchSession, open_onnx_session

NEG_INF = -np.inf


@dataclass
class DecodeResult:
    tokens: list[list[int]]          # generated tokens per window (prompt excluded, eot excluded)
    steps: int                       # decoder calls
    step_ms: list[float]             # per decoder call


class WhisperPipeline:
    def __init__(self, encoder: Session, decoder: Session, config: dict, tokenizer,
                 random_init: bool, source: dict, backend: str, precision: str):
        self.encoder = encoder
        self.decoder = decoder
        self.config = config
        self.tokenizer = tokenizer
        self.random_init = random_init
        self.source = source
        self.backend = backend
        self.precision = precision
        self.n_layers = config["decoder_layers"]
        self.heads = config["decoder_attention_heads"]
        self.head_dim = config["head_dim"]
        self.n_mels = config["num_mel_bins"]
        gen = config["generation"]
        self.suppress = np.array(sorted(set(gen["suppress_tokens"])), dtype=np.int64)
        self.begin_suppress = np.array(sorted(set(gen["begin_suppress_tokens"])), dtype=np.int64)
        self.max_length = int(gen.get("max_length", config["max_target_positions"]))
        # device-resident decode (trt): cross K/V and the self-attention cache stay on the
        # device as DeviceTensors; only the logits are copied to the host each step
        self.device_io = hasattr(encoder, "run_device") and hasattr(decoder, "run_device")

    @property
    def sessions(self) -> list[Session]:
        return [self.encoder, self.decoder]

    # -- features -----------------------------------------------------------------------------
    def features(self, path: str | Path) -> tuple[np.ndarray, float]:
        """[windows, mels, 3000] and the duration in seconds. ``.npy`` = precomputed features."""
        path = Path(path)
        if path.suffix == ".npy":
            try:
                feats = np.load(path)
            except (ValueError, OSError) as exc:
                raise ToolkitError(f"cannot read features from {path}: {exc}") from None
            feats = check_features(feats, self.n_mels, source=f"features in {path.name}")
            return feats, feats.shape[0] * 30.0
        audio = load_audio(path)
        return features_for(audio, self.n_mels), len(audio) / SAMPLE_RATE

    # -- the loop -----------------------------------------------------------------------------
    def encode(self, features: np.ndarray) -> dict[str, np.ndarray]:
        features = check_features(features, self.n_mels)
        if self.device_io:  # cross K/V left on the device (valid until the next-but-one encode)
            return self.encoder.run_device({"input_features": features})
        return self.encoder.run({"input_features": features})

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        z = np.zeros((batch, self.heads, 0, self.head_dim), np.float32)
        return {f"past_{kv}_{i}": z for i in range(self.n_layers) for kv in ("key", "value")}

    def step(self, ids: np.ndarray, past: dict, cross: dict) -> tuple[np.ndarray, dict]:
        """One decoder call: (logits on the host, the new cache to feed back as ``past``).

        On a session with ``run_device`` the cache it returns are DeviceTensors (never copied
        to the host); ``past``/``cross`` may be NumPy arrays or DeviceTensors either way.
        """
        if self.device_io:
            out = self.decoder.run_device({"input_ids": ids, **past, **cross})
            logits = out["logits"].numpy()  # the only device -> host copy of a step
            if logits.dtype == np.float16:
                logits = logits.astype(np.float32)
        else:
            out = self.decoder.run({"input_ids": ids, **past, **cross})
            logits = out["logits"]
        present = {f"past_{kv}_{i}": out[f"present_{kv}_{i}"] for i in range(self.n_layers)
                   for kv in ("key", "value")}
        return logits, present

    def detect_language(self, cross: dict) -> list[str]:
        tok = self.tokenizer
        b = next(iter(cross.values())).shape[0]
        logits, _ = self.step(np.full((b, 1), tok.sot, np.int64), self.empty_cache(b), cross)
        lang_ids = np.array(tok.language_tokens)
        best = np.argmax(logits[:, lang_ids], axis=-1)
        return [tok.languages[i] for i in best]

    def greedy(self, cross: dict, prompt: list[int], max_new_tokens: int,
               force_length: bool = False) -> DecodeResult:
        """Greedy decoding of a batch of windows sharing ``prompt``.

        ``force_length``: never stop early and never emit special tokens, so every backend
        decodes exactly ``max_new_tokens`` text tokens (benchmarks on random weights).
        """
        import time

        tok = self.tokenizer
        b = next(iter(cross.values())).shape[0]
        limit = min(max_new_tokens, self.max_length - len(prompt))
        if limit < 1:
            raise ToolkitError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
        ids = np.tile(np.asarray(prompt, np.int64), (b, 1))
        past = self.empty_cache(b)
        finished = np.zeros(b, bool)
        generated: list[np.ndarray] = []
        step_ms = []
        for i in range(limit):
            t0 = time.perf_counter()
            logits, past = self.step(ids, past, cross)
            step_ms.append((time.perf_counter() - t0) * 1e3)
            logits = np.array(logits, dtype=np.float32, copy=True)
            if self.suppress.size:
                logits[:, self.suppress[self.suppress < logits.shape[1]]] = NEG_INF
            if i == 0 and self.begin_suppress.size:
                logits[:, self.begin_suppress] = NEG_INF
            if force_length:
                logits[:, tok.eot:] = NEG_INF
            nxt = np.argmax(logits, axis=-1).astype(np.int64)
            nxt[finished] = tok.eot
            generated.append(nxt)
            finished |= nxt == tok.eot
            if finished.all():
                break
            ids = nxt[:, None]
        seqs = np.stack(generated, axis=1) if generated else np.zeros((b, 0), np.int64)
        tokens = []
        for row in seqs:
            row = row.tolist()
            tokens.append(row[:row.index(tok.eot)] if tok.eot in row else row)
        return DecodeResult(tokens, len(step_ms), step_ms)

    def teacher_forced_top1(self, cross: dict, prompt: list[int],
                            reference: list[list[int]]) -> tuple[int, int]:
        """Feed the reference tokens step by step and count how often this backend's argmax
        (same suppression rules as forced decoding) equals the reference's next token.

        Unlike comparing free-running transcripts, one early disagreement does not change every
        later step, so this measures the numerics of each step. Returns (agreeing, steps).
        """
        tok = self.tokenizer
        n = min(len(r) for r in reference)
        b = len(reference)
        ref = np.array([r[:n] for r in reference], dtype=np.int64)
        ids = np.tile(np.asarray(prompt, np.int64), (b, 1))
        past = self.empty_cache(b)
        agree = 0
        for i in range(n):
            logits, past = self.step(ids, past, cross)
            logits = np.array(logits, dtype=np.float32, copy=True)
            if self.suppress.size:
                logits[:, self.suppress[self.suppress < logits.shape[1]]] = NEG_INF
            if i == 0 and self.begin_suppress.size:
                logits[:, self.begin_suppress] = NEG_INF
            logits[:, tok.eot:] = NEG_INF
            agree += int((np.argmax(logits, axis=-1) == ref[:, i]).sum())
            ids = ref[:, i:i + 1]
        return agree, n * b

    def transcribe(self, path: str | Path, language: str | None = None,
                   task: str = "transcribe", max_new_tokens: int = 224,
                   force_length: bool = False) -> dict:
        import time

        t0 = time.perf_counter()
        feats, duration = self.features(path)
        te = time.perf_counter()
        cross = self.encode(feats)
        enc_ms = (time.perf_counter() - te) * 1e3
        tok = self.tokenizer
        if tok.multilingual and language is None:
            langs = self.detect_language(cross)
            language = max(set(langs), key=langs.count)
        prompt = tok.sot_sequence(language if tok.multilingual else None, task)
        res = self.greedy(cross, prompt, max_new_tokens, force_length=force_length)
        text = "".join(tok.decode(t) for t in res.tokens).strip()
        total_ms = (time.perf_counter() - t0) * 1e3
        return {"file": str(path), "text": text,
                "tokens": [t for w in res.tokens for t in w],
                "window_tokens": res.tokens, "language": language, "task": task,
                "windows": int(feats.shape[0]), "audio_seconds": round(duration, 3),
                "backend": self.backend, "precision": self.precision,
                "encoder_ms": round(enc_ms, 2), "decode_steps": res.steps,
                "total_ms": round(total_ms, 2), "random_init": self.random_init}


# ------------------------------------------------------------------------------------------
# construction
# ------------------------------------------------------------------------------------------

def tokenizer_from_manifest(artifact: Path, config: dict):
    from ...models.whisper.tokenizer import builtin_tokenizer, hf_tokenizer

    tinfo = config.get("tokenizer", {})
    if tinfo.get("files"):
        tok = hf_tokenizer(artifact / tinfo["files"], config["vocab_size"])
        if tok is None:
            raise ToolkitError(f"artifact {artifact} is missing its tokenizer files "
                               f"({tinfo['files']}); re-export it")
        return tok
    return builtin_tokenizer(config["vocab_size"])


def from_artifact(artifact: str | Path, backend: str = "ort", threads: int | None = None,
                  verify: bool = True) -> WhisperPipeline:
    from ...export.manifest import load_manifest

    artifact = Path(artifact)
    manifest = load_manifest(artifact, family="whisper", verify_hashes=verify)
    if backend == "torch":
        raise ToolkitError("--backend torch runs the PyTorch model: give --checkpoint or --preset "
                           "instead of --artifact")
    cfg = manifest.get("model_config") or {}
    for key in ("decoder_layers", "num_mel_bins", "generation", "vocab_size"):
        if key not in cfg:
            raise ToolkitError(f"manifest of {artifact} has no model_config.{key}; it does not "
                               "match this toolkit's Whisper runtime — re-export it")
    graphs = manifest["graphs"]
    if set(graphs) != {"encoder", "decoder"}:
        raise ToolkitError(f"Whisper artifact {artifact} must hold encoder and decoder graphs, "
                           f"found {sorted(graphs)}; re-export it")
    prec = manifest["precision"]
    enc = open_onnx_session(artifact / graphs["encoder"]["file"], backend, prec, threads,
                            graphs["encoder"], cache_dir=artifact)
    dec = open_onnx_session(artifact / graphs["decoder"]["file"], backend, prec, threads,
                            graphs["decoder"], cache_dir=artifact)
    _check_io(enc, graphs["encoder"], artifact)
    _check_io(dec, graphs["decoder"], artifact)
    return WhisperPipeline(enc, dec, cfg, tokenizer_from_manifest(artifact, cfg),
                           bool(manifest.get("random_init")), manifest.get("source", {}),
                           backend, prec)


def _check_io(sess: Session, graph: dict, artifact: Path) -> None:
    want = [i["name"] for i in graph.get("inputs", [])]
    if sorted(want) != sorted(sess.input_names):
        raise ToolkitError(f"graph {graph.get('file')} in {artifact} has inputs "
                           f"{sess.input_names[:4]}… but its manifest lists {want[:4]}…; the "
                           "manifest does not match the graph — re-export the artifact")


def from_model(lw, backend: str = "torch", precision: str = "fp32",
               threads: int | None = None, device: str | None = None) -> WhisperPipeline:
    """Torch sessions over the same modules that are exported.

    ``device``: "cpu" or "cuda"; default ``torch_device()`` (TOOLKIT_TORCH_DEVICE, else CUDA
    when torch sees one).
    """
    from ...export.whisper.plan import build_graphs, model_config
    from ..session import torch_device

    if backend != "torch":
        raise ToolkitError(f"backend {backend} needs an exported artifact")
    device = device or torch_device()
    enc_spec, dec_spec = build_graphs(lw)
    enc = TorchSession(enc_spec.module, enc_spec.input_names, enc_spec.output_names,
                       precision=precision, threads=threads, device=device)
    dec = TorchSession(dec_spec.module, dec_spec.input_names, dec_spec.output_names,
                       precision=precision, threads=threads, device=device,
                       input_dtypes={"input_ids": "int64"})
    return WhisperPipeline(enc, dec, model_config(lw), lw.tokenizer, lw.random_init, lw.source,
                           "torch", precision)


def cache_root() -> Path:
    return Path(os.environ.get("TOOLKIT_CACHE", Path.home() / ".cache" / "toolkit"))


def load_pipeline(artifact: str | Path | None = None, checkpoint: str | None = None,
                  preset: str | None = None, backend: str = "ort", seed: int = 0,
                  threads: int | None = None) -> WhisperPipeline:
    """What `toolkit transcribe` runs: an artifact, or a model (exported on first use for ORT)."""
    from ...runtime.session import check_backend

    check_backend(backend)
    if artifact is not None:
        if checkpoint or preset:
            raise ToolkitError("give either --artifact or --checkpoint/--preset, not both")
        return from_artifact(artifact, backend, threads)
    from ...models.whisper.loading import load_whisper

    lw = load_whisper(checkpoint, preset, seed)
    if backend == "torch":
        return from_model(lw, threads=threads)
    from ...export.artifact import cached_export
    from ...export.whisper import export_whisper_model
    from ...export.whisper.plan import EXPORT_REVISION

    out = cached_export(cache_root() / f"whisper-{_cache_tag(lw, seed)}-fp32", "whisper",
                        lw.source, "fp32", EXPORT_REVISION,
                        lambda out: export_whisper_model(lw, "fp32", out))
    return from_artifact(out, backend, threads)


def _cache_tag(lw, seed: int) -> str:
    src = lw.source
    if src.get("preset"):
        return f"{src['preset']}-seed{seed}"
    return f"{Path(src['checkpoint']).name}-{(src.get('sha256') or 'hub')[:12]}"
