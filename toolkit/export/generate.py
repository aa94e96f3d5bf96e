"""Pieces of a cached decoder graph, written once for every encoder–decoder family.

The contract the runtime's ``runtime/generate`` loop relies on:

- the encoder graph returns each decoder layer's cross-attention K/V ``[inputs, H, S, Dh]``
  (computed once per input, not once per token), plus whatever else the decoder needs of the
  source (Marian: an additive padding bias);
- the decoder-step graph takes ``input_ids`` [rows, T], its cache ``past_*`` [rows, …] and the
  encoder's outputs [inputs, …] with rows = inputs × g (g beams or samples per input, rows
  b·g … b·g+g-1 belong to input b), and returns ``logits`` [rows, V] of the last position and
  ``present_*``. Cross attention of an input's g rows is one product over its K/V, passed once,
  not repeated per beam;
- one graph serves the prompt step (empty cache: time 0) and every later step (T = 1): the
  causal mask and position offset come from the shapes, so there is no ``If`` node and no merged
  with/without-past graph.

``decoder_axes`` writes the dynamic axes and the TensorRT profiles of such a graph.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .spec import Profile

# additive mask: exp(-1e4) is 0, and -1e4 is exact in fp16 (-1e9 would be -inf, 0·inf = NaN)
NEG = -1e4


def split_heads(x: torch.Tensor, heads: int, head_dim: int = -1) -> torch.Tensor:
    """[B, T, H·Dh] → [B, H, T, Dh]; a constant ``head_dim`` keeps shape arithmetic out of
    the traced graph."""
    b, t, _ = x.shape
    return x.view(b, t, heads, head_dim).transpose(1, 2)


def merge_heads(x: torch.Tensor, width: int = -1) -> torch.Tensor:
    """[B, H, T, Dh] → [B, T, H·Dh] (``width`` = H·Dh, a constant)."""
    b, _, t, _ = x.shape
    return x.transpose(1, 2).reshape(b, t, width)


def attend(q, k, v, bias=None):
    """softmax(q kᵀ + bias) v over [.., T, Dh] blocks (``q`` already scaled)."""
    scores = torch.matmul(q, k.transpose(-1, -2))
    if bias is not None:
        scores = scores + bias
    return torch.matmul(torch.softmax(scores, dim=-1), v)


def causal_bias(t: int, past: int, dtype, device) -> torch.Tensor:
    """[T, past + T] additive mask: query i (at position past + i) sees keys j <= past + i."""
    q_pos = torch.arange(t, device=device).unsqueeze(1) + past
    k_pos = torch.arange(past + t, device=device).unsqueeze(0)
    return (k_pos > q_pos).to(dtype) * NEG


def grouped_cross(q, k, v, bias=None):
    """Cross attention of R = B·g query rows [R, H, T, Dh] over B inputs' K/V [B, H, S, Dh]
    (g rows per input); ``bias`` [B, 1, 1, S] (padding) is shared by an input's rows."""
    r, h, t, dh = q.shape
    b = k.shape[0]
    g = r // b
    q = q.reshape(b, g, h, t, dh).transpose(1, 2).reshape(b, h, g * t, dh)
    out = attend(q, k, v, bias)
    return out.reshape(b, h, g, t, dh).transpose(1, 2).reshape(r, h, t, dh)


def cache_names(prefix: str, entries: Sequence[str]) -> list[str]:
    return [f"{prefix}_{e}" for e in entries]


def kv_entries(n_layers: int) -> list[str]:
    return [f"{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]


def cross_kv_names(n_layers: int) -> list[str]:
    return cache_names("cross", kv_entries(n_layers))


def decoder_axes(cache: dict, cross: dict, rows: int, windows: int, max_tokens: int,
                 opt_past: int) -> tuple[dict, dict]:
    """(dynamic axes, TensorRT profiles) of a cached decoder step.

    ``cache``: {entry: shape after the row axis, with ``None`` on a growing time axis} — each
    becomes ``past_<entry>`` (input) and ``present_<entry>`` (output); ``cross``: {encoder
    output: (its shape after the input axis, with ``None`` on a source-length axis; that axis's
    (min, opt, max), or None when the shape is fixed)}; ``rows``/``windows``: the profiles'
    largest decoder rows and inputs; ``max_tokens``: the longest prompt and cache.
    """
    axes: dict = {"input_ids": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}
    profiles = {"input_ids": Profile([1, 1], [1, 1], [rows, max_tokens])}
    for entry, shape in cache.items():
        grow = [i + 1 for i, d in enumerate(shape) if d is None]
        axes[f"past_{entry}"] = {0: "batch", **{a: "past" for a in grow}}
        axes[f"present_{entry}"] = {0: "batch", **{a: "total" for a in grow}}
        profiles[f"past_{entry}"] = Profile([1, *_fill(shape, 0)], [1, *_fill(shape, opt_past)],
                                            [rows, *_fill(shape, max_tokens - 1)])
    for name, (shape, lengths) in cross.items():
        src = [i + 1 for i, d in enumerate(shape) if d is None]
        axes[name] = {0: "cross_batch", **{a: "source" for a in src}}
        lo, opt, hi = lengths or (0, 0, 0)
        profiles[name] = Profile([1, *_fill(shape, lo)], [1, *_fill(shape, opt)],
                                 [windows, *_fill(shape, hi)])
    return axes, profiles


def _fill(shape, n: int) -> list[int]:
    return [n if d is None else d for d in shape]
