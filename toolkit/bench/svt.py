"""``toolkit bench --model svt``: what is SVT-specific in the benchmark.

One shape per clip shape (frames × size). Per clip (batch 1): latency through the backbone,
clips/s, embedding cosine vs fp32 PyTorch (mean and worst over the clip set), nearest-neighbour
retrieval agreement with fp32 PyTorch over the clip set, GMAC per clip (counted layer by layer)
and the achieved share of this machine's measured fp32 matmul peak.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import numpy as np

from ..core.errors import ToolkitError, check_positive
from ..core.progress import step
from ..models.svt.model import gmac_per_clip
from ..models.svt.video import (
    clip_from_frames,
    decode_frames,
    default_video,
    list_videos,
    write_synthetic_clip,
)
from .harness import BenchSpec, Workload
from .peak import measured_peak_gflops
from .plots import Panel

DEMO_CROPS = ((0.0, 1.0, None), (0.0, 0.5, (0.8, 0.4, 0.5)), (0.5, 0.5, (0.7, 0.6, 0.45)),
              (0.25, 0.5, None), (0.1, 0.8, (0.6, 0.5, 0.6)))
N_SYNTHETIC = 3


def clip_set(data, frames: int, size: int, limit: int | None,
             tmp: Path) -> tuple[list, list, float]:
    """(clips [3,T,S,S], names, source duration s of the first clip). Real crops of the demo
    clip (or of the videos in ``data``) plus synthetic moving-shape clips."""
    clips, names = [], []
    if data is not None:
        videos = list_videos(data)[: limit or None]
        for v in videos:
            clips.append(clip_from_frames(decode_frames(v), frames, size, name=str(v)))
            names.append(v.name)
        duration = video_seconds(videos[0])
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
        duration = video_seconds(demo)
        if limit:
            clips, names = clips[:limit], names[:limit]
    if len(clips) < 3:
        raise ToolkitError("retrieval agreement needs at least 3 clips; add videos to --data "
                           "or raise --limit")
    return clips, names, duration


def video_seconds(path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if s.duration and s.time_base:
            return float(s.duration * s.time_base)
        return float(c.duration or 0) / 1e6 or float(s.frames or 1) / float(s.average_rate or 25)


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


def _int_list(values, default, name) -> list[int]:
    try:
        return [int(v) for v in (values or default)]
    except ValueError:
        raise ToolkitError(f"--{name} takes a comma list of integers, e.g. 8,16") from None


class SVTBench(BenchSpec):
    family = "svt"
    mode = "cycle"
    torch_fp16_on_cuda = True
    ratios = (("torch", "fp32"), ("ort", "fp32"))
    fields = ("frames", "size_px", "batch", "source_video_s", "clips_per_s", "gmac_per_clip",
              "achieved_gflops", "machine_peak_gflops", "share_of_peak", "cosine_min",
              "nn_retrieval_agreement", "clip_set")
    columns = (("clips/s", "clips_per_s", ".3f"), ("GMAC", "gmac_per_clip", ".3g"),
               ("% peak", "share_of_peak", ".1%"))
    quality_header = "cos mean"
    quality_format = ".5f"
    quality_columns = (("cos min", "cosine_min", ".5f"),
                       ("NN agree", "nn_retrieval_agreement", ".2f"))
    plot_panels = (Panel("clips_per_s", "clips / s (batch 1)"),
                   Panel("quality_value", "CLS cosine vs torch fp32"))
    default_out = "results/svt-bench.json"

    def check_options(self, options: dict) -> dict:
        frames = _int_list(options.get("frames"), ["8"], "frames")
        size = _int_list(options.get("size"), ["224"], "size")
        for f in frames:
            check_positive(frames=f)
        for s in size:
            check_positive(size=s)
        return {"frames": frames, "size": size}

    def workloads(self, family, loaded, data, limit, options):
        cfg = loaded.model.cfg
        for s in options["size"]:
            if s < cfg.patch_size or s % cfg.patch_size:
                raise ToolkitError(f"--size {s} is not a multiple of the {cfg.patch_size}-px "
                                   "patch")
        with step("measuring this machine's fp32 matmul peak"):
            self.peak = measured_peak_gflops()
        shapes = []
        with tempfile.TemporaryDirectory(prefix="svt-bench-") as tmp:
            for t in options["frames"]:
                for s in options["size"]:
                    clips, names, duration = clip_set(data, t, s, limit, Path(tmp))
                    shapes.append(Workload(
                        label=f"{t}x{s}", items=clips,
                        fields={"frames": t, "size_px": s, "batch": 1, "source_video_s": duration,
                                "clip_set": names},
                        info={"gmac": gmac_per_clip(cfg, t, s), "duration": duration}))
        return shapes

    def work(self, runner, clip, shape, case):
        return runner.embed_clip(clip[None])[0], {}

    def figures(self, shape, result, reference, options):
        p50_s = float(np.median(result["latency_ms"])) / 1e3
        q = quality(np.stack(result["outputs"]), np.stack(reference["outputs"]))
        gmac, duration = shape.info["gmac"], shape.info["duration"]
        return {"rtf": p50_s / duration if duration else None, "clips_per_s": 1.0 / p50_s,
                "gmac_per_clip": gmac, "achieved_gflops": 2 * gmac / p50_s,
                "machine_peak_gflops": self.peak, "share_of_peak": 2 * gmac / p50_s / self.peak,
                "quality_metric": "embedding_cosine_mean", "quality_value": q["cosine_mean"],
                "quality_reference": "fp32 PyTorch (torch backend) on the same clips",
                "cosine_min": q["cosine_min"], "nn_retrieval_agreement": q["nn_agreement"]}

    def notes(self, records, loaded, shapes, options, env):
        duration = shapes[0].info["duration"]
        return [
            *([f"{loaded.weights}: speed is real, quality parity is between backends only, "
               "embeddings carry no meaning."] if loaded.random_init
              else [f"weights: {loaded.weights}"]),
            "latency: wall-clock per clip through the backbone (decode excluded), batch 1; "
            "clips/s = 1/p50.",
            "cos mean/min: cosine of the CLS embedding vs fp32 PyTorch over the clip set; NN "
            "agree: share of clips whose nearest neighbour (cosine, excluding itself) is the same "
            "as under fp32 PyTorch.",
            f"GMAC: multiply-accumulates per clip counted layer by layer; % peak = 2·GMAC/p50 ÷ "
            f"this machine's measured fp32 matmul peak ({self.peak:.0f} GFLOP/s, best of before/"
            "after the cases).",
            f"RTF = p50 / duration of the source video the frames are sampled from "
            f"({duration:.1f} s).",
        ]

    def after_cases(self):
        with step("re-measuring the fp32 matmul peak"):  # contention lowers it: best of both
            self.peak = max(self.peak, measured_peak_gflops())

    def finish(self, records):
        return summarize(records)


def summarize(records: list[dict]) -> list[str]:
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in records):
        same = {(x["backend"], x["precision"]): x for x in records
                if x["shape"] == shape and not x["error"]}
        parts = [f"{b}/{p} {x['latency_ms_p50']:.0f} ms ({x['clips_per_s']:.3f} clips/s)"
                 for (b, p), x in same.items()]
        lines.append(f"{shape}: " + "; ".join(parts))
        of, tf = same.get(("ort", "fp32")), same.get(("torch", "fp32"))
        if of and tf:
            lines.append(f"  ort fp32 vs torch fp32: {of['speedup_vs_torch_fp32']:.2f}× "
                         "(target ≥1.2×)")
        for p8 in ("int8", "int8-cpu"):
            i8 = same.get(("ort", p8))
            if i8 and of:
                lines.append(f"  {p8} vs ort fp32: {i8['speedup_vs_ort_fp32']:.2f}× clips/s "
                             f"(target ≥1.5×), cosine vs fp32 torch {i8['quality_value']:.5f} "
                             "(target ≥0.99)")
        h = same.get(("ort", "fp16"))
        if h:
            lines.append(f"  fp16 cosine vs fp32 torch {h['quality_value']:.6f} (target ≥0.999)")
    return lines


SPEC = SVTBench()
