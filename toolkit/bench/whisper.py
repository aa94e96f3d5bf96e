"""`toolkit bench --model whisper`: what is Whisper-specific in the benchmark.

Per utterance (timed): log-mel + encoder + greedy decode loop (audio decoding excluded); per
window the encoder, per single-token step the decoder. Quality: CER against the reference
transcripts where the data has them, CER + token exact-match against the fp32 PyTorch case, and
teacher-forced top-1 agreement with it. Besides the toolkit's loop on every backend, the stock
PyTorch path — Hugging Face ``generate()`` in eager mode — runs as backend ``hf``.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from ..core.errors import ToolkitError
from ..core.threads import default_threads
from ..export.whisper import build_plan
from ..models.whisper.audio import SAMPLE_RATE, features_for, load_audio
from ..models.whisper.data import default_bench_data, load_folder
from ..models.whisper.loading import load_model
from ..runtime.whisper import open_pipeline
from .harness import BenchSpec, Shape
from .metrics import corpus_cer, token_exact_match
from .plots import Panel
from .records import percentile_fields
from .timing import percentiles

DEFAULT_FORCED_TOKENS = 48
FREE_RUNNING_LIMIT = 224


class HFGenerate:
    """The ``hf`` backend: Hugging Face ``generate()`` with the same features, prompt,
    suppression rules and (when forced) decode length as the toolkit's loop."""

    sessions: list = []

    def __init__(self, loaded, language: str, max_new_tokens: int, force: bool):
        hf_logging.set_verbosity_error()  # generate()'s notes on processors and pad == eos
        warnings.filterwarnings("ignore")
        torch.set_num_threads(default_threads())
        self.loaded, self.tokenizer = loaded, loaded.tokenizer
        tok, cfg = loaded.tokenizer, loaded.config
        self.kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1,
                       "return_timestamps": False}
        if tok.multilingual:  # English-only models take neither (generate() refuses them)
            self.kwargs.update(language=language, task="transcribe")
        if force:  # the loop's rule: no end-of-text, no special tokens
            self.kwargs["suppress_tokens"] = sorted(set(loaded.generation.suppress_tokens)
                                                    | set(range(tok.eot, cfg.vocab_size)))
        self.prompt = set(tok.sot_sequence(language if tok.multilingual else None))

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


class WhisperBench(BenchSpec):
    family = "whisper"
    extra_backends = {"hf": ("fp32",)}
    references = (("torch", "fp32"), ("hf", "fp32"))
    speed_key = "rtf"
    ratios = (("torch", "fp32"), ("hf", "fp32"), ("ort", "fp32"))
    fields = ("utterances", "audio_s_total", *percentile_fields("encoder_ms"),
              *percentile_fields("decode_token_ms"), "run_ms_samples", "tokens_per_utterance",
              "forced_tokens", "device", "cer_vs_reference", "cer_vs_torch_fp32",
              "token_exact_match_vs_torch_fp32", "top1_agreement_teacher_forced_vs_torch_fp32",
              "texts")
    columns = (("encoder p50 ms", "encoder_ms_p50", ".1f"),
               ("ms/token p50", "decode_token_ms_p50", ".2f"))
    quality_header = "CER pp"
    quality_format = ".2f"
    quality_columns = (("CER ref", "cer_vs_reference", ".2f"),
                       ("CER vs torch fp32", "cer_vs_torch_fp32", ".2f"),
                       ("token match", "token_exact_match_vs_torch_fp32", ".2f"),
                       ("TF top-1", "top1_agreement_teacher_forced_vs_torch_fp32", ".3f"))
    plot_panels = (Panel("rtf", "RTF (processing time / audio)"),
                   Panel("quality_value", "CER, percentage points"))
    default_out = "results/whisper-bench.json"
    load_model = staticmethod(load_model)
    build_plan = staticmethod(build_plan)
    open_pipeline = staticmethod(open_pipeline)

    def check_options(self, options: dict) -> dict:
        tokens = options.get("tokens")
        if tokens is not None and tokens < 1:
            raise ToolkitError(f"--tokens must be at least 1 (got {tokens})")
        return {"tokens": tokens, "language": options.get("language") or "en"}

    def workload(self, loaded, data, limit, options):
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
        total = float(sum(audio_s))
        return [Shape(label=f"{len(utts)} utterances, {total:.1f} s audio",
                      items=[str(u.path) for u in utts],
                      fields={"utterances": len(utts), "audio_s_total": total},
                      info={"references": [u.text for u in utts],
                            "random_init": loaded.random_init})]

    # -- child ------------------------------------------------------------------------------
    def open(self, case):
        if case.backend == "hf":
            return HFGenerate(load_model(**case.model), case.options["language"],
                              case.options["max_new_tokens"], case.options["force"])
        return super().open(case)

    def load_items(self, shape, case):
        return [load_audio(f) for f in shape.items]

    def _prompt(self, tok, case) -> list[int]:
        return tok.sot_sequence(case.options["language"] if tok.multilingual else None,
                                "transcribe")

    def work(self, runner, audio, shape, case):
        """Output: the tokens of each 30-s window (HF: one sequence)."""
        if isinstance(runner, HFGenerate):
            return [runner.tokens(audio)], {}
        res = runner.decode(audio, self._prompt(runner.tokenizer, case),
                            case.options["max_new_tokens"], force_length=case.options["force"])
        return (res.tokens, {"encoder_ms": [res.encoder_ms / max(1, len(res.tokens))],
                             "decode_token_ms": res.step_ms[1:]})  # the prompt step excluded

    def after(self, runner, items, shape, case, outputs):
        tok = runner.tokenizer
        out = {"texts": ["".join(tok.decode(w) for w in windows).strip() for windows in outputs],
               "device": "cpu" if case.backend in ("ort", "hf") else
               ("cuda" if case.backend != "torch" else runner.encoder.device.type)}
        reference = (case.reference or {}).get(shape.label)
        if reference and not isinstance(runner, HFGenerate):
            agree = steps = 0
            prompt = self._prompt(tok, case)
            for audio, ref in zip(items, reference):
                ref = _flat(ref)
                if ref:
                    got, n = runner.teacher_forced_top1(
                        runner.encode(features_for(audio, runner.n_mels)), prompt, [ref])
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
        rec = {
            **percentiles(result["extras"].get("encoder_ms", []), "encoder_ms"),
            **percentiles(result["extras"].get("decode_token_ms", []), "decode_token_ms"),
            "run_ms_samples": [round(x, 3) for x in result["pass_ms"]],
            "tokens_per_utterance": [len(_flat(t)) for t in result["outputs"]],
            "forced_tokens": options["max_new_tokens"] if options["force"] else None,
            "rtf": float(np.median(result["pass_ms"])) / 1e3 / total,
            "device": result["after"]["device"],
            "cer_vs_reference": corpus_cer(texts, refs) if has_refs else None,
            "cer_vs_torch_fp32": corpus_cer(texts, ref_texts),
            "token_exact_match_vs_torch_fp32": token_exact_match(
                [_flat(t) for t in result["outputs"]], [_flat(t) for t in reference["outputs"]]),
            "top1_agreement_teacher_forced_vs_torch_fp32": 1.0 if is_ref
            else result["after"].get("top1"),
            "texts": texts,
        }
        if shape.info["random_init"] or not has_refs:
            rec.update(quality_metric="cer_vs_torch_fp32_pp", quality_value=rec["cer_vs_torch_fp32"],
                       quality_reference="PyTorch fp32 transcripts of the same model and audio")
        else:
            rec.update(quality_metric="cer_pp", quality_value=rec["cer_vs_reference"],
                       quality_reference="reference transcripts of the data")
        return rec

    def notes(self, records, loaded, shapes, options, env):
        shape = shapes[0]
        return [
            "RANDOM INITIALISATION (seeded preset) — latency is real, transcripts are not; "
            "quality = parity with PyTorch fp32" if loaded.random_init else
            f"weights: {loaded.weights}",
            f"data: {shape.label}; " + (
                f"decode length forced to {options['max_new_tokens']} text tokens on every "
                "backend" if options["force"] else
                f"decoding stops at end-of-text (up to {FREE_RUNNING_LIMIT} tokens)"),
            "latency = log-mel + encoder + greedy decode loop for one utterance (audio decoding "
            "excluded)",
            "RTF = processing time / audio duration (median pass over all utterances)",
            "backends: hf = Hugging Face generate() in PyTorch eager (the stock path); torch = "
            "this toolkit's decode loop over the exported modules in PyTorch eager; ort = "
            "onnxruntime CPU",
            "precisions: int8 = QDQ with symmetric int8 activations on the layers that fit the "
            "error budget (TensorRT form); int8-cpu = onnxruntime CPU form (encoder: dynamic "
            "int8, decoder: 8-bit block-wise weights with int8 compute; not buildable by "
            "TensorRT)",
            "ms/token = one single-token decoder step (KV cache fed back); encoder = one 30-s "
            "window",
            "CER in percentage points, case/punctuation-normalised; token match = share of "
            "utterances whose tokens equal PyTorch fp32's exactly",
            "TF top-1 = teacher-forced top-1 agreement: fed PyTorch fp32's tokens step by step, "
            "the share of steps whose argmax equals PyTorch fp32's next token",
        ]


def _flat(windows: list[list[int]]) -> list[int]:
    return [t for w in windows for t in w]


SPEC = WhisperBench()
