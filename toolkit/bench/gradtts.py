"""``toolkit bench --model gradtts``: every backend × precision × step count, side by side.

Per case (one spawned process each, so peak RSS is per backend) every shipped sentence is
synthesized ``warmup + runs`` times with identical noise and identical durations (the fp32
PyTorch encoder's), so the mels of all backends are directly comparable.

Definitions (printed under the table):
- acoustic RTF = (encoder + N U-Net steps + length regulation) wall time / audio duration,
  audio duration = frames × 256 / 22 050 s — what the paper reports;
- end-to-end RTF = acoustic + Griffin-Lim vocoder (32 iterations, same for every backend);
- step latency = one U-Net evaluation; step share of peak = U-Net FLOPs per step (counted with
  torch's FLOP counter: convolutions and matmuls) / step time / the machine's fp32 peak (a
  2048³ matmul timed in the same run);
- mel L1 / rel L2 = final mel vs fp32 PyTorch on identical noise and durations.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from ..errors import ToolkitError
from ..progress import Steps, console, step

DEFAULT_STEPS = [10]
TEMPERATURE = 1.5


def _parse_steps(steps) -> list[int]:
    if not steps:
        return list(DEFAULT_STEPS)
    out = []
    for s in steps:
        try:
            n = int(s)
        except (TypeError, ValueError):
            raise ToolkitError(f"--steps takes a comma list of integers, e.g. 1,4,10 (got {s!r})") from None
        if n < 1:
            raise ToolkitError(f"--steps must be at least 1 (got {n})")
        out.append(n)
    return out


def _sentences(data, limit):
    from ..runtime.gradtts.sentences import SENTENCES

    if data is not None:
        from ..models.gradtts.data import read_metadata

        texts = [t for _, t in read_metadata(data)]
    else:
        texts = list(SENTENCES)
    return texts[:limit] if limit else texts


def _run_case(case: dict) -> dict:
    """One backend × precision, every step count and sentence (runs in a child process)."""
    import torch

    from ..bench.timing import percentiles
    from ..runtime.gradtts.pipeline import load_pipeline, make_noise

    if case["backend"] == "torch":
        pipe = load_pipeline(checkpoint=case["checkpoint"], preset=case["preset"],
                             backend="torch", seed=case["seed"], precision=case["precision"])
    else:
        pipe = load_pipeline(artifact=case["artifact"], backend=case["backend"])
    out = {}
    for n in case["steps"]:
        utt_ms, rtfs, steps_ms, enc_ms, mels = [], [], [], [], []
        for k, (text, dur) in enumerate(zip(case["sentences"], case["durations"])):
            noise = make_noise(int(sum(dur)), 80, case["seed"] + k)
            for r in range(case["warmup"] + case["runs"]):
                t0 = time.perf_counter()
                syn = pipe.synthesize(text, steps=n, temperature=TEMPERATURE, noise=noise,
                                      durations=np.asarray(dur))
                ms = (time.perf_counter() - t0) * 1e3
                if r == 0:
                    mels.append(syn.mel)
                if r >= case["warmup"]:
                    utt_ms.append(ms)
                    rtfs.append(ms / 1e3 / syn.audio_seconds)
                    steps_ms.extend(syn.step_ms)
                    enc_ms.append(syn.encoder_ms)
        out[n] = {"utt_ms": utt_ms, "rtf": rtfs, "step_ms": steps_ms, "enc_ms": enc_ms,
                  "mels": mels}
    pipe.close()
    del torch
    return out


def spectral_distortion_db(mel: np.ndarray, ref: np.ndarray) -> float:
    """Spectral distortion (dB) between two natural-log mel spectrograms (n_mels, frames):
    per frame the RMS over bins of 20·log10 magnitude differences, averaged over frames."""
    db = (20.0 / np.log(10.0)) * (np.asarray(mel, np.float64) - np.asarray(ref, np.float64))
    return float(np.mean(np.sqrt(np.mean(db ** 2, axis=0)))) if db.size else 0.0


def _ensure_artifact(model, source, precision, workdir: Path, tag: str, seed: int) -> Path:
    from ..export.artifact import cached_export
    from ..export.gradtts import EXPORT_REVISION, build_plan
    from ..export.onnx import export_plan

    return cached_export(workdir / f"gradtts-{tag}-{precision}", "gradtts", source, precision,
                         EXPORT_REVISION,
                         lambda out: export_plan(build_plan(model, source, seed=seed),
                                                 precision, out))


def unet_gflop(model, frames: int) -> float:
    """FLOPs (multiply-add = 2) of one U-Net evaluation at ``frames`` padded frames."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    n = model.config.n_feats
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.decoder(torch.zeros(1, n, frames), torch.ones(1, 1, frames), torch.zeros(1, n, frames),
                      torch.tensor([0.5]))
    return fc.get_total_flops() / 1e9


def bench(checkpoint=None, preset=None, backends=None, precisions=None, data=None, runs=5,
          warmup=1, out=None, seed=0, limit=None, workdir=None, steps=None, **_) -> list[dict]:
    from ..bench.isolate import run_isolated
    from ..bench.peak import measured_peak_gflops
    from ..bench.records import environment, write_records
    from ..bench.report import print_table
    from ..bench.timing import percentiles
    from ..export.spec import rel_l2
    from ..models.gradtts.audio import VOCODER, griffin_lim
    from ..models.gradtts.checkpoint import resolve_model
    from ..models.gradtts.model import fix_len
    from ..runtime.gradtts.pipeline import frames_to_seconds, load_pipeline, make_noise
    from ..runtime.session import check_backend, check_precision

    step_counts = _parse_steps(steps)
    backends = [check_backend(b) for b in (backends or ["torch", "ort"])]
    precisions = [check_precision(p) for p in (precisions or ["fp32", "fp16", "int8", "int8-cpu"])]
    if runs < 1:
        raise ToolkitError(f"--runs must be at least 1 (got {runs})")
    model, source = resolve_model(checkpoint, preset, seed)
    preset_name = source.get("preset") or Path(checkpoint).name
    tag = preset_name + (f"-s{seed}" if source["random_init"] else
                         "-" + source["sha256"][:10])
    workdir = Path(workdir or Path("artifacts") / "bench")
    workdir.mkdir(parents=True, exist_ok=True)
    texts = _sentences(data, limit)
    if source["random_init"]:
        console.print("[yellow]note:[/] random-initialised weights (preset "
                      f"{preset_name!r}) — timings are real, the audio is noise; quality "
                      "columns compare backends, not speech quality")

    # reference: fp32 PyTorch, durations fixed here for every backend
    with step("fp32 PyTorch reference durations"):
        ref_pipe = load_pipeline(checkpoint=checkpoint, preset=preset, backend="torch", seed=seed)
        durations = [ref_pipe.encode(t)[2].tolist() for t in texts]
        ref_pipe.close()
    frames = [int(sum(d)) for d in durations]
    audio_s = [frames_to_seconds(f) for f in frames]
    gflop = [unet_gflop(model, fix_len(f)) for f in frames]
    with step("vocoder (Griffin-Lim) timing"):
        voc_ms = []
        for f in frames:
            t0 = time.perf_counter()
            griffin_lim(np.zeros((80, f), dtype=np.float32) - 5.0)
            voc_ms.append((time.perf_counter() - t0) * 1e3)
    with step("measuring the machine's fp32 peak (2048³ matmul)"):
        peak = measured_peak_gflops()
    console.print(f"fp32 peak {peak:.1f} GFLOP/s; U-Net {np.mean(gflop):.2f} GFLOP/step at "
                  f"{np.mean(frames):.0f} frames (mean); sentences: {len(texts)}, audio "
                  f"{sum(audio_s):.2f} s")

    cases = []
    for b in backends:
        for p in precisions:
            if b == "torch" and p != "fp32":
                console.print(f"[dim]skip torch {p}: the torch backend is the fp32 eager "
                              "reference on CPU (int8/fp16 run on onnxruntime/TensorRT)[/]")
                continue
            cases.append((b, p))
    artifacts = {}
    for p in sorted({p for b, p in cases if b != "torch"}):
        artifacts[p] = _ensure_artifact(model, source, p, workdir, tag, seed)
    if ("torch", "fp32") not in cases:
        cases.insert(0, ("torch", "fp32"))  # the quality reference is always run

    env = environment()
    results = {}
    with Steps("bench gradtts", total=len(cases)) as bar:
        for b, p in cases:
            case = {"backend": b, "precision": p, "artifact": str(artifacts.get(p, "")),
                    "checkpoint": checkpoint, "preset": preset, "seed": seed,
                    "sentences": texts, "durations": durations, "steps": step_counts,
                    "runs": runs, "warmup": warmup}
            res, rss = run_isolated(_run_case, case)
            results[(b, p)] = (res, rss)
            bar.advance(f"{b} {p}")

    records = []
    ref_res = results[("torch", "fp32")][0]
    for (b, p), (res, rss) in results.items():
        for n in step_counts:
            r = res[n]
            ref_mels = ref_res[n]["mels"]
            l1 = float(np.mean([np.mean(np.abs(m - rm)) for m, rm in zip(r["mels"], ref_mels)]))
            rl2 = float(max(rel_l2(m, rm) for m, rm in zip(r["mels"], ref_mels)))
            sd = float(np.mean([spectral_distortion_db(m, rm) for m, rm in zip(r["mels"], ref_mels)]))
            # per-utterance RTFs in the order they were run: sentence-major, runs inner
            voc = np.repeat(np.asarray(voc_ms), runs)
            aud = np.repeat(np.asarray(audio_s), runs)
            rtf_e2e = (np.asarray(r["utt_ms"]) + voc) / 1e3 / aud
            steps_total_ms = np.asarray(r["step_ms"]).reshape(len(texts), runs, n).sum(axis=(1, 2))
            flop_rate = sum(g * n * runs for g in gflop) / (steps_total_ms.sum() / 1e3)
            rec = {
                "model": "gradtts", "preset": preset_name, "backend": b, "precision": p,
                "steps": n, "sentences": len(texts), "frames_mean": float(np.mean(frames)),
                "audio_s_total": float(sum(audio_s)),
                **percentiles(r["utt_ms"]),
                "rtf": float(np.median(r["rtf"])),
                "rtf_e2e": float(np.median(rtf_e2e)),
                **percentiles(r["step_ms"], prefix="step_latency_ms"),
                **percentiles(r["enc_ms"], prefix="encoder_latency_ms"),
                "vocoder": VOCODER, "vocoder_ms_mean": float(np.mean(voc_ms)),
                "unet_gflop_per_step_mean": float(np.mean(gflop)),
                "unet_gflops_achieved": float(flop_rate),
                "peak_gflops_fp32": float(peak),
                "step_share_of_peak": float(flop_rate / peak),
                "quality_metric": "mel_rel_l2", "quality_value": rl2, "mel_l1": l1,
                "spectral_distortion_db": sd,
                "quality_reference": "torch fp32, identical noise, durations and temperature "
                                     f"{TEMPERATURE}",
                "random_init": bool(source["random_init"]), "peak_rss_mb": float(rss),
                "latency_ms_samples": r["utt_ms"], "step_latency_ms_samples": r["step_ms"],
                "environment": env, "source": source,
            }
            records.append(rec)
    for n in step_counts:
        base = next(r for r in records if r["steps"] == n and r["backend"] == "torch")
        for r in records:
            if r["steps"] == n:
                r["speedup_vs_torch_fp32"] = base["latency_ms_p50"] / r["latency_ms_p50"]

    cols = [("backend", "backend", ""), ("precision", "precision", ""), ("steps", "steps", "d"),
            ("utt p50 ms", "latency_ms_p50", ".0f"), ("p90", "latency_ms_p90", ".0f"),
            ("p99", "latency_ms_p99", ".0f"), ("step p50 ms", "step_latency_ms_p50", ".1f"),
            ("step p90", "step_latency_ms_p90", ".1f"), ("step p99", "step_latency_ms_p99", ".1f"),
            ("RTF", "rtf", ".3f"), ("RTF e2e", "rtf_e2e", ".3f"),
            ("× torch", "speedup_vs_torch_fp32", ".2f"), ("% peak", "step_share_pct", ".1f"),
            ("mel rel L2", "quality_value", ".2e"), ("mel L1", "mel_l1", ".2e"),
            ("SD dB", "spectral_distortion_db", ".3f"),
            ("RSS MB", "peak_rss_mb", ".0f")]
    for r in records:
        r["step_share_pct"] = 100 * r["step_share_of_peak"]
    notes = [
        "RTF = (encoder + N U-Net steps) / audio duration (frames×256/22050 s), median over "
        "utterances × runs — the paper's acoustic RTF (GPU: 0.033 @10 steps, 0.363 @100).",
        f"RTF e2e adds the {VOCODER} vocoder (32 iterations, CPU, {np.mean(voc_ms):.0f} ms mean "
        "per utterance, the same for every backend).",
        f"% peak = U-Net FLOPs per step (torch FLOP counter, {np.mean(gflop):.2f} GFLOP mean) / "
        f"step time / measured fp32 peak {peak:.1f} GFLOP/s (2048³ matmul, this run).",
        "mel rel L2 / L1: final mel vs torch fp32 on identical noise, durations, temperature "
        f"{TEMPERATURE} (worst sentence / mean). SD = spectral distortion of the final log-mel "
        "vs torch fp32: per frame the RMS over mel bins of 20·log10 magnitude differences, "
        "averaged over frames and sentences (dB; meaningful for trained checkpoints).",
        f"{len(texts)} sentences, {runs} timed runs + {warmup} warm-up each; "
        f"{env['threads']} threads; peak RSS per case (spawned process).",
    ]
    if source["random_init"]:
        notes.insert(0, f"RANDOM INIT: preset {preset_name!r} with seeded random weights — "
                        "speed is real, the audio is not speech.")
    from rich.console import Console

    print_table(records, cols, f"Grad-TTS ({preset_name}) — backends × precisions × steps",
                notes, console=Console(width=200))
    out = Path(out or Path("results") / "gradtts-bench.json")
    j, c = write_records(records, out)
    console.print(f"[green]✓[/] wrote {j} and {c}")
    return records
