"""Clip embedding over a Session: decode → sample → normalise → backbone → CLS embedding.

Written once against ``Session``; torch and every ONNX backend run the same code.

Slow-fast inference (SVT, Sec. 3.3): the same network sees two views of the video — a *slow*
view with few frames at full resolution (``frames // 2`` at ``size``) and a *fast* view with more
frames at low resolution (``frames * 2`` at ``size // 2`` rounded to the patch) — whose
L2-normalised CLS embeddings are averaged and re-normalised. Both views go through the one
dynamic-shape graph; nothing is re-exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core import schema
from ...core.errors import ToolkitError, check_positive
from ...models.svt.video import check_size, clip_from_frames, decode_frames, sample_indices
from ..graphs import Graphs
from ..session import Session


def l2norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class EmbedPipeline:
    session: Session
    patch: int = 16
    random_init: bool = False
    backend: str = "torch"
    precision: str = "fp32"
    source: dict = field(default_factory=dict)

    @property
    def sessions(self) -> list[Session]:
        return [self.session]

    def close(self) -> None:
        self.session.close()

    def embed_clip(self, clip: np.ndarray) -> np.ndarray:
        """``[3,T,S,S]`` or ``[B,3,T,S,S]`` normalised clip(s) → CLS ``[D]`` / ``[B, D]``."""
        batched = clip.ndim == 5
        x = clip if batched else clip[None]
        out = self.session.run({self.session.input_names[0]: np.ascontiguousarray(
            x, dtype=np.float32)})[self.session.output_names[0]]
        if not np.isfinite(out).all():
            raise ToolkitError(f"the backbone ({self.backend} {self.precision}) produced NaN or "
                               "infinite embeddings; try an fp32 artifact or the torch backend")
        return out if batched else out[0]

    def views(self, frames: list[np.ndarray], n_frames: int, size: int, slow_fast: bool,
              name: str) -> list[np.ndarray]:
        check_positive(frames=n_frames)
        check_size(size, self.patch)
        if not slow_fast:
            return [clip_from_frames(frames, n_frames, size, name=name)]
        slow_t = max(1, n_frames // 2)
        fast_t = n_frames * 2
        fast_s = max(self.patch, (size // 2) // self.patch * self.patch)
        if len(frames) < fast_t:
            raise ToolkitError(f"{name} has only {len(frames)} frames; --slow-fast needs "
                               f"{fast_t} (2 × --frames) for its fast view; lower --frames")
        return [clip_from_frames(frames, slow_t, size, name=name),
                clip_from_frames(frames, fast_t, fast_s, name=name)]

    def embed(self, path: str | Path, n_frames: int = 8, size: int = 224,
              slow_fast: bool = False) -> dict:
        counts = [max(1, n_frames // 2), n_frames * 2] if slow_fast else [n_frames]
        # only the frames the views sample are kept (the same indices views() will take)
        frames = decode_frames(path, keep=lambda total: {
            int(i) for t in counts if t <= total for i in sample_indices(total, t)})
        views = self.views(frames, n_frames, size, slow_fast, str(path))
        embs = [self.embed_clip(v) for v in views]
        if slow_fast:
            emb = l2norm(np.mean([l2norm(e) for e in embs], axis=0))
        else:
            emb = embs[0]
        return {"video": str(path), "frames_in_video": len(frames),
                "views": [list(v.shape[1:]) for v in views], "dim": int(emb.shape[-1]),
                "embedding": emb.astype(np.float32)}


def from_graphs(graphs: Graphs) -> EmbedPipeline:
    (sess,) = graphs.sessions.values()      # the backbone (the registry checked the names)
    where = f"model_config of {graphs.artifact or 'the model'}"
    patch = schema.field(schema.field(graphs.model_config, "svt", dict, where), "patch_size",
                         int, f"{where} svt", 1, 256)
    return EmbedPipeline(sess, patch, graphs.random_init, graphs.backend, graphs.precision,
                         graphs.source)
