"""The Grad-TTS sampler, written once over two callables so every backend runs the same code.

``encode(ids [1, T] int64, lengths [1] int64) -> (mu [1, 80, T], logw [1, 1, T])``
``score({"x_t", "mask", "mu", "t"}) -> score [B, 80, F]``, F a multiple of 4

Length regulation (durations → frames) and the Euler loop of the probability-flow ODE

    dx = ½ (μ − x − s_θ(x, μ, t)) β_t dt,   integrated from t = 1 to 0 in N equal steps,
    starting at x_1 = μ + ε / τ

live here, so ``--steps`` is a run-time choice and every backend sees identical noise ε (drawn
from NumPy at the unpadded length, then zero-padded). The runtime passes Session calls; the
exporter passes the PyTorch modules (its calibration trajectories).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...core.errors import ToolkitError
from .constants import AUDIO, fix_len
from .text import text_to_ids

# ~2.5 min of speech in one utterance; the U-Net profile stops at 2048 frames
MAX_TEXT_CHARS = 2000
Encode = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Score = Callable[[dict], np.ndarray]


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


def ode_sample(score: Score, mu_y: np.ndarray, mask: np.ndarray, noise: np.ndarray,  # noqa: PLR0913 (the paper's sampler, its knobs as given)
               steps: int, temperature: float, beta_min: float, beta_max: float,
               step_times: list | None = None, trajectory: list | None = None) -> np.ndarray:
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
        s = score(feeds)
        if step_times is not None:
            step_times.append((time.perf_counter() - t0) * 1e3)
        beta_t = beta_min + (beta_max - beta_min) * t
        xt = ((xt - 0.5 * (mu_y - xt - s) * beta_t * h) * mask).astype(np.float32)
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


def encode_text(encode: Encode, config: dict, text: str, length_scale: float = 1.0,
                durations=None):
    """ids, mu (n_feats, T), durations (frames per token), encoder ms."""
    if length_scale <= 0:
        raise ToolkitError(f"--length-scale must be > 0 (got {length_scale})")
    if len(text) > MAX_TEXT_CHARS:
        raise ToolkitError(f"the text has {len(text)} characters; one utterance takes at most "
                           f"{MAX_TEXT_CHARS} — split it into sentences and synthesize each")
    ids = text_to_ids(text, add_blank=config.get("add_blank", True))
    t0 = time.perf_counter()
    mu, logw = encode(np.asarray([ids], dtype=np.int64), np.asarray([len(ids)], dtype=np.int64))
    enc_ms = (time.perf_counter() - t0) * 1e3
    mu, logw = mu[0], logw[0, 0]
    if durations is None:
        durations = np.ceil(np.exp(logw) * length_scale).astype(np.int64)
    durations = np.asarray(durations, dtype=np.int64)
    if durations.shape != (len(ids),):
        raise ToolkitError(f"durations must have one entry per token ({len(ids)})")
    if durations.sum() < 1:
        durations = durations.copy()
        durations[len(ids) // 2] = 1
    return ids, mu, durations, enc_ms


def synthesize(encode: Encode, score: Score, config: dict, text: str, steps: int = 10,  # noqa: PLR0913 (the sampler's knobs, shared by export and runtime)
               temperature: float = 1.5, length_scale: float = 1.0, seed: int = 0,
               noise: np.ndarray | None = None, durations=None,
               trajectory: list | None = None) -> Synthesis:
    """Text → mel: encoder, length regulation, N ODE steps (``trajectory`` collects U-Net feeds)."""
    check_steps(steps)
    ids, mu, dur, enc_ms = encode_text(encode, config, text, length_scale, durations)
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
    x = ode_sample(score, pad_frames(mu_y, padded)[None].astype(np.float32), mask,
                   pad_frames(noise, padded)[None], steps, temperature,
                   config.get("beta_min", 0.05), config.get("beta_max", 20.0),
                   step_times=step_ms, trajectory=trajectory)
    unet_ms = (time.perf_counter() - t0) * 1e3
    return Synthesis(mel=x[0, :, :frames], frames=frames, durations=dur, ids=ids,
                     encoder_ms=enc_ms, unet_ms=unet_ms, step_ms=step_ms)
