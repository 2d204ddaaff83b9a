# Copyright 2026 The vecdit authors. Apache-2.0.
"""fp8 (e4m3) inputs of the sparse attention kernel, with one scale per (batch, head).

e4m3 is floating point: one scale per head only sets the range (the largest value to 448), and
every element keeps its 3-bit mantissa whatever its size. K is smoothed first: its mean over the
keys is subtracted, which moves every score of a query by the same amount (softmax is unchanged)
and shrinks what is rounded (SageAttention's observation; DiT keys share a large mean). The
kernel's lse then lacks that shift; `vector_sparse_attention` adds it back when lse is asked for.
"""
from __future__ import annotations

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
FP8_PARTS = ("qk", "qkv")


def quantize_per_head(x: torch.Tensor, smooth: bool = False):
    """`x` `[B, S, H, D]` -> (e4m3 `[B, S, H, D]` contiguous, scale fp32 `[B, H]`, mean or None):
    x ~= x8 * scale (+ mean `[B, 1, H, D]` in x's dtype, subtracted first when `smooth`)."""
    mean = x.mean(1, keepdim=True, dtype=torch.float32).to(x.dtype) if smooth else None
    if smooth:
        x = x - mean
    amax = x.abs().amax(dim=(1, 3)).float()
    scale = amax.clamp_min(torch.finfo(torch.float32).tiny) / FP8_MAX
    # clamped: a bf16 rounding of the quotient past 448 would otherwise become NaN in e4m3
    x8 = (x * (1.0 / scale)[:, None, :, None].to(x.dtype)).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return x8, scale, mean


def quantize_attention_fp8(q, k, v, parts: str = "qkv"):
    """(q8, k8, v8 or v, scales fp32 `[B * H, 2]` (q scale x k scale, v scale), k's mean `[B, 1, H, D]`)
    as `gluon_sparse_attention` takes them; `parts` "qk" leaves v in its dtype (scale 1)."""
    if parts not in FP8_PARTS:
        raise ValueError(f"`parts` must be one of {FP8_PARTS}, got {parts!r}")
    q8, q_scale, _ = quantize_per_head(q)
    k8, k_scale, k_mean = quantize_per_head(k, smooth=True)
    if parts == "qkv":
        v8, v_scale, _ = quantize_per_head(v)
    else:
        v8, v_scale = v, torch.ones_like(q_scale)
    scales = torch.stack((q_scale * k_scale, v_scale), dim=-1).reshape(-1, 2).contiguous()
    return q8, k8, v8, scales, k_mean


def dequantize_attention_fp8(q8, k8, v8, scales, k_mean):
    """fp32 q, k, v that the fp8 kernel computes with (the reference's inputs): k without its mean,
    so its scores and lse are the kernel's; q carries the q x k scale."""
    batch, _, heads, _ = q8.shape
    qk_scale, v_scale = (scales[:, i].view(batch, 1, heads, 1) for i in range(2))
    v = v8.float() * v_scale if v8.dtype == FP8_DTYPE else v8.float()
    return q8.float() * qk_scale, k8.float(), v
