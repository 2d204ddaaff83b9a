# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: scores of the pooled queries against the fixed key sample that places the budget
cuts, as the mask pass scores them (the pooled query in the input dtype, one dot on the tensor
cores, fp32 out). It reads the sampled K rows through the sample's index: no gathered copy of K,
and no fp32 GEMM (1.23 of the cut's 2.89 ms at HunyuanVideo-720p, 4x4x8 tiles, H200).

One program = one (batch, head), BLOCK_M rows (query blocks) and BLOCK_N sampled keys; the output
is fp32 `[rows, n]`, rows of the heads `HEAD_START .. HEAD_START + heads in the grid`. Without
a sample (SAMPLED false: Sk within the sample size) it scores every key, read in order.
"""
import triton
import triton.language as tl

from .._common import mma


@triton.jit
def sample_scores_kernel(
    POOLED, K, SAMPLE, OUT,
    stride_kb, stride_ks, stride_kh, stride_kd,
    H, HEAD_START, HEADS_IN_GRID, num_query_blocks, n,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    SAMPLED: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    grid_bh = tl.program_id(2)  # (batch, head within the chunk)
    b = grid_bh // HEADS_IN_GRID
    h = HEAD_START + grid_bh % HEADS_IN_GRID
    bh = b * H + h

    local = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = local < num_query_blocks
    offs_d = tl.arange(0, HEAD_DIM)
    q_ptrs = (bh.to(tl.int64) * num_query_blocks + local)[:, None] * HEAD_DIM + offs_d[None, :]
    pooled = tl.load(POOLED + q_ptrs, mask=row_ok[:, None], other=0.0)

    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < n
    if SAMPLED:
        keys = tl.load(SAMPLE + cols, mask=col_ok, other=0).to(tl.int64)
    else:  # every key (Sk <= the sample size: the exact top-k)
        keys = cols.to(tl.int64)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    k = tl.load(k_base + keys[None, :] * stride_ks + offs_d[:, None] * stride_kd, mask=col_ok[None, :], other=0.0)
    s = mma(pooled, k, UPCAST)

    out_rows = (grid_bh.to(tl.int64) * num_query_blocks + local)  # rows of this chunk's output
    tl.store(OUT + out_rows[:, None] * n + cols[None, :], s, mask=row_ok[:, None] & col_ok[None, :])
