"""InternLM2 (InternVL2-2B's LLM) as a transformers ``LlamaForCausalLM``, without its remote code.

InternLM2 is Llama's architecture (RMSNorm, rotate-half RoPE, SwiGLU, grouped-query attention,
no biases) under other names, with one real difference: the attention's query, key and value
projections are one matrix ``attention.wqkv`` in a *grouped* layout. Its output rows are
``[kv_heads, groups + 2, head_dim]``: for each key/value head, the ``groups`` query heads that
share it, then its key, then its value (``groups = heads / kv_heads``). Query head
``h·groups + g`` uses key/value head ``h`` — Llama's ``repeat_kv`` order — so splitting the rows
gives Llama's ``q_proj`` / ``k_proj`` / ``v_proj`` exactly.

Names: ``model.tok_embeddings`` → ``model.embed_tokens``, ``attention.wo`` → ``self_attn.o_proj``,
``feed_forward.w1 / w3 / w2`` → ``mlp.gate_proj / up_proj / down_proj``, ``attention_norm`` →
``input_layernorm``, ``ffn_norm`` → ``post_attention_layernorm``, ``output`` → ``lm_head``.
"""

from __future__ import annotations

import re

import torch

RENAMES = [
    (r"^model\.tok_embeddings\.", "model.embed_tokens."),
    (r"\.attention\.wo\.", ".self_attn.o_proj."),
    (r"\.feed_forward\.w1\.", ".mlp.gate_proj."),
    (r"\.feed_forward\.w3\.", ".mlp.up_proj."),
    (r"\.feed_forward\.w2\.", ".mlp.down_proj."),
    (r"\.attention_norm\.", ".input_layernorm."),
    (r"\.ffn_norm\.", ".post_attention_layernorm."),
    (r"^output\.", "lm_head."),
]


def llama_config(cfg: dict):
    """A ``LlamaConfig`` from InternLM2's ``llm_config`` (a dict of its config.json)."""
    from transformers import LlamaConfig

    heads = int(cfg["num_attention_heads"])
    return LlamaConfig(
        vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        num_hidden_layers=int(cfg["num_hidden_layers"]), num_attention_heads=heads,
        num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        hidden_act=cfg.get("hidden_act", "silu"),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rope_scaling=_rope_scaling(cfg.get("rope_scaling")),
        attention_bias=bool(cfg.get("bias", False)), mlp_bias=bool(cfg.get("bias", False)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=cfg.get("bos_token_id", 1), eos_token_id=cfg.get("eos_token_id", 2),
        pad_token_id=cfg.get("pad_token_id", 0))


def _rope_scaling(rs):
    """InternLM2's ``{"type": "dynamic", "factor": f}`` in transformers' form (dynamic NTK is
    the identity up to ``max_position_embeddings``, in both implementations)."""
    if not rs:
        return None
    kind = rs.get("rope_type") or rs.get("type")
    return {"rope_type": kind, "factor": float(rs.get("factor", 1.0))}


def split_wqkv(wqkv: torch.Tensor, heads: int, kv_heads: int) -> tuple:
    """The fused ``[(kv_heads·(groups+2)·head_dim), hidden]`` weight (or bias: 1-D) → (q, k, v)
    in Llama's layout."""
    groups = heads // kv_heads
    head_dim = wqkv.shape[0] // (kv_heads * (groups + 2))
    rest = wqkv.shape[1:]
    w = wqkv.reshape(kv_heads, groups + 2, head_dim, *rest)
    q = w[:, :groups].reshape(heads * head_dim, *rest)
    k = w[:, groups].reshape(kv_heads * head_dim, *rest)
    v = w[:, groups + 1].reshape(kv_heads * head_dim, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
             kv_heads: int) -> torch.Tensor:
    """The inverse of ``split_wqkv`` (writing InternLM2-layout checkpoints in tests)."""
    groups = heads // kv_heads
    head_dim = q.shape[0] // heads
    rest = q.shape[1:]
    return torch.cat([q.reshape(kv_heads, groups, head_dim, *rest),
                      k.reshape(kv_heads, 1, head_dim, *rest),
                      v.reshape(kv_heads, 1, head_dim, *rest)], dim=1).reshape(-1, *rest)


def to_llama(state: dict, heads: int, kv_heads: int) -> dict:
    """An InternLM2ForCausalLM state dict → LlamaForCausalLM names and layout."""
    out = {}
    for key, value in state.items():
        m = re.match(r"^(model\.layers\.\d+)\.attention\.wqkv\.(weight|bias)$", key)
        if m:
            q, k, v = split_wqkv(value, heads, kv_heads)
            for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{m.group(1)}.self_attn.{name}.{m.group(2)}"] = part
            continue
        if key.endswith("rotary_emb.inv_freq"):
            continue   # a buffer, recomputed from rope_theta
        for pattern, repl in RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def from_llama(state: dict, heads: int, kv_heads: int) -> dict:
    """LlamaForCausalLM names → InternLM2's (the inverse of ``to_llama``; for tests and for
    writing checkpoints in the original layout)."""
    back = [(r"^model\.embed_tokens\.", "model.tok_embeddings."),
            (r"\.self_attn\.o_proj\.", ".attention.wo."),
            (r"\.mlp\.gate_proj\.", ".feed_forward.w1."),
            (r"\.mlp\.up_proj\.", ".feed_forward.w3."),
            (r"\.mlp\.down_proj\.", ".feed_forward.w2."),
            (r"\.input_layernorm\.", ".attention_norm."),
            (r"\.post_attention_layernorm\.", ".ffn_norm."), (r"^lm_head\.", "output.")]
    out, qkv = {}, {}
    for key, value in state.items():
        m = re.match(r"^(model\.layers\.\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$", key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            continue
        for pattern, repl in back:
            key = re.sub(pattern, repl, key)
        out[key] = value
    for (layer, kind), p in qkv.items():
        out[f"{layer}.attention.wqkv.{kind}"] = fuse_qkv(p["q"], p["k"], p["v"], heads, kv_heads)
    return out
