"""``toolkit bench --model svt``: every backend × precision × clip shape on the same clips.

Per case (run in its own process, so peak RSS is per case): latency p50/p90/p99 of one clip
(batch 1), clips/s, peak RSS, embedding cosine vs fp32 PyTorch (mean and worst over the clip
set), nearest-neighbour retrieval agreement with fp32 PyTorch over the clip set, GMAC per clip
(counted layer by layer) and the achieved share of this machine's measured fp32 matmul peak.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ToolkitError
from ..progress import console, step

DEMO_CROPS = ((0.0, 1.0, None), (0.0, 0.5, (0.8, 0.4, 0.5)), (0.5, 0.5, (0.7, 0.6, 0.45)),
              (0.25, 0.5, None), (0.1, 0.8, (0.6, 0.5, 0.6)))
N_SYNTHETIC = 3


# -------------------------------------------------------------------------------------------
# clip set
# -------------------------------------------------------------------------------------------

def clip_set(data, frames: int, size: int, limit: int | None, tmp: Path) -> tuple[list, list, float]:
    """(clips [3,T,S,S], names, source duration s of the first clip). Real crops of the demo
    clip (or of the videos in ``data``) plus synthetic moving-shape clips."""
    from ..export.svt import default_video
    from ..models.svt.video import (clip_from_frames, decode_frames, list_videos,
                                    write_synthetic_clip)

    clips, names = [], []
    if data is not None:
        videos = list_videos(data)[: limit or None]
        for v in videos:
            clips.append(clip_from_frames(decode_frames(v), frames, size, name=str(v)))
            names.append(v.name)
        duration = _duration(videos[0])
    else:
        demo = default_video()
        if not demo.is_file():
            raise ToolkitError(f"bench needs real video: {demo} is missing; pass --data DIR")
        decoded = decode_frames(demo)
        for start, span, crop in DEMO_CROPS:
            clips.append(clip_from_frames(decoded, frames, size, start=start, span=span,
                                          crop=crop, name=str(demo)))
            names.append(f"demo[{start:.2f}+{span:.2f}{' crop' if crop else ''}]")
        for i in range(N_SYNTHETIC):
            p = write_synthetic_clip(tmp / f"synthetic{i}.mp4", n_frames=max(24, frames),
                                     size=64, seed=100 + i)
            clips.append(clip_from_frames(decode_frames(p), frames, size, name=str(p)))
            names.append(f"synthetic{i}")
        duration = _duration(demo)
        if limit:
            clips, names = clips[:limit], names[:limit]
    if len(clips) < 3:
        raise ToolkitError("retrieval agreement needs at least 3 clips; add videos to --data "
                           "or raise --limit")
    return clips, names, duration


def _duration(path) -> float:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        return float(c.duration or 0) / 1e6 or float(s.frames or 1) / float(s.average_rate or 25)


# -------------------------------------------------------------------------------------------
# one case, in a child process
# -------------------------------------------------------------------------------------------

def _case(kind: str, where: dict, precision: str, clips: list, runs: int, warmup: int) -> dict:
    from ..bench.timing import time_calls
    from ..runtime.session import TorchSession, open_onnx_session

    if kind == "torch":
        from ..models.svt.checkpoint import build

        model, _ = build(where.get("checkpoint"), where.get("preset"), where.get("seed", 0))
        sess = TorchSession(model, ["video"], ["cls"], precision=precision)
    else:
        sess = open_onnx_session(where["path"], kind, precision, manifest_graph=where.get("graph"))
    feeds = [{"video": c[None]} for c in clips]
    embs: list = [None] * len(feeds)
    i = {"n": 0}

    def one():
        k = i["n"] % len(feeds)
        out = sess.run(feeds[k])["cls"][0]
        if embs[k] is None and i["n"] >= warmup:
            embs[k] = out
        i["n"] += 1

    samples = time_calls(one, max(runs, len(feeds)), warmup)
    return {"samples": samples, "embeddings": np.stack(embs)}


# -------------------------------------------------------------------------------------------
# quality
# -------------------------------------------------------------------------------------------

def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_neighbours(embs: np.ndarray) -> np.ndarray:
    e = _unit(embs.astype(np.float64))
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def quality(embs: np.ndarray, ref: np.ndarray) -> dict:
    cos = np.sum(_unit(embs.astype(np.float64)) * _unit(ref.astype(np.float64)), axis=1)
    nn_a, nn_r = nearest_neighbours(embs), nearest_neighbours(ref)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "nn_agreement": float(np.mean(nn_a == nn_r)), "clips": int(len(embs))}


# -------------------------------------------------------------------------------------------
# artifacts
# -------------------------------------------------------------------------------------------

def ensure_artifact(workdir: Path, tag: str, precision: str, checkpoint, preset, seed,
                    source: dict) -> Path:
    """The exported artifact for this model and precision, re-used while its manifest's source
    (preset + seed, or checkpoint path + sha256) matches."""
    from ..export.artifact import cached_export
    from ..export.svt import EXPORT_REVISION, export

    return cached_export(
        workdir / f"svt-{tag}-{precision}", "svt", source, precision, EXPORT_REVISION,
        lambda out: export(checkpoint=checkpoint, preset=None if checkpoint else preset,
                           precision=precision, out=out, seed=seed))


# -------------------------------------------------------------------------------------------
# bench
# -------------------------------------------------------------------------------------------

def bench(checkpoint=None, preset=None, backends=None, precisions=None, data=None, runs=5,
          warmup=1, out=None, seed=0, limit=None, workdir=None, frames=None, size=None,
          isolate=True, **_ignored) -> list[dict]:
    from ..bench.isolate import run_isolated
    from ..bench.peak import measured_peak_gflops
    from ..bench.records import environment, write_records
    from ..bench.report import print_table
    from ..bench.timing import percentiles
    from ..export.manifest import load_manifest
    from ..models.svt.checkpoint import build
    from ..models.svt.model import gmac_per_clip
    from ..runtime.session import check_backend, check_precision

    backends = backends or ["torch", "ort"]
    precisions = precisions or ["fp32", "fp16", "int8", "int8-cpu"]
    for b in backends:
        check_backend(b)
    for p in precisions:
        check_precision(p)
    try:
        frame_list = [int(f) for f in (frames or ["8"])]
        size_list = [int(s) for s in (size or ["224"])]
    except ValueError:
        raise ToolkitError("--frames and --size take comma lists of integers, e.g. 8,16") from None
    if checkpoint is None and preset is None:
        preset = "vit-base"
    model, source = build(checkpoint, preset, seed)
    cfg = model.cfg
    del model
    for s in size_list:
        if s < cfg.patch_size or s % cfg.patch_size:
            raise ToolkitError(f"--size {s} is not a multiple of the {cfg.patch_size}-px patch")
    random_init = bool(source.get("random_init"))
    tag = preset if checkpoint is None else Path(checkpoint).name
    model_name = f"svt-{tag}"
    workdir = Path(workdir or "artifacts/bench")
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(out or "results/svt-bench.json")
    where_torch = {"checkpoint": checkpoint, "preset": preset, "seed": seed}

    cases = []
    skipped = []
    for b in backends:
        for p in precisions:
            if b == "torch" and p.startswith("int8"):
                skipped.append(f"torch×{p} (int8 runs as a QDQ graph on onnxruntime/TensorRT)")
                continue
            if b == "torch" and p == "fp16":
                try:
                    import torch

                    has_cuda = torch.cuda.is_available()
                except Exception:  # noqa: BLE001
                    has_cuda = False
                if not has_cuda:
                    skipped.append("torch×fp16 (PyTorch CPU fp16 kernels are reference-only; "
                                   "fp16 is measured on onnxruntime)")
                    continue
            cases.append((b, p))
    artifacts = {}
    for b, p in cases:
        if b != "torch" and p not in artifacts:
            artifacts[p] = ensure_artifact(workdir, tag, p, checkpoint, preset, seed, source)

    with step("measuring this machine's fp32 matmul peak"):
        peak = measured_peak_gflops()
    env = environment()
    records = []
    tmp = Path(tempfile.mkdtemp(prefix="svt-bench-"))
    for t in frame_list:
        for s in size_list:
            clips, names, duration = clip_set(data, t, s, limit, tmp)
            gmac = gmac_per_clip(cfg, t, s)
            # reference: fp32 PyTorch on the same clips
            with step(f"fp32 PyTorch reference, {t}×{s}, {len(clips)} clips"):
                ref_res, ref_peak = run_isolated(_case, "torch", where_torch, "fp32", clips,
                                                 runs, warmup, isolate=isolate)
            ref = ref_res["embeddings"]
            for b, p in cases:
                if b == "torch" and p == "fp32":
                    res, peak_mb = ref_res, ref_peak
                else:
                    where = where_torch
                    if b != "torch":
                        man = load_manifest(artifacts[p], family="svt", verify_hashes=False)
                        g = man["graphs"]["backbone"]
                        where = {"path": str(artifacts[p] / g["file"]), "graph": g}
                    with step(f"{b} {p} {t}×{s}"):
                        res, peak_mb = run_isolated(_case, b, where, p, clips, runs, warmup,
                                                    isolate=isolate)
                lat = percentiles(res["samples"])
                q = quality(res["embeddings"], ref)
                p50_s = lat["latency_ms_p50"] / 1e3
                rec = {
                    "model": model_name, "family": "svt", "backend": b, "precision": p,
                    "frames": t, "size_px": s, "shape": f"{t}x{s}", "batch": 1,
                    **lat,
                    "rtf": p50_s / duration if duration else None,
                    "source_video_s": duration,
                    "clips_per_s": 1.0 / p50_s,
                    "peak_rss_mb": peak_mb,
                    "gmac_per_clip": gmac,
                    "achieved_gflops": 2 * gmac / p50_s,
                    "machine_peak_gflops": peak,
                    "share_of_peak": 2 * gmac / p50_s / peak,
                    "quality_metric": "embedding_cosine_mean",
                    "quality_value": q["cosine_mean"],
                    "quality_reference": "fp32 PyTorch (torch backend) on the same clips",
                    "cosine_min": q["cosine_min"],
                    "nn_retrieval_agreement": q["nn_agreement"],
                    "clip_set": names,
                    "random_init": random_init,
                    "source": source,
                    "latency_ms_samples": res["samples"],
                    "environment": env,
                }
                if b != "torch":
                    rec["artifact"] = str(artifacts[p])
                records.append(rec)
    # ratios, within each shape
    for r in records:
        same = {(x["backend"], x["precision"]): x for x in records if x["shape"] == r["shape"]}
        tf = same.get(("torch", "fp32"))
        of = same.get(("ort", "fp32"))
        r["speedup_vs_torch_fp32"] = tf["latency_ms_p50"] / r["latency_ms_p50"] if tf else None
        r["clips_per_s_vs_ort_fp32"] = r["clips_per_s"] / of["clips_per_s"] if of else None
    with step("re-measuring the fp32 matmul peak"):
        peak = max(peak, measured_peak_gflops())   # best of before/after: contention lowers it
    for r in records:
        r["machine_peak_gflops"] = peak
        r["share_of_peak"] = r["achieved_gflops"] / peak
    json_path, csv_path = write_records(records, out)

    cols = [("backend", "backend", ""), ("precision", "precision", ""), ("shape", "shape", ""),
            ("p50 ms", "latency_ms_p50", ".1f"), ("p90 ms", "latency_ms_p90", ".1f"),
            ("p99 ms", "latency_ms_p99", ".1f"), ("clips/s", "clips_per_s", ".3f"),
            ("×torch", "speedup_vs_torch_fp32", ".2f"), ("×ort fp32", "clips_per_s_vs_ort_fp32", ".2f"),
            ("peak MB", "peak_rss_mb", ".0f"), ("cos mean", "quality_value", ".5f"),
            ("cos min", "cosine_min", ".5f"), ("NN agree", "nn_retrieval_agreement", ".2f"),
            ("GMAC", "gmac_per_clip", ".3g"), ("% peak", "share_of_peak", ".1%")]
    notes = [
        f"{'RANDOM-INIT WEIGHTS (preset ' + str(preset) + ', seed ' + str(seed) + ') — speed is real, quality parity is between backends only, embeddings carry no meaning. ' if random_init else ''}"
        f"Model {model_name}; {env['threads']} threads; batch 1; {max(runs, len(clips))} timed runs "
        f"(cycling over the {len(clips)}-clip set) after {warmup} warm-up per case.",
        "latency: wall-clock per clip through the backbone (decode excluded); clips/s = 1/p50; "
        "×torch = torch fp32 p50 / this p50; ×ort fp32 = clips/s ÷ ort fp32 clips/s.",
        "cos mean/min: cosine of the CLS embedding vs fp32 PyTorch over the clip set; NN agree: share "
        "of clips whose nearest neighbour (cosine, excluding itself) is the same as under fp32 PyTorch.",
        f"GMAC: multiply-accumulates per clip counted layer by layer; % peak = 2·GMAC/p50 ÷ this "
        f"machine's measured fp32 matmul peak ({peak:.0f} GFLOP/s, best of before/after the cases). peak MB: VmHWM of the case's own process.",
        f"RTF = p50 / duration of the source video the frames are sampled from ({duration:.1f} s).",
    ] + [f"skipped: {s}" for s in skipped] + [f"records: {json_path} (+ {csv_path.name})"]
    from rich.console import Console

    wide = console if console.is_terminal else Console(stderr=True, highlight=False, width=170)
    print_table(records, cols, title=f"SVT bench — {model_name}"
                f"{' (random init)' if random_init else ''}", notes=notes, console=wide)
    summary = summarize(records)
    for line in summary:
        wide.print(line)
    return records


def summarize(records: list[dict]) -> list[str]:
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in records):
        same = {(x["backend"], x["precision"]): x for x in records if x["shape"] == shape}
        parts = [f"{b}/{p} {x['latency_ms_p50']:.0f} ms ({x['clips_per_s']:.3f} clips/s)"
                 for (b, p), x in same.items()]
        lines.append(f"{shape}: " + "; ".join(parts))
        of, tf = same.get(("ort", "fp32")), same.get(("torch", "fp32"))
        if of and tf:
            lines.append(f"  ort fp32 vs torch fp32: {of['speedup_vs_torch_fp32']:.2f}× (target ≥1.2×)")
        for p8 in ("int8", "int8-cpu"):
            i8 = same.get(("ort", p8))
            if i8 and of:
                lines.append(f"  {p8} vs ort fp32: {i8['clips_per_s_vs_ort_fp32']:.2f}× clips/s "
                             f"(target ≥1.5×), cosine vs fp32 torch {i8['quality_value']:.5f} "
                             "(target ≥0.99)")
        h = same.get(("ort", "fp16"))
        if h:
            lines.append(f"  fp16 cosine vs fp32 torch {h['quality_value']:.6f} (target ≥0.999)")
    return lines


__all__ = ["bench", "quality", "nearest_neighbours", "clip_set", "json"]
