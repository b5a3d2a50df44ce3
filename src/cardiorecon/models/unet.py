"""The DiffAE networks: a decoder UNet conditioned on (t, z_sem) by adaptive group norm in every
residual block, and a semantic encoder (the down half of a UNet -> GN, SiLU, pool, linear).

Hand-written rather than diffusers' UNet2DModel: diffusers' `class_embed_type="identity"` adds
z_sem to the time embedding, whereas DiffAE scales the features by (1 + z_s):
    h = (1 + z_s) * ((1 + t_s) * GN(h) + t_b)
and the decoder needs an extra input at one resolution for DMCVR's morphology features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class SplitGroupNorm(nn.Module):
    """Group norm over channels [0, split) and [split, C) separately, each with the groups
    `group_norm` would give it; one weight and bias over all C channels (the parameters of
    nn.GroupNorm(., C), so the state dict has the same names and shapes)."""

    def __init__(self, channels: int, split: int, eps: float = 1e-5):
        super().__init__()
        if not 0 < split < channels:
            raise ValueError(f"split {split} must lie inside 1..{channels - 1}")
        self.split, self.eps = split, eps
        self.groups = (math.gcd(32, split), math.gcd(32, channels - split))
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.split
        a = F.group_norm(x[:, :s], self.groups[0], self.weight[:s], self.bias[:s], self.eps)
        b = F.group_norm(x[:, s:], self.groups[1], self.weight[s:], self.bias[s:], self.eps)
        return torch.cat([a, b], dim=1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def zero_module(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    """Residual block; with `emb_dim` it takes (t_s, t_b) from the time embedding, with
    `cond_dim` a scale z_s from z_sem (adaptive group norm, DiffAE's form)."""

    def __init__(self, cin: int, cout: int, emb_dim: int | None = None, cond_dim: int | None = None,
                 dropout: float = 0.0, norm_split: int | None = None):
        super().__init__()
        self.norm1 = group_norm(cin) if norm_split is None else SplitGroupNorm(cin, norm_split)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout)) if emb_dim else None
        self.cond = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, cout)) if cond_dim else None
        self.norm2 = group_norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None:
            t_s, t_b = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
            h = (1 + t_s) * h + t_b
        if self.cond is not None:
            h = (1 + self.cond(cond)[:, :, None, None]) * h
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the pixels of a feature map."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))
        self.heads = heads

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, *_: object) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _apply(layer: nn.Module, h: torch.Tensor, emb, cond) -> torch.Tensor:
    return layer(h, emb, cond) if isinstance(layer, ResBlock) else layer(h)


class DecoderUNet(nn.Module):
    """eps_theta(x_t, t, z_sem[, extra]) for images (B, C, H, W).

    `extra_channels` > 0 adds an input of that many channels, concatenated (after a 3x3 conv) to the
    features at resolution H / 2**extra_level on the way down (DMCVR's morphology code). With
    `extra_full_res` the extra input comes at full resolution (DMCVR's predicted label map) and a small
    conv encoder (stride-2 convs down to H / 2**extra_level, then the 3x3 conv) is trained with the decoder.
    """

    def __init__(self, in_channels: int = 1, base_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2, 4, 4),
                 num_res_blocks: int = 2, attention_levels: tuple[int, ...] = (2, 3), z_dim: int = 256,
                 dropout: float = 0.0, extra_channels: int = 0, extra_level: int = 2, extra_full_res: bool = False,
                 extra_norm_split: bool = False):
        super().__init__()
        ch = base_channels
        emb_dim = 4 * ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.base_channels = ch
        self.input = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.extra_level = extra_level
        self.extra = None
        extra_out = ch * channel_mult[extra_level] if extra_channels else 0
        if extra_channels:
            out = extra_out
            if extra_full_res:
                layers: list[nn.Module] = [nn.Conv2d(extra_channels, ch, 3, padding=1), nn.SiLU()]
                for _ in range(extra_level):
                    layers += [nn.Conv2d(ch, ch, 3, stride=2, padding=1), nn.SiLU()]
                self.extra = nn.Sequential(*layers, nn.Conv2d(ch, out, 3, padding=1))
            else:
                self.extra = nn.Conv2d(extra_channels, out, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        for level, mult in enumerate(channel_mult):
            for b in range(num_res_blocks):
                widened = level == extra_level and b == 0 and extra_out > 0
                cin = cur + (extra_out if widened else 0)
                # extra_norm_split: the widened block normalises its old channels as without the extra input
                blocks = [ResBlock(cin, ch * mult, emb_dim, z_dim, dropout,
                                   norm_split=cur if widened and extra_norm_split else None)]
                cur = ch * mult
                if level in attention_levels:
                    blocks.append(Attention(cur))
                self.down.append(nn.ModuleList(blocks))
                skips.append(cur)
            if level != len(channel_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(cur)]))
                skips.append(cur)
        self.middle = nn.ModuleList([ResBlock(cur, cur, emb_dim, z_dim, dropout), Attention(cur),
                                     ResBlock(cur, cur, emb_dim, z_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                blocks = [ResBlock(cur + skips.pop(), ch * mult, emb_dim, z_dim, dropout)]
                cur = ch * mult
                if level in attention_levels:
                    blocks.append(Attention(cur))
                if level != 0 and i == num_res_blocks:
                    blocks.append(Upsample(cur))
                self.up.append(nn.ModuleList(blocks))
        self.out = nn.Sequential(group_norm(cur), nn.SiLU(), zero_module(nn.Conv2d(cur, in_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, z_sem: torch.Tensor,
                extra: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.base_channels))
        h = self.input(x)
        hs = [h]
        level, extra_done = 0, False
        for blocks in self.down:
            if isinstance(blocks[0], Downsample):
                level += 1
            elif self.extra is not None and level == self.extra_level and not extra_done:
                if extra is None:
                    raise ValueError("this decoder needs the extra (morphology) input")
                h = torch.cat([h, self.extra(extra)], dim=1)
                extra_done = True
            for layer in blocks:
                h = _apply(layer, h, emb, z_sem)
            hs.append(h)
        for layer in self.middle:
            h = _apply(layer, h, emb, z_sem)
        for blocks in self.up:
            h = torch.cat([h, hs.pop()], dim=1)
            for layer in blocks:
                h = _apply(layer, h, emb, z_sem)
        return self.out(h)


class SemanticEncoder(nn.Module):
    """z_sem = Linear(pool(SiLU(GN(down-half UNet(x0))))): (B, C, H, W) -> (B, z_dim)."""

    def __init__(self, in_channels: int = 1, base_channels: int = 32, channel_mult: tuple[int, ...] = (1, 2, 4, 4),
                 num_res_blocks: int = 1, z_dim: int = 256):
        super().__init__()
        ch = base_channels
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ch, 3, padding=1)]
        cur = ch
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(cur, ch * mult))
                cur = ch * mult
            if level != len(channel_mult) - 1:
                layers.append(Downsample(cur))
        self.body = nn.ModuleList(layers)
        self.head = nn.Sequential(group_norm(cur), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cur, z_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.body:
            h = layer(h)
        return self.head(h)
