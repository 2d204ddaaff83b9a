# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton forward kernel of vector-sparse attention (non-causal).

One program = one (batch, head) and 64 query positions: a 64-query block, or one half of a
128-query tile (PROGRAMS_PER_ROW = 2 programs share the tile's list). Positions are in the
selection's query order: with tiles, query rows are loaded and output rows stored through
QUERY_INDEX (position -> token), so the tile order is never copied. It attends the contiguous key
range [dense_start, dense_end) first, then the block's selected key rows, gathered by index.
Online softmax in base 2 with fp32 statistics and accumulator.

COMPENSATED (the "dropped" compensation, `compensation.dropped_part`): each selected key j's
probability enters P @ V as p - 2^(lmax - m) * w[g(j)], w the tile's weight of j's 64-key group
(W[row, g], 0 where the group drops nothing) and lmax its max pooled logit (log2): the kept keys'
share of the pooled compensation, subtracted here at no extra MMA. The running max m starts at
lmax, so the factor 2^(lmax - m) stays <= 1. The row sum l keeps the unmodified p; the tile's
part (CO, CL: sum_g e_g vsum_g over sum_g n_g e_g, and log sum_g n_g e_g) is merged in the
epilogue, in the same frame, before the one division.
"""
import triton
import triton.language as tl

from .._common import block_tokens, mma


@triton.jit
def _softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale_log2, w, lmax, UPCAST: tl.constexpr, MASKED: tl.constexpr,
                  COMPENSATED: tl.constexpr):
    # q: [BM, D]  k: [D, BN]  v: [BN, D]  valid: [BN] (read only when MASKED)
    # w: [BN] fp32 group weights of the keys, lmax: their frame (log2), read only when COMPENSATED
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
    if COMPENSATED:
        # the kept keys' pooled share in this row's frame: 2^(L_g - m) = w_g * 2^(lmax - m) <= 1 (m starts
        # at lmax); lmax = -inf (nothing dropped) gives 0, and w = 0 too
        c = tl.exp2(lmax - m_shift)
        p = p - c[:, None] * w[None, :]
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
    COLUMN_INDEX, COLUMN_OFFSET, COLUMN_COUNT, QUERY_INDEX, W, LMAX, CO, CL,
    qk_scale_log2,
    stride_qb, stride_qs, stride_qh, stride_qd,
    stride_kb, stride_ks, stride_kh, stride_kd,
    stride_vb, stride_vs, stride_vh, stride_vd,
    stride_ob, stride_os, stride_oh, stride_od,
    H, Sq, num_query_blocks, dense_start, dense_end, num_groups,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
    INDEXED: tl.constexpr,
    PROGRAMS_PER_ROW: tl.constexpr,
    COMPENSATED: tl.constexpr = False,
    GROUP_KEYS: tl.constexpr = 64,
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
    if COMPENSATED:
        # the group weights of this row's tile and their frame; the running max starts at that frame, so
        # the kept keys' correction 2^(lmax - m) never exceeds 1 (and never overflows)
        tile_row = bh.to(tl.int64) * num_query_blocks + qb // PROGRAMS_PER_ROW
        w_row = W + tile_row * num_groups
        lmax = tl.load(LMAX + tile_row)
        m_i = tl.zeros([BLOCK_M], dtype=tl.float32) + lmax
    else:
        w_row = W
        lmax = 0.0
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # always-attended contiguous range (e.g. HunyuanVideo's valid text tokens)
    for start in range(dense_start, dense_end, BLOCK_N):
        cols = start + offs_n
        valid = cols < dense_end
        k, v = _gather_kv(k_base, v_base, cols, valid, offs_d, stride_ks, stride_kd, stride_vs, stride_vd, True)
        m_i, l_i, acc = _softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale_log2, 0.0, 0.0, UPCAST, True, False)

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
        w = tl.load(w_row + cols // GROUP_KEYS) if COMPENSATED else 0.0
        m_i, l_i, acc = _softmax_step(q, k, v, cols, m_i, l_i, acc, qk_scale_log2, w, lmax, UPCAST, False, COMPENSATED)
        cols = next_cols
    if full_end < sel_end:
        pos = full_end + offs_n
        valid = pos < sel_end
        cols = tl.load(COLUMN_INDEX + pos, mask=valid, other=0).to(tl.int64)
        k, v = _gather_kv(k_base, v_base, cols, valid, offs_d, stride_ks, stride_kd, stride_vs, stride_vd, True)
        w = tl.load(w_row + cols // GROUP_KEYS, mask=valid, other=0.0) if COMPENSATED else 0.0
        m_i, l_i, acc = _softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale_log2, w, lmax, UPCAST, True, COMPENSATED)

    if COMPENSATED:
        # the tile's part (sum_g e_g vsum_g, sum_g n_g e_g as out CO and natural lse CL) merged here, in
        # one frame with the attention's: exact even where the kept keys' own mass l underflows
        c_lse2 = tl.load(CL + row) * 1.4426950408889634
        c_out = tl.load(CO + row * HEAD_DIM + offs_d)
        m = tl.maximum(m_i, c_lse2)
        m = tl.where(m == float("-inf"), 0.0, m)
        wa = tl.exp2(m_i - m)
        wc = tl.exp2(c_lse2 - m)
        l_i = l_i * wa + wc
        acc = acc * wa[:, None] + wc[:, None] * c_out[None, :]
        m_i = m
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
