# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton forward kernel of vector-sparse attention (non-causal).

One program = one (batch, head) and 64 query positions: a 64-query block, or one half of a
128-query tile (PROGRAMS_PER_ROW = 2 programs share the tile's list). Positions are in the
selection's query order: with tiles, query rows are loaded and output rows stored through
QUERY_INDEX (position -> token), so the tile order is never copied. It attends the contiguous key
range [dense_start, dense_end) first, then the block's selected key rows, gathered by index.
Online softmax in base 2 with fp32 statistics and accumulator.
"""
import triton
import triton.language as tl

from .._common import block_tokens, mma


@triton.jit
def _softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale_log2, UPCAST: tl.constexpr, MASKED: tl.constexpr):
    # q: [BM, D]  k: [D, BN]  v: [BN, D]  valid: [BN] (read only when MASKED)
    s = mma(q, k, UPCAST) * qk_scale_log2
    if MASKED:
        s = tl.where(valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    if MASKED:
        # a row whose keys were all masked so far keeps m = -inf; shift by 0 to avoid inf - inf
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    else:
        m_shift = m_new
    alpha = tl.exp2(m_i - m_shift)
    p = tl.exp2(s - m_shift[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + mma(p.to(v.dtype), v, UPCAST)
    return m_new, l_i, acc


@triton.jit
def _gather_kv(k_base, v_base, cols, valid, offs_d, stride_ks, stride_kd, stride_vs, stride_vd, MASKED: tl.constexpr):
    # k: [D, BN] (transposed for q @ k), v: [BN, D]
    k_ptrs = k_base + cols[None, :] * stride_ks + offs_d[:, None] * stride_kd
    v_ptrs = v_base + cols[:, None] * stride_vs + offs_d[None, :] * stride_vd
    if MASKED:
        return (tl.load(k_ptrs, mask=valid[None, :], other=0.0), tl.load(v_ptrs, mask=valid[:, None], other=0.0))
    return tl.load(k_ptrs), tl.load(v_ptrs)


@triton.jit
def vec_sparse_attn_fwd_kernel(
    Q, K, V, O, LSE,
    COLUMN_INDEX, COLUMN_OFFSET, COLUMN_COUNT, QUERY_INDEX,
    qk_scale_log2,
    stride_qb, stride_qs, stride_qh, stride_qd,
    stride_kb, stride_ks, stride_kh, stride_kd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    stride_ob, stride_os, stride_oh, stride_od,
    H, Sq, num_query_blocks, dense_start, dense_end,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
    INDEXED: tl.constexpr,
    PROGRAMS_PER_ROW: tl.constexpr,
):
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)

    _, row_ok, offs_m = block_tokens(QUERY_INDEX, qb * BLOCK_M, Sq, BLOCK_M, INDEXED)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)

    q = tl.load(
        Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :] * stride_qd,
        mask=row_ok[:, None], other=0.0,
    )
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # always-attended contiguous range (e.g. HunyuanVideo's valid text tokens)
    for start in range(dense_start, dense_end, BLOCK_N):
        cols = start + offs_n
        valid = cols < dense_end
        k, v = _gather_kv(k_base, v_base, cols, valid, offs_d, stride_ks, stride_kd, stride_vs, stride_vd, True)
        m_i, l_i, acc = _softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale_log2, UPCAST, True)

    # selected key rows of this (batch, head, query block): full tiles unmasked, then the tail
    row = bh.to(tl.int64) * num_query_blocks + qb // PROGRAMS_PER_ROW
    sel_start = tl.load(COLUMN_OFFSET + row)
    sel_end = sel_start + tl.load(COLUMN_COUNT + row)
    full_end = sel_start + (sel_end - sel_start) // BLOCK_N * BLOCK_N
    # each tile's indices are loaded one iteration ahead: the K/V gather never waits on its own
    # index load, and Triton's pipeliner then keeps two gathered tiles in flight (~7% faster)
    cols = tl.load(COLUMN_INDEX + sel_start + offs_n, mask=sel_start + offs_n < full_end, other=0).to(tl.int64)
    for start in tl.range(sel_start, full_end, BLOCK_N, warp_specialize=WARP_SPECIALIZE):
        next_pos = start + BLOCK_N + offs_n
        next_cols = tl.load(COLUMN_INDEX + next_pos, mask=next_pos < full_end, other=0).to(tl.int64)
        k, v = _gather_kv(k_base, v_base, cols, cols, offs_d, stride_ks, stride_kd, stride_vs, stride_vd, False)
        m_i, l_i, acc = _softmax_step(q, k, v, cols, m_i, l_i, acc, qk_scale_log2, UPCAST, False)
        cols = next_cols
    if full_end < sel_end:
        pos = full_end + offs_n
        valid = pos < sel_end
        cols = tl.load(COLUMN_INDEX + pos, mask=valid, other=0).to(tl.int64)
        k, v = _gather_kv(k_base, v_base, cols, valid, offs_d, stride_ks, stride_kd, stride_vs, stride_vd, True)
        m_i, l_i, acc = _softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale_log2, UPCAST, True)

    # a block that attends nothing returns zeros and lse = -inf (the neutral element of a merge)
    has_mass = l_i > 0.0
    out = acc / tl.where(has_mass, l_i, 1.0)[:, None]
    tl.store(
        O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :] * stride_od,
        out.to(O.dtype.element_ty), mask=row_ok[:, None],
    )
    lse = tl.where(has_mass, (m_i + tl.log2(tl.where(has_mass, l_i, 1.0))) * 0.6931471805599453,
                   float("-inf"))
    tl.store(LSE + bh.to(tl.int64) * Sq + offs_m, lse, mask=row_ok)
