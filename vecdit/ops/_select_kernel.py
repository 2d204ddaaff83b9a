# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel of vector selection: score keys with pooled queries, then stats, count or mask.

One program = one (batch, head) and BLOCK_M query blocks (rows). Scores are the matrix product
of the pooled queries with K, so the selection runs on tensor cores; fp32 accuracy comes from
splitting each pooled query into a high and a low half of the input dtype (two dots).
The same kernel runs three passes (PASS):
  0 stats: row max and row min of the scores (the `exact` rule needs the true max first);
  1 count: number of kept keys per row for given cutoffs (density cap / floor bisection);
  2 mask:  the kept keys as a bitmask, one 64-bit word per (row, key tile of 64), the kept count
           per word (the expansion's prefix sums) and per row.
           The index lists are expanded from it by `_expand_kernel.py`: writing indices here, from
           the score tile's layout, scattered 4-byte stores over many rows and cost 4x the pass.
"""
import triton
import triton.language as tl

from ._common import mma

PASS_STATS = tl.constexpr(0)
PASS_COUNT = tl.constexpr(1)
PASS_MASK = tl.constexpr(2)


@triton.jit
def vec_select_kernel(
    Q_HI, Q_LO, K,
    GAP, CUTOFF, FIXED, ACTIVE,
    ROW_MAX, ROW_MIN, COUNT, MASK, WORD_COUNT,
    stride_kb, stride_ks, stride_kh, stride_kd,
    H, Sk, num_query_blocks, num_words,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PASS: tl.constexpr,
    RUNNING: tl.constexpr,
    USE_ACTIVE: tl.constexpr,
    UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = bh % H

    local = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = local < num_query_blocks
    rows = bh.to(tl.int64) * num_query_blocks + local
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)

    # rows with nothing left to decide (bisection of the density cap) skip the key loop
    n_end = Sk
    if USE_ACTIVE:
        active = tl.load(ACTIVE + rows, mask=row_ok, other=0)
        n_end = tl.where(tl.max(active, 0) > 0, Sk, 0)

    q_ptrs = rows[:, None] * HEAD_DIM + offs_d[None, :]
    q_hi = tl.load(Q_HI + q_ptrs, mask=row_ok[:, None], other=0.0)
    q_lo = tl.load(Q_LO + q_ptrs, mask=row_ok[:, None], other=0.0)
    k_base = K + b * stride_kb + h.to(tl.int64) * stride_kh

    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    row_min = tl.full([BLOCK_M], float("inf"), dtype=tl.float32)
    count = tl.zeros([BLOCK_M], dtype=tl.int32)
    gap = tl.load(GAP + h)
    if PASS != PASS_STATS:
        cutoff = tl.load(CUTOFF + rows, mask=row_ok, other=0.0)
        if RUNNING:
            fixed = tl.load(FIXED + rows, mask=row_ok, other=0) != 0
    if PASS == PASS_MASK:
        bit = offs_n.to(tl.int64)

    for start in range(0, n_end, BLOCK_N):
        cols = start + offs_n
        col_ok = cols < Sk
        k = tl.load(k_base + cols[None, :].to(tl.int64) * stride_ks + offs_d[:, None] * stride_kd,
                    mask=col_ok[None, :], other=0.0)
        # [BM, BN] fp32 scores (already scaled by 1/sqrt(d) through the pooled queries)
        s = mma(q_hi, k, UPCAST) + mma(q_lo, k, UPCAST)
        s_hi = tl.where(col_ok[None, :], s, float("-inf"))
        if PASS == PASS_STATS:
            row_max = tl.maximum(row_max, tl.max(s_hi, 1))
            row_min = tl.minimum(row_min, tl.min(tl.where(col_ok[None, :], s, float("inf")), 1))
        else:
            cut = cutoff
            if RUNNING:
                # tile-prefix max: the key tile counts toward the max it is tested against
                row_max = tl.maximum(row_max, tl.max(s_hi, 1))
                cut = tl.where(fixed, cutoff, row_max - gap)
            keep = (s >= cut[:, None]) & col_ok[None, :]
            keep_i = keep.to(tl.int32)
            if PASS == PASS_MASK:
                # distinct powers of two: the sum is the bitwise or
                word = tl.sum(tl.where(keep, 1 << bit[None, :], 0), 1)
                tl.store(MASK + rows * num_words + start // BLOCK_N, word, mask=row_ok)
                tl.store(WORD_COUNT + rows * num_words + start // BLOCK_N, tl.sum(keep_i, 1), mask=row_ok)
            count += tl.sum(keep_i, 1)

    if PASS == PASS_STATS:
        tl.store(ROW_MAX + rows, row_max, mask=row_ok)
        tl.store(ROW_MIN + rows, row_min, mask=row_ok)
    else:
        tl.store(COUNT + rows, count, mask=row_ok)
