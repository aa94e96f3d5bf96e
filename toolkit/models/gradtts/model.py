"""Grad-TTS (Popov et al., ICML 2021) in PyTorch: text encoder, duration predictor, score U-Net,
diffusion losses and the probability-flow ODE sampler.

Written from the paper (and the Glow-TTS encoder it builds on). Read top to bottom:
config → encoder → U-Net → GradTTS (losses, sampling helpers).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .constants import fix_len
from .mas import maximum_path
from .text import N_VOCAB


@dataclass
class GradTTSConfig:
    n_vocab: int = N_VOCAB
    add_blank: bool = True
    n_feats: int = 80
    # text encoder (Glow-TTS style)
    enc_channels: int = 192
    enc_filter: int = 768
    enc_heads: int = 2
    enc_layers: int = 6
    enc_kernel: int = 3
    enc_dropout: float = 0.1
    window_size: int = 4
    dp_filter: int = 256
    # score U-Net
    dec_dim: int = 64
    dim_mults: tuple = (1, 2, 4)
    attn_heads: int = 4
    attn_dim_head: int = 32
    pe_scale: float = 1000.0
    # diffusion
    beta_min: float = 0.05
    beta_max: float = 20.0
    # training: decoder trained on random segments of this many frames (2 s in the paper)
    out_size: int = 172

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dim_mults"] = list(self.dim_mults)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GradTTSConfig":
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        if "dim_mults" in d:
            d["dim_mults"] = tuple(d["dim_mults"])
        return cls(**d)


PRESETS = {
    # the published sizes: ~7.2 M encoder + ~7.6 M decoder parameters
    "paper": GradTTSConfig(),
    # for tests and CPU training demos
    "tiny": GradTTSConfig(enc_channels=32, enc_filter=64, enc_heads=2, enc_layers=2,
                          dp_filter=32, dec_dim=16, attn_heads=2, attn_dim_head=8,
                          out_size=64),
}

# ----------------------------------------------------------------------------------------
# Text encoder
# ----------------------------------------------------------------------------------------

class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, T) (exports as LayerNormalization)."""

    def __init__(self, channels: int, eps: float = 1e-4):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x.transpose(1, -1), self.weight.shape, self.weight, self.bias,
                            self.eps).transpose(1, -1)


class ConvReluNorm(nn.Module):
    """Pre-net: 3 × (conv, norm, ReLU, dropout) + zero-initialised residual projection."""

    def __init__(self, ch: int, n_layers: int = 3, kernel: int = 5, p: float = 0.5):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(ch, ch, kernel, padding=kernel // 2)
                                   for _ in range(n_layers))
        self.norms = nn.ModuleList(ChannelNorm(ch) for _ in range(n_layers))
        self.drop = nn.Dropout(p)
        self.proj = nn.Conv1d(ch, ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x, mask):
        h = x
        for conv, norm in zip(self.convs, self.norms):
            h = self.drop(torch.relu(norm(conv(h * mask))))
        return (x + self.proj(h)) * mask


class RelMultiHeadAttention(nn.Module):
    """Self-attention with learned relative-position keys/values within ±window (Glow-TTS)."""

    def __init__(self, ch: int, heads: int, window: int, p: float):
        super().__init__()
        self.h, self.d, self.w = heads, ch // heads, window
        self.q, self.k, self.v, self.o = (nn.Conv1d(ch, ch, 1) for _ in range(4))
        std = self.d ** -0.5
        self.rel_k = nn.Parameter(torch.randn(2 * window + 1, self.d) * std)
        self.rel_v = nn.Parameter(torch.randn(2 * window + 1, self.d) * std)
        self.drop = nn.Dropout(p)
        nn.init.xavier_uniform_(self.q.weight)
        nn.init.xavier_uniform_(self.k.weight)
        nn.init.xavier_uniform_(self.v.weight)

    def forward(self, x, attn_mask):
        b, c, t = x.shape
        q = self.q(x).view(b, self.h, self.d, t).transpose(2, 3) * self.d ** -0.5
        k = self.k(x).view(b, self.h, self.d, t).transpose(2, 3)
        v = self.v(x).view(b, self.h, self.d, t).transpose(2, 3)
        pos = torch.arange(t, device=x.device)
        rel = pos[None, :] - pos[:, None]                                # (t, t): j - i
        inside = (rel.abs() <= self.w).to(x.dtype)
        # clamp in float: TensorRT's Clip takes float types only (an int64 Clip fails to parse)
        idx = (rel.to(torch.float32).clamp(-self.w, self.w) + self.w).to(torch.int64)
        ek = self.rel_k[idx] * inside[..., None]                         # (t, t, d)
        ev = self.rel_v[idx] * inside[..., None]
        scores = q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, ek)
        scores = scores.masked_fill(attn_mask == 0, -1e4)
        p = self.drop(torch.softmax(scores, dim=-1))
        out = p @ v + torch.einsum("bhij,ijd->bhid", p, ev)
        return self.o(out.transpose(2, 3).reshape(b, c, t))


class FFN(nn.Module):
    def __init__(self, ch: int, filt: int, kernel: int, p: float):
        super().__init__()
        self.c1 = nn.Conv1d(ch, filt, kernel, padding=kernel // 2)
        self.c2 = nn.Conv1d(filt, ch, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(p)

    def forward(self, x, mask):
        x = self.drop(torch.relu(self.c1(x * mask)))
        return self.c2(x * mask) * mask


class DurationPredictor(nn.Module):
    def __init__(self, ch: int, filt: int, kernel: int = 3, p: float = 0.1):
        super().__init__()
        self.c1 = nn.Conv1d(ch, filt, kernel, padding=kernel // 2)
        self.n1 = ChannelNorm(filt)
        self.c2 = nn.Conv1d(filt, filt, kernel, padding=kernel // 2)
        self.n2 = ChannelNorm(filt)
        self.proj = nn.Conv1d(filt, 1, 1)
        self.drop = nn.Dropout(p)

    def forward(self, x, mask):
        x = self.drop(self.n1(torch.relu(self.c1(x * mask))))
        x = self.drop(self.n2(torch.relu(self.c2(x * mask))))
        return self.proj(x * mask) * mask


class TextEncoder(nn.Module):
    """ids (B, T), lengths (B,) → mu (B, n_feats, T), log-durations (B, 1, T), mask (B, 1, T)."""

    def __init__(self, c: GradTTSConfig):
        super().__init__()
        ch = c.enc_channels
        self.ch = ch
        self.emb = nn.Embedding(c.n_vocab, ch)
        nn.init.normal_(self.emb.weight, 0.0, ch ** -0.5)
        self.prenet = ConvReluNorm(ch)
        self.attn = nn.ModuleList(RelMultiHeadAttention(ch, c.enc_heads, c.window_size,
                                                        c.enc_dropout) for _ in range(c.enc_layers))
        self.norm1 = nn.ModuleList(ChannelNorm(ch) for _ in range(c.enc_layers))
        self.ffn = nn.ModuleList(FFN(ch, c.enc_filter, c.enc_kernel, c.enc_dropout)
                                 for _ in range(c.enc_layers))
        self.norm2 = nn.ModuleList(ChannelNorm(ch) for _ in range(c.enc_layers))
        self.drop = nn.Dropout(c.enc_dropout)
        self.proj_m = nn.Conv1d(ch, c.n_feats, 1)
        self.dp = DurationPredictor(ch, c.dp_filter, 3, c.enc_dropout)

    def forward(self, ids, lengths):
        x = self.emb(ids) * math.sqrt(self.ch)
        x = x.transpose(1, 2)
        t = ids.shape[1]
        mask = (torch.arange(t, device=ids.device)[None, :] < lengths[:, None]).unsqueeze(1)
        mask = mask.to(x.dtype)
        x = self.prenet(x, mask)
        attn_mask = mask.unsqueeze(2) * mask.unsqueeze(-1)              # (B, 1, T, T)
        for attn, n1, ffn, n2 in zip(self.attn, self.norm1, self.ffn, self.norm2):
            x = x * mask
            x = n1(x + self.drop(attn(x, attn_mask)))
            x = n2(x + self.drop(ffn(x, mask)))
        x = x * mask
        mu = self.proj_m(x) * mask
        logw = self.dp(x.detach(), mask)
        return mu, logw, mask


# ----------------------------------------------------------------------------------------
# Score U-Net
# ----------------------------------------------------------------------------------------

class Mish(nn.Module):
    """x·tanh(softplus(x)), with softplus written as log(1 + exp(x)): onnxruntime's CPU
    Softplus kernel took 29 % of the U-Net step; Exp/Log/Tanh are vectorised. For large x,
    exp → inf, log → inf, tanh → 1 (no NaN, also in fp16 where Exp/Log stay fp32)."""

    def forward(self, x):
        return x * torch.tanh(torch.log(1 + torch.exp(x)))


class Block(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)
        self.act = Mish()

    def forward(self, x, mask):
        return self.act(self.norm(self.conv(x * mask))) * mask


class ResnetBlock(nn.Module):
    """Two conv blocks + time conditioning. The time projection (Mish → Linear in the paper)
    of every block is one fused Linear in ScoreUNet; ``temb`` here is this block's slice."""

    def __init__(self, dim: int, dim_out: int, time_dim: int, groups: int = 8):
        super().__init__()
        self.dim_out = dim_out
        self.b1 = Block(dim, dim_out, groups)
        self.b2 = Block(dim_out, dim_out, groups)
        self.res = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x, mask, temb):
        h = self.b1(x, mask) + temb[:, :, None, None]
        h = self.b2(h, mask)
        return h + self.res(x * mask)


class LinearAttention(nn.Module):
    """Linear attention over the (mel, frame) plane; wrapped in a ReZero residual."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dh = heads, dim_head
        hidden = heads * dim_head
        self.qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.out = nn.Conv2d(hidden, dim, 1)
        self.g = nn.Parameter(torch.zeros(1))    # ReZero gate, 0 at init as in the paper

    def forward(self, x):
        b, c, h, w = x.shape
        qkv = self.qkv(x).reshape(b, 3, self.heads, self.dh, h * w)
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
        k = k.softmax(dim=-1)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        out = self.out(out.reshape(b, self.heads * self.dh, h, w))
        return x + self.g * out


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of t × pe_scale, then an MLP (dim → 4·dim → dim).

    The phase t·scale·freq is a Gemm against a constant row so that fp16 conversion can keep it
    (and the sin/cos) in fp32: at t·1000 fp16 resolution would be 0.5 rad.
    """

    def __init__(self, dim: int, scale: float):
        super().__init__()
        half = dim // 2
        freqs = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1))) * scale
        # [sin | cos] as one sin: cos(x) = sin(x + π/2)
        self.register_buffer("freqs", torch.cat([freqs, freqs])[:, None].clone(), persistent=False)
        self.register_buffer("shift", torch.cat([torch.zeros(half),
                                                 torch.full((half,), math.pi / 2)]),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim))

    def forward(self, t):
        phase = F.linear(t[:, None].to(self.freqs.dtype), self.freqs, self.shift)   # (B, dim)
        return self.mlp(phase.sin())


class ScoreUNet(nn.Module):
    """One score evaluation: (x_t, mask, mu, t) → score, all (B, n_feats, F) except t (B,)."""

    def __init__(self, c: GradTTSConfig):
        super().__init__()
        dim = c.dec_dim
        self.temb = TimeEmbedding(dim, c.pe_scale)
        dims = [2] + [dim * m for m in c.dim_mults]
        in_out = list(zip(dims[:-1], dims[1:]))
        n = len(in_out)
        self.downs = nn.ModuleList()
        for i, (di, do) in enumerate(in_out):
            last = i == n - 1
            self.downs.append(nn.ModuleList([
                ResnetBlock(di, do, dim), ResnetBlock(do, do, dim),
                LinearAttention(do, c.attn_heads, c.attn_dim_head),
                nn.Conv2d(do, do, 3, 2, 1) if not last else nn.Identity()]))
        mid = dims[-1]
        self.mid1 = ResnetBlock(mid, mid, dim)
        self.mid_attn = LinearAttention(mid, c.attn_heads, c.attn_dim_head)
        self.mid2 = ResnetBlock(mid, mid, dim)
        self.ups = nn.ModuleList()
        for di, do in reversed(in_out[1:]):
            self.ups.append(nn.ModuleList([
                ResnetBlock(do * 2, di, dim), ResnetBlock(di, di, dim),
                LinearAttention(di, c.attn_heads, c.attn_dim_head),
                nn.ConvTranspose2d(di, di, 4, 2, 1)]))
        self.final = Block(dim, dim)
        self.final_conv = nn.Conv2d(dim, 1, 1)
        blocks = [m for m in self.modules() if isinstance(m, ResnetBlock)]
        self._splits = [b.dim_out for b in blocks]
        # all blocks' time projections in one Linear (one Gemm in the graph)
        self.time_proj = nn.Sequential(Mish(), nn.Linear(dim, sum(self._splits)))

    def forward(self, x, mask, mu, t):
        temb = iter(torch.split(self.time_proj(self.temb(t)), self._splits, dim=1))
        h = torch.stack([mu, x], 1)                 # (B, 2, n_feats, F)
        m = mask.unsqueeze(1)                       # (B, 1, 1, F)
        masks, skips = [m], []
        for r1, r2, attn, down in self.downs:
            mk = masks[-1]
            h = r1(h, mk, next(temb))
            h = r2(h, mk, next(temb))
            h = attn(h)
            skips.append(h)
            h = down(h * mk)
            masks.append(mk[:, :, :, ::2])
        masks = masks[:-1]
        mk = masks[-1]
        h = self.mid1(h, mk, next(temb))
        h = self.mid_attn(h)
        h = self.mid2(h, mk, next(temb))
        for r1, r2, attn, up in self.ups:
            mk = masks.pop()
            h = torch.cat([h, skips.pop()], 1)
            h = r1(h, mk, next(temb))
            h = r2(h, mk, next(temb))
            h = attn(h)
            h = up(h * mk)
        h = self.final(h, masks[0])
        return (self.final_conv(h * masks[0]) * masks[0]).squeeze(1)


# ----------------------------------------------------------------------------------------
# Grad-TTS
# ----------------------------------------------------------------------------------------

class GradTTS(nn.Module):
    def __init__(self, config: GradTTSConfig):
        super().__init__()
        self.config = config
        self.encoder = TextEncoder(config)
        self.decoder = ScoreUNet(config)

    # diffusion schedule ------------------------------------------------------------------
    def beta_integral(self, t):
        c = self.config
        return c.beta_min * t + 0.5 * (c.beta_max - c.beta_min) * t * t

    # training ----------------------------------------------------------------------------
    def compute_loss(self, ids, x_lengths, mel, y_lengths, generator=None):
        """Duration, prior and diffusion losses (Grad-TTS eq. 14 and the MAS-based losses)."""

        c = self.config
        mu_x, logw, x_mask = self.encoder(ids, x_lengths)
        y_max = mel.shape[-1]
        y_mask = (torch.arange(y_max, device=mel.device)[None] < y_lengths[:, None]).unsqueeze(1)
        y_mask = y_mask.to(mel.dtype)
        attn_mask = x_mask.unsqueeze(-1) * y_mask.unsqueeze(2)               # (B,1,Tx,Ty)
        with torch.no_grad():
            # log N(y_j; mu_i, I) for every token i and frame j
            const = -0.5 * math.log(2 * math.pi) * c.n_feats
            y_sq = -0.5 * (mel ** 2).sum(1, keepdim=True)                    # (B,1,Ty)
            mu_sq = -0.5 * (mu_x ** 2).sum(1).unsqueeze(-1)                  # (B,Tx,1)
            cross = mu_x.transpose(1, 2) @ mel                               # (B,Tx,Ty)
            log_prior = y_sq + cross + mu_sq + const
            path = maximum_path((log_prior * attn_mask[:, 0]).cpu().numpy(),
                                x_lengths.cpu().numpy(), y_lengths.cpu().numpy())
            attn = torch.from_numpy(path).to(mel.device) * attn_mask[:, 0]
        logw_target = torch.log(1e-8 + attn.sum(-1)).unsqueeze(1) * x_mask
        dur_loss = ((logw - logw_target) ** 2).sum() / x_lengths.sum()

        mu_y = (attn.transpose(1, 2) @ mu_x.transpose(1, 2)).transpose(1, 2)  # (B,F,Ty)
        prior_loss = (0.5 * ((mel - mu_y) ** 2 + math.log(2 * math.pi)) * y_mask).sum() \
            / (y_mask.sum() * c.n_feats)

        # decoder on random segments of out_size frames (multiple of 4)
        seg = fix_len(min(c.out_size, y_max))
        if seg > y_max:
            pad = seg - y_max
            mel, mu_y, y_mask = (F.pad(a, (0, pad)) for a in (mel, mu_y, y_mask))
            y_max = seg
        starts = [int(torch.randint(0, max(1, int(yl) - seg + 1), (1,), generator=generator))
                  if int(yl) > seg else 0 for yl in y_lengths]
        def segment(a):
            return torch.stack([a[i, :, s:s + seg] for i, s in enumerate(starts)])

        x0, mu_s, m_s = segment(mel), segment(mu_y), segment(y_mask)
        diff_loss = self.diffusion_loss(x0, m_s, mu_s, generator=generator)
        return dur_loss, prior_loss, diff_loss

    def diffusion_loss(self, x0, mask, mu, offset: float = 1e-5, generator=None):
        b = x0.shape[0]
        t = torch.rand(b, device=x0.device, generator=generator).clamp(offset, 1 - offset)
        cum = self.beta_integral(t)[:, None, None]
        mean = x0 * torch.exp(-0.5 * cum) + mu * (1 - torch.exp(-0.5 * cum))
        var = 1 - torch.exp(-cum)
        z = torch.randn(x0.shape, device=x0.device, generator=generator)
        xt = (mean + z * var.sqrt()) * mask
        score = self.decoder(xt, mask, mu, t)
        return ((score * var.sqrt() + z) ** 2 * mask).sum() / (mask.sum() * self.config.n_feats)


def build_model(config: GradTTSConfig, seed: int = 0, random_gates: bool = False) -> GradTTS:
    """A seeded model. ``random_gates``: give the ReZero attention gates a non-zero value so
    that a random-init model (presets, for speed/export work) exercises its attention paths."""
    g = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = GradTTS(config)
    if random_gates:
        for m in model.modules():
            if isinstance(m, LinearAttention):
                nn.init.constant_(m.g, 0.5)
    # a prior of ~3 frames per (blank-interspersed) token, so random-init durations are
    # speech-like (~6 frames per character) instead of 1 frame per token
    nn.init.constant_(model.encoder.dp.proj.bias, math.log(3.0))
    torch.random.set_rng_state(g)
    return model.eval()
