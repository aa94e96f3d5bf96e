"""`toolkit bench --model whisper`: what is Whisper-specific in the benchmark.

Two modes:

- clips (default): per utterance (timed) log-mel + encoder + decode loop (greedy, or beam
  search with ``--beam-size``), fixed 30-s windows without timestamps; per window the encoder,
  per single-token step the decoder.
- ``--long-form``: the data's clips joined (0.3 s of silence apart) into one recording,
  transcribed with timestamps by seeking, with temperature fallback and the previous text as
  prompt (openai-whisper's and faster-whisper's defaults); CER and WER against the joined
  reference and the words dropped or inserted.

Quality: CER against the reference transcripts where the data has them, CER + token exact-match
against the fp32 PyTorch case, and teacher-forced top-1 agreement with it. Besides the toolkit's
loop on every backend, two peers run on the same audio and settings: the stock PyTorch path —
Hugging Face ``generate()`` in eager mode — as backend ``hf`` (clips), and faster-whisper
(CTranslate2, fp32 and int8) as backend ``ct2`` when it is installed (``pip install
toolkit[peers]``).
"""

from __future__ import annotations

import importlib.util
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from ..core.errors import ToolkitError
from ..core.files import atomic_dir, locked
from ..core.progress import step
from ..core.threads import default_threads
from ..models.whisper.audio import SAMPLE_RATE, features_for, load_audio
from ..models.whisper.data import default_bench_data, load_folder
from ..runtime.whisper.longform import TranscribeOptions
from .harness import DEFAULT_BACKENDS, BenchSpec, Workload
from .metrics import corpus_cer, normalizer_name, scores, token_exact_match
from .plots import Panel
from .records import percentile_fields
from .timing import percentiles

DEFAULT_FORCED_TOKENS = 48
FREE_RUNNING_LIMIT = 224
JOIN_SILENCE_S = 0.3          # --long-form: silence between the joined clips
CT2_COMPUTE = {"fp32": "float32", "int8": "int8"}


class HFGenerate:
    """The ``hf`` backend: Hugging Face ``generate()`` with the same features, prompt,
    suppression rules and (when forced) decode length as the toolkit's loop."""

    sessions: list = []

    def __init__(self, loaded, language: str, max_new_tokens: int, force: bool,
                 beam_size: int = 1):
        hf_logging.set_verbosity_error()  # generate()'s notes on processors and pad == eos
        warnings.filterwarnings("ignore")
        torch.set_num_threads(default_threads())
        self.loaded, self.tokenizer = loaded, loaded.tokenizer
        tok, cfg = loaded.tokenizer, loaded.config
        self.kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False,
                       "num_beams": beam_size, "return_timestamps": False}
        if tok.multilingual:  # English-only models take neither (generate() refuses them)
            self.kwargs.update(language=language, task="transcribe")
        if force:  # the loop's rule: no end-of-text, no special tokens
            self.kwargs["suppress_tokens"] = sorted(set(loaded.generation.suppress_tokens)
                                                    | set(range(tok.eot, cfg.vocab_size)))
        self.prompt = set(tok.sot_sequence(language if tok.multilingual else None))

    def __call__(self, audio: np.ndarray) -> dict:
        tokens = self.tokens(audio)
        return {"tokens": tokens, "text": self.tokenizer.decode(tokens).strip()}

    def tokens(self, audio: np.ndarray) -> list[int]:
        feats = torch.from_numpy(features_for(audio, self.loaded.config.num_mel_bins))
        with torch.inference_mode():
            seqs = self.loaded.model.generate(feats, **self.kwargs)
        flat = []
        eot = self.tokenizer.eot
        for row in seqs.tolist():
            row = [t for t in row if t not in self.prompt]
            flat += row[:row.index(eot)] if eot in row else row
        return flat


class FasterWhisper:
    """The ``ct2`` backend: faster-whisper (CTranslate2) on the same weights, audio and decoding
    settings — clips: fixed window, no timestamps, one temperature; long form: its defaults
    (timestamps, seeking, fallback, previous text) with the same beam size."""

    sessions: list = []

    def __init__(self, model_dir: str, precision: str, multilingual: bool, language: str,
                 beam_size: int, long_form: bool, max_new_tokens: int):
        from faster_whisper import WhisperModel

        warnings.filterwarnings("ignore")
        self.model = WhisperModel(model_dir, device="cpu", compute_type=CT2_COMPUTE[precision],
                                  cpu_threads=default_threads())
        self.kwargs: dict = {"beam_size": beam_size, "best_of": 5,
                             "language": language if multilingual else None,
                             "vad_filter": False}
        if not long_form:
            self.kwargs.update(without_timestamps=True, temperature=[0.0],
                               condition_on_previous_text=False,
                               max_new_tokens=max_new_tokens)

    def __call__(self, audio: np.ndarray) -> dict:
        segments, _ = self.model.transcribe(audio, **self.kwargs)
        segments = list(segments)
        return {"tokens": [t for s in segments for t in s.tokens],
                "text": "".join(s.text for s in segments).strip(), "segments": len(segments)}

    def close(self) -> None:
        del self.model


def faster_whisper_installed() -> bool:
    return importlib.util.find_spec("faster_whisper") is not None


class WhisperBench(BenchSpec):
    family = "whisper"
    extra_backends = {"hf": ("fp32",), "ct2": ("fp32", "int8")}
    references = (("torch", "fp32"), ("hf", "fp32"))
    speed_key = "rtf"
    ratios = (("torch", "fp32"), ("hf", "fp32"), ("ort", "fp32"), ("ct2", "fp32"),
              ("ct2", "int8"))
    fields = ("mode", "beam_size", "utterances", "audio_s_total", *percentile_fields("encoder_ms"),
              *percentile_fields("decode_token_ms"), "run_ms_samples", "tokens_per_utterance",
              "forced_tokens", "device", "normalizer", "cer_vs_reference", "wer_vs_reference",
              "cer_raw_vs_reference", "wer_raw_vs_reference", "cer_nospace_vs_reference",
              "words_dropped", "words_inserted", "segments", "cer_vs_torch_fp32",
              "token_exact_match_vs_torch_fp32", "top1_agreement_teacher_forced_vs_torch_fp32",
              "texts")
    columns = (("encoder p50 ms", "encoder_ms_p50", ".1f"),
               ("ms/token p50", "decode_token_ms_p50", ".2f"))
    quality_header = "CER pp"
    quality_format = ".2f"
    quality_columns = (("WER", "wer_vs_reference", ".2f"),
                       ("dropped", "words_dropped", "d"),
                       ("inserted", "words_inserted", "d"),
                       ("CER vs torch", "cer_vs_torch_fp32", ".2f"),
                       ("token match", "token_exact_match_vs_torch_fp32", ".2f"),
                       ("TF top-1", "top1_agreement_teacher_forced_vs_torch_fp32", ".3f"))
    plot_panels = (Panel("rtf", "RTF (processing time / audio)"),
                   Panel("quality_value", "CER, percentage points"))
    default_out = "results/whisper-bench.json"

    # -- parent -----------------------------------------------------------------------------
    def default_backends(self) -> tuple[str, ...]:
        return DEFAULT_BACKENDS + (("ct2",) if faster_whisper_installed() else ())

    def check_backends(self, backends: list[str]) -> None:
        if "ct2" in backends and not faster_whisper_installed():
            raise ToolkitError("backend ct2 runs faster-whisper, which is not installed; "
                               "pip install 'toolkit[peers]' (or faster-whisper)")

    def check_options(self, options: dict) -> dict:
        tokens = options.get("tokens")
        if tokens is not None and tokens < 1:
            raise ToolkitError(f"--tokens must be at least 1 (got {tokens})")
        beam = options.get("beam_size")
        if beam is not None and beam < 1:
            raise ToolkitError(f"--beam-size must be at least 1 (got {beam})")
        long_form = bool(options.get("long_form"))
        if long_form and tokens is not None:
            raise ToolkitError("--tokens forces a decode length per window; --long-form "
                               "decodes until each window ends — use one of them")
        return {"tokens": tokens, "language": options.get("language") or "en",
                "beam_size": beam or 1, "long_form": long_form}

    def reference_cases(self, options: dict) -> tuple[tuple[str, str], ...]:
        # HF generate() has no seeking long-form loop with the same rules: clips only
        return (("torch", "fp32"),) if options["long_form"] else self.references

    def skip_reason(self, backend, precision, loaded, options) -> str | None:
        if backend == "hf" and options["long_form"]:
            return "hf runs clips only; its long-form generate() follows other rules"
        if backend != "ct2":
            return None
        if loaded.random_init or options["tokens"] is not None:
            return ("faster-whisper cannot force a decode length: it runs on trained weights "
                    "without --tokens")
        if not _ct2_source(loaded) and not (Path(loaded.source.get("checkpoint") or "")
                                             / "tokenizer.json").is_file():
            return "the checkpoint has no tokenizer.json for faster-whisper"
        return None

    def prepare(self, loaded, cases, workdir, options) -> None:
        if any(b == "ct2" for b, _ in cases):
            options["ct2_dir"] = str(ct2_model_dir(loaded, workdir))
            options["ct2_multilingual"] = loaded.tokenizer.multilingual

    def workloads(self, family, loaded, data, limit, options):
        tok = loaded.tokenizer
        prompt = tok.sot_sequence(options["language"] if tok.multilingual else None, "transcribe")
        longest = loaded.config.max_target_positions - len(prompt)
        if options["tokens"] is not None and options["tokens"] > longest:
            raise ToolkitError(f"--tokens {options['tokens']} is more than this model decodes in "
                               f"one window ({longest}); use --tokens {longest} or fewer")
        utts = load_folder(data, limit) if data else default_bench_data()[:limit]
        force = options["tokens"] is not None or loaded.random_init
        options["force"] = force
        options["max_new_tokens"] = options["tokens"] or (
            DEFAULT_FORCED_TOKENS if loaded.random_init else FREE_RUNNING_LIMIT)
        audio_s = [len(load_audio(u.path)) / SAMPLE_RATE for u in utts]
        info = {"random_init": loaded.random_init}
        if options["long_form"]:
            total = float(sum(audio_s)) + JOIN_SILENCE_S * len(utts)
            refs = [u.text for u in utts]
            joined = " ".join(refs) if all(r is not None for r in refs) else None
            return [Workload(label=f"{total:.1f} s ({len(utts)} clips joined)",
                          items=[[str(u.path) for u in utts]],
                          fields={"utterances": 1, "audio_s_total": total},
                          info={**info, "references": [joined]})]
        total = float(sum(audio_s))
        return [Workload(label=f"{len(utts)} utterances, {total:.1f} s audio",
                      items=[str(u.path) for u in utts],
                      fields={"utterances": len(utts), "audio_s_total": total},
                      info={**info, "references": [u.text for u in utts]})]

    # -- child ------------------------------------------------------------------------------
    def open(self, case):
        o = case.options
        if case.backend == "hf":
            return HFGenerate(case.family.load_model(**case.load_args), o["language"],
                              o["max_new_tokens"],
                              o["force"], o["beam_size"])
        if case.backend == "ct2":
            return FasterWhisper(o["ct2_dir"], case.precision, o["ct2_multilingual"], o["language"],
                                 o["beam_size"], o["long_form"], o["max_new_tokens"])
        return super().open(case)

    def load_items(self, shape, case):
        if case.options["long_form"]:
            silence = np.zeros(round(JOIN_SILENCE_S * SAMPLE_RATE), np.float32)
            return [np.concatenate([x for f in files for x in (load_audio(f), silence)])
                    for files in shape.items]
        return [load_audio(f) for f in shape.items]

    def _prompt(self, tok, case) -> list[int]:
        return tok.sot_sequence(case.options["language"] if tok.multilingual else None,
                                "transcribe")

    def work(self, runner, audio, shape, case):
        """Output: {"tokens", "text"} of one item (and the long form's segment count)."""
        o = case.options
        if isinstance(runner, (HFGenerate, FasterWhisper)):
            return runner(audio), {}
        tok = runner.tokenizer
        if o["long_form"]:
            res = runner.transcribe_audio(audio, TranscribeOptions(
                language=o["language"] if tok.multilingual else None, beam_size=o["beam_size"]))
            return ({"tokens": [t for s in res.segments for t in s.tokens], "text": res.text,
                     "segments": len(res.segments)},
                    {"encoder_ms": [res.encoder_ms / max(1, res.windows)] * res.windows,
                     "decode_token_ms": res.step_ms})
        res = runner.decode(audio, self._prompt(tok, case), o["max_new_tokens"],
                            force_length=o["force"], beam_size=o["beam_size"])
        return ({"tokens": _flat(res.tokens),
                 "text": "".join(tok.decode(w) for w in res.tokens).strip()},
                {"encoder_ms": [res.encoder_ms / max(1, len(res.tokens))],
                 "decode_token_ms": res.step_ms[1:]})  # the prompt step excluded

    def after(self, runner, items, shape, case, outputs):
        out = {"texts": [o["text"] for o in outputs],
               "device": "cpu" if case.backend in ("ort", "hf", "ct2") else
               ("cuda" if case.backend != "torch" else runner.encoder.device.type)}
        reference = (case.reference or {}).get(shape.label)
        # teacher forcing compares argmax picks: it measures greedy decoding's numerics only
        if (reference and not isinstance(runner, (HFGenerate, FasterWhisper))
                and not case.options["long_form"] and case.options["beam_size"] == 1):
            agree = steps = 0
            prompt = self._prompt(runner.tokenizer, case)
            for audio, ref in zip(items, reference):
                if ref["tokens"]:
                    got, n = runner.teacher_forced_top1(
                        runner.encode(features_for(audio, runner.n_mels)), prompt,
                        [ref["tokens"]])
                    agree, steps = agree + got, steps + n
            out["top1"] = agree / steps if steps else None
        return out

    # -- parent -----------------------------------------------------------------------------
    def figures(self, shape, result, reference, options):
        refs = shape.info["references"]
        has_refs = all(r is not None for r in refs)
        texts, ref_texts = result["after"]["texts"], reference["after"]["texts"]
        is_ref = result is reference
        total = shape.fields["audio_s_total"]
        long_form = options["long_form"]
        lang = options["language"]
        got = scores(texts, refs, lang) if has_refs else {"ref_words": 0}
        n_words = got["ref_words"]
        rec = {
            "mode": "long-form" if long_form else "clips",
            "beam_size": options["beam_size"],
            **percentiles(result["extras"].get("encoder_ms", []), "encoder_ms"),
            **percentiles(result["extras"].get("decode_token_ms", []), "decode_token_ms"),
            "run_ms_samples": [round(x, 3) for x in result["pass_ms"]],
            "tokens_per_utterance": [len(o["tokens"]) for o in result["outputs"]],
            "forced_tokens": options["max_new_tokens"] if options["force"] else None,
            "rtf": float(np.median(result["pass_ms"])) / 1e3 / total,
            "device": result["after"]["device"],
            "normalizer": normalizer_name(lang),
            "cer_vs_reference": got.get("cer"),
            "wer_vs_reference": got.get("wer"),
            "cer_raw_vs_reference": got.get("cer_raw"),
            "wer_raw_vs_reference": got.get("wer_raw"),
            "cer_nospace_vs_reference": got.get("cer_nospace"),
            # words dropped/inserted: what long-form decoding loses or repeats (clips: in WER)
            "words_dropped": got["deleted"] if n_words and long_form else None,
            "words_inserted": got["inserted"] if n_words and long_form else None,
            "segments": sum(o.get("segments", 0) for o in result["outputs"]) if long_form
            else None,
            "cer_vs_torch_fp32": corpus_cer(texts, ref_texts, lang),
            "token_exact_match_vs_torch_fp32": None if long_form else token_exact_match(
                [o["tokens"] for o in result["outputs"]],
                [o["tokens"] for o in reference["outputs"]]),
            "top1_agreement_teacher_forced_vs_torch_fp32": (1.0 if is_ref else
                                                            result["after"].get("top1"))
            if options["beam_size"] == 1 and not long_form else None,
            "texts": texts,
        }
        if shape.info["random_init"] or not has_refs:
            rec.update(quality_metric="cer_vs_torch_fp32_pp",
                       quality_value=rec["cer_vs_torch_fp32"],
                       quality_reference="PyTorch fp32 transcripts of the same model and audio")
        else:
            rec.update(quality_metric="cer_pp", quality_value=rec["cer_vs_reference"],
                       quality_reference="reference transcripts of the data"
                       + (" (joined)" if long_form else ""))
        return rec

    def notes(self, records, loaded, shapes, options, env):
        shape = shapes[0]
        beam = options["beam_size"]
        search = "greedy" if beam == 1 else f"beam search, {beam} beams"
        if options["long_form"]:
            how = (f"long form: the clips joined {JOIN_SILENCE_S} s apart into one recording, "
                   f"transcribed with timestamps by seeking ({search} at temperature 0, "
                   "fallback to 0.2…1.0 on compression ratio > 2.4 or avg log-prob < -1, "
                   "previous text as prompt) — the same defaults on ct2 (faster-whisper)")
        elif options["force"]:
            how = (f"decode length forced to {options['max_new_tokens']} text tokens on every "
                   f"backend ({search})")
        else:
            how = (f"{search}, decoding stops at end-of-text (up to {FREE_RUNNING_LIMIT} tokens) "
                   "in each fixed 30-s window, no timestamps")
        return [
            "RANDOM INITIALISATION (seeded preset) — latency is real, transcripts are not; "
            "quality = parity with PyTorch fp32" if loaded.random_init else
            f"weights: {loaded.weights}",
            f"data: {shape.label}; {how}",
            "latency = log-mel + encoder + decode loop for one item (audio decoding excluded)",
            "RTF = processing time / audio duration (median pass over all items)",
            "backends: hf = Hugging Face generate() in PyTorch eager (the stock path); torch = "
            "this toolkit's decode loop over the exported modules in PyTorch eager; ort = "
            "onnxruntime CPU; ct2 = faster-whisper (CTranslate2) on the same weights, fp32 = "
            "compute_type float32, int8 = compute_type int8",
            "precisions: int8 = QDQ with symmetric int8 activations on the layers that fit the "
            "error budget (TensorRT form); int8-cpu = onnxruntime CPU form (encoder: dynamic "
            "int8, decoder: 8-bit block-wise weights with int8 compute; not buildable by "
            "TensorRT)",
            "ms/token = one decoder step (KV cache fed back; long form: prompt steps included); "
            "encoder = one 30-s window",
            f"CER/WER in percentage points (jiwer, corpus-level) after Whisper's text "
            f"normaliser ({normalizer_name(options['language'])}: numbers, spellings, "
            "punctuation, as the Open ASR Leaderboard scores); *_raw = on "
            "the texts as written; dropped/inserted = reference words missing from / extra "
            "words in the transcript (jiwer's alignment, normalised); "
            "token match = share of utterances whose tokens equal PyTorch fp32's exactly",
            "TF top-1 = teacher-forced top-1 agreement: fed PyTorch fp32's tokens step by step, "
            "the share of steps whose argmax equals PyTorch fp32's next token",
        ]


def _ct2_source(loaded) -> str | None:
    return loaded.source.get("checkpoint") if loaded.source.get("format") == "ctranslate2" else None


def ct2_model_dir(loaded, workdir: Path) -> Path:
    """The CTranslate2 directory faster-whisper runs: the checkpoint itself when it is one,
    else a float32 conversion (CTranslate2's own converter) cached in ``workdir``; int8 is
    CTranslate2's load-time quantization of it (``compute_type``)."""
    src = _ct2_source(loaded)
    if src:
        return Path(src)
    out = Path(workdir) / f"ct2-{loaded.cache_tag}"
    with locked(out):
        if (out / "model.bin").is_file():
            return out
    ckpt = Path(loaded.source["checkpoint"])
    import ctranslate2.converters as conv

    with step(f"converting {ckpt} to CTranslate2 for faster-whisper"), \
            atomic_dir(out, owned=lambda p: (p / "model.bin").is_file()) as tmp:
        copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (ckpt / f).is_file()]
        conv.TransformersConverter(str(ckpt), copy_files=copy).convert(
            str(tmp / "model"), quantization="float32")
        for f in (tmp / "model").iterdir():
            shutil.move(str(f), tmp / f.name)
        (tmp / "model").rmdir()
    return out


def _flat(windows: list[list[int]]) -> list[int]:
    return [t for w in windows for t in w]


SPEC = WhisperBench()
