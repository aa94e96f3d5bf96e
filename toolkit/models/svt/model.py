"""SVT backbone: a TimeSformer-style ViT with divided space-time attention (Ranasinghe et al.,
CVPR 2022, built on Bertasius et al., ICML 2021).

Each block runs temporal attention (every patch position attends over the clip's frames), then
spatial attention (every frame's patches plus the CLS token attend over each other), then an MLP.
The spatial and temporal positional embeddings are *always* resized to the clip's grid and
frame count (bilinear in space, linear in time) with sizes computed from the input shape, so one
traced ONNX graph accepts any T and H×W; at the native size the resize is the identity.

Token layout inside the network: CLS ``[B, 1, D]`` and patches ``[B, N, T, D]`` (N = h·w), which
is the official ``b (h w t) m`` ordering kept as separate axes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from ...core.errors import ToolkitError


@dataclass
class SVTConfig:
    img_size: int = 224       # native size of the spatial positional embedding
    patch_size: int = 16
    num_frames: int = 8       # native length of the temporal positional embedding
    in_chans: int = 3
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    ln_eps: float = 1e-6
    qkv_bias: bool = True

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SVTConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ToolkitError(f"SVT config has unknown fields {unknown}; expected {sorted(names)}")
        return cls(**d)


PRESETS = {
    # The published SVT backbone: ViT-B/16, divided space-time attention, 8×224 clips.
    "vit-base": SVTConfig(),
    # For tests and smoke runs: 2 blocks, 64-d, 32 px native size (2×2 patches), 4 frames.
    "tiny": SVTConfig(img_size=32, num_frames=4, dim=64, depth=2, heads=4),
}


def preset_config(name: str) -> SVTConfig:
    if name not in PRESETS:
        raise ToolkitError(f"unknown SVT preset {name!r}; choose one of {', '.join(PRESETS)}")
    return SVTConfig(**PRESETS[name].to_dict())


class Attention(nn.Module):
    """Multi-head self-attention written out (as in the official code): qkv → softmax(QKᵀ/√d)V."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.dim = dim
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sizes are read off the (float) qkv output, never off ``x``: in the int8 QDQ graph ``x``
        # is quantized, and a Shape reading its DequantizeLinear stops onnxruntime from fusing
        # DQ→MatMul→Q into an int8 QLinearMatMul.
        qkv = self.qkv(x)
        b, n, d = qkv.shape[0], qkv.shape[1], self.dim
        qkv = qkv.reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DividedBlock(nn.Module):
    """Temporal attention → spatial attention (with CLS) → MLP, pre-norm, residual."""

    def __init__(self, cfg: SVTConfig):
        super().__init__()
        d = cfg.dim
        self.temporal_norm1 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.temporal_attn = Attention(d, cfg.heads, cfg.qkv_bias)
        self.temporal_fc = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.attn = Attention(d, cfg.heads, cfg.qkv_bias)
        self.norm2 = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))

    def forward(self, cls: torch.Tensor, x: torch.Tensor):
        # cls [B, 1, D], x [B, N, T, D]
        b, n, t, d = x.shape
        xt = x.reshape(b * n, t, d)
        res_t = self.temporal_attn(self.temporal_norm1(xt))
        xt = x + self.temporal_fc(res_t).reshape(b, n, t, d)
        # spatial: one sequence per frame, each with its own copy of the CLS token
        xs = xt.permute(0, 2, 1, 3).reshape(b * t, n, d)
        cls_rep = cls.unsqueeze(1).expand(b, t, 1, d).reshape(b * t, 1, d)
        ys = self.attn(self.norm1(torch.cat([cls_rep, xs], dim=1)))
        cls_res = ys[:, 0].reshape(b, t, d).mean(dim=1, keepdim=True)
        res_s = ys[:, 1:].reshape(b, t, n, d).permute(0, 2, 1, 3)
        cls = cls + cls_res
        x = xt + res_s
        # MLP over all tokens at once (each weight used by one node: keeps the fp16 graph valid)
        y = torch.cat([cls, x.reshape(b, n * t, d)], dim=1)
        y = y + self.mlp(self.norm2(y))
        return y[:, :1], y[:, 1:].reshape(b, n, t, d)


class SVTBackbone(nn.Module):
    """Video ``[B, 3, T, H, W]`` (ImageNet-normalised) → CLS feature ``[B, D]``."""

    def __init__(self, cfg: SVTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.patch_embed = nn.Conv2d(cfg.in_chans, d, cfg.patch_size, cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid * cfg.grid + 1, d))
        self.time_embed = nn.Parameter(torch.zeros(1, cfg.num_frames, d))
        self.blocks = nn.ModuleList(DividedBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.ln_eps)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # -- positional embeddings, resized to the clip (identity at the native size) -------------
    def spatial_pos(self, gh, gw) -> torch.Tensor:
        """Patch positional embedding ``[1, gh*gw, D]`` resized bilinearly from the native grid.

        Bilinear, not bicubic: TensorRT's ONNX parser (JetPack 6's 10.3 included) takes Resize
        in nearest or linear mode only, and `toolkit check-trt` rejects cubic."""
        g, d = self.cfg.grid, self.cfg.dim
        grid = self.pos_embed[:, 1:].reshape(1, g, g, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def temporal_pos(self, t) -> torch.Tensor:
        """Temporal embedding ``[1, t, D]`` resized linearly from the native frame count."""
        te = self.time_embed.transpose(1, 2)
        te = F.interpolate(te, size=(t,), mode="linear", align_corners=False)
        return te.transpose(1, 2)

    def check_input(self, video: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[1] != self.cfg.in_chans:
            raise ToolkitError(f"SVT takes video [B, {self.cfg.in_chans}, T, H, W], got "
                               f"{list(video.shape)}")
        h, w = int(video.shape[3]), int(video.shape[4])
        p = self.cfg.patch_size
        if h % p or w % p or h < p or w < p:
            raise ToolkitError(f"clip size {h}×{w} is not a multiple of the {p}-px patch; use a "
                               f"size such as {max(p, h // p * p)} (--size)")

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            self.check_input(video)
        b, c, t, h, w = video.shape
        p = self.cfg.patch_size
        gh, gw = h // p, w // p
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        x = self.patch_embed(frames).flatten(2).transpose(1, 2)          # [B*T, N, D]
        x = x + self.spatial_pos(gh, gw)
        d = x.shape[-1]
        x = x.reshape(b, t, gh * gw, d).permute(0, 2, 1, 3)              # [B, N, T, D]
        x = x + self.temporal_pos(t).unsqueeze(1)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, 1, d)
        for blk in self.blocks:
            cls, x = blk(cls, x)
        return self.norm(cls)[:, 0]


def gmac_per_clip(cfg: SVTConfig, frames: int, size: int) -> float:
    """Multiply-accumulates (×1e9) of one clip through the backbone, counted layer by layer."""
    n = (size // cfg.patch_size) ** 2
    t, d, hid = frames, cfg.dim, int(cfg.dim * cfg.mlp_ratio)
    patch = t * n * d * cfg.in_chans * cfg.patch_size ** 2
    tokens_t = n * t                      # temporal attention sequences: n of length t
    tokens_s = t * (n + 1)                # spatial: t sequences of length n+1
    temporal = tokens_t * (3 * d * d + d * d + d * d) + n * 2 * t * t * d   # qkv, proj, fc, QK, AV
    spatial = tokens_s * (4 * d * d) + t * 2 * (n + 1) ** 2 * d
    mlp = (n * t + 1) * 2 * d * hid
    return (patch + cfg.depth * (temporal + spatial + mlp)) / 1e9



__all__ = ["SVTConfig", "SVTBackbone", "PRESETS", "preset_config", "gmac_per_clip"]
