# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: the dropped keys' compensation, merged into the sparse attention's output.

One program = one (batch, head) and 64 query positions (tile order, as the attention kernel runs).
Every 64-key group g of the scored keys stands for its n_g dropped keys by its mean key and mean
value: it adds n_g * exp(s_g) * mean_value to the softmax's numerator and n_g * exp(s_g) to its
denominator, with s_g = q . mean_key * scale per query row (QUERY) or one score per query tile
computed beforehand (POOLED: the part arrives as (out, lse) per tile). The part is merged with the
attention's (out, lse) by log-sum-exp in place; a row with nothing dropped is not written (its
output stays bit-equal to the uncompensated one).
"""
import triton
import triton.language as tl

from .._common import block_tokens, mma

LN2 = tl.constexpr(0.6931471805599453)
LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def compensate_kernel(
    Q, KM, VM, KEPT, CO, CL, O, LSE, QUERY_INDEX,
    qk_scale_log2,
    stride_qb, stride_qs, stride_qh, stride_qd,
    stride_ob, stride_os, stride_oh, stride_od,
    H, Sq, num_query_blocks, num_groups, num_keys,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_G: tl.constexpr,
    GROUP_KEYS: tl.constexpr,
    UPCAST: tl.constexpr,
    INDEXED: tl.constexpr,
    POOLED: tl.constexpr,
    PROGRAMS_PER_ROW: tl.constexpr,
):
    # KM, VM: fp32 [B * H, G, D] group means; KEPT: uint8 [rows, G] kept keys per group (rows in
    # (batch, head, query block) order); CO fp32 [rows, D] / CL fp32 [rows] (natural log): the
    # pooled part per query tile (POOLED only). O [B, S, H, D] and LSE [B, H, S] are updated in place.
    qb = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    _, row_ok, offs_m = block_tokens(QUERY_INDEX, qb * BLOCK_M, Sq, BLOCK_M, INDEXED)
    offs_d = tl.arange(0, HEAD_DIM)
    row = bh.to(tl.int64) * num_query_blocks + qb // PROGRAMS_PER_ROW

    if POOLED:
        c_lse2 = tl.load(CL + row) * LOG2E + tl.zeros([BLOCK_M], dtype=tl.float32)
        c_out = tl.load(CO + row * HEAD_DIM + offs_d)[None, :] + tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    else:
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :] * stride_qd,
                    mask=row_ok[:, None], other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        offs_g = tl.arange(0, BLOCK_G)
        means = bh.to(tl.int64) * num_groups * HEAD_DIM
        for g0 in range(0, num_groups, BLOCK_G):
            g = g0 + offs_g
            g_ok = g < num_groups
            kept = tl.load(KEPT + row * num_groups + g, mask=g_ok, other=0).to(tl.float32)
            size = tl.minimum(num_keys - g * GROUP_KEYS, GROUP_KEYS).to(tl.float32)
            dropped = tl.where(g_ok, size - kept, 0.0)
            km = tl.load(KM + means + g[None, :] * HEAD_DIM + offs_d[:, None], mask=g_ok[None, :], other=0.0)
            vm = tl.load(VM + means + g[:, None] * HEAD_DIM + offs_d[None, :], mask=g_ok[:, None], other=0.0)
            s = mma(q, km.to(q.dtype), UPCAST) * qk_scale_log2
            s = tl.where(dropped[None, :] > 0, s + tl.log2(tl.maximum(dropped, 1.0))[None, :], float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_shift)
            p = tl.exp2(s - m_shift[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            # p @ mean_value in fp32 (UPCAST) or q's dtype on the tensor cores, as the attention does
            acc = acc * alpha[:, None] + mma(p.to(q.dtype), vm.to(q.dtype), UPCAST)
            m_i = m_new
        has = l_i > 0.0
        c_lse2 = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
        c_out = acc / tl.where(has, l_i, 1.0)[:, None]

    # merge with the attention's part by log-sum-exp (base 2 here, natural in LSE)
    lse_ptr = LSE + bh.to(tl.int64) * Sq + offs_m
    o_ptr = O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :] * stride_od
    a_lse2 = tl.load(lse_ptr, mask=row_ok, other=float("-inf")) * LOG2E
    o = tl.load(o_ptr, mask=row_ok[:, None], other=0.0).to(tl.float32)
    comp = c_lse2 > float("-inf")
    m = tl.maximum(a_lse2, c_lse2)
    m = tl.where(m == float("-inf"), 0.0, m)
    wa = tl.exp2(a_lse2 - m)
    wc = tl.exp2(c_lse2 - m)
    wsum = tl.where(comp, wa + wc, 1.0)
    out = (wa[:, None] * o + wc[:, None] * c_out) / wsum[:, None]
    write = row_ok & comp
    tl.store(o_ptr, out.to(O.dtype.element_ty), mask=write[:, None])
    tl.store(lse_ptr, (m + tl.log2(wsum)) * LN2, mask=write)
