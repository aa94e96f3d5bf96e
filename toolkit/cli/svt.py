"""SVT's own command: ``toolkit embed``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .. import registry
from ..core.files import check_input_file
from .base import Artifact, Backend, Checkpoint, Preset, Seed, note, one_line_errors, out
from .options import number


@one_line_errors
def embed(
    videos: Annotated[list[Path], typer.Argument(help="Video files (mp4, mkv, avi, webm, mov, "
                                                      "...).")],
    artifact: Artifact = None,
    checkpoint: Checkpoint = None,
    preset: Preset = None,
    backend: Backend = "torch",
    frames: Annotated[int, number("--frames", "Frames sampled uniformly from each video.", 1,
                                  64)] = 8,
    size: Annotated[int, number("--size", "Clip size in px (multiple of 16).", 16, 1024)] = 224,
    slow_fast: Annotated[bool, typer.Option("--slow-fast", help=(
        "SVT slow-fast inference: frames/2 at full size + 2×frames at half size, embeddings "
        "averaged."))] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per video with "
                                                         "the full embedding.")] = False,
    seed: Seed = 0,
):
    """Embed videos with the SVT backbone (CLS feature), on any backend."""
    for path in videos:                 # before any model is loaded
        check_input_file(path, "video")
    pipe = registry.get("svt").open_pipeline(artifact=artifact, checkpoint=checkpoint,
                                             preset=preset, backend=backend, seed=seed)
    for path in videos:
        r = pipe.embed(path, n_frames=frames, size=size, slow_fast=slow_fast)
        emb = r.pop("embedding")
        if as_json:
            print(json.dumps({**r, "backend": backend, "random_init": pipe.random_init,
                              "embedding": [round(float(v), 6) for v in emb]}))
        else:
            head = ", ".join(f"{v:+.4f}" for v in emb[:6])
            out.print(f"[bold]{escape(str(path))}[/]: dim {r['dim']}, views {r['views']}, "
                      f"‖e‖={float((emb ** 2).sum() ** 0.5):.3f}  [{head}, …]", soft_wrap=True)
    if pipe.random_init:
        note("random-initialised weights (preset) — embeddings are not semantically "
             "meaningful; use --checkpoint for a trained model")
