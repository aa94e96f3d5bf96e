"""Whisper transcription over any backend.

The decode loop is the shared encoder–decoder one (``runtime/generate``): encoder session →
cross K/V once per window; decoder session per step with the self-attention KV cache fed back;
greedy, sampling and beam search by its ``Searcher``, the no-speech probability by its prompt
probe. Long recordings are transcribed by seeking on timestamps (``longform.py``). Whisper's
prompt (sot, language, task, notimestamps) and suppression rules (``suppress_tokens`` always,
``begin_suppress_tokens`` at the first sampled position) match Hugging Face ``generate``; with
timestamps, openai-whisper's rules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...core import schema
from ...core.errors import ToolkitError
from ...core.progress import Steps
from ...export.manifest import inside
from ...models.whisper.audio import SAMPLE_RATE, check_features, features_for, load_audio
from ...models.whisper.tokenizer import builtin_tokenizer, hf_tokenizer
from ..generate import EncoderDecoder, PromptProbe, SearchOptions, SearchResult, apply_filters
from ..generate.pipeline import kv_cache
from ..graphs import Graphs
from ..session import Session
from .decoding import TimestampRules, logit_filters
from .longform import LongFormResult, TranscribeOptions, transcribe_long, transcribe_mel
from .vad import transcribe_speech

WINDOWS_PER_BATCH = 8   # 30-s windows encoded and decoded together (TensorRT profile max too)
BEAM_ROWS_REVISION = 4  # the export revision from which decoder rows (windows × beams) share
                        # their window's cross K/V: the contract of this decode loop


@dataclass
class DecodeResult:
    tokens: list[list[int]]          # generated tokens per window (prompt excluded, eot excluded)
    steps: int                       # decoder calls
    step_ms: list[float]             # per decoder call
    encoder_ms: float = 0.0          # when the result includes the encoder (``decode``)
    language: str | None = None      # the prompt's language, when the result chose it


class WhisperPipeline(EncoderDecoder):
    def __init__(self, encoder: Session, decoder: Session, config: dict, tokenizer,
                 random_init: bool, source: dict, backend: str, precision: str,
                 align: Session | None = None):
        super().__init__(encoder, decoder, kv_cache(config["decoder_layers"],
                                                    config["decoder_attention_heads"],
                                                    config["head_dim"]), backend, precision)
        self.config = config
        self.tokenizer = tokenizer
        self.random_init = random_init
        self.source = source
        self.n_layers = config["decoder_layers"]
        self.heads = config["decoder_attention_heads"]
        self.head_dim = config["head_dim"]
        self.n_mels = config["num_mel_bins"]
        self.generation = config["generation"]
        self.max_length = int(self.generation.get("max_length", config["max_target_positions"]))
        # the artifact's TensorRT profile maxima (per model size; older artifacts: 8 and 8)
        limits = config.get("batch_limits") or {}
        self.max_windows = int(limits.get("windows", WINDOWS_PER_BATCH))
        self.max_rows = int(limits.get("rows", WINDOWS_PER_BATCH))
        # the optional third graph (word timestamps): its alignment heads are in the manifest
        self.align = align
        self.alignment_heads = config.get("alignment_heads")
        self.where = "the model"

    @property
    def sessions(self) -> list[Session]:
        return [*super().sessions, *([self.align] if self.align is not None else [])]

    def close(self) -> None:
        super().close()
        if self.align is not None:
            self.align.close()

    def check_word_timestamps(self) -> None:
        """One line when this pipeline cannot give word timestamps (no align graph)."""
        if self.align is not None:
            return
        if self.alignment_heads is None and self.where == "the model":
            raise ToolkitError("--word-timestamps needs the checkpoint's alignment heads "
                               "(generation_config alignment_heads); this model has none")
        raise ToolkitError(f"--word-timestamps needs the align graph, and {self.where} has "
                           "none (exported by an older toolkit, or from a checkpoint without "
                           "alignment heads) — re-export it with `toolkit export whisper`")

    def align_scores(self, cross: dict, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The align graph over one window's sequence: (alignment heads' QKᵀ [A, T, 1500],
        next-token log-probabilities [T]) on the host."""
        self.check_word_timestamps()
        feeds = {"input_ids": np.asarray([tokens], np.int64),
                 **{n: cross[n] for n in self.align.input_names if n != "input_ids"}}
        out = self.align.run_device(feeds)
        return (np.asarray(self.align.to_host(out["alignment_qk"]))[0],
                np.asarray(self.align.to_host(out["token_logprobs"]))[0])

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
        """Cross-attention K/V of every window (``run_encoder``: kept on the device on trt)."""
        return self.run_encoder({"input_features": check_features(features, self.n_mels)})

    def detect_language(self, cross: dict) -> list[str]:
        tok = self.tokenizer
        b = next(iter(cross.values())).shape[0]
        logits, _ = self.step(np.full((b, 1), tok.sot, np.int64), self.empty_cache(b), cross)
        lang_ids = np.array(tok.language_tokens)
        best = np.argmax(logits[:, lang_ids], axis=-1)
        return [tok.languages[i] for i in best]

    def special_suppress(self) -> list[int]:
        """Special tokens never sampled in free text (openai-whisper's list)."""
        tok = self.tokenizer
        return [tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech]

    def search(self, cross: dict, prompt: list[int], options: SearchOptions, limit: int,  # noqa: PLR0913
               sot_index: int | None = None, rng: np.random.Generator | None = None,
               timestamps: bool = False, max_initial: int | None = 50,
               suppress_special: bool = False,
               stop: Callable[[], bool] | None = None) -> SearchResult:
        """Decode a batch of windows sharing ``prompt`` (greedy, sampling or beam search).
        ``suppress_special``: never sample task, start or no-speech tokens (openai-whisper's
        rule; the short-form bench path keeps Hugging Face ``generate``'s rules instead)."""
        tok = self.tokenizer
        rules = (TimestampRules(tok.eot, tok.no_timestamps, tok.timestamp_begin, max_initial)
                 if timestamps else None)
        filters = logit_filters(self.generation, tok.eot, text_only=options.text_only,
                                timestamps=rules,
                                extra_suppress=self.special_suppress()
                                if timestamps or suppress_special else ())
        probe = None if sot_index is None else PromptProbe(sot_index, tok.no_speech)
        return self.generate(cross, prompt, tok.eot, filters, options, limit, probe=probe,
                             rng=rng, stop=stop)

    def decode_windows(self, cross: dict, prompt: list[int], max_new_tokens: int,
                       force_length: bool = False, beam_size: int = 1) -> DecodeResult:
        """Decoding (greedy, or beam search with ``beam_size`` > 1) of a batch of windows
        sharing ``prompt``, without timestamps.

        ``force_length``: never stop early and never emit special tokens, so every backend
        decodes exactly ``max_new_tokens`` text tokens (benchmarks on random weights).
        """
        limit = min(max_new_tokens, self.max_length - len(prompt))
        if limit < 1:
            raise ToolkitError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
        res = self.search(cross, prompt, SearchOptions(beam_size=beam_size,
                                                       text_only=force_length), limit)
        return DecodeResult([h.tokens for h in res.hypotheses], res.steps, res.step_ms)

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

    def windows_per_batch(self, beam_size: int = 1, option: str = "--beam-size") -> int:
        """Windows decoded together: decoder rows = windows × beams stay within the profile
        (on the TensorRT backends, which build for it, more rows than that are refused)."""
        beam = max(1, beam_size)
        if self.backend in ("trt", "ort-trt") and beam > self.max_rows:
            raise ToolkitError(f"{option} {beam} decodes {beam} rows per window, but this "
                               f"artifact's TensorRT profile allows {self.max_rows} decoder rows "
                               f"(its size's limit for a Jetson); use {option} "
                               f"{self.max_rows} or less, or the ort backend")
        return max(1, min(self.max_windows, self.max_rows // beam))

    @property
    def encodes_on_cpu(self) -> bool:
        """Whether the encoder runs on this machine's CPU (onnxruntime's CPU provider, or
        torch on the CPU), not on a GPU or a server (Triton)."""
        device = getattr(self.encoder, "device", None)
        return self.backend == "ort" or (self.backend == "torch" and (
            device is None or getattr(device, "type", "cpu") == "cpu"))

    def encoder_windows(self, requested: int) -> int:
        """Windows per encoder call when a batch encodes ``requested`` together: all of them
        on a GPU; one at a time on a CPU, where the encoder is compute-bound (a batch saves
        nothing, measured in the README's serving results) and a batch only multiplies the
        working set."""
        return 1 if self.encodes_on_cpu else max(1, requested)

    def batch_capacity(self, beam_size: int, requested: int) -> int:
        """Windows one server round decodes together: ``requested``, within the TensorRT
        profile on the TensorRT backends (onnxruntime and torch take any batch)."""
        if self.backend in ("trt", "ort-trt"):
            return max(1, min(requested, self.windows_per_batch(beam_size)))
        return max(1, requested)

    def _encoded(self, features: np.ndarray, per_batch: int = WINDOWS_PER_BATCH):
        """(cross K/V, encoder ms) for at most ``per_batch`` windows at a time: an hour of audio
        is 120 windows, whose cross-attention K/V at once would not fit in memory."""
        for i in range(0, features.shape[0], per_batch):
            t0 = time.perf_counter()
            cross = self.encode(features[i:i + per_batch])
            yield cross, (time.perf_counter() - t0) * 1e3

    def decode_features(self, features: np.ndarray, prompt: list[int],
                        max_new_tokens: int = 224, force_length: bool = False,
                        language: str | None = None, task: str = "transcribe",
                        beam_size: int = 1) -> DecodeResult:
        """Windows → tokens per window, batch by batch, timed (encoder, every decoder step).
        ``prompt`` may be None: built from ``language``/``task`` (detected on the first batch
        for a multilingual model when ``language`` is None)."""
        features = check_features(features, self.n_mels)
        tok = self.tokenizer
        result = DecodeResult([], 0, [])
        per_batch = self.windows_per_batch(beam_size)
        for cross, ms in self._encoded(features, per_batch):
            result.encoder_ms += ms
            if prompt is None:
                if tok.multilingual and language is None:
                    langs = self.detect_language(cross)
                    language = max(set(langs), key=langs.count)
                prompt = tok.sot_sequence(language if tok.multilingual else None, task)
                result.language = language
            res = self.decode_windows(cross, prompt, max_new_tokens, force_length=force_length,
                              beam_size=beam_size)
            result.tokens += res.tokens
            result.steps += res.steps
            result.step_ms += res.step_ms
        return result

    def decode(self, audio: np.ndarray, prompt: list[int], max_new_tokens: int = 224,
               force_length: bool = False, beam_size: int = 1) -> DecodeResult:
        """Audio samples → tokens per fixed 30-s window, timed: log-mel, encoder, every decoder
        step. Windows are cut every 30 s (clips of up to 30 s; ``transcribe`` seeks instead)."""
        return self.decode_features(features_for(audio, self.n_mels), prompt, max_new_tokens,
                                    force_length, beam_size=beam_size)

    def check_language(self, language: str | None, task: str = "transcribe") -> str | None:
        """The language to prompt with: None = detect (multilingual models). An English-only
        model takes English (or nothing) and only transcribes."""
        tok = self.tokenizer
        if tok.multilingual:
            if language is not None:
                tok.language_token(language)   # one-line error for an unknown code
            return language
        if language not in (None, "en"):
            raise ToolkitError(f"this is an English-only model (.en): it cannot transcribe "
                               f"--language {language}; use a multilingual checkpoint or "
                               "--language en")
        if task != "transcribe":
            raise ToolkitError("this is an English-only model (.en): it cannot --task "
                               "translate; use a multilingual checkpoint")
        return "en"

    def new_tokens_cap(self, options: TranscribeOptions) -> int:
        """The most tokens one 30-s window can decode: the model's positions less the prompt."""
        tok = self.tokenizer
        prompt = tok.sot_sequence(options.language if tok.multilingual else None, options.task,
                                  timestamps=not options.without_timestamps)
        return self.max_length - len(prompt)

    def transcribe_audio(self, audio: np.ndarray, options: TranscribeOptions | None = None,
                         progress: bool = False) -> LongFormResult:
        """Long-form transcription of samples: segments with times (``longform.py``); with
        ``vad_filter`` only the speech is decoded (``vad.py``; what it kept: ``result.vad``)."""
        options = options or TranscribeOptions()
        seconds = len(audio) / SAMPLE_RATE
        run = transcribe_speech if options.vad_filter else transcribe_long
        with _ProgressBar(seconds, enabled=progress) as bar:
            return run(self, audio, options, bar.update if progress else None)

    def transcribe(self, path: str | Path, options: TranscribeOptions | None = None,
                   progress: bool = False) -> dict:
        """A file → text, segments with start/end times, timings (long-form decoding).
        ``.npy`` = precomputed features [windows, mels, 3000], read as one stretch of frames."""
        options = options or TranscribeOptions()
        options.check()
        self.check_language(options.language, options.task)
        t0 = time.perf_counter()
        if Path(path).suffix == ".npy":
            if options.vad_filter:
                raise ToolkitError(f"--vad-filter needs the audio, and {path} holds log-mel "
                                   "features; give the audio file, or leave out --vad-filter")
            feats, seconds = self.features(path)
            mel = np.concatenate(list(feats), axis=1)
            with _ProgressBar(seconds, enabled=progress) as bar:
                res = transcribe_mel(self, mel, mel.shape[1], seconds, options, bar.update)
        else:
            audio = load_audio(path)
            seconds = len(audio) / SAMPLE_RATE
            res = self.transcribe_audio(audio, options, progress=progress)
        total_ms = (time.perf_counter() - t0) * 1e3
        segments = [s.as_dict() for s in res.segments]
        return {"file": str(path), "text": res.text, "segments": segments,
                **({"vad": res.vad} if res.vad is not None else {}),
                "tokens": [t for s in res.segments for t in s.tokens],
                "language": res.language, "task": options.task,
                "audio_seconds": round(seconds, 3),
                "backend": self.backend, "precision": self.precision,
                "beam_size": options.beam_size, "windows": res.windows,
                "fallbacks": res.fallbacks, "encoder_ms": round(res.encoder_ms, 2),
                "decode_steps": len(res.step_ms), "total_ms": round(total_ms, 2),
                "random_init": self.random_init}

    def transcribe_windows(self, path: str | Path, language: str | None = None,
                           task: str = "transcribe", max_new_tokens: int = 224,
                           force_length: bool = False, beam_size: int = 1) -> dict:
        """Fixed 30-s windows decoded in batches without timestamps (Hugging Face
        ``generate``'s short-form rules): the parity and forced-length benchmark path."""
        self.check_language(language, task)
        t0 = time.perf_counter()
        feats, duration = self.features(path)
        res = self.decode_features(feats, None, max_new_tokens, force_length, language, task,
                                   beam_size=beam_size)
        text = "".join(self.tokenizer.decode(t) for t in res.tokens).strip()
        total_ms = (time.perf_counter() - t0) * 1e3
        return {"file": str(path), "text": text,
                "tokens": [t for w in res.tokens for t in w],
                "window_tokens": res.tokens, "language": res.language, "task": task,
                "windows": int(feats.shape[0]), "audio_seconds": round(duration, 3),
                "backend": self.backend, "precision": self.precision,
                "encoder_ms": round(res.encoder_ms, 2), "decode_steps": res.steps,
                "total_ms": round(total_ms, 2), "random_init": self.random_init}


class _ProgressBar:
    """Seconds of audio done, on stderr (off: a no-op)."""

    def __init__(self, seconds: float, enabled: bool = True):
        self.seconds = seconds
        self.steps = Steps("transcribe", total=max(1, round(seconds))) if enabled else None
        self.done = 0

    def __enter__(self) -> "_ProgressBar":
        if self.steps:
            self.steps.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.steps:
            self.steps.__exit__(*exc)

    def update(self, t: float) -> None:
        if self.steps:
            self.steps.advance(f"{t:.0f}/{self.seconds:.0f} s audio", n=round(t) - self.done)
            self.done = round(t)


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


def check_config(cfg: dict, graphs: Graphs) -> None:
    """The model_config a pipeline is built from (a manifest someone may have edited): types,
    ranges, and agreement with the graphs' own input and output shapes."""
    where = f"model_config of {graphs.artifact or 'the model'}"
    n = schema.field(cfg, "decoder_layers", int, where, 1, 128)
    heads = schema.field(cfg, "decoder_attention_heads", int, where, 1, 128)
    head_dim = schema.field(cfg, "head_dim", int, where, 1, 1024)
    mels = schema.field(cfg, "num_mel_bins", int, where, choices=(80, 128))
    vocab = schema.field(cfg, "vocab_size", int, where, 1, 1_000_000)
    schema.field(cfg, "max_target_positions", int, where, 1, 100_000)
    gen = schema.field(cfg, "generation", dict, where)
    schema.int_list(gen, "suppress_tokens", f"{where} generation", vocab)
    schema.int_list(gen, "begin_suppress_tokens", f"{where} generation", vocab)
    schema.field(gen, "max_length", int, f"{where} generation", 2, 100_000, required=False)
    enc, dec = graphs.sessions["encoder"], graphs.sessions["decoder"]
    shapes = {t.name: t.shape for t in enc.inputs + dec.inputs + dec.outputs}
    fix = "the manifest does not match the graphs — re-export the artifact"
    feats = shapes.get("input_features") or []
    if len(feats) == 3 and isinstance(feats[1], int) and feats[1] != mels:
        raise ToolkitError(f"{where} says {mels} mel bins, the encoder graph takes {feats[1]}; "
                           f"{fix}")
    layers = sum(1 for name in shapes if name.startswith("present_key_"))
    if dec.outputs and layers != n:
        raise ToolkitError(f"{where} says {n} decoder layers, the decoder graph has {layers}; "
                           f"{fix}")
    past = shapes.get("past_key_0") or []
    if len(past) == 4 and [past[1], past[3]] != [heads, head_dim] and all(
            isinstance(d, int) for d in (past[1], past[3])):
        raise ToolkitError(f"{where} says {heads} heads of {head_dim}, the decoder graph's cache "
                           f"has {past[1]} of {past[3]}; {fix}")


def from_graphs(graphs: Graphs) -> WhisperPipeline:
    cfg = graphs.model_config
    where = graphs.artifact or "the model"
    check_config(cfg, graphs)
    if graphs.artifact is not None and (graphs.revision or 0) < BEAM_ROWS_REVISION:
        raise ToolkitError(f"{where} was exported by an older toolkit (export revision "
                           f"{graphs.revision}): its decoder takes cross-attention K/V per decoder "
                           "row, this runtime passes them once per window — re-export it with "
                           "`toolkit export whisper`")
    tokenizer = (graphs.loaded.tokenizer if graphs.loaded is not None
                 else tokenizer_from_manifest(graphs.artifact, cfg))
    align = graphs.sessions.get("align")
    if align is not None:
        heads = cfg.get("alignment_heads")
        qk = {t.name: t.shape for t in align.outputs}.get("alignment_qk") or []
        if not isinstance(heads, list) or not heads or (
                len(qk) == 4 and isinstance(qk[1], int) and qk[1] != len(heads)):
            raise ToolkitError(f"model_config of {where} lists alignment_heads {heads!r}, which "
                               "do not match its align graph; re-export the artifact")
    pipe = WhisperPipeline(graphs.sessions["encoder"], graphs.sessions["decoder"], cfg,
                           tokenizer, graphs.random_init, graphs.source, graphs.backend,
                           graphs.precision, align=align)
    pipe.where = str(where)
    return pipe
