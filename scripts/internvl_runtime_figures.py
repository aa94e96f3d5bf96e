"""InternVL export/runtime figures on the internvl-tiny preset (docs/internvl.md, "Export and
runtime"): per backend/precision, the median over ``--runs`` captions of one 224 × 224 caption
image of vision ms (1 tile), prefill ms, ms per cached decoder step, and the whole caption
(greedy and beam 5, 30 new tokens). Run with OMP_NUM_THREADS=1:

    OMP_NUM_THREADS=1 .venv/bin/python scripts/internvl_runtime_figures.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from toolkit.export.internvl.plan import build_plan, caption_images
from toolkit.export.onnx import export_plan
from toolkit.models.internvl.loading import load_model
from toolkit.runtime.from_model import open_model
from toolkit.runtime.graphs import open_artifact
from toolkit.runtime.internvl.pipeline import from_graphs


def figures(pipe, image, runs: int) -> dict:
    rows = {"vision": [], "prefill": [], "step": [], "greedy": [], "beam5": []}
    pipe.caption([image])                      # warm-up
    for _ in range(runs):
        t0 = time.perf_counter()
        c = pipe.caption([image])[0]
        rows["greedy"].append((time.perf_counter() - t0) * 1e3)
        rows["vision"].append(c.vision_ms)
        rows["prefill"].append(c.prefill_ms)
        rows["step"].append(statistics.median(c.step_ms))
        t0 = time.perf_counter()
        pipe.caption([image], beam_size=5)
        rows["beam5"].append((time.perf_counter() - t0) * 1e3)
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--precisions", default="fp32,fp16,int8-cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(preset="internvl-tiny")
    image = caption_images("val")[0]
    print("| backend | precision | vision ms (1 tile) | prefill ms | ms/token | greedy 30 tok ms "
          "| beam 5 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- |")

    def row(backend, precision, pipe):
        f = figures(pipe, image, args.runs)
        print(f"| {backend} | {precision} | {f['vision']:.1f} | {f['prefill']:.1f} | "
              f"{f['step']:.2f} | {f['greedy']:.0f} | {f['beam5']:.0f} |", flush=True)

    row("torch", "fp32", from_graphs(open_model(loaded, build_plan, "torch", threads=1)))
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions.split(","):
            out = Path(tmp) / precision
            export_plan(build_plan(loaded), precision, out)
            row("ort", precision, from_graphs(open_artifact(out, "internvl", "ort", threads=1)))


if __name__ == "__main__":
    main()
