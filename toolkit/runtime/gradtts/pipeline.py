"""Grad-TTS over Sessions: the sampler of ``models/gradtts/sampler.py`` fed by two graphs.

encoder session:  ids (B, T) int64, lengths (B,) int64 → mu (B, 80, T), logw (B, 1, T)
unet session:     x_t, mask, mu (B, 80|1, F), t (B,) → score (B, 80, F); F a multiple of 4
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.errors import ToolkitError
from ...export.gradtts import build_plan
from ...models.base import LoadedModel
from ...models.gradtts.checkpoint import load_model
from ...models.gradtts.sampler import Synthesis, encode_text, synthesize
from ..graphs import Graphs, make_pipeline, open_graphs
from ..session import Session


class GradTTSPipeline:
    def __init__(self, encoder: Session, unet: Session, config: dict, backend: str,
                 precision: str = "fp32", random_init: bool = False, source: dict | None = None):
        self.encoder, self.unet = encoder, unet
        self.config = config
        self.backend, self.precision = backend, precision
        self.random_init = random_init
        self.source = source or {}

    @property
    def sessions(self) -> list[Session]:
        return [self.encoder, self.unet]

    def close(self):
        self.encoder.close()
        self.unet.close()

    def _encode(self, ids: np.ndarray, lengths: np.ndarray):
        out = self.encoder.run({"ids": ids, "lengths": lengths})
        return out["mu"], out["logw"]

    def _score(self, feeds: dict) -> np.ndarray:
        return self.unet.run(feeds)["score"]

    def encode(self, text: str, length_scale: float = 1.0, durations=None):
        """ids, mu (n_feats, T), durations (frames per token), encoder ms."""
        return encode_text(self._encode, self.config, text, length_scale, durations)

    def synthesize(self, text: str, steps: int = 10, temperature: float = 1.5,
                   length_scale: float = 1.0, seed: int = 0, noise: np.ndarray | None = None,
                   durations=None, trajectory: list | None = None) -> Synthesis:
        return synthesize(self._encode, self._score, self.config, text, steps=steps,
                          temperature=temperature, length_scale=length_scale, seed=seed,
                          noise=noise, durations=durations, trajectory=trajectory)


def from_graphs(graphs: Graphs) -> GradTTSPipeline:
    if set(graphs.sessions) != {"encoder", "unet"}:
        raise ToolkitError(f"a Grad-TTS artifact holds encoder and unet graphs; "
                           f"{graphs.artifact or 'the model'} has {sorted(graphs.sessions)} — "
                           "re-export it")
    return GradTTSPipeline(graphs.sessions["encoder"], graphs.sessions["unet"],
                           graphs.model_config, graphs.backend, graphs.precision,
                           graphs.random_init, graphs.source)


def open_pipeline(artifact: str | Path | None = None, checkpoint=None, preset=None,
                  loaded: LoadedModel | None = None, backend: str = "torch",
                  precision: str = "fp32", seed: int = 0,
                  threads: int | None = None, device: str = "cpu") -> GradTTSPipeline:
    """An artifact (ONNX backends), or a checkpoint/preset on any backend."""
    return make_pipeline(open_graphs("gradtts", load_model, build_plan, artifact=artifact,
                                     checkpoint=checkpoint, preset=preset, loaded=loaded,
                                     backend=backend, precision=precision, seed=seed,
                                     threads=threads, device=device), from_graphs)
