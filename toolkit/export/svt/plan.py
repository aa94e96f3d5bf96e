"""The SVT ExportPlan: validation and int8 calibration on the real clip
``shared/data/video/demo.mp4`` (or the videos of ``--calib-data``) at several T and sizes."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import ToolkitError
from ...models.base import LoadedModel
from ...models.svt.video import clip_from_frames, decode_frames, default_video, list_videos
from ..spec import ExportPlan
from .graphs import GRAPH, backbone_spec
from .revision import EXPORT_REVISION

# Bumped whenever the exported graph changes for the same weights (bench re-exports cached
# artifacts whose revision differs). 2: attention sizes read off the qkv output (int8 fusion).
# (frames, size) pairs at which the exported graph is validated against PyTorch (no re-export).
VALIDATION_SHAPES = ((8, 224), (2, 96), (16, 96), (4, 160))
# Calibration: two full-size clips plus augmented crops at smaller sizes. ORT's MinMax calibrator
# holds every calibrated activation of every input in memory, so most inputs are small.
CALIB_SHAPES = ((8, 224, None, 0.0), (8, 224, (0.7, 0.35, 0.5), 0.3),
                (8, 112, (0.8, 0.6, 0.45), 0.1), (4, 160, (0.6, 0.5, 0.5), 0.5),
                (16, 96, None, 0.0), (2, 128, (0.9, 0.4, 0.6), 0.6))


def _source_videos(data: str | Path | None) -> list[Path]:
    if data is not None:
        p = Path(data)
        return [p] if p.is_file() else list_videos(p)
    demo = default_video()
    if not demo.is_file():
        raise ToolkitError(f"no real video to validate the SVT export on: {demo} is missing; set "
                           "TOOLKIT_SHARED_DATA to the shared data folder, or export with "
                           "`toolkit export svt --calib-data DIR_OF_VIDEOS` and pass --artifact")
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


def build_plan(loaded: LoadedModel, calib_data=None) -> ExportPlan:
    model = loaded.model.eval()
    return ExportPlan(
        family="svt", graphs=[backbone_spec(model)],
        validation_feeds=lambda: {GRAPH: real_feeds(calib_data, VALIDATION_SHAPES)},
        calibration_feeds=lambda: {GRAPH: real_feeds(calib_data, CALIB_SHAPES)},
        source=loaded.source,
        model_config={"svt": model.cfg.to_dict(), "input": "video [B,3,T,H,W] ImageNet-normalised",
                      "output": "cls [B,D]", "patch_size": model.cfg.patch_size},
        revision=EXPORT_REVISION)
