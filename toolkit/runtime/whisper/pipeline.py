"""Whisper transcription over any backend.

The decode loop (greedy; the step function is separate so beam search can reuse it) is written
once against the Session interface: encoder session → cross K/V once per window; decoder session
per step with the self-attention KV cache fed back. Whisper's prompt (sot, language, task,
notimestamps) and suppression rules (``suppress_tokens`` always, ``begin_suppress_tokens`` at
the first sampled position) match Hugging Face ``generate``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.errors import ToolkitError
from ...export.manifest import inside
from ...export.whisper import build_plan
from ...models.whisper.audio import SAMPLE_RATE, check_features, features_for, load_audio
from ...models.whisper.loading import LoadedWhisper, load_model
from ...models.whisper.tokenizer import builtin_tokenizer, hf_tokenizer
from ..graphs import Graphs, make_pipeline, open_graphs
from ..session import Session
from .decoding import apply_filters, logit_filters

WINDOWS_PER_BATCH = 8   # 30-s windows encoded and decoded together (TensorRT profile max too)


@dataclass
class DecodeResult:
    tokens: list[list[int]]          # generated tokens per window (prompt excluded, eot excluded)
    steps: int                       # decoder calls
    step_ms: list[float]             # per decoder call
    encoder_ms: float = 0.0          # when the result includes the encoder (``decode``)
    language: str | None = None      # the prompt's language, when the result chose it


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
        self.generation = config["generation"]
        self.max_length = int(self.generation.get("max_length", config["max_target_positions"]))

    @property
    def sessions(self) -> list[Session]:
        return [self.encoder, self.decoder]

    def close(self) -> None:
        self.encoder.close()
        self.decoder.close()

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
        """Cross-attention K/V of every window. On a backend with device memory (trt) they stay
        there (valid until the next-but-one encode); elsewhere they are host arrays."""
        features = check_features(features, self.n_mels)
        return self.encoder.run_device({"input_features": features})

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        z = np.zeros((batch, self.heads, 0, self.head_dim), np.float32)
        return {f"past_{kv}_{i}": z for i in range(self.n_layers) for kv in ("key", "value")}

    def step(self, ids: np.ndarray, past: dict, cross: dict) -> tuple[np.ndarray, dict]:
        """One decoder call: (logits on the host, the new cache to feed back as ``past``).

        The cache stays where the backend keeps it (device memory on trt: only the logits are
        copied to the host each step); ``past``/``cross`` are what earlier calls returned.
        """
        out = self.decoder.run_device({"input_ids": ids, **past, **cross})
        logits = self.decoder.to_host(out["logits"])
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
        tok = self.tokenizer
        b = next(iter(cross.values())).shape[0]
        limit = min(max_new_tokens, self.max_length - len(prompt))
        if limit < 1:
            raise ToolkitError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
        filters = logit_filters(self.generation, tok.eot, text_only=force_length)
        ids = np.tile(np.asarray(prompt, np.int64), (b, 1))
        past = self.empty_cache(b)
        finished = np.zeros(b, bool)
        generated: list[np.ndarray] = []
        step_ms = []
        for i in range(limit):
            t0 = time.perf_counter()
            logits, past = self.step(ids, past, cross)
            step_ms.append((time.perf_counter() - t0) * 1e3)
            scores = apply_filters(filters, logits, i)
            nxt = np.argmax(scores, axis=-1).astype(np.int64)
            # argmax picks a NaN or +inf if there is one: checking the picks is enough (and cheap)
            if not np.isfinite(scores[np.arange(b), nxt][~finished]).all():
                raise ToolkitError(f"the decoder ({self.backend} {self.precision}) produced NaN or "
                                   f"infinite logits at step {i}; the graph overflows on this "
                                   "input (fp16?) — use an fp32 artifact")
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
        (same rules as forced decoding) equals the reference's next token.

        Unlike comparing free-running transcripts, one early disagreement does not change every
        later step, so this measures the numerics of each step. Returns (agreeing, steps).
        """
        n = min(len(r) for r in reference)
        b = len(reference)
        ref = np.array([r[:n] for r in reference], dtype=np.int64)
        filters = logit_filters(self.generation, self.tokenizer.eot, text_only=True)
        ids = np.tile(np.asarray(prompt, np.int64), (b, 1))
        past = self.empty_cache(b)
        agree = 0
        for i in range(n):
            logits, past = self.step(ids, past, cross)
            agree += int((np.argmax(apply_filters(filters, logits, i), axis=-1)
                          == ref[:, i]).sum())
            ids = ref[:, i:i + 1]
        return agree, n * b

    def _encoded(self, features: np.ndarray):
        """(cross K/V, encoder ms) for at most ``WINDOWS_PER_BATCH`` windows at a time: an hour
        of audio is 120 windows, whose cross-attention K/V at once would not fit in memory."""
        for i in range(0, features.shape[0], WINDOWS_PER_BATCH):
            t0 = time.perf_counter()
            cross = self.encode(features[i:i + WINDOWS_PER_BATCH])
            yield cross, (time.perf_counter() - t0) * 1e3

    def decode_features(self, features: np.ndarray, prompt: list[int],
                        max_new_tokens: int = 224, force_length: bool = False,
                        language: str | None = None, task: str = "transcribe") -> DecodeResult:
        """Windows → tokens per window, batch by batch, timed (encoder, every decoder step).
        ``prompt`` may be None: built from ``language``/``task`` (detected on the first batch
        for a multilingual model when ``language`` is None)."""
        features = check_features(features, self.n_mels)
        tok = self.tokenizer
        result = DecodeResult([], 0, [])
        for cross, ms in self._encoded(features):
            result.encoder_ms += ms
            if prompt is None:
                if tok.multilingual and language is None:
                    langs = self.detect_language(cross)
                    language = max(set(langs), key=langs.count)
                prompt = tok.sot_sequence(language if tok.multilingual else None, task)
                result.language = language
            res = self.greedy(cross, prompt, max_new_tokens, force_length=force_length)
            result.tokens += res.tokens
            result.steps += res.steps
            result.step_ms += res.step_ms
        return result

    def decode(self, audio: np.ndarray, prompt: list[int], max_new_tokens: int = 224,
               force_length: bool = False) -> DecodeResult:
        """Audio samples → tokens per window, timed: log-mel, encoder, every decoder step."""
        return self.decode_features(features_for(audio, self.n_mels), prompt, max_new_tokens,
                                    force_length)

    def transcribe(self, path: str | Path, language: str | None = None,
                   task: str = "transcribe", max_new_tokens: int = 224,
                   force_length: bool = False) -> dict:
        t0 = time.perf_counter()
        feats, duration = self.features(path)
        res = self.decode_features(feats, None, max_new_tokens, force_length, language, task)
        text = "".join(self.tokenizer.decode(t) for t in res.tokens).strip()
        total_ms = (time.perf_counter() - t0) * 1e3
        return {"file": str(path), "text": text,
                "tokens": [t for w in res.tokens for t in w],
                "window_tokens": res.tokens, "language": res.language, "task": task,
                "windows": int(feats.shape[0]), "audio_seconds": round(duration, 3),
                "backend": self.backend, "precision": self.precision,
                "encoder_ms": round(res.encoder_ms, 2), "decode_steps": res.steps,
                "total_ms": round(total_ms, 2), "random_init": self.random_init}


# ------------------------------------------------------------------------------------------
# construction
# ------------------------------------------------------------------------------------------

def tokenizer_from_manifest(artifact: Path, config: dict):
    tinfo = config.get("tokenizer", {})
    if tinfo.get("files"):
        tok = hf_tokenizer(inside(artifact, tinfo["files"], "tokenizer folder"),
                           config["vocab_size"])
        if tok is None:
            raise ToolkitError(f"artifact {artifact} is missing its tokenizer files "
                               f"({tinfo['files']}); re-export it")
        return tok
    return builtin_tokenizer(config["vocab_size"])


def from_graphs(graphs: Graphs) -> WhisperPipeline:
    cfg = graphs.model_config
    where = graphs.artifact or "the model"
    for key in ("decoder_layers", "num_mel_bins", "generation", "vocab_size"):
        if key not in cfg:
            raise ToolkitError(f"model_config of {where} has no {key}; it does not match this "
                               "toolkit's Whisper runtime — re-export it")
    if set(graphs.sessions) != {"encoder", "decoder"}:
        raise ToolkitError(f"a Whisper artifact holds encoder and decoder graphs; {where} has "
                           f"{sorted(graphs.sessions)} — re-export it")
    tokenizer = (graphs.loaded.tokenizer if graphs.loaded is not None
                 else tokenizer_from_manifest(graphs.artifact, cfg))
    return WhisperPipeline(graphs.sessions["encoder"], graphs.sessions["decoder"], cfg, tokenizer,
                           graphs.random_init, graphs.source, graphs.backend, graphs.precision)


def open_pipeline(artifact: str | Path | None = None, checkpoint: str | None = None,
                  preset: str | None = None, loaded: LoadedWhisper | None = None,
                  backend: str = "ort", precision: str = "fp32", seed: int = 0,
                  threads: int | None = None) -> WhisperPipeline:
    """An artifact, or a model (the default model when nothing is given) on any backend."""
    return make_pipeline(open_graphs("whisper", load_model, build_plan, artifact=artifact,
                                     checkpoint=checkpoint, preset=preset, loaded=loaded,
                                     backend=backend, precision=precision, seed=seed,
                                     threads=threads), from_graphs)
