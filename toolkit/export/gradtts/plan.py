"""The Grad-TTS ExportPlan: validation feeds are encoder outputs on the shipped sentences and the
states x_t the sampler actually visits; int8 calibration uses sampler trajectories on the same
sentences (more steps, other noise)."""

from __future__ import annotations

import numpy as np
import torch

from ...core.errors import ToolkitError
from ...models.base import LoadedModel
from ...models.gradtts.sampler import synthesize
from ...models.gradtts.sentences import SENTENCES
from ..spec import ExportPlan
from .graphs import graph_specs
from .revision import EXPORT_REVISION


def torch_callables(model):
    """(encode, score) over the PyTorch modules, for the sampler in ``models/gradtts``."""

    def encode(ids, lengths):
        with torch.inference_mode():
            mu, logw, _ = model.encoder(torch.from_numpy(ids), torch.from_numpy(lengths))
        return mu.numpy(), logw.numpy()

    def score(feeds):
        with torch.inference_mode():
            return model.decoder(*(torch.from_numpy(feeds[k]) for k in
                                   ("x_t", "mask", "mu", "t"))).numpy()

    return encode, score


def _trajectories(model, sentences, steps: int, seed: int = 0) -> tuple[list, list]:
    """Encoder feeds and the U-Net feeds the torch sampler visits on ``sentences``."""
    encode, score = torch_callables(model)
    config = model.config.to_dict()
    enc_feeds, unet_feeds = [], []
    for k, s in enumerate(sentences):
        traj: list = []
        syn = synthesize(encode, score, config, s, steps=steps, seed=seed + k, trajectory=traj)
        enc_feeds.append({"ids": np.asarray([syn.ids], dtype=np.int64),
                          "lengths": np.asarray([len(syn.ids)], dtype=np.int64)})
        unet_feeds.extend(traj)
    return enc_feeds, unet_feeds


def build_plan(loaded: LoadedModel, calib_data=None, sentences=None) -> ExportPlan:
    if calib_data is not None:
        raise ToolkitError("Grad-TTS calibrates int8 on sampler trajectories over the shipped "
                           "sentences; --calib-data is not used for gradtts")
    model = loaded.model.eval()
    seed = loaded.seed
    sentences = list(sentences or SENTENCES)
    cache: dict = {}

    def validation_feeds():
        if "val" not in cache:
            enc_feeds, traj = _trajectories(model, sentences, steps=4, seed=seed)
            cache["val"] = {"encoder": enc_feeds, "unet": traj[::2]}
        return cache["val"]

    def calibration_feeds():
        enc_feeds, traj = _trajectories(model, sentences, steps=10, seed=seed + 100)
        return {"encoder": enc_feeds, "unet": traj}

    return ExportPlan(family="gradtts", graphs=graph_specs(model, loaded.random_init),
                      validation_feeds=validation_feeds, calibration_feeds=calibration_feeds,
                      source=loaded.source, model_config=model.config.to_dict(),
                      revision=EXPORT_REVISION)
