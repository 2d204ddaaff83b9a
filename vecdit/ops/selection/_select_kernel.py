# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel of vector selection: score keys with pooled queries, then stats or mask.

One program = one (batch, head) and BLOCK_M query blocks (rows). Scores are the matrix product
of the pooled queries (in the input dtype: the rule rounds them so) with K, one dot on the tensor
cores with fp32 accumulation: the exact products of the rule's operands, summed in fp32. (An fp32
pooled query split into hi + lo halves, two dots, was dropped: rounding it costs no
attention mass on the lab's proxy, within 0.001, and measured 1.0-1.85 ms of the mask pass at
HunyuanVideo-720p.)
The same kernel runs two passes (PASS):
  0 stats: row max of the scores (the `exact` min-p rule needs the true max first);
  1 mask:  keep key j if s_j >= min(max(m - gap, LOWER), UPPER): the min-p cut, raised to the
           row's budget cut (at most k keys) and lowered to its floor cut (at least n keys), with
           m the row max (`exact`) or the max over key tiles up to j's (`running`). Written as a
           bitmask, one 64-bit word per (row, key tile of 64), with per word either its kept count
           (uint8, the compact form kept for reuse) or the running sum of the counts (RUNNING_SUM:
           int32, where each word's keys end in the row's list, what the expansion reads), and the
           count per row. (Scoring 128 keys per step, a wider dot for the same words, was timed
           no faster: 8.61 vs 8.64 ms at HunyuanVideo-720p, 4x4x4, 25%; bench/DESIGN.md#selection.)
           Index lists are expanded by `_expand_kernel.py`:
           writing indices here, from the score tile's layout, scattered 4-byte stores over many
           rows and cost 4x the pass.
"""
import triton
import triton.language as tl

from .._common import mma

PASS_STATS = tl.constexpr(0)
PASS_MASK = tl.constexpr(1)


@triton.jit
def vec_select_kernel(
    POOLED, K,
    GAP, ROW_MAX, LOWER, UPPER, COUNT, MASK, WORD_OUT,
    stride_kb, stride_ks, stride_kh, stride_kd,
    H, Sk, num_query_blocks, num_words,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    PASS: tl.constexpr,
    RUNNING: tl.constexpr,
    RUNNING_SUM: tl.constexpr,
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
    BLOCK_N: tl.constexpr = 64  # keys per step: one bitmask word (WORD_KEYS)
    offs_n = tl.arange(0, BLOCK_N)

    q_ptrs = rows[:, None] * HEAD_DIM + offs_d[None, :]
    pooled = tl.load(POOLED + q_ptrs, mask=row_ok[:, None], other=0.0)
    k_base = K + b * stride_kb + h.to(tl.int64) * stride_kh

    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    count = tl.zeros([BLOCK_M], dtype=tl.int32)
    gap = tl.load(GAP + h)
    if PASS == PASS_MASK:
        lower = tl.load(LOWER + rows, mask=row_ok, other=0.0)
        upper = tl.load(UPPER + rows, mask=row_ok, other=0.0)
        if not RUNNING:
            m = tl.load(ROW_MAX + rows, mask=row_ok, other=0.0)
            cut = tl.minimum(tl.maximum(m - gap, lower), upper)
        bit = offs_n.to(tl.int64)  # the key's bit in its step's word

    for start in range(0, Sk, BLOCK_N):
        cols = start + offs_n
        col_ok = cols < Sk
        k = tl.load(k_base + cols[None, :].to(tl.int64) * stride_ks + offs_d[:, None] * stride_kd,
                    mask=col_ok[None, :], other=0.0)
        # [BM, BN] fp32 scores (already scaled by 1/sqrt(d) through the pooled queries)
        s = mma(pooled, k, UPCAST)
        if PASS == PASS_STATS:
            row_max = tl.maximum(row_max, tl.max(tl.where(col_ok[None, :], s, float("-inf")), 1))
        else:
            if RUNNING:
                # tile-prefix max: the key tile counts toward the max it is tested against
                row_max = tl.maximum(row_max, tl.max(tl.where(col_ok[None, :], s, float("-inf")), 1))
                cut = tl.minimum(tl.maximum(row_max - gap, lower), upper)
            keep = (s >= cut[:, None]) & col_ok[None, :]
            word_index = start // 64
            # distinct powers of two: the sum is the bitwise or
            word = tl.sum(tl.where(keep, 1 << bit[None, :], 0), 1)
            tl.store(MASK + rows * num_words + word_index, word, mask=row_ok)
            kept = tl.sum(keep.to(tl.int32), 1)
            count += kept
            if RUNNING_SUM:
                tl.store(WORD_OUT + rows * num_words + word_index, count, mask=row_ok)
            else:
                tl.store(WORD_OUT + rows * num_words + word_index, kept.to(tl.uint8), mask=row_ok)

    if PASS == PASS_STATS:
        tl.store(ROW_MAX + rows, row_max, mask=row_ok)
    else:
        tl.store(COUNT + rows, count, mask=row_ok)
