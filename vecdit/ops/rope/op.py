# Copyright 2026 The vecdit authors. Apache-2.0.
"""Rotary embedding of interleaved pairs (the form Wan2.1 and HunyuanVideo use), optionally after
their qk RMSNorm (per head or across heads), in place and in one pass."""
from __future__ import annotations

import torch

from .._checks import SUPPORTED_DTYPES, use_triton
from .reference import rms_norm_reference, rotary_pairs_reference

# tokens per program of the kernel
ROPE_BLOCK_S = 32


def rotary_pairs_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[..., 2i], x[..., 2i+1]) of `x` by the angle whose cosine and sine are
    `cos[s, i]`, `sin[s, i]`, in place, computing in fp32 and rounding once:

        x[..., 2i], x[..., 2i+1] = x0 cos - x1 sin, x0 sin + x1 cos

    Args:
        x (`torch.Tensor`): `[B, S, H, D]`, any strides (e.g. the video rows of a joint sequence).
        cos, sin (`torch.Tensor`): `[S, D/2]` fp32, any strides. For diffusers' tables: HunyuanVideo
            `(cos[:, 0::2], sin[:, 0::2])` of `image_rotary_emb` (its pairs share an angle), Wan
            `(freqs_cos[0, :, 0, 0::2], freqs_sin[0, :, 0, 1::2])`, as Wan's processor reads them.

    Returns:
        `x`, rotated.
    """
    _check(x, cos, sin, x.shape[1])
    torch.ops.vecdit.norm_rotary_(x, None, 0.0, None, cos, sin, x.shape[1])
    return x


def rms_norm_rotary_(x: torch.Tensor, weight: torch.Tensor, eps: float, cos: torch.Tensor | None = None,
                     sin: torch.Tensor | None = None, *, across_heads: bool = False) -> torch.Tensor:
    """An RMSNorm, then `rotary_pairs_` on the first `cos.shape[0]` rows, in place, in one pass.

    Args:
        x (`torch.Tensor`): `[B, S, H, D]`, bf16 or fp16, any strides.
        weight (`torch.Tensor`): x's dtype; `[D]`: diffusers' `RMSNorm(head_dim)` per head
            (HunyuanVideo's qk-norm: rounded to the weight's dtype, then times the weight);
            `[H * D]` with `across_heads=True`: `torch.nn.RMSNorm(heads * head_dim)` over each token
            (Wan's `rms_norm_across_heads`: fp32, rounded once).
        eps (`float`): the norm's epsilon.
        cos, sin (`torch.Tensor`, *optional*): `[R, D/2]` fp32 with R <= S: rows `[0, R)` are rotated
            (the video tokens), the rest only normalized (HunyuanVideo's text tokens).
    """
    _, seq, heads, dim = x.shape if x.dim() == 4 else (0, 0, 0, 0)
    width = heads * dim if across_heads else dim
    if weight.shape != (width,) or weight.dtype != x.dtype:
        raise ValueError(f"`weight` must be [{width}] in {x.dtype}, got {weight.dtype} {tuple(weight.shape)}")
    rows = 0 if cos is None else cos.shape[0]
    if cos is None:  # no rotation: angle 0 everywhere (the kernel masks the table by row)
        cos = sin = torch.zeros(1, dim // 2, dtype=torch.float32, device=x.device)
    _check(x, cos, sin, rows if rows else 1, max_rows=seq)
    scale = None
    if across_heads:  # 1/rms per token over all heads: one fp32-accumulating read of x, strides kept
        ms = torch.linalg.vector_norm(x, dim=(2, 3), dtype=torch.float32).square() / width
        scale = torch.rsqrt(ms + eps)
    torch.ops.vecdit.norm_rotary_(x, weight, float(eps), scale, cos, sin, rows)
    return x


def _check(x, cos, sin, rows, max_rows=None):
    if x.dim() != 4 or x.shape[-1] % 2:
        raise ValueError(f"`x` must be [batch, seq, heads, head_dim] with an even head_dim, got {tuple(x.shape)}")
    half = x.shape[-1] // 2
    for name, t in (("cos", cos), ("sin", sin)):
        if t.dim() != 2 or t.shape[1] != half or t.shape[0] != rows or t.dtype != torch.float32:
            raise ValueError(f"`{name}` must be fp32 [rows, head_dim / 2] = {(rows, half)}, got {t.dtype} {tuple(t.shape)}")
    if max_rows is not None and rows > max_rows:
        raise ValueError(f"`cos`/`sin` rotate {rows} rows but `x` has {max_rows}")


@torch.library.custom_op("vecdit::norm_rotary_", mutates_args=("x",))
def _norm_rotary_op(x: torch.Tensor, weight: torch.Tensor | None, eps: float, token_scale: torch.Tensor | None,
                    cos: torch.Tensor, sin: torch.Tensor, rotary_rows: int) -> None:
    half = x.shape[-1] // 2
    if not (use_triton(x) and x.dtype in SUPPORTED_DTYPES and half & (half - 1) == 0):
        if weight is None:
            y = x
        elif token_scale is not None:  # torch.nn.RMSNorm over the heads: fp32, rounded once
            y = (x.float() * token_scale[..., None, None] * weight.float().view(x.shape[2], -1)).to(x.dtype)
        else:
            y = rms_norm_reference(x, weight, eps)
        if rotary_rows:
            y = torch.cat([rotary_pairs_reference(y[:, :rotary_rows], cos, sin), y[:, rotary_rows:]], 1)
        x.copy_(y)
        return
    import triton

    from ._rope_kernel import norm_rotary_kernel

    batch, seq, heads, _ = x.shape
    norm = 0 if weight is None else (2 if token_scale is not None else 1)
    norm_rotary_kernel[(triton.cdiv(seq, ROPE_BLOCK_S), batch * heads)](
        x, weight if weight is not None else x, token_scale if token_scale is not None else cos, cos, sin,
        *x.stride(), *cos.stride(), *sin.stride(), heads, seq, rotary_rows, eps,
        HALF_DIM=half, BLOCK_S=ROPE_BLOCK_S, NORM=norm, num_warps=4)
