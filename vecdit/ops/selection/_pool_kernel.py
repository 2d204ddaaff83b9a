# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: mean query of each query block, read through the tile order.

One program = one (batch, head, query block): it loads the block's rows through `QUERY_INDEX`
(tile-order position -> token; raster order reads consecutive rows) and writes their fp32 mean,
times the score scale. Q is read once, in place: the tile order is never copied.
"""
import triton
import triton.language as tl

from .._common import block_tokens


@triton.jit
def pool_queries_kernel(
    Q, QUERY_INDEX, POOLED,
    stride_qb, stride_qs, stride_qh, stride_qd,
    H, Sq, num_blocks, scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    INDEXED: tl.constexpr,
):
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    _, ok, rows = block_tokens(QUERY_INDEX, blk * BLOCK_SIZE, Sq, BLOCK_SIZE, INDEXED)
    d = tl.arange(0, HEAD_DIM)
    x = tl.load(Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_qs + d[None, :] * stride_qd,
                mask=ok[:, None], other=0.0).to(tl.float32)
    members = tl.minimum(Sq - blk * BLOCK_SIZE, BLOCK_SIZE)  # the last block can be short
    pooled = tl.sum(x, 0) * (scale / members)
    tl.store(POOLED + (bh.to(tl.int64) * num_blocks + blk) * HEAD_DIM + d, pooled)
