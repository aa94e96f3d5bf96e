"""InternVL in PyTorch: the InternViT vision encoder, pixel shuffle, the MLP projector, and a
decoder-only LLM (a transformers causal LM) with the image embeddings spliced in at the
``<IMG_CONTEXT>`` positions.

Module and parameter names are InternVL's own (``vision_model.embeddings.class_embedding``,
``vision_model.encoder.layers.N.attn.qkv``, ``mlp1.0`` … ``mlp1.3``, ``language_model.*``), so
an original InternVL2 checkpoint's state dict loads into ``InternVLChat`` key for key (the
InternLM2 LLM is first mapped to Llama names: ``internlm2.py``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class VisionConfig:
    """InternViT's ``vision_config`` (defaults: InternViT-300M-448px, InternVL2-1B/2B/4B/8B)."""

    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    image_size: int = 448
    patch_size: int = 14
    num_channels: int = 3
    qkv_bias: bool = True
    qk_normalization: bool = False
    norm_type: str = "layer_norm"        # "rms_norm" for InternViT-6B
    layer_norm_eps: float = 1e-6
    initializer_factor: float = 0.1      # the layer scales' (ls1, ls2) initial value
    hidden_act: str = "gelu"

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VisionConfig":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if isinstance(known.get("image_size"), (list, tuple)):
            known["image_size"] = int(known["image_size"][0])
        if isinstance(known.get("patch_size"), (list, tuple)):
            known["patch_size"] = int(known["patch_size"][0])
        return cls(**known)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def _norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rms_norm" else nn.LayerNorm(dim, eps=eps)


class VisionEmbeddings(nn.Module):
    """CLS token + patch convolution + learned positions (resized bicubically when the input
    grid differs from the trained one, as InternViT does)."""

    def __init__(self, c: VisionConfig):
        super().__init__()
        self.grid = c.grid
        self.class_embedding = nn.Parameter(torch.randn(1, 1, c.hidden_size))
        self.patch_embedding = nn.Conv2d(c.num_channels, c.hidden_size, kernel_size=c.patch_size,
                                         stride=c.patch_size)
        self.position_embedding = nn.Parameter(torch.randn(1, c.grid * c.grid + 1, c.hidden_size))

    def _positions(self, h: int, w: int) -> torch.Tensor:
        pos = self.position_embedding
        if h == self.grid and w == self.grid:   # InternViT resizes anyway: bicubic to the same
            return pos                          # size is exactly the identity (checked)
        dim = pos.shape[-1]
        grid = pos[:, 1:].float().reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        grid = grid.reshape(1, dim, h * w).permute(0, 2, 1).to(pos.dtype)
        return torch.cat([pos[:, :1], grid], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        b, _, h, w = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(b, 1, -1).to(patches.dtype)
        return torch.cat([cls, patches], dim=1) + self._positions(h, w)


class VisionAttention(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.head_dim = c.hidden_size // c.num_attention_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(c.hidden_size, 3 * c.hidden_size, bias=c.qkv_bias)
        self.proj = nn.Linear(c.hidden_size, c.hidden_size)
        self.qk_normalization = c.qk_normalization
        if c.qk_normalization:
            self.q_norm = RMSNorm(c.hidden_size, c.layer_norm_eps)
            self.k_norm = RMSNorm(c.hidden_size, c.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.qk_normalization:
            q = self.q_norm(q.transpose(1, 2).flatten(2)).view(b, n, self.heads, -1).transpose(1, 2)
            k = self.k_norm(k.transpose(1, 2).flatten(2)).view(b, n, self.heads, -1).transpose(1, 2)
        attn = torch.softmax(torch.matmul(q * self.scale, k.transpose(-1, -2)), dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class VisionMLP(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)
        self.act = nn.GELU(approximate="tanh" if c.hidden_act == "gelu_pytorch_tanh" else "none")

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VisionLayer(nn.Module):
    """Pre-norm block with layer scale: x + ls1·attn(norm1 x), then x + ls2·mlp(norm2 x)."""

    def __init__(self, c: VisionConfig):
        super().__init__()
        self.norm1 = _norm(c.norm_type, c.hidden_size, c.layer_norm_eps)
        self.attn = VisionAttention(c)
        self.ls1 = nn.Parameter(c.initializer_factor * torch.ones(c.hidden_size))
        self.norm2 = _norm(c.norm_type, c.hidden_size, c.layer_norm_eps)
        self.mlp = VisionMLP(c)
        self.ls2 = nn.Parameter(c.initializer_factor * torch.ones(c.hidden_size))

    def forward(self, x):
        x = x + self.attn(self.norm1(x)) * self.ls1
        return x + self.mlp(self.norm2(x)) * self.ls2


class VisionEncoder(nn.Module):
    def __init__(self, c: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(VisionLayer(c) for _ in range(c.num_hidden_layers))


class InternVisionModel(nn.Module):
    """InternViT: [tiles, 3, S, S] → hidden states [tiles, 1 + grid², D] (no final norm)."""

    def __init__(self, c: VisionConfig):
        super().__init__()
        self.config = c
        self.embeddings = VisionEmbeddings(c)
        self.encoder = VisionEncoder(c)

    def forward(self, pixel_values: torch.Tensor, layers: int | None = None) -> torch.Tensor:
        x = self.embeddings(pixel_values)
        for layer in self.encoder.layers[:layers]:
            x = layer(x)
        return x


def pixel_shuffle(x: torch.Tensor, scale: float = 0.5) -> torch.Tensor:
    """InternVL's pixel shuffle (``ps_version`` "v2"): [N, W, H, C] → [N, W·s, H·s, C/s²]."""
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x.permute(0, 2, 1, 3).contiguous()


def projector(vit_hidden: int, llm_hidden: int, downsample_ratio: float) -> nn.Sequential:
    """``mlp1``: LayerNorm, Linear, GELU, Linear over the pixel-shuffled features."""
    width = vit_hidden * int(1 / downsample_ratio) ** 2
    return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, llm_hidden), nn.GELU(),
                         nn.Linear(llm_hidden, llm_hidden))


class InternVLChat(nn.Module):
    """``InternVLChatModel``'s modules: ``vision_model``, ``mlp1``, ``language_model``."""

    def __init__(self, vision: VisionConfig, language_model: nn.Module,
                 downsample_ratio: float = 0.5, select_layer: int = -1,
                 image_token_id: int | None = None):
        super().__init__()
        self.vision_config = vision
        self.downsample_ratio = downsample_ratio
        self.select_layer = select_layer
        self.image_token_id = image_token_id
        self.vision_model = InternVisionModel(vision)
        hidden = language_model.config.hidden_size
        self.mlp1 = projector(vision.hidden_size, hidden, downsample_ratio)
        self.language_model = language_model

    @property
    def num_image_token(self) -> int:
        """Embeddings per tile: (grid · downsample_ratio)² (256 for 448 px, patch 14)."""
        return int(self.vision_config.grid ** 2 * self.downsample_ratio ** 2)

    @property
    def llm_config(self):
        return self.language_model.config

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[tiles, 3, S, S] → image embeddings [tiles, num_image_token, LLM hidden]."""
        layers = len(self.vision_model.encoder.layers) + 1 + self.select_layer
        x = self.vision_model(pixel_values, layers=layers)[:, 1:]
        n, t, c = x.shape
        side = int(round(t ** 0.5))
        x = pixel_shuffle(x.reshape(n, side, side, c), self.downsample_ratio)
        return self.mlp1(x.reshape(n, -1, x.shape[-1]))

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(ids)

    def splice(self, ids: torch.Tensor, image_embeds: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings of ``ids`` [B, T] with the rows at ``<IMG_CONTEXT>`` replaced, in
        order, by ``image_embeds`` (any shape […, hidden]: all tiles of all images, flattened)."""
        embeds = self.embed_tokens(ids)
        if image_embeds is None:
            return embeds
        where = ids == self.image_token_id
        flat = image_embeds.reshape(-1, embeds.shape[-1]).to(embeds.dtype)
        if int(where.sum()) != flat.shape[0]:
            raise ValueError(f"the prompt has {int(where.sum())} <IMG_CONTEXT> tokens but the "
                             f"images give {flat.shape[0]} embeddings")
        embeds = embeds.clone()
        embeds[where] = flat
        return embeds

    def forward(self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, **kwargs):
        """Logits of the LLM over the spliced prompt (training and checks)."""
        image = None if pixel_values is None else self.encode_image(pixel_values)
        embeds = self.splice(input_ids, image)
        return self.language_model(inputs_embeds=embeds, attention_mask=attention_mask, **kwargs)
