"""The InternVL graphs, as PyTorch modules over the loaded model's weights, on the shared cached
decoder contract (``export/generate.py``) — decoder-only, so there is no cross K/V.

vision:   pixel_values [N, 3, S, S] (N tiles, any images) → image_embeds [N, tokens, hidden]
          (InternViT up to ``select_layer``, CLS dropped, pixel shuffle, ``mlp1``)
decoder:  inputs_embeds [R, T, hidden] and past_key_i / past_value_i [R, kv_heads, P, Dh] →
          logits [R, V] of the last position and present_key_i / present_value_i
          [R, kv_heads, P + T, Dh]. One graph for the prefill (P = 0, T = the prompt) and every
          cached step (T = 1): the RoPE positions are P … P + T − 1 and the causal mask comes
          from the shapes. Keys are cached after RoPE (as transformers' cache holds them); the
          grouped KV heads are repeated inside the graph (the cache keeps kv_heads).
The token embedding lookup is not in a graph: the runtime gathers rows of the exported table
(``embed_tokens.npy``) in NumPy — see docs/internvl.md, "Export".
"""

from __future__ import annotations

import torch
from torch import nn

from ..generate import attend, cache_names, causal_bias, kv_entries, merge_heads, split_heads


def decoder_inputs(n_layers: int) -> list[str]:
    return ["inputs_embeds", *cache_names("past", kv_entries(n_layers))]


def decoder_outputs(n_layers: int) -> list[str]:
    return ["logits", *cache_names("present", kv_entries(n_layers))]


class VisionGraph(nn.Module):
    """``InternVLChat.encode_image`` with the grid's sizes as constants (the traced graph keeps
    only the tile axis dynamic): ViT → drop CLS → pixel shuffle (v2) → ``mlp1``."""

    def __init__(self, model):
        super().__init__()
        self.m = model
        self.layers = len(model.vision_model.encoder.layers) + 1 + model.select_layer
        self.side = model.vision_config.grid
        self.width = model.vision_config.hidden_size
        self.ratio = model.downsample_ratio

    def forward(self, pixel_values):
        x = self.m.vision_model(pixel_values, layers=self.layers)[:, 1:]
        s, c, r = self.side, self.width, self.ratio
        small, wide = int(s * r), int(c / r)
        # pixel_shuffle over [N, W, H, C] as model.pixel_shuffle, N left to the graph (-1)
        x = x.reshape(-1, s, small, wide).permute(0, 2, 1, 3)
        x = x.reshape(-1, small, small, int(c / (r * r))).permute(0, 2, 1, 3)
        return self.m.mlp1(x.reshape(-1, small * small, int(c / (r * r))))


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class DecoderGraph(nn.Module):
    """A Qwen2 / Llama (InternLM2 mapped) decoder over an explicit K/V cache: RMSNorm pre-norm
    blocks, q/k/v projections (Qwen2: with bias), RoPE (rotate-half, fp32 angles), grouped KV
    heads, SiLU-gated MLP, final norm, the output projection of the last position."""

    def __init__(self, language_model):
        super().__init__()
        cfg = language_model.config
        inner = language_model.model
        self.n = cfg.num_hidden_layers
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.scale = self.head_dim ** -0.5
        self.layers = inner.layers
        self.norm = inner.norm
        self.lm_head = language_model.lm_head
        rope = inner.rotary_emb
        self.register_buffer("inv_freq", rope.inv_freq.detach().clone().float(),
                             persistent=False)
        self.rope_scaling = float(rope.attention_scaling)

    def _rope(self, p: int, t: int, device):
        pos = torch.arange(t, device=device).float() + p
        freqs = pos[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * self.rope_scaling, emb.sin() * self.rope_scaling

    def _repeat(self, kv, groups: int):
        r, _, s, d = kv.shape
        return kv[:, :, None].expand(r, self.kv_heads, groups, s, d).reshape(
            r, self.heads, -1, self.head_dim)

    def forward(self, inputs_embeds, *past):
        x = inputs_embeds
        t, p = x.shape[1], past[0].shape[2]
        cos, sin = self._rope(p, t, x.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        mask = causal_bias(t, p, x.dtype, x.device)
        groups = self.heads // self.kv_heads
        presents = []
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            h = layer.input_layernorm(x)
            q = split_heads(sa.q_proj(h), self.heads, self.head_dim)
            k = split_heads(sa.k_proj(h), self.kv_heads, self.head_dim)
            v = split_heads(sa.v_proj(h), self.kv_heads, self.head_dim)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            if groups > 1:   # transformers' repeat_kv: query head h reads KV head h // groups
                k, v = self._repeat(k, groups), self._repeat(v, groups)
            a = attend(q * self.scale, k, v, mask)
            x = x + sa.o_proj(merge_heads(a, self.heads * self.head_dim))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return (self.lm_head(self.norm(x[:, -1])), *presents)
