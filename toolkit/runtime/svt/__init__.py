"""Clip embedding over a Session: decode → sample → normalise → backbone → CLS embedding.

Written once against ``Session``; torch and every ONNX backend run the same code.

Slow-fast inference (SVT, Sec. 3.3): the same network sees two views of the video — a *slow*
view with few frames at full resolution (``frames // 2`` at ``size``) and a *fast* view with more
frames at low resolution (``frames * 2`` at ``size // 2`` rounded to the patch) — whose
L2-normalised CLS embeddings are averaged and re-normalised. Both views go through the one
dynamic-shape graph; nothing is re-exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ToolkitError
from ...models.svt.video import check_size, clip_from_frames, decode_frames
from ...runtime.session import Session, TorchSession, check_backend, open_onnx_session

GRAPH = "backbone"


def l2norm(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class EmbedPipeline:
    session: Session
    patch: int = 16
    random_init: bool = False
    source: str = ""

    def embed_clip(self, clip: np.ndarray) -> np.ndarray:
        """``[3,T,S,S]`` or ``[B,3,T,S,S]`` normalised clip(s) → CLS ``[D]`` / ``[B, D]``."""
        batched = clip.ndim == 5
        x = clip if batched else clip[None]
        out = self.session.run({"video": np.ascontiguousarray(x, dtype=np.float32)})["cls"]
        return out if batched else out[0]

    def views(self, frames: list[np.ndarray], n_frames: int, size: int, slow_fast: bool,
              name: str) -> list[np.ndarray]:
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
        frames = decode_frames(path)
        views = self.views(frames, n_frames, size, slow_fast, str(path))
        embs = [self.embed_clip(v) for v in views]
        if slow_fast:
            emb = l2norm(np.mean([l2norm(e) for e in embs], axis=0))
        else:
            emb = embs[0]
        return {"video": str(path), "frames_in_video": len(frames),
                "views": [list(v.shape[1:]) for v in views], "dim": int(emb.shape[-1]),
                "embedding": emb.astype(np.float32)}


def load_pipeline(artifact=None, checkpoint=None, preset=None, backend="torch",
                  seed: int = 0) -> EmbedPipeline:
    check_backend(backend)
    if artifact is not None:
        if checkpoint is not None or preset is not None:
            raise ToolkitError("pass --artifact alone, or --checkpoint/--preset (not both)")
        from ...export.manifest import load_manifest

        man = load_manifest(artifact, family="svt")
        g = man["graphs"].get(GRAPH)
        if g is None:
            raise ToolkitError(f"artifact {artifact} has no {GRAPH!r} graph; re-export it")
        if backend == "torch":
            raise ToolkitError("--backend torch needs --checkpoint or --preset (an artifact holds "
                               "ONNX graphs); use --backend ort with --artifact")
        sess = open_onnx_session(Path(artifact) / g["file"], backend, man["precision"],
                                 manifest_graph=g)
        patch = int(man["model_config"]["svt"]["patch_size"])
        return EmbedPipeline(sess, patch, bool(man.get("random_init")), str(artifact))
    from ...models.svt.checkpoint import build

    model, source = build(checkpoint, preset, seed)
    if backend == "torch":
        sess = TorchSession(model, ["video"], ["cls"])
    else:
        import tempfile

        from ...export.onnx import export_graph
        from ...export.svt import backbone_spec

        # no artifact: trace the backbone to a temporary fp32 graph (unvalidated; use
        # `toolkit export svt` + --artifact for a validated, reusable one)
        with tempfile.TemporaryDirectory(prefix="svt-embed-") as tmp:
            path = Path(tmp) / "backbone.onnx"
            export_graph(backbone_spec(model), path)
            sess = open_onnx_session(path, backend, "fp32")
    return EmbedPipeline(sess, model.cfg.patch_size, bool(source.get("random_init")),
                         source.get("checkpoint") or source.get("preset", ""))
