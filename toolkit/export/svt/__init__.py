"""SVT export plan: one graph, ``backbone`` — video ``[B, 3, T, H, W]`` → CLS ``[B, D]`` with
batch, frames, height and width all dynamic (the positional embeddings are resized inside the
graph from the input shape). Validation and int8 calibration use the real clip
``shared/data/video/demo.mp4`` (or the videos of ``--calib-data``) at several T and sizes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ...errors import ToolkitError
from ...export.spec import ExportPlan, GraphSpec, Profile
from ...models.svt.model import SVTBackbone
from ...models.svt.video import clip_from_frames, decode_frames, list_videos

GRAPH = "backbone"
# Bumped whenever the exported graph changes for the same weights (bench re-exports cached
# artifacts whose revision differs). 2: attention sizes read off the qkv output (int8 fusion).
EXPORT_REVISION = 3  # 3: bilinear (TensorRT-parsable) spatial position resize
# (frames, size) pairs at which the exported graph is validated against PyTorch (no re-export).
VALIDATION_SHAPES = ((8, 224), (2, 96), (16, 96), (4, 160))
# Calibration: two full-size clips plus augmented crops at smaller sizes. ORT's MinMax calibrator
# holds every calibrated activation of every input in memory, so most inputs are small.
CALIB_SHAPES = ((8, 224, None, 0.0), (8, 224, (0.7, 0.35, 0.5), 0.3),
                (8, 112, (0.8, 0.6, 0.45), 0.1), (4, 160, (0.6, 0.5, 0.5), 0.5),
                (16, 96, None, 0.0), (2, 128, (0.9, 0.4, 0.6), 0.6))
TOLERANCE = {
    "fp32": {"rel_l2": 1e-4, "cosine": 0.99999},
    "fp16": {"rel_l2": 2e-2, "cosine": 0.999},
    "int8": {"rel_l2": 0.25, "cosine": 0.97},
}


def default_video() -> Path:
    env = os.environ.get("TOOLKIT_SHARED_DATA")
    root = Path(env) if env else Path(__file__).resolve().parents[3].parent / "shared" / "data"
    return root / "video" / "demo.mp4"


def _source_videos(data: str | Path | None) -> list[Path]:
    if data is not None:
        p = Path(data)
        return [p] if p.is_file() else list_videos(p)
    demo = default_video()
    if not demo.is_file():
        raise ToolkitError(f"no real video for validation/calibration: {demo} is missing; pass "
                           "--calib-data DIR_OF_VIDEOS")
    return [demo]


def real_feeds(data, shapes) -> list[dict]:
    """Feeds ``{"video": [1, 3, T, S, S]}`` cut from real videos at the given shapes/crops."""
    videos = _source_videos(data)
    decoded = [decode_frames(v) for v in videos]
    feeds = []
    for i, shape in enumerate(shapes):
        t, s = shape[0], shape[1]
        crop = shape[2] if len(shape) > 2 else None
        start = shape[3] if len(shape) > 3 else 0.0
        frames = decoded[i % len(decoded)]
        span = 1.0 - start
        if len(frames) * span < t:
            start, span = 0.0, 1.0
        clip = clip_from_frames(frames, t, s, start=start, span=span, crop=crop,
                                name=str(videos[i % len(videos)]))
        feeds.append({"video": clip[None]})
    return feeds


def backbone_spec(model: SVTBackbone) -> GraphSpec:
    cfg = model.cfg
    c = cfg.in_chans
    return GraphSpec(
        name=GRAPH, module=model, input_names=["video"], output_names=["cls"],
        dynamic_axes={"video": {0: "batch", 2: "frames", 3: "height", 4: "width"},
                      "cls": {0: "batch"}},
        # traced at a shape away from the native one, so nothing size-specific gets baked in
        example_inputs=lambda: (torch.randn(1, c, 4, 96, 128),),
        profiles={"video": Profile([1, c, 2, 96, 96], [1, c, 8, 224, 224],
                                   [4, c, 16, 224, 224])},
        tolerance=TOLERANCE)


def build_plan(model: SVTBackbone, source: dict, calib_data=None) -> ExportPlan:
    return ExportPlan(
        family="svt", graphs=[backbone_spec(model)],
        validation_feeds=lambda: {GRAPH: real_feeds(calib_data, VALIDATION_SHAPES)},
        calibration_feeds=lambda: {GRAPH: real_feeds(calib_data, CALIB_SHAPES)},
        source=source,
        model_config={"svt": model.cfg.to_dict(), "input": "video [B,3,T,H,W] ImageNet-normalised",
                      "output": "cls [B,D]", "patch_size": model.cfg.patch_size},
        revision=EXPORT_REVISION)


def export(checkpoint=None, preset=None, precision="fp32", out=None, calib_data=None,
           opset=17, seed=0) -> dict:
    from ...export.onnx import export_plan
    from ...models.svt.checkpoint import build

    model, source = build(checkpoint, preset, seed)
    if out is None:
        out = Path("artifacts") / f"svt-{preset or 'checkpoint'}-{precision}"
    return export_plan(build_plan(model, source, calib_data), precision, out, opset)


def onnx_shape_ops(path: str | Path) -> dict:
    """Counts of the ops through which the graph follows its input shape (Shape→Resize)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops = [n.op_type for n in m.graph.node]
    return {op: ops.count(op) for op in ("Shape", "Resize", "Reshape")}


__all__ = ["GRAPH", "build_plan", "export", "real_feeds", "backbone_spec", "np"]
