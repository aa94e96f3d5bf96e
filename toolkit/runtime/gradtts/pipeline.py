"""The Grad-TTS sampler, written once over ``Session`` objects.

encoder session:  ids (B, T) int64, lengths (B,) int64 → mu (B, 80, T), logw (B, 1, T)
unet session:     x_t, mask, mu (B, 80|1, F), t (B,) → score (B, 80, F); F a multiple of 4

Length regulation (durations → frames) and the Euler loop of the probability-flow ODE

    dx = ½ (μ − x − s_θ(x, μ, t)) β_t dt,   integrated from t = 1 to 0 in N equal steps,
    starting at x_1 = μ + ε / τ

stay here, so ``--steps`` is a run-time choice and every backend sees identical noise ε (an
input: drawn from NumPy at the unpadded length, then zero-padded).
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import ToolkitError
from ...models.gradtts.model import AUDIO, fix_len
from ...models.gradtts.text import text_to_ids
from ..session import Session

ENCODER_INPUTS = ["ids", "lengths"]
ENCODER_OUTPUTS = ["mu", "logw"]
UNET_INPUTS = ["x_t", "mask", "mu", "t"]
UNET_OUTPUTS = ["score"]


def frames_to_seconds(frames: int) -> float:
    return frames * AUDIO["hop_length"] / AUDIO["sample_rate"]


def check_steps(steps: int) -> int:
    if int(steps) < 1:
        raise ToolkitError(f"--steps must be at least 1 (got {steps}); the paper uses 10 to 1000 "
                           "reverse-diffusion steps")
    return int(steps)


def make_noise(frames: int, n_feats: int = 80, seed: int = 0) -> np.ndarray:
    """ε for one utterance, (n_feats, frames): the same for every backend given the seed."""
    return np.random.default_rng(seed).standard_normal((n_feats, frames)).astype(np.float32)


def regulate(mu: np.ndarray, durations: np.ndarray) -> np.ndarray:
    """Repeat each token's mean ``durations[i]`` times: (n_feats, T) → (n_feats, frames)."""
    return np.repeat(mu, durations.astype(np.int64), axis=1)


def pad_frames(a: np.ndarray, target: int) -> np.ndarray:
    return np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, target - a.shape[-1])])


def ode_sample(unet: Session, mu_y: np.ndarray, mask: np.ndarray, noise: np.ndarray, steps: int,
               temperature: float, beta_min: float, beta_max: float, step_times: list | None = None,
               trajectory: list | None = None) -> np.ndarray:
    """Euler on the probability-flow ODE. Arrays (B, n_feats, F) / mask (B, 1, F), F % 4 == 0."""
    steps = check_steps(steps)
    if temperature <= 0:
        raise ToolkitError(f"--temperature must be > 0 (got {temperature})")
    if mu_y.shape[-1] % 4:
        raise ToolkitError(f"internal: frames {mu_y.shape[-1]} not padded to a multiple of 4")
    b = mu_y.shape[0]
    xt = ((mu_y + noise / temperature) * mask).astype(np.float32)
    h = 1.0 / steps
    for i in range(steps):
        t = 1.0 - (i + 0.5) * h
        feeds = {"x_t": xt, "mask": mask, "mu": mu_y, "t": np.full((b,), t, dtype=np.float32)}
        if trajectory is not None:
            trajectory.append({k: v.copy() for k, v in feeds.items()})
        t0 = time.perf_counter()
        score = unet.run(feeds)["score"]
        if step_times is not None:
            step_times.append((time.perf_counter() - t0) * 1e3)
        beta_t = beta_min + (beta_max - beta_min) * t
        xt = ((xt - 0.5 * (mu_y - xt - score) * beta_t * h) * mask).astype(np.float32)
    return xt


@dataclass
class Synthesis:
    mel: np.ndarray            # (n_feats, frames) log-mel
    frames: int
    durations: np.ndarray      # frames per token
    ids: list
    encoder_ms: float = 0.0
    unet_ms: float = 0.0
    step_ms: list = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return frames_to_seconds(self.frames)


class GradTTSPipeline:
    def __init__(self, encoder: Session, unet: Session, config: dict, backend: str,
                 precision: str = "fp32", random_init: bool = False, source: dict | None = None):
        self.encoder, self.unet = encoder, unet
        self.config = config
        self.backend, self.precision = backend, precision
        self.random_init = random_init
        self.source = source or {}

    def close(self):
        self.encoder.close()
        self.unet.close()

    def encode(self, text: str, length_scale: float = 1.0, durations=None):
        if length_scale <= 0:
            raise ToolkitError(f"--length-scale must be > 0 (got {length_scale})")
        ids = text_to_ids(text, add_blank=self.config.get("add_blank", True))
        t0 = time.perf_counter()
        out = self.encoder.run({"ids": np.asarray([ids], dtype=np.int64),
                                "lengths": np.asarray([len(ids)], dtype=np.int64)})
        enc_ms = (time.perf_counter() - t0) * 1e3
        mu, logw = out["mu"][0], out["logw"][0, 0]
        if durations is None:
            durations = np.ceil(np.exp(logw) * length_scale).astype(np.int64)
        durations = np.asarray(durations, dtype=np.int64)
        if durations.shape != (len(ids),):
            raise ToolkitError(f"durations must have one entry per token ({len(ids)})")
        if durations.sum() < 1:
            durations = durations.copy()
            durations[len(ids) // 2] = 1
        return ids, mu, durations, enc_ms

    def synthesize(self, text: str, steps: int = 10, temperature: float = 1.5,
                   length_scale: float = 1.0, seed: int = 0, noise: np.ndarray | None = None,
                   durations=None, trajectory: list | None = None) -> Synthesis:
        check_steps(steps)
        ids, mu, dur, enc_ms = self.encode(text, length_scale, durations)
        mu_y = regulate(mu, dur)
        frames = mu_y.shape[1]
        padded = fix_len(frames)
        if noise is None:
            noise = make_noise(frames, mu_y.shape[0], seed)
        if noise.shape != mu_y.shape:
            raise ToolkitError(f"noise has shape {noise.shape}, expected {mu_y.shape}")
        mask = np.zeros((1, 1, padded), dtype=np.float32)
        mask[..., :frames] = 1.0
        step_ms: list = []
        t0 = time.perf_counter()
        x = ode_sample(self.unet, pad_frames(mu_y, padded)[None].astype(np.float32), mask,
                       pad_frames(noise, padded)[None], steps, temperature,
                       self.config.get("beta_min", 0.05), self.config.get("beta_max", 20.0),
                       step_times=step_ms, trajectory=trajectory)
        unet_ms = (time.perf_counter() - t0) * 1e3
        return Synthesis(mel=x[0, :, :frames], frames=frames, durations=dur, ids=ids,
                         encoder_ms=enc_ms, unet_ms=unet_ms, step_ms=step_ms)


def torch_sessions(model, precision: str = "fp32"):
    from ...export.gradtts import EncoderGraph
    from ..session import TorchSession

    enc = TorchSession(EncoderGraph(model.encoder), ENCODER_INPUTS, ENCODER_OUTPUTS, precision,
                       input_dtypes={"ids": "int64", "lengths": "int64"})
    unet = TorchSession(model.decoder, UNET_INPUTS, UNET_OUTPUTS, precision)
    return enc, unet


def load_pipeline(artifact=None, checkpoint=None, preset=None, backend: str = "torch",
                  seed: int = 0, precision: str = "fp32", workdir=None) -> GradTTSPipeline:
    """A pipeline from an artifact (ONNX backends) or a checkpoint/preset (torch; for an
    ONNX backend without an artifact, the model is exported fp32 to a temporary folder)."""
    from ...export.manifest import load_manifest
    from ..session import check_backend, open_onnx_session

    check_backend(backend)
    if artifact is not None:
        if checkpoint or preset:
            raise ToolkitError("pass --artifact or --checkpoint/--preset, not both")
        if backend == "torch":
            raise ToolkitError("an artifact holds ONNX graphs, not PyTorch weights; use "
                               "--backend ort (or a GPU backend), or --checkpoint with torch")
        m = load_manifest(artifact, family="gradtts")
        art = Path(artifact)
        enc = open_onnx_session(art / m["graphs"]["encoder"]["file"], backend, m["precision"],
                                manifest_graph=m["graphs"]["encoder"])
        unet = open_onnx_session(art / m["graphs"]["unet"]["file"], backend, m["precision"],
                                 manifest_graph=m["graphs"]["unet"])
        return GradTTSPipeline(enc, unet, m["model_config"], backend, m["precision"],
                               bool(m.get("random_init")), m.get("source"))
    from ...models.gradtts.checkpoint import resolve_model

    model, source = resolve_model(checkpoint, preset, seed)
    config = model.config.to_dict()
    if backend == "torch":
        enc, unet = torch_sessions(model, precision)
        return GradTTSPipeline(enc, unet, config, backend, precision, source["random_init"], source)
    from ...export.gradtts import build_plan
    from ...export.onnx import export_plan

    out = Path(workdir or tempfile.mkdtemp(prefix="gradtts-")) / f"gradtts-{precision}"
    export_plan(build_plan(model, source), precision, out)
    return load_pipeline(artifact=out, backend=backend)
