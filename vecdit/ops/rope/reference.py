# Copyright 2026 The vecdit authors. Apache-2.0.
"""Plain PyTorch references of the fused norm + rotary: the tests' oracle (and the op's path off
Triton, for other dtypes and head sizes)."""
import torch


def rms_norm_reference(x, weight, eps):
    """diffusers' RMSNorm, step by step (the kernel rounds at the same points)."""
    y = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
    return y.to(weight.dtype) * weight


def rotary_pairs_reference(x, cos, sin):
    x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], -1).flatten(-2).to(x.dtype)
