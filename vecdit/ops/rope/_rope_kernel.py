# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: RMSNorm and rotary embedding of interleaved pairs, in place, one pass.

One program = BLOCK_S tokens of one (batch, head). The stock code (an RMSNorm, then HunyuanVideo's
`apply_rotary_emb` or Wan's rotary) runs each step as separate fp32 kernels: ~30 GB of traffic per
720p query or key tensor; this reads and writes it once, rounding where they do. NORM:
  0  none (RoPE only)
  1  diffusers' RMSNorm over head_dim (HunyuanVideo): fp32 statistics, rounded to the weight's
     dtype, then times the weight and rounded again
  2  torch.nn.RMSNorm over all heads (Wan's `rms_norm_across_heads`): the per-token 1/rms comes in
     (TOKEN_SCALE, fp32), x * scale * weight in fp32, rounded once
"""
import triton
import triton.language as tl


@triton.jit
def norm_rotary_kernel(
    X, W, TOKEN_SCALE, COS, SIN,
    stride_xb, stride_xs, stride_xh, stride_xd,
    stride_cs, stride_cd, stride_ss, stride_sd,
    H, S, rotary_rows, eps,
    HALF_DIM: tl.constexpr,
    BLOCK_S: tl.constexpr,
    NORM: tl.constexpr,
):
    pid_s = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    offs_p = tl.arange(0, HALF_DIM)
    offs_d = tl.arange(0, 2 * HALF_DIM)
    ok = (offs_s < S)[:, None]
    ptrs = X + b * stride_xb + h * stride_xh + offs_s[:, None].to(tl.int64) * stride_xs + offs_d[None, :] * stride_xd
    x = tl.load(ptrs, mask=ok, other=0.0)
    if NORM == 1:
        # diffusers' RMSNorm: x * rsqrt(mean(x^2) + eps) in fp32, to the weight's dtype, times the weight
        xf = x.to(tl.float32)
        r = tl.rsqrt(tl.sum(xf * xf, 1) / (2 * HALF_DIM) + eps)
        x = (xf * r[:, None]).to(X.dtype.element_ty)
        w = tl.load(W + offs_d).to(tl.float32)
        x = (x.to(tl.float32) * w[None, :]).to(X.dtype.element_ty)
    if NORM == 2:
        # torch.nn.RMSNorm over the heads: this head's slice of the weight, one rounding
        r = tl.load(TOKEN_SCALE + b * S + offs_s, mask=offs_s < S, other=0.0)
        w = tl.load(W + h * (2 * HALF_DIM) + offs_d).to(tl.float32)
        x = (x.to(tl.float32) * r[:, None] * w[None, :]).to(X.dtype.element_ty)
    # whole rows in (coalesced), split into the pairs' first and second elements in registers
    x0, x1 = tl.split(tl.reshape(x.to(tl.float32), (BLOCK_S, HALF_DIM, 2)))
    rot = (offs_s < rotary_rows)[:, None]
    cos = tl.load(COS + offs_s[:, None] * stride_cs + offs_p[None, :] * stride_cd, mask=rot, other=1.0)
    sin = tl.load(SIN + offs_s[:, None] * stride_ss + offs_p[None, :] * stride_sd, mask=rot, other=0.0)
    # (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos), in fp32, rounded once; rows past
    # `rotary_rows` get cos 1, sin 0: unchanged
    out = tl.reshape(tl.join(x0 * cos - x1 * sin, x0 * sin + x1 * cos), (BLOCK_S, 2 * HALF_DIM))
    tl.store(ptrs, out.to(X.dtype.element_ty), mask=ok)
