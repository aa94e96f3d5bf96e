"""InternVL test material: a small checkpoint directory in InternVL2's original layout written
from a loaded model (the layout the trained captioner ships in), with its captions varied."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from toolkit.models.internvl.loading import PRESETS


def noisy_tiny(seed: int = 1):
    """The internvl-tiny preset with seeded noise on every matrix (varied captions)."""
    from toolkit.models.internvl.loading import load_model

    loaded = load_model(preset="internvl-tiny")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in loaded.model.parameters():
            if p.ndim >= 2:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return loaded


def save_original(loaded, out: Path) -> Path:
    """``loaded`` (an internvl-tiny-shaped model) as config.json + model.safetensors +
    tokenizer.json in InternVL2's original layout."""
    p = PRESETS["internvl-tiny"]
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in loaded.model.state_dict().items()
             if k != "language_model.lm_head.weight"}          # tied to the embeddings
    save_file(state, str(out / "model.safetensors"))
    (out / "tokenizer.json").write_text(loaded.tokenizer.tk.to_str(), encoding="utf-8")
    llm = dict(p.llm, vocab_size=len(loaded.tokenizer), architectures=["Qwen2ForCausalLM"],
               pad_token_id=0)
    cfg = {"architectures": ["InternVLChatModel"], "model_type": "internvl_chat",
           "downsample_ratio": 0.5, "force_image_size": 448, "select_layer": -1,
           "ps_version": "v2", "dynamic_image_size": True, "max_dynamic_patch": p.max_tiles,
           "use_thumbnail": True, "template": p.template,
           "vision_config": dict(p.vision, architectures=["InternVisionModel"],
                                 model_type="intern_vit_6b", qkv_bias=True,
                                 norm_type="layer_norm", layer_norm_eps=1e-6),
           "llm_config": llm}
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return out
