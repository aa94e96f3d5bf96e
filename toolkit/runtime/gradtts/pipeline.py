"""Grad-TTS over Sessions: the sampler of ``models/gradtts/sampler.py`` fed by two graphs.

encoder session:  ids (B, T) int64, lengths (B,) int64 → mu (B, 80, T), logw (B, 1, T)
unet session:     x_t, mask, mu (B, 80|1, F), t (B,) → score (B, 80, F); F a multiple of 4
"""

from __future__ import annotations

import numpy as np

from ...core import schema
from ...models.gradtts.sampler import Synthesis, encode_text, synthesize
from ..graphs import Graphs
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
    where = f"model_config of {graphs.artifact or 'the model'}"
    cfg = graphs.model_config
    schema.field(cfg, "add_blank", bool, where, required=False)
    schema.field(cfg, "beta_min", (int, float), where, 0, 100, required=False)
    schema.field(cfg, "beta_max", (int, float), where, 0, 1000, required=False)
    return GradTTSPipeline(graphs.sessions["encoder"], graphs.sessions["unet"],
                           graphs.model_config, graphs.backend, graphs.precision,
                           graphs.random_init, graphs.source)
