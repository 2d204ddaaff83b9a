# Copyright 2026 The vecdit authors. Apache-2.0.
"""Rotary embedding of interleaved pairs, in place (the form Wan2.1 and HunyuanVideo use)."""
from __future__ import annotations

import torch

from ._checks import SUPPORTED_DTYPES, use_triton

# tokens per program of the rotary kernel
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
    if x.dim() != 4 or x.shape[-1] % 2:
        raise ValueError(f"`x` must be [batch, seq, heads, head_dim] with an even head_dim, got {tuple(x.shape)}")
    half = x.shape[-1] // 2
    for name, t in (("cos", cos), ("sin", sin)):
        if t.shape != (x.shape[1], half) or t.dtype != torch.float32:
            raise ValueError(f"`{name}` must be fp32 [seq, head_dim / 2] = {(x.shape[1], half)}, got {t.dtype} {tuple(t.shape)}")
    torch.ops.vecdit.rotary_pairs_(x, cos, sin)
    return x


def rotary_pairs_reference(x, cos, sin):
    x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).flatten(-2).to(x.dtype)


@torch.library.custom_op("vecdit::rotary_pairs_", mutates_args=("x",))
def _rotary_pairs_op(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    half = x.shape[-1] // 2
    if not (use_triton(x) and x.dtype in SUPPORTED_DTYPES and half & (half - 1) == 0):
        x.copy_(rotary_pairs_reference(x, cos, sin))
        return
    import triton

    from ._rope_kernel import rotary_pairs_kernel

    batch, seq, heads, _ = x.shape
    rotary_pairs_kernel[(triton.cdiv(seq, ROPE_BLOCK_S), batch * heads)](
        x, cos, sin, *x.stride(), *cos.stride(), *sin.stride(), heads, seq,
        HALF_DIM=half, BLOCK_S=ROPE_BLOCK_S, num_warps=4)
