# Copyright 2026 The vecdit authors. Apache-2.0.
"""Structured synthetic attention inputs: a proxy for video-DiT attention (no weights reach us).

Tokens sit on a (frames, height, width) grid in raster order, as both models flatten them. Content
is a smooth random field over the grid (Gaussian-blurred noise, so neighbours look alike), queries
and keys are per-head projections of it, and each model's 3D RoPE is applied with its axis split
(Wan2.1: head_dim 128 as 44/42/42, theta 10000; HunyuanVideo: 16/56/56, theta 256). A few "global"
tokens get keys aligned with the mean query, so every query attends them (the vertical vectors the
method looks for). Heads range from local (sharp, position-driven) to global (flat, content-driven)
through a per-head temperature. It is a proxy: seeded and configurable, not a measurement of a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

GEOMETRIES = {
    # name: (frames, height, width) token grid, rope axes (t, h, w) in head dims, theta
    "wan2.1-480p": ((21, 30, 52), (44, 42, 42), 10000.0),
    "wan2.1-720p": ((21, 45, 80), (44, 42, 42), 10000.0),
    "hunyuanvideo-720p": ((33, 45, 80), (16, 56, 56), 256.0),
    "tiny": ((3, 8, 8), (44, 42, 42), 10000.0),
    "cpu-small": ((5, 16, 24), (44, 42, 42), 10000.0),  # Wan's RoPE on a grid a CPU handles densely
}


@dataclass
class SyntheticConfig:
    geometry: str = "tiny"
    heads: int = 4
    head_dim: int = 128
    smoothness: float = 1.5  # Gaussian blur sigma of the content field, in tokens
    global_tokens: int = 4
    global_strength: float = 3.0
    sharpness: tuple[float, float] = (0.5, 4.0)  # per-head temperature, from global to local heads
    seed: int = 0


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [C, T, H, W] over the three grid axes."""
    if sigma <= 0:
        return x
    r = max(1, int(3 * sigma))
    g = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[0]
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = -1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - dim)] = pad[2 * (2 - dim) + 1] = r
        x = F.conv3d(F.pad(x[None], pad, mode="replicate"), g.view(shape).expand(c, 1, *g.view(shape).shape[2:]),
                     groups=c)[0]
    return x


def rope_3d(x: torch.Tensor, grid: tuple[int, int, int], axes: tuple[int, int, int], theta: float) -> torch.Tensor:
    """Interleaved-pair 3D rotary embedding of x [S, H, D], S = t * h * w in raster order."""
    t, h, w = grid
    ar = dict(device=x.device)
    pos = torch.stack(torch.meshgrid(torch.arange(t, **ar), torch.arange(h, **ar), torch.arange(w, **ar), indexing="ij"),
                      -1).reshape(-1, 3)
    angles = []
    for axis, dims in enumerate(axes):
        freqs = theta ** (-torch.arange(0, dims, 2, dtype=torch.float64, device=x.device) / dims)
        angles.append(pos[:, axis, None].double() * freqs[None])
    ang = torch.cat(angles, -1).float()[:, None, :]  # [S, 1, D/2]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * ang.cos() - x2 * ang.sin()
    out[..., 1::2] = x1 * ang.sin() + x2 * ang.cos()
    return out


def structured_qkv(cfg: SyntheticConfig, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 q, k, v of shape [1, S, heads, head_dim] (diffusers' layout). The random draws are made
    on the CPU (the same values on any device); the projections and RoPE run on `device`."""
    grid, axes, theta = GEOMETRIES[cfg.geometry]
    if sum(axes) != cfg.head_dim:
        scale = cfg.head_dim / sum(axes)
        axes = tuple(2 * max(1, round(a * scale / 2)) for a in axes[:2]) + (0,)
        axes = axes[:2] + (cfg.head_dim - axes[0] - axes[1],)
    g = torch.Generator().manual_seed(cfg.seed)
    t, h, w = grid
    seq = t * h * w
    content = _blur(torch.randn(cfg.head_dim, t, h, w, generator=g), cfg.smoothness)
    content = content.reshape(cfg.head_dim, seq).T
    content = (content - content.mean(0)) / content.std(0).clamp_min(1e-6)  # [S, D]
    proj = torch.randn(3, cfg.heads, cfg.head_dim, cfg.head_dim, generator=g) / math.sqrt(cfg.head_dim)
    content, proj = content.to(device), proj.to(device)
    q = torch.einsum("sd,hde->she", content, proj[0])
    k = torch.einsum("sd,hde->she", content, proj[0]) + 0.5 * torch.einsum("sd,hde->she", content, proj[1])
    v = torch.einsum("sd,hde->she", content, proj[2])
    lo, hi = cfg.sharpness
    temp = torch.logspace(math.log10(lo), math.log10(hi), cfg.heads, device=device)[None, :, None]
    q = q * temp
    if cfg.global_tokens:
        idx = torch.randperm(seq, generator=g)[: cfg.global_tokens].to(device)
        direction = q.mean(0)  # [H, D]: what the average query looks for
        k[idx] = k[idx] + cfg.global_strength * direction / direction.norm(dim=-1, keepdim=True) * math.sqrt(cfg.head_dim)
    q, k = rope_3d(q, grid, axes, theta), rope_3d(k, grid, axes, theta)
    return q[None], k[None], v[None]
