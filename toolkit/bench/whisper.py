"""`toolkit bench --model whisper`: every backend × precision on the same audio, one table.

Per case (in its own process, for per-backend peak memory): end-to-end latency per utterance
(log-mel + encoder + decode loop), encoder latency per window, decoder latency per token, RTF,
and quality — CER against reference transcripts where the data has them, and CER + token
exact-match against the fp32 PyTorch output of the same model (the parity figure).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import ToolkitError
from ..progress import Steps, console
from .metrics import corpus_cer, token_exact_match
from .records import environment, write_records
from .report import print_table
from .timing import percentiles

DEFAULT_FORCED_TOKENS = 48
SUPPORTED = {"hf": ("fp32",), "torch": ("fp32",), "ort": ("fp32", "fp16", "int8", "int8-cpu"),
             "ort-cuda": ("fp32", "fp16", "int8"), "ort-trt": ("fp32", "fp16", "int8"),
             "trt": ("fp32", "fp16", "int8")}


def _run_hf_case(case: dict) -> dict:
    """Reference row: the stock PyTorch path, Hugging Face ``generate()`` in eager mode, with
    the same features, prompt, suppression rules and (when forced) decode length."""
    import torch

    from ..models.whisper.audio import features_for, load_audio
    from ..models.whisper.loading import load_whisper
    from ..runtime.session import default_threads

    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # generate()'s notes on processors and pad == eos
    warnings.filterwarnings("ignore")
    torch.set_num_threads(default_threads())
    lw = load_whisper(case["checkpoint"], case["preset"], case["seed"])
    tok, cfg = lw.tokenizer, lw.config
    kwargs = {"max_new_tokens": case["max_new_tokens"], "do_sample": False, "num_beams": 1,
              "return_timestamps": False}
    if tok.multilingual:  # English-only models take neither (generate() refuses them)
        kwargs.update(language=case["language"], task="transcribe")
    if case["force"]:  # the same rule as the decode loop: no end-of-text, no special tokens
        kwargs["suppress_tokens"] = sorted(set(lw.generation.suppress_tokens)
                                           | set(range(tok.eot, cfg.vocab_size)))
    prompt = set(tok.sot_sequence(case["language"] if tok.multilingual else None))
    audio = [load_audio(f) for f in case["files"]]
    utt_ms, run_ms, tokens, texts = [], [], [], []
    for r in range(case["warmup"] + case["runs"]):
        timed = r >= case["warmup"]
        run_total, tokens, texts = 0.0, [], []
        for a in audio:
            t0 = time.perf_counter()
            feats = torch.from_numpy(features_for(a, cfg.num_mel_bins))
            with torch.inference_mode():
                seqs = lw.model.generate(feats, **kwargs)
            total = (time.perf_counter() - t0) * 1e3
            run_total += total
            if timed:
                utt_ms.append(total)
            flat = []
            for row in seqs.tolist():
                row = [t for t in row if t not in prompt]
                flat += row[:row.index(tok.eot)] if tok.eot in row else row
            tokens.append(flat)
            texts.append(tok.decode(flat).strip())
        if timed:
            run_ms.append(run_total)
    return {"utt_ms": utt_ms, "enc_ms": [], "step_ms": [], "run_ms": run_ms,
            "tokens": tokens, "texts": texts}


def _run_case(case: dict) -> dict:
    """One backend × precision, run in a child process."""
    from ..models.whisper.audio import features_for, load_audio
    from ..runtime.whisper.pipeline import from_artifact, from_model

    if case["backend"] == "hf":
        return _run_hf_case(case)
    if case["backend"] == "torch":
        from ..models.whisper.loading import load_whisper

        lw = load_whisper(case["checkpoint"], case["preset"], case["seed"])
        pipe = from_model(lw, precision=case["precision"])
    else:
        pipe = from_artifact(case["artifact"], case["backend"])
    audio = [load_audio(f) for f in case["files"]]
    tok = pipe.tokenizer
    prompt = tok.sot_sequence(case["language"] if tok.multilingual else None, "transcribe")
    utt_ms, enc_ms, step_ms, run_ms = [], [], [], []
    dev_ms: list[float] = []         # device compute time per utterance (encoder + decoder)
    dev_peak, dev_memory = None, None
    tokens: list[list[int]] = []
    texts: list[str] = []
    for r in range(case["warmup"] + case["runs"]):
        timed = r >= case["warmup"]
        run_total = 0.0
        tokens, texts = [], []
        for a in audio:
            for s in pipe.sessions:
                s.reset_device_stats()
            t0 = time.perf_counter()
            feats = features_for(a, pipe.n_mels)
            te = time.perf_counter()
            cross = pipe.encode(feats)
            t_enc = (time.perf_counter() - te) * 1e3
            res = pipe.greedy(cross, prompt, case["max_new_tokens"], force_length=case["force"])
            total = (time.perf_counter() - t0) * 1e3
            run_total += total
            if timed:
                utt_ms.append(total)
                enc_ms.append(t_enc / feats.shape[0])
                step_ms.extend(res.step_ms[1:])  # single-token steps (the prompt step excluded)
                stats = [s.device_stats() for s in pipe.sessions]
                ms = [st["device_ms"] for st in stats if st.get("device_ms") is not None]
                if ms:
                    dev_ms.append(float(sum(ms)))
                peaks = [st["device_peak_mb"] for st in stats if st.get("device_peak_mb") is not None]
                if peaks:  # encoder + decoder sessions are alive together: their sum
                    dev_peak = max(dev_peak or 0.0, float(sum(peaks)))
                    dev_memory = next(st["device_memory"] for st in stats if st.get("device_memory"))
            flat = [t for w in res.tokens for t in w]
            tokens.append(flat)
            texts.append("".join(tok.decode(w) for w in res.tokens).strip())
        if timed:
            run_ms.append(run_total)
    if case["backend"] == "torch":
        device = pipe.encoder.device.type
    else:
        device = "cpu" if case["backend"] == "ort" else "cuda"
    agree = steps = 0
    if case.get("reference_tokens"):
        for a, ref in zip(audio, case["reference_tokens"]):
            if ref:
                got, n = pipe.teacher_forced_top1(pipe.encode(features_for(a, pipe.n_mels)),
                                                  prompt, [ref])
                agree, steps = agree + got, steps + n
    return {"utt_ms": utt_ms, "enc_ms": enc_ms, "step_ms": step_ms, "run_ms": run_ms,
            "tokens": tokens, "texts": texts, "device": device, "device_ms": dev_ms,
            "device_peak_mb": dev_peak, "device_memory": dev_memory,
            "top1_agreement": agree / steps if steps else None}


def _artifact_for(lw, precision: str, workdir: Path, calib_data=None) -> Path:
    """Reuse a cached export of this exact model and precision, or export it now."""
    from ..export.artifact import cached_export
    from ..export.whisper import export_whisper_model
    from ..export.whisper.plan import EXPORT_REVISION

    return cached_export(workdir / f"whisper-{lw.tag}-{precision}", "whisper", lw.source,
                         precision, EXPORT_REVISION,
                         lambda out: export_whisper_model(lw, precision, out, calib_data))


def bench_whisper(checkpoint=None, preset=None, backends=None, precisions=None, data=None,
                  runs=5, warmup=1, out=None, seed=0, limit=None, workdir=None, tokens=None,
                  language="en", isolate=True) -> list[dict]:
    from ..models.whisper.data import default_bench_data, load_folder
    from ..models.whisper.loading import load_whisper
    from ..runtime.session import check_backend, check_precision
    from .isolate import run_isolated

    backends = [b if b == "hf" else check_backend(b) for b in (backends or ["torch", "ort"])]
    precisions = [check_precision(p) for p in
                  (precisions or ["fp32", "fp16", "int8", "int8-cpu"])]
    if runs < 1 or warmup < 0:
        raise ToolkitError("--runs must be ≥ 1 and --warmup ≥ 0")
    utts = load_folder(data, limit) if data else default_bench_data()[:limit]
    lw = load_whisper(checkpoint, preset, seed)
    workdir = Path(workdir or "artifacts/bench")
    force = tokens is not None or lw.random_init
    max_new = tokens or (DEFAULT_FORCED_TOKENS if lw.random_init else 224)
    if tokens is not None and tokens < 1:
        raise ToolkitError("--tokens must be at least 1")
    cases, skipped = [], []
    # the fp32 PyTorch loop always runs (parity is measured against it), and so does Hugging
    # Face generate() — the stock PyTorch eager path users would otherwise run
    refs_first = [("torch", "fp32"), ("hf", "fp32")]
    wanted = refs_first + [(b, p) for b in backends for p in precisions
                           if (b, p) not in refs_first]
    for b, p in wanted:
        if p not in SUPPORTED[b]:
            skipped.append(f"{b}/{p}")
            continue
        cases.append((b, p))
    from ..models.whisper.audio import SAMPLE_RATE, load_audio

    audio_s = [len(load_audio(u.path)) / SAMPLE_RATE for u in utts]
    artifacts = {p: _artifact_for(lw, p, workdir) for p in
                 sorted({p for b, p in cases if b != "torch"})}
    base = {"checkpoint": checkpoint, "preset": lw.source.get("preset"), "seed": seed,
            "files": [str(u.path) for u in utts], "runs": runs, "warmup": warmup,
            "max_new_tokens": max_new, "force": force, "language": language}
    results = {}
    with Steps("whisper bench", total=len(cases)) as bar:
        for b, p in cases:
            case = {**base, "backend": b, "precision": p,
                    "artifact": case_artifact(artifacts, b, p),
                    "reference_tokens": results.get(("torch", "fp32"), {}).get("tokens")}
            res, peak = run_isolated(_run_case, case, isolate=isolate)
            res["peak_rss_mb"] = peak
            results[(b, p)] = res
            bar.advance(f"{b}/{p}: {np.median(res['run_ms']):.0f} ms per pass")
    refs = [u.text for u in utts]
    has_refs = all(r is not None for r in refs)
    ref_case = results[("torch", "fp32")]
    total_audio = float(sum(audio_s))
    env = environment()
    model_name = f"whisper-{lw.tag}"
    records = []
    for (b, p), res in results.items():
        rtf = float(np.median(res["run_ms"])) / 1e3 / total_audio
        rec = {
            "model": model_name, "family": "whisper", "backend": b, "precision": p,
            "shape": f"{len(utts)} utterances, {total_audio:.1f} s audio",
            **percentiles(res["utt_ms"]),
            "latency_ms_samples": [round(x, 3) for x in res["utt_ms"]],
            **percentiles(res["enc_ms"], "encoder_ms"),
            **percentiles(res["step_ms"], "decode_token_ms"),
            "run_ms_samples": [round(x, 3) for x in res["run_ms"]],
            "tokens_per_utterance": [len(t) for t in res["tokens"]],
            "forced_tokens": max_new if force else None,
            "rtf": rtf,
            "peak_rss_mb": round(res["peak_rss_mb"], 1),
            "device": res.get("device", "cpu"),
            "cer_vs_reference": corpus_cer(res["texts"], refs) if has_refs else None,
            "cer_vs_torch_fp32": corpus_cer(res["texts"], ref_case["texts"]),
            "token_exact_match_vs_torch_fp32": token_exact_match(res["tokens"], ref_case["tokens"]),
            "top1_agreement_teacher_forced_vs_torch_fp32": (
                1.0 if (b, p) == ("torch", "fp32") else res.get("top1_agreement")),
            "random_init": lw.random_init,
            "source": lw.source,
            "artifact": case_artifact(artifacts, b, p),
            "texts": res["texts"],
            "environment": env,
        }
        if res.get("device_ms"):  # GPU backends that can time the device (trt, torch on CUDA)
            rec.update(percentiles(res["device_ms"], "device_ms"))
            rec["device_ms_samples"] = [round(x, 3) for x in res["device_ms"]]
        if res.get("device_peak_mb") is not None:
            rec["device_peak_mb"] = round(res["device_peak_mb"], 1)
            rec["device_memory_counts"] = res["device_memory"]
        if lw.random_init or not has_refs:
            rec.update(quality_metric="cer_vs_torch_fp32_pp", quality_value=rec["cer_vs_torch_fp32"],
                       quality_reference="PyTorch fp32 transcripts of the same model and audio")
        else:
            rec.update(quality_metric="cer_pp", quality_value=rec["cer_vs_reference"],
                       quality_reference="reference transcripts of the data")
        records.append(rec)
    torch_rtf = next(r["rtf"] for r in records if (r["backend"], r["precision"]) == ("torch", "fp32"))
    hf_rtf = next(r["rtf"] for r in records if r["backend"] == "hf")
    ort_rtf = {r["precision"]: r["rtf"] for r in records if r["backend"] == "ort"}
    for r in records:
        r["speedup_vs_torch_fp32"] = torch_rtf / r["rtf"]
        r["speedup_vs_hf_generate"] = hf_rtf / r["rtf"]
        if r["backend"] == "ort" and "fp32" in ort_rtf:
            r["speedup_vs_ort_fp32"] = ort_rtf["fp32"] / r["rtf"]
    _print(records, lw, utts, total_audio, force, max_new, skipped)
    out = Path(out or "results/whisper-bench.json")
    jpath, cpath = write_records(records, out)
    console.print(f"records: {jpath} and {cpath}")
    return records


def case_artifact(artifacts: dict, b: str, p: str):
    """The exported artifact a case runs (PyTorch rows run the model itself)."""
    return str(artifacts[p]) if b not in ("torch", "hf") and p in artifacts else None


def _print(records, lw, utts, total_audio, force, max_new, skipped):
    from rich.console import Console

    cols = [("backend", "backend", ""), ("precision", "precision", ""),
            ("e2e p50 ms", "latency_ms_p50", ".1f"), ("p90", "latency_ms_p90", ".1f"),
            ("p99", "latency_ms_p99", ".1f"), ("encoder p50 ms", "encoder_ms_p50", ".1f"),
            ("ms/token p50", "decode_token_ms_p50", ".2f"), ("RTF", "rtf", ".4f"),
            ("vs torch", "speedup_vs_torch_fp32", ".2f"), ("vs HF", "speedup_vs_hf_generate", ".2f"),
            ("vs ort fp32", "speedup_vs_ort_fp32", ".2f"), ("peak RSS MB", "peak_rss_mb", ".0f")]
    has_dev_ms = any("device_ms_p50" in r for r in records)
    has_dev_mem = any("device_peak_mb" in r for r in records)
    if has_dev_ms:
        cols += [("device ms p50", "device_ms_p50", ".1f"), ("dev p90", "device_ms_p90", ".1f"),
                 ("dev p99", "device_ms_p99", ".1f")]
    if has_dev_mem:
        cols.append(("device peak MB", "device_peak_mb", ".0f"))
    cols += [("CER ref", "cer_vs_reference", ".2f"),
             ("CER vs torch fp32", "cer_vs_torch_fp32", ".2f"),
             ("token match", "token_exact_match_vs_torch_fp32", ".2f"),
            ("TF top-1", "top1_agreement_teacher_forced_vs_torch_fp32", ".3f")]
    weights = ("RANDOM INITIALISATION (seeded preset) — latency is real, transcripts are not; "
               "quality = parity with PyTorch fp32" if lw.random_init else
               f"weights: {lw.weights}")
    notes = [
        weights,
        f"data: {len(utts)} utterances, {total_audio:.1f} s of audio; "
        + (f"decode length forced to {max_new} text tokens on every backend" if force
           else "decoding stops at end-of-text (up to 224 tokens)"),
        "e2e = log-mel + encoder + greedy decode loop for one utterance (audio decoding excluded); "
        "p50/p90/p99 over utterances × runs",
        "RTF = processing time / audio duration (median pass over all utterances); vs torch = "
        "RTF(torch fp32) / RTF, vs HF = RTF(hf) / RTF",
        "backends: hf = Hugging Face generate() in PyTorch eager (the stock path); torch = this "
        "toolkit's decode loop over the exported modules in PyTorch eager; ort = onnxruntime CPU",
        "precisions: int8 = QDQ with symmetric int8 activations on the layers that fit the error "
        "budget (TensorRT form); int8-cpu = onnxruntime CPU form (encoder: dynamic int8, "
        "decoder: 8-bit block-wise weights with int8 compute; not buildable by TensorRT)",
        "ms/token = one single-token decoder step (KV cache fed back); encoder = one 30-s window",
        "CER in percentage points, case/punctuation-normalised; token match = share of "
        "utterances whose tokens equal PyTorch fp32's exactly",
        "TF top-1 = teacher-forced top-1 agreement: fed PyTorch fp32's tokens step by step, the "
        "share of steps whose argmax equals PyTorch fp32's next token",
        "peak RSS = peak resident memory of the process that ran the case (one process per case)",
    ]
    if has_dev_ms:
        notes.append("device ms = device compute time per utterance (encoder + every decoder "
                     "step), from CUDA events around each engine/module call, as trtexec's GPU "
                     "Compute Time; e2e − device = host + transfer overhead; — = backend cannot "
                     "time the device (ort-cuda/ort-trt, CPU)")
    if has_dev_mem:
        kinds = sorted({f"{r['backend']}: {r['device_memory_counts']}" for r in records
                        if r.get("device_memory_counts")})
        notes.append("device peak MB = peak device memory of encoder + decoder sessions; it "
                     "counts " + "; ".join(kinds))
    if skipped:
        notes.append(f"not run (precision not available on that backend here): {', '.join(skipped)}")
    print_table(records, cols, title=f"whisper-{lw.tag} bench", notes=notes,
                console=Console(width=200))
