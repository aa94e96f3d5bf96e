"""The Bergamot "tiny" student (Firefox Translations) in PyTorch, from Marian's description of it.

A post-norm Transformer encoder (Marian ``transformer-postprocess: dan``: dropout, add, layer
norm after every block; no final norm) and a decoder whose self-attention is replaced by an
SSRU (``transformer-decoder-autoreg: rnn``, ``dec-cell: ssru``), followed in each layer by
cross-attention and a feed-forward block. Embeddings are tied three ways (source, target,
output). Marian's conventions kept here: embeddings scaled by sqrt(d) plus its sinusoids (all
sines, then all cosines), layer-norm epsilon 1e-6, the first decoder input an all-zero vector
(no start token), the source ending with ``</s>`` (id 0).

Interface (shared with the Hugging Face Marian wrapper in ``hf.py``):
``encode(src_ids, src_mask) -> Memory``, ``initial_state(batch)``,
``decoder_step(tokens, state, memory, vocab=None) -> (logits, state)`` with the SSRU cells as
the state, ``reorder(state, memory, index)`` for beams. Docs: docs/marian.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ...core.errors import ToolkitError


@dataclass
class BergamotConfig:
    vocab_size: int = 32000
    d_model: int = 256
    heads: int = 8
    ffn_dim: int = 1536
    encoder_layers: int = 6
    decoder_layers: int = 2
    eos_id: int = 0
    unk_id: int = 1
    layer_norm_eps: float = 1e-6
    max_length_factor: float = 2.5

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_marian(cls, cfg: dict, where: str = "the model") -> "BergamotConfig":
        """Check that Marian's config describes the architecture built here; say what differs."""
        expected = {"type": "transformer", "transformer-decoder-autoreg": "rnn",
                    "dec-cell": "ssru", "transformer-postprocess": "dan",
                    "transformer-preprocess": "", "transformer-postprocess-emb": "d",
                    "transformer-postprocess-top": "", "transformer-ffn-activation": "relu",
                    "transformer-ffn-depth": 2, "tied-embeddings-all": True,
                    "transformer-train-position-embeddings": False,
                    "transformer-no-projection": False, "layer-normalization": False}
        for key, want in expected.items():
            got = cfg.get(key, "")
            if got != want and not (want == "" and got is None):
                raise ToolkitError(f"{where} is a Marian model with {key}: {got!r}; this loader "
                                   f"reads the Bergamot tiny/base students ({key}: {want!r}) — "
                                   "export other Marian models to Hugging Face (MarianMTModel)")
        vocabs = cfg.get("dim-vocabs") or [0]
        if len(set(vocabs)) != 1:
            raise ToolkitError(f"{where} has source and target vocabularies of sizes {vocabs}; "
                               "tied embeddings need one shared vocabulary")
        return cls(vocab_size=int(vocabs[0]), d_model=int(cfg["dim-emb"]),
                   heads=int(cfg["transformer-heads"]), ffn_dim=int(cfg["transformer-dim-ffn"]),
                   encoder_layers=int(cfg["enc-depth"]), decoder_layers=int(cfg["dec-depth"]))


class Memory(NamedTuple):
    """What the encoder hands the decoder: states [B, S, d], mask [B, S] (True: a real token),
    and each decoder layer's cross-attention keys and values [B, heads, S, d/heads]."""

    states: torch.Tensor
    mask: torch.Tensor
    cross: tuple


def sinusoids(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Marian's position signal: for position p and i < dim/2, sin(p·10000^(-i/(dim/2-1)))
    in the first half and the cosines in the second."""
    half = dim // 2
    inv = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angle = positions.to(torch.float32)[..., None] * inv
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(d // heads)     # a constant, not traced from a shape
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor):
        return self.split(self.k(x)), self.split(self.v(x))

    def forward(self, x, k, v, bias):
        q = self.split(self.q(x))
        scores = q @ k.transpose(-1, -2) * self.scale + bias
        out = torch.softmax(scores, dim=-1) @ v
        b, h, t, dh = out.shape
        return self.o(out.transpose(1, 2).reshape(b, t, h * dh))


class FeedForward(nn.Module):
    def __init__(self, d: int, ffn: int):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        return self.w2(torch.relu(self.w1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, c: BergamotConfig):
        super().__init__()
        self.attn, self.attn_norm = Attention(c.d_model, c.heads), nn.LayerNorm(
            c.d_model, eps=c.layer_norm_eps)
        self.ffn, self.ffn_norm = FeedForward(c.d_model, c.ffn_dim), nn.LayerNorm(
            c.d_model, eps=c.layer_norm_eps)

    def forward(self, x, bias):
        k, v = self.attn.keys_values(x)
        x = self.attn_norm(x + self.attn(x, k, v, bias))
        return self.ffn_norm(x + self.ffn(x))


class SSRU(nn.Module):
    """Simpler Simple Recurrent Unit (Kim et al. 2019): f = σ(W_f x + b_f),
    c = f·c' + (1 − f)·(W x), output relu(c) — no recurrent matrix, so one step costs two
    d×d products."""

    def __init__(self, d: int):
        super().__init__()
        self.w = nn.Linear(d, d, bias=False)
        self.wf = nn.Linear(d, d)

    def forward(self, x, cell):
        f = torch.sigmoid(self.wf(x))
        cell = f * cell + (1.0 - f) * self.w(x)
        return torch.relu(cell), cell


class DecoderLayer(nn.Module):
    def __init__(self, c: BergamotConfig):
        super().__init__()
        eps = c.layer_norm_eps
        self.rnn, self.rnn_norm = SSRU(c.d_model), nn.LayerNorm(c.d_model, eps=eps)
        self.cross, self.cross_norm = Attention(c.d_model, c.heads), nn.LayerNorm(c.d_model,
                                                                                  eps=eps)
        self.ffn, self.ffn_norm = FeedForward(c.d_model, c.ffn_dim), nn.LayerNorm(c.d_model,
                                                                                  eps=eps)

    def forward(self, x, cell, k, v, bias):
        h, cell = self.rnn(x, cell)
        x = self.rnn_norm(x + h)
        x = self.cross_norm(x + self.cross(x, k, v, bias))
        return self.ffn_norm(x + self.ffn(x)), cell


class BergamotModel(nn.Module):
    def __init__(self, config: BergamotConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)      # tied: source, target, output
        self.output_bias = nn.Parameter(torch.zeros(c.vocab_size))
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c.decoder_layers))
        self.scale = math.sqrt(c.d_model)

    @property
    def start_id(self) -> int:
        """The token given at step 0 (ignored: Marian starts from a zero vector)."""
        return self.config.eos_id

    # --- the interface the searchers use -------------------------------------------------

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> Memory:
        """``src_ids`` [B, S] (each row ending in </s>, padded on the right) → Memory."""
        if src_mask is None:
            src_mask = torch.ones_like(src_ids, dtype=torch.bool)
        positions = torch.arange(src_ids.shape[1])
        x = self.embed(src_ids) * self.scale + sinusoids(positions, self.config.d_model)
        bias = self.mask_bias(src_mask)
        for layer in self.encoder:
            x = layer(x, bias)
        cross = tuple(layer.cross.keys_values(x) for layer in self.decoder)
        return Memory(x, src_mask, cross)

    def initial_state(self, batch: int):
        """SSRU cells (layers, B, d) and the step count (position of the next token)."""
        return (torch.zeros(self.config.decoder_layers, batch, self.config.d_model),
                torch.zeros((), dtype=torch.long))

    def decoder_step(self, tokens: torch.Tensor, state, memory: Memory,
                     vocab: torch.Tensor | None = None):
        """One token per row: ``tokens`` [B] (ignored at step 0, where Marian feeds a zero
        vector) → logits [B, V] (or [B, len(vocab)] restricted to the shortlist ``vocab``) and
        the next state."""
        cells, step = state
        emb = self.embed(tokens) * self.scale * (step > 0).to(torch.float32)
        x = (emb + sinusoids(step, self.config.d_model))[:, None, :]
        bias = self.mask_bias(memory.mask)
        new_cells = []
        for i, layer in enumerate(self.decoder):
            k, v = memory.cross[i]
            x, cell = layer(x, cells[i][:, None, :], k, v, bias)
            new_cells.append(cell[:, 0])
        return self.project(x[:, 0], vocab), (torch.stack(new_cells), step + 1)

    def project(self, h: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
        """The tied output layer, over every row of the embedding or the shortlisted ones."""
        # F.linear (Gemm with transB in ONNX) reads the embedding table itself: an exported
        # decoder stores the tied table once, not once more transposed for the projection
        if vocab is None:
            return nn.functional.linear(h, self.embed.weight, self.output_bias)
        return nn.functional.linear(h, self.embed.weight[vocab], self.output_bias[vocab])

    @staticmethod
    def reorder(state, memory: Memory, index: torch.Tensor):
        """Pick rows (beams) of the state and the memory."""
        cells, step = state
        cross = tuple((k[index], v[index]) for k, v in memory.cross)
        return (cells[:, index], step), Memory(memory.states[index], memory.mask[index], cross)

    @staticmethod
    def mask_bias(mask: torch.Tensor) -> torch.Tensor:
        """[B, S] bool → additive attention bias [B, 1, 1, S] (padding gets -1e9)."""
        return ((~mask).to(torch.float32) * -1e9)[:, None, None, :]

    # --- weights ----------------------------------------------------------------------------

    def load_marian(self, weights: dict[str, np.ndarray]) -> None:
        """Copy dequantised Marian weights (``formats.weights``) in; every parameter must be
        given and every name used."""
        state, shapes = {}, {k: v.shape for k, v in self.state_dict().items()}
        for marian, ours, transpose in _names(self.config):
            if marian not in weights:
                raise ToolkitError(f"the Marian model has no tensor {marian}; it is not a "
                                   f"{self.config.encoder_layers}+{self.config.decoder_layers}"
                                   "-layer Bergamot student")
            w = torch.from_numpy(np.asarray(weights[marian], dtype=np.float32))
            w = w.T if transpose else w
            if w.numel() != shapes[ours].numel():
                raise ToolkitError(f"tensor {marian} has shape {tuple(weights[marian].shape)}, "
                                   f"not the {tuple(shapes[ours])} this configuration needs")
            state[ours] = w.reshape(shapes[ours]).contiguous()
        unused = set(weights) - {m for m, _, _ in _names(self.config)}
        if unused:
            raise ToolkitError(f"the Marian model has tensors this architecture does not use "
                               f"({', '.join(sorted(unused)[:3])}…); it is another variant")
        self.load_state_dict(state, strict=True)


def _names(c: BergamotConfig):
    """(Marian name, our parameter, transpose?) — Marian multiplies x @ W, torch's Linear holds
    W transposed; biases and norms are [1, d] rows."""
    yield "Wemb", "embed.weight", False
    yield "decoder_ff_logit_out_b", "output_bias", False
    for i in range(c.encoder_layers):
        p, q = f"encoder_l{i + 1}", f"encoder.{i}"
        yield from _attention(f"{p}_self", f"{q}.attn", f"{q}.attn_norm")
        yield from _ffn(f"{p}_ffn", f"{q}.ffn", f"{q}.ffn_norm")
    for i in range(c.decoder_layers):
        p, q = f"decoder_l{i + 1}", f"decoder.{i}"
        yield f"{p}_rnn_W", f"{q}.rnn.w.weight", True
        yield f"{p}_rnn_Wf", f"{q}.rnn.wf.weight", True
        yield f"{p}_rnn_bf", f"{q}.rnn.wf.bias", False
        yield f"{p}_rnn_ffn_ln_scale", f"{q}.rnn_norm.weight", False
        yield f"{p}_rnn_ffn_ln_bias", f"{q}.rnn_norm.bias", False
        yield from _attention(f"{p}_context", f"{q}.cross", f"{q}.cross_norm")
        yield from _ffn(f"{p}_ffn", f"{q}.ffn", f"{q}.ffn_norm")


def _attention(p: str, q: str, norm: str):
    for x in "qkvo":
        yield f"{p}_W{x}", f"{q}.{x}.weight", True
        yield f"{p}_b{x}", f"{q}.{x}.bias", False
    yield f"{p}_Wo_ln_scale", f"{norm}.weight", False
    yield f"{p}_Wo_ln_bias", f"{norm}.bias", False


def _ffn(p: str, q: str, norm: str):
    yield f"{p}_W1", f"{q}.w1.weight", True
    yield f"{p}_b1", f"{q}.w1.bias", False
    yield f"{p}_W2", f"{q}.w2.weight", True
    yield f"{p}_b2", f"{q}.w2.bias", False
    yield f"{p}_ffn_ln_scale", f"{norm}.weight", False
    yield f"{p}_ffn_ln_bias", f"{norm}.bias", False


def parameter_count(c: BergamotConfig) -> int:
    """Parameters from the dimensions (matches a built model's numel)."""
    d, f = c.d_model, c.ffn_dim
    attn = 4 * (d * d + d) + 2 * d
    ffn = 2 * d * f + f + d + 2 * d
    ssru = 2 * d * d + d + 2 * d
    return (c.vocab_size * d + c.vocab_size + c.encoder_layers * (attn + ffn)
            + c.decoder_layers * (ssru + attn + ffn))
