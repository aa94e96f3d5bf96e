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

align:    input_ids [B, T] (a window's whole sequence, teacher-forced), cross_key_i/cross_value_i
          [B, H, 1500, Dh] → alignment_qk [B, A, T, 1500] (the scaled QKᵀ of the A alignment
          heads, before softmax) and token_logprobs [B, T] (log-probability of input_ids[t+1]
          at position t, over the text vocabulary) — the word-timestamp pass, optional
          (checkpoints with alignment heads only; docs/word-timestamps.md)

One decoder graph serves the prompt step (P = 0, T = prompt length) and every later step
(T = 1): the causal mask and the position offset are computed from the shapes, so there is no
`If` node and no merged with/without-past graph. That contract, the attention pieces and the
cache names are the shared ones of ``export/generate.py``. The same modules run as the
``torch`` backend.
"""

from __future__ import annotations

import torch
from torch import nn

from ..generate import (
    attend,
    cache_names,
    causal_bias,
    cross_kv_names,
    grouped_cross,
    kv_entries,
    merge_heads,
    split_heads,
)


def encoder_io(n_layers: int) -> list[str]:
    return cross_kv_names(n_layers)


def decoder_inputs(n_layers: int) -> list[str]:
    return ["input_ids", *cache_names("past", kv_entries(n_layers)), *encoder_io(n_layers)]


def decoder_outputs(n_layers: int) -> list[str]:
    return ["logits", *cache_names("present", kv_entries(n_layers))]


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
        out = []
        for attn in self.cross:
            out += [split_heads(attn.k_proj(h), self.heads, self.head_dim).contiguous(),
                    split_heads(attn.v_proj(h), self.heads, self.head_dim).contiguous()]
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

    def forward(self, input_ids: torch.Tensor, *cache: torch.Tensor):
        n = self.n_layers
        past, cross = cache[:2 * n], cache[2 * n:]
        t = input_ids.shape[1]
        p = past[0].shape[2]
        positions = self.embed_positions.weight[p:p + t]
        x = self.embed_tokens(input_ids) * self.embed_scale + positions
        mask = causal_bias(t, p, x.dtype, x.device)
        hs, dh, width = self.heads, self.head_dim, self.heads * self.head_dim
        presents = []
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = split_heads(sa.q_proj(h) * self.scale, hs, dh)
            k = torch.cat([past[2 * i], split_heads(sa.k_proj(h), hs, dh)], dim=2)
            v = torch.cat([past[2 * i + 1], split_heads(sa.v_proj(h), hs, dh)], dim=2)
            presents += [k, v]
            x = x + sa.out_proj(merge_heads(attend(q, k, v, mask), width))
            ca = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = split_heads(ca.q_proj(h) * self.scale, hs, dh)
            a = grouped_cross(q, cross[2 * i], cross[2 * i + 1])
            x = x + ca.out_proj(merge_heads(a, width))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        x = self.layer_norm(x[:, -1])
        return (self.proj_out(x), *presents)


def align_inputs(n_layers: int) -> list[str]:
    return ["input_ids", *encoder_io(n_layers)]


ALIGN_OUTPUTS = ["alignment_qk", "token_logprobs"]


class WhisperAlignGraph(nn.Module):
    """One teacher-forced pass over a window's whole token sequence (no cache, P = 0): the
    cross-attention scores of the alignment heads and each next token's log-probability.

    ``heads``: (layer, head) pairs, in the order of the output's A axis; ``text_vocab``: the
    log-softmax runs over the ids below it (the end-of-text id: openai-whisper's word
    probabilities are over the text tokens), and a next token at or above it (the final
    ``<|endoftext|>``) gets a meaningless value, never read."""

    def __init__(self, hf_model, heads: list[tuple[int, int]], text_vocab: int):
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
        self.text_vocab = int(text_vocab)
        self.align_heads = [(int(layer), int(head)) for layer, head in heads]
        self.per_layer = {}
        for layer, head in self.align_heads:
            self.per_layer.setdefault(layer, []).append(head)

    def forward(self, input_ids: torch.Tensor, *cross: torch.Tensor):
        t = input_ids.shape[1]
        x = self.embed_tokens(input_ids) * self.embed_scale + self.embed_positions.weight[:t]
        mask = causal_bias(t, 0, x.dtype, x.device)
        hs, dh, width = self.heads, self.head_dim, self.heads * self.head_dim
        scores = {}
        for i, layer in enumerate(self.layers):
            sa = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q = split_heads(sa.q_proj(h) * self.scale, hs, dh)
            k = split_heads(sa.k_proj(h), hs, dh)
            v = split_heads(sa.v_proj(h), hs, dh)
            x = x + sa.out_proj(merge_heads(attend(q, k, v, mask), width))
            ca = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = split_heads(ca.q_proj(h) * self.scale, hs, dh)
            ck, cv = cross[2 * i], cross[2 * i + 1]
            for head in self.per_layer.get(i, []):
                scores[(i, head)] = torch.matmul(q[:, head:head + 1],
                                                 ck[:, head:head + 1].transpose(-1, -2))
            x = x + ca.out_proj(merge_heads(attend(q, ck, cv), width))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        qk = torch.cat([scores[p] for p in self.align_heads], dim=1).float()
        logits = self.proj_out(self.layer_norm(x))[..., :self.text_vocab].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        nxt = torch.cat([input_ids[:, 1:], input_ids[:, :1]], dim=1)
        # (Where, not Clip: TensorRT has no int64 Clip)
        nxt = torch.where(nxt < self.text_vocab, nxt, torch.zeros_like(nxt))
        return qk, torch.gather(logprobs, 2, nxt.unsqueeze(-1)).squeeze(-1)
