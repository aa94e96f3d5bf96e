"""The two Whisper graphs, as PyTorch modules over a Hugging Face model's weights.

encoder:  input_features [B, mels, 3000] → cross_key_i, cross_value_i [B, H, 1500, Dh] per layer
          (cross-attention K/V computed once per utterance, not once per token)
decoder:  input_ids [R, T], past_key_i/past_value_i [R, H, P, Dh] (P may be 0),
          cross_key_i/cross_value_i [B, H, 1500, Dh] with R = B × g → logits [R, V] of the last
          position, present_key_i/present_value_i [R, H, P+T, Dh]

The decoder's rows may be g hypotheses per window (beams, samples): rows b·g … b·g+g-1 share
window b's cross-attention K/V, which are passed once, not repeated per beam — the cross
attention of a window's g rows is one matrix product over its K/V, so a 5-beam step reads the
K/V once instead of five times.

One decoder graph serves the prompt step (P = 0, T = prompt length) and every later step
(T = 1): the causal mask and the position offset are computed from the shapes, so there is no
`If` node and no merged with/without-past graph. The same modules run as the ``torch`` backend.
"""

from __future__ import annotations

import torch
from torch import nn

# additive mask: exp(-1e4) is 0, and -1e4 is exact in fp16 (-1e9 would be -inf, 0·inf = NaN)
NEG = -1e4


def encoder_io(n_layers: int) -> list[str]:
    return [n for i in range(n_layers) for n in (f"cross_key_{i}", f"cross_value_{i}")]


def decoder_inputs(n_layers: int) -> list[str]:
    return (["input_ids"]
            + [n for i in range(n_layers) for n in (f"past_key_{i}", f"past_value_{i}")]
            + encoder_io(n_layers))


def decoder_outputs(n_layers: int) -> list[str]:
    return ["logits"] + [n for i in range(n_layers) for n in (f"present_key_{i}",
                                                                f"present_value_{i}")]


class WhisperEncoderGraph(nn.Module):
    def __init__(self, hf_model):
        super().__init__()
        cfg = hf_model.config
        self.encoder = hf_model.model.encoder
        self.heads = cfg.decoder_attention_heads
        self.head_dim = cfg.d_model // self.heads
        self.cross = nn.ModuleList(layer.encoder_attn for layer in hf_model.model.decoder.layers)

    def forward(self, input_features: torch.Tensor):
        h = self.encoder(input_features).last_hidden_state
        b, s, _ = h.shape
        out = []
        for attn in self.cross:
            k = attn.k_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, s, self.heads, self.head_dim).transpose(1, 2)
            out += [k.contiguous(), v.contiguous()]
        return tuple(out)


class WhisperDecoderGraph(nn.Module):
    def __init__(self, hf_model):
        super().__init__()
        cfg = hf_model.config
        dec = hf_model.model.decoder
        self.n_layers = cfg.decoder_layers
        self.heads = cfg.decoder_attention_heads
        self.head_dim = cfg.d_model // self.heads
        self.scale = self.head_dim ** -0.5
        self.embed_tokens = dec.embed_tokens
        self.embed_positions = dec.embed_positions
        self.embed_scale = (cfg.d_model ** 0.5) if getattr(cfg, "scale_embedding", False) else 1.0
        self.layers = dec.layers
        self.layer_norm = dec.layer_norm
        self.proj_out = hf_model.proj_out

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def _attend(q, k, v, mask=None):
        scores = torch.matmul(q, k.transpose(-1, -2))
        if mask is not None:
            scores = scores + mask
        return torch.matmul(torch.softmax(scores, dim=-1), v)

    def _cross(self, q, k, v):
        """Cross attention of R = B·g query rows over B windows' K/V (g rows per window)."""
        r, h, t, dh = q.shape
        b = k.shape[0]
        g = r // b
        q = q.reshape(b, g, h, t, dh).transpose(1, 2).reshape(b, h, g * t, dh)
        out = self._attend(q, k, v)
        return out.reshape(b, h, g, t, dh).transpose(1, 2).reshape(r, h, t, dh)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = x.shape
        return x.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)

    def forward(self, input_ids: torch.Tensor, *cache: torch.Tensor):
        n = self.n_layers
        past, cross = cache[:2 * n], cache[2 * n:]
        t = input_ids.shape[1]
        p = past[0].shape[2]
        positions = self.embed_positions.weight[p:p + t]
        x = self.embed_tokens(input_ids) * self.embed_scale + positions
        # causal mask over [past + new] keys: query i may see keys j <= p + i
        q_pos = torch.arange(t, device=x.device).unsqueeze(1) + p
        k_pos = torch.arange(p + t, device=x.device).unsqueeze(0)
        mask = (k_pos > q_pos).to(x.dtype) * NEG
        presents = []
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = self._split(sa.q_proj(h) * self.scale)
            k = torch.cat([past[2 * i], self._split(sa.k_proj(h))], dim=2)
            v = torch.cat([past[2 * i + 1], self._split(sa.v_proj(h))], dim=2)
            presents += [k, v]
            x = x + sa.out_proj(self._merge(self._attend(q, k, v, mask)))
            ca = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = self._split(ca.q_proj(h) * self.scale)
            x = x + ca.out_proj(self._merge(self._cross(q, cross[2 * i], cross[2 * i + 1])))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        x = self.layer_norm(x[:, -1])
        return (self.proj_out(x), *presents)
