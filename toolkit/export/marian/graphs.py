"""The Marian graphs, as PyTorch modules over the loaded model's weights, on the shared cached
decoder contract (``export/generate.py``).

encoder:  input_ids, attention_mask [B, S] → source_bias [B, S] (0 on tokens, -1e4 on padding)
          and cross_key_i / cross_value_i [B, H, S, Dh] per decoder layer (once per sentence)
decoder:  input_ids [R, T], the cache, source_bias and the cross K/V of B sentences, R = B × g
          → logits [R, V] of the last position and the new cache. The cache is
          - Bergamot (SSRU decoder): ``past_position`` [R] (steps taken) and ``past_cell_i``
            [R, d] — a fixed 256-vector per layer instead of a growing K/V; T is 1;
          - Hugging Face Marian (Transformer decoder): ``past_key_i`` / ``past_value_i``
            [R, H, P, Dh]; one graph for the prompt step (P = 0) and every later step.
With ``shortlist`` the decoder also takes ``vocab_ids`` [K] and returns logits over those rows
of the output layer only (Marian's lexical shortlist).
"""

from __future__ import annotations

import torch
from torch import nn

from ...models.marian.bergamot import sinusoids
from ..generate import (
    NEG,
    attend,
    cache_names,
    causal_bias,
    grouped_cross,
    kv_entries,
    merge_heads,
    split_heads,
)


def cross_names(n_layers: int) -> list[str]:
    return ["source_bias", *cache_names("cross", kv_entries(n_layers))]


def cache_entries(kind: str, n_layers: int) -> list[str]:
    if kind == "bergamot":
        return ["position", *[f"cell_{i}" for i in range(n_layers)]]
    return kv_entries(n_layers)


def decoder_inputs(kind: str, n_layers: int, shortlist: bool = False) -> list[str]:
    return ["input_ids", *cache_names("past", cache_entries(kind, n_layers)),
            *cross_names(n_layers), *(["vocab_ids"] if shortlist else [])]


def decoder_outputs(kind: str, n_layers: int) -> list[str]:
    return ["logits", *cache_names("present", cache_entries(kind, n_layers))]


def _bias(attention_mask: torch.Tensor) -> torch.Tensor:
    return (1.0 - attention_mask.to(torch.float32)) * NEG


class BergamotEncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, input_ids, attention_mask):
        m = self.m
        positions = torch.arange(input_ids.shape[1])
        x = m.embed(input_ids) * m.scale + sinusoids(positions, m.config.d_model)
        bias = _bias(attention_mask)
        for layer in m.encoder:
            x = layer(x, bias[:, None, None, :])
        out = [bias]
        for layer in m.decoder:
            k, v = layer.cross.keys_values(x)
            out += [k.contiguous(), v.contiguous()]
        return tuple(out)


class BergamotDecoderGraph(nn.Module):
    """One SSRU step per row: the first step (position 0) feeds Marian's all-zero vector."""

    def __init__(self, model, shortlist: bool = False):
        super().__init__()
        self.m = model
        self.shortlist = shortlist
        self.n = model.config.decoder_layers

    def forward(self, input_ids, position, *rest):
        m, n = self.m, self.n
        cells, bias, cross = rest[:n], rest[n], rest[n + 1:n + 1 + 2 * n]
        first = (position > 0).to(torch.float32)[:, None]
        x = m.embed(input_ids[:, -1]) * m.scale * first + sinusoids(position, m.config.d_model)
        x = x[:, None, :]
        bias = bias[:, None, None, :]
        presents = []
        for i, layer in enumerate(m.decoder):
            h, cell = layer.rnn(x, cells[i][:, None, :])
            x = layer.rnn_norm(x + h)
            att = layer.cross
            q = split_heads(att.q(x), att.heads) * att.scale
            a = grouped_cross(q, cross[2 * i], cross[2 * i + 1], bias)
            x = layer.cross_norm(x + att.o(merge_heads(a)))
            x = layer.ffn_norm(x + layer.ffn(x))
            presents.append(cell[:, 0])
        vocab = rest[-1] if self.shortlist else None
        return (m.project(x[:, 0], vocab), position + 1, *presents)


class HFMarianEncoderGraph(nn.Module):
    def __init__(self, wrapper):
        super().__init__()
        self.hf = wrapper.hf
        cfg = self.hf.config
        self.heads = cfg.decoder_attention_heads

    def forward(self, input_ids, attention_mask):
        h = self.hf.get_encoder()(input_ids=input_ids,
                                  attention_mask=attention_mask).last_hidden_state
        out = [_bias(attention_mask)]
        for layer in self.hf.model.decoder.layers:
            att = layer.encoder_attn
            out += [split_heads(att.k_proj(h), self.heads).contiguous(),
                    split_heads(att.v_proj(h), self.heads).contiguous()]
        return tuple(out)


class HFMarianDecoderGraph(nn.Module):
    """MarianMTModel's decoder (post-norm Transformer, sinusoidal positions, scaled embeddings)
    over an explicit K/V cache. (``<pad>`` is suppressed by the runtime's logit rules.)"""

    def __init__(self, wrapper):
        super().__init__()
        hf = wrapper.hf
        cfg = hf.config
        dec = hf.model.decoder
        self.n = cfg.decoder_layers
        self.heads = cfg.decoder_attention_heads
        self.scale = (cfg.d_model // self.heads) ** -0.5
        self.embed_scale = cfg.d_model ** 0.5 if cfg.scale_embedding else 1.0
        self.embed_tokens, self.embed_positions = dec.embed_tokens, dec.embed_positions
        self.layers = dec.layers
        self.lm_head = hf.lm_head
        self.register_buffer("final_bias", hf.final_logits_bias.detach().clone()[0])

    def forward(self, input_ids, *rest):
        n, hs = self.n, self.heads
        past, bias, cross = rest[:2 * n], rest[2 * n], rest[2 * n + 1:]
        t, p = input_ids.shape[1], past[0].shape[2]
        x = self.embed_tokens(input_ids) * self.embed_scale
        x = x + self.embed_positions.weight[p:p + t]
        mask = causal_bias(t, p, x.dtype, x.device)
        bias = bias[:, None, None, :]
        presents = []
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            q = split_heads(sa.q_proj(x) * self.scale, hs)
            k = torch.cat([past[2 * i], split_heads(sa.k_proj(x), hs)], dim=2)
            v = torch.cat([past[2 * i + 1], split_heads(sa.v_proj(x), hs)], dim=2)
            presents += [k, v]
            x = layer.self_attn_layer_norm(x + sa.out_proj(merge_heads(attend(q, k, v, mask))))
            ca = layer.encoder_attn
            q = split_heads(ca.q_proj(x) * self.scale, hs)
            a = grouped_cross(q, cross[2 * i], cross[2 * i + 1], bias)
            x = layer.encoder_attn_layer_norm(x + ca.out_proj(merge_heads(a)))
            h = layer.fc2(layer.activation_fn(layer.fc1(x)))
            x = layer.final_layer_norm(x + h)
        return (self.lm_head(x[:, -1]) + self.final_bias, *presents)
