# Copyright 2026 The vecdit authors. Apache-2.0.
"""Warp-specialized vector-sparse attention in Gluon (Triton >= 3.6, Hopper, bf16, head_dim 128).

The default backend where it applies (`VECDIT_ATTN_KERNEL=auto`; `triton` forces the portable
kernel). Checked on H100 and H200 by `tests/ops/test_attention.py::test_gluon_backend_matches_the_triton_kernel`
(fp32 reference, ragged tails, dense range, strided views, empty blocks); timed against the Triton
kernel: 5-8% faster at HunyuanVideo-720p, 25% (bench/DESIGN.md#gluon-kernel; the sweep's script in git
history at b6b59e7).

Why: the Triton kernel's K/V gathers are poorly pipelined (one or two tiles in flight, ~290-350
TFLOP/s) while a dense Triton kernel with the same 64-row softmax runs at 482. Here the gather gets
its own warps, FlashAttention-3 style:
  producer (PRODUCER_WARPS warps): loads each tile's key indices (one tile ahead), gathers the K and
      V rows with 16-byte cp.async into a STAGES-deep shared-memory ring, and signals `full[s]`
      with cp.async.mbarrier.arrive.noinc (one arrival per producer thread, when its copies land);
  consumer (the default 4 warps, one warpgroup): waits `full[s]`, S = Q K^T and O += P V with
      wgmma (Q and K/V from shared memory, P from registers), online softmax in fp32, then
      releases the stage on `empty[s]`.
Same arguments and results as the Triton kernel: dense range first, ragged tails, LSE, empty
blocks -> zeros and lse = -inf, query rows read and output rows written through the tile order's
index (INDEXED). A 128-query tile runs as one program with two consumer partitions of 64 rows
that share each gathered K/V tile (CONSUMERS, `TILE128_CONFIGS`: half the gathers of two 64-row
programs, 20% faster at HunyuanVideo-720p 25%); 64-query tiles run one 64-row program each. With the gathers pipelined, the wall is now L2/DRAM (ncu: L2 95%
busy, 40% hit rate; bench/DESIGN.md#kernel-bound): key segments (`segments`) shrink the working set.

COMPENSATED (the "dropped" compensation, as in `_attn_kernel.py`): the consumer reads each selected
tile's key indices (one more read of the list, issued before it waits for the tile) and their
groups' weights W[row, key // 64], and enters p - 2^(lmax - m) * w into P @ V (l keeps the plain p;
m starts at lmax, so 2^(lmax - m) <= 1); the epilogue merges the tile's part (CO, CL) in the same
frame. The correction is linear in the accumulator, so key segments merged by lse stay exact; each
segment adds 1/segments of the part.
"""
import math
import os

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from .segments import auto_segments, merge_segments, segment_bounds

LOG2E = 1.4426950408889634


@gluon.jit
def _tile_cols(COLUMN_INDEX, t, n_dense_tiles, dense_start, sel_start, count, offs_n, BLOCK_N: gl.constexpr):
    """Key rows of tile t (int32): the dense range's tiles first, then the selected list's."""
    if t < n_dense_tiles:
        cols = dense_start + t * BLOCK_N + offs_n
    else:
        j = (t - n_dense_tiles) * BLOCK_N + offs_n
        cols = gl.load(COLUMN_INDEX + sel_start + j, mask=j < count, other=0)
    return cols


@gluon.jit
def _tile_valid(t, n_dense_tiles, dense_len, count, offs_n, BLOCK_N: gl.constexpr):
    return offs_n < _n_valid(t, n_dense_tiles, dense_len, count, BLOCK_N)


@gluon.jit
def _producer(K, V, COLUMN_INDEX, k_smem, v_smem, full, empty, k_base, v_base, sel_start, count, dense_start,
              dense_end, n_dense_tiles, n_tiles, stride_ks, stride_kd, stride_vs, stride_vd,
              HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, PRODUCER_WARPS: gl.constexpr):
    # 8 bf16 = 16 bytes per thread along the head dim: one cp.async each
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [PRODUCER_WARPS, 1], [1, 0])
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, layout))
    d = gl.expand_dims(gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout)), 0)
    dense_len = dense_end - dense_start
    # each tile's indices are loaded one tile early (two or three early measured no faster, DESIGN.md#gluon-kernel)
    cols = _tile_cols(COLUMN_INDEX, 0, n_dense_tiles, dense_start, sel_start, count, offs_n, BLOCK_N)
    for t in range(n_tiles):
        s = t % STAGES
        next_cols = _tile_cols(COLUMN_INDEX, t + 1, n_dense_tiles, dense_start, sel_start, count, offs_n, BLOCK_N)
        # a fresh barrier passes a wait on parity 1: the first STAGES tiles do not wait
        mbarrier.wait(empty.index(s), ((t // STAGES) & 1) ^ 1)
        rows = gl.expand_dims(cols.to(gl.int64), 1)
        m = gl.expand_dims(_tile_valid(t, n_dense_tiles, dense_len, count, offs_n, BLOCK_N), 1)
        # rows past a list's end are zero-filled (cp.async with a zero source size)
        async_copy.async_copy_global_to_shared(k_smem.index(s), K + k_base + rows * stride_ks + d * stride_kd, mask=m)
        async_copy.async_copy_global_to_shared(v_smem.index(s), V + v_base + rows * stride_vs + d * stride_vd, mask=m)
        async_copy.mbarrier_arrive(full.index(s), increment_count=False)
        cols = next_cols


@gluon.jit
def _n_valid(t, n_dense_tiles, dense_len, count, BLOCK_N: gl.constexpr):
    # keys of tile t that exist (the last tile of the dense range or of the list is partial)
    if t < n_dense_tiles:
        n = dense_len - t * BLOCK_N
    else:
        n = count - (t - n_dense_tiles) * BLOCK_N
    return n


@gluon.jit
def _tile_weights(COLUMN_INDEX, W, w_base, t, n_dense_tiles, sel_start, count, offs_n, BLOCK_N: gl.constexpr,
                  GROUP_KEYS: gl.constexpr):
    """fp32 group weights of tile t's keys (COMPENSATED): W[row, key // GROUP_KEYS] for the selected
    keys, 0 for the dense range's tiles and past the list's end."""
    j = (t - n_dense_tiles) * BLOCK_N + offs_n
    ok = (j >= 0) & (j < count)
    cols = gl.load(COLUMN_INDEX + sel_start + j, mask=ok, other=0)
    return gl.load(W + w_base + cols // GROUP_KEYS, mask=ok, other=0.0)


@gluon.jit
def _softmax_tile(qk, m_i, l_i, acc, n_valid, qk_scale_log2, w, lmax, BLOCK_N: gl.constexpr, s_layout: gl.constexpr,
                  o_layout: gl.constexpr, p_layout: gl.constexpr, COMPENSATED: gl.constexpr):
    """Online softmax of one score tile: (P as the next wgmma's A operand, m, l, rescaled acc).
    COMPENSATED: P less each kept key's pooled share 2^(lmax - m) * w (w: [BLOCK_N] group weights)."""
    scores = qk * qk_scale_log2
    if n_valid < BLOCK_N:
        offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
        scores = gl.where(gl.expand_dims(offs_n < n_valid, 0), scores, float("-inf"))
    # every tile has a valid key for every row (validity is per key), so m_new is finite
    m_new = gl.maximum(m_i, gl.max(scores, 1))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(scores - gl.expand_dims(m_new, 1))
    l_i = l_i * alpha + gl.sum(p, 1)
    if COMPENSATED:
        # 2^(lmax - m) <= 1: m started at lmax; lmax = -inf (the tile drops nothing; w = 0 too) gives 0
        c = gl.exp2(lmax - m_new)
        p = p - gl.expand_dims(c, 1) * gl.expand_dims(w, 0)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
    return gl.convert_layout(p.to(gl.bfloat16), p_layout), m_new, l_i, acc


@gluon.jit
def _tokens(QUERY_INDEX, q_start, Sq, BLOCK_M: gl.constexpr, layout: gl.constexpr, INDEXED: gl.constexpr):
    """(token of each of the program's query positions, valid): through the tile order's index."""
    pos = q_start + gl.arange(0, BLOCK_M, layout=layout)
    ok = pos < Sq
    if INDEXED:
        tok = gl.load(QUERY_INDEX + pos, mask=ok, other=0).to(gl.int64)
    else:
        tok = pos.to(gl.int64)
    return tok, ok


@gluon.jit
def _store_out(acc, m_i, l_i, O, LSE, QUERY_INDEX, o_base, lse_base, stride_os, stride_od, Sq, q_start,
               CO, CL, row, c_shift, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr, s_layout: gl.constexpr,
               o_layout: gl.constexpr, INDEXED: gl.constexpr, COMPENSATED: gl.constexpr):
    if COMPENSATED:
        # the tile's part (CO: sum_g e_g vsum_g / sum_g n_g e_g, CL: log sum_g n_g e_g, natural) merged in
        # the attention's frame; each of the row's key segments takes an equal share (c_shift = log2 of
        # their count), so the segments' merge by lse adds it once
        c_lse2 = gl.load(CL + row) * 1.4426950408889634 - c_shift
        m = gl.maximum(m_i, gl.zeros([BLOCK_M], gl.float32, layout=gl.SliceLayout(1, s_layout)) + c_lse2)
        m = gl.where(m == float("-inf"), 0.0, m)
        wa = gl.exp2(m_i - m)
        wc = gl.exp2(c_lse2 - m)
        l_i = l_i * wa + wc
        c_out = gl.load(CO + row * HEAD_DIM + gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout)))
        acc = (acc * gl.expand_dims(gl.convert_layout(wa, gl.SliceLayout(1, o_layout)), 1)
               + gl.expand_dims(gl.convert_layout(wc, gl.SliceLayout(1, o_layout)), 1) * gl.expand_dims(c_out, 0))
        m_i = m
    has_mass = l_i > 0.0  # a block with nothing to attend stores zeros and lse = -inf, not NaN
    l_safe = gl.where(has_mass, l_i, 1.0)
    out = acc / gl.expand_dims(gl.convert_layout(l_safe, gl.SliceLayout(1, o_layout)), 1)
    offs_m, ok_m = _tokens(QUERY_INDEX, q_start, Sq, BLOCK_M, gl.SliceLayout(1, o_layout), INDEXED)
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    ptrs = O + o_base + gl.expand_dims(offs_m, 1) * stride_os + gl.expand_dims(offs_d, 0) * stride_od
    gl.store(ptrs, out.to(O.dtype.element_ty), mask=gl.expand_dims(ok_m, 1))
    lse = gl.where(has_mass, (m_i + gl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    offs_l, ok_l = _tokens(QUERY_INDEX, q_start, Sq, BLOCK_M, gl.SliceLayout(1, s_layout), INDEXED)
    gl.store(LSE + lse_base + offs_l, lse, mask=ok_l)


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, full, empty, O, LSE, QUERY_INDEX, o_base, lse_base, stride_os, stride_od, Sq,
              q_start, count, dense_len, n_dense_tiles, n_tiles, qk_scale_log2,
              COLUMN_INDEX, W, w_base, lmax, sel_start, CO, CL, row, c_shift,
              HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
              INDEXED: gl.constexpr, WARPS: gl.constexpr, COMPENSATED: gl.constexpr, GROUP_KEYS: gl.constexpr):
    # BLOCK_M query rows on WARPS warps: 64 rows per warpgroup (wgmma's M)
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[WARPS, 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
    if COMPENSATED:  # the running max starts at the weights' frame: the correction factor stays <= 1
        m_i = gl.zeros([BLOCK_M], gl.float32, layout=gl.SliceLayout(1, s_layout)) + lmax
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=gl.SliceLayout(1, s_layout))
    zero_s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)
    offs_wn = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    for t in range(n_tiles):
        s = t % STAGES
        if COMPENSATED:  # issued before the wait: the loads overlap it
            w = _tile_weights(COLUMN_INDEX, W, w_base, t, n_dense_tiles, sel_start, count, offs_wn, BLOCK_N, GROUP_KEYS)
        else:
            w = qk_scale_log2  # unread
        mbarrier.wait(full.index(s), (t // STAGES) & 1)
        # cp.async wrote the tile through the generic proxy; wgmma reads it through the async proxy
        fence_async_shared()
        qk = warpgroup_mma(q_smem, k_smem.index(s).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk, ))
        p, m_i, l_i, acc = _softmax_tile(qk, m_i, l_i, acc, _n_valid(t, n_dense_tiles, dense_len, count, BLOCK_N),
                                         qk_scale_log2, w, lmax, BLOCK_N, s_layout, o_layout, p_layout, COMPENSATED)
        acc = warpgroup_mma(p, v_smem.index(s), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        # every warp of this consumer has waited for its wgmma; then one thread releases the stage
        # (the producer waits for one arrival per consumer partition)
        gl.thread_barrier()
        mbarrier.arrive(empty.index(s))
    _store_out(acc, m_i, l_i, O, LSE, QUERY_INDEX, o_base, lse_base, stride_os, stride_od, Sq, q_start,
               CO, CL, row, c_shift, BLOCK_M, HEAD_DIM, s_layout, o_layout, INDEXED, COMPENSATED)


@gluon.jit
def gluon_sparse_attn_kernel(Q, K, V, O, LSE, COLUMN_INDEX, COLUMN_OFFSET, COLUMN_COUNT, QUERY_INDEX,
                             W, LMAX, CO, CL, qk_scale_log2,
                             stride_qb, stride_qs, stride_qh, stride_qd,
                             stride_kb, stride_ks, stride_kh, stride_kd,
                             stride_vb, stride_vs, stride_vh, stride_vd,
                             stride_ob, stride_os, stride_oh, stride_od,
                             H, Sq, num_query_blocks, dense_start, dense_end, num_groups, c_shift,
                             SEGMENT_OFFSET, num_segments, stride_oz, stride_lz,
                             HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                             STAGES: gl.constexpr, PRODUCER_WARPS: gl.constexpr, PRODUCER_REGS: gl.constexpr,
                             SEGMENTED: gl.constexpr, INDEXED: gl.constexpr, PROGRAMS_PER_ROW: gl.constexpr,
                             CONSUMERS: gl.constexpr, CONSUMER_REGS: gl.constexpr, WARPS: gl.constexpr,
                             COMPENSATED: gl.constexpr = False, GROUP_KEYS: gl.constexpr = 64):
    qb = gl.program_id(0)
    bh = gl.program_id(1)
    seg = gl.program_id(2).to(gl.int64)
    b = (bh // H).to(gl.int64)
    h = (bh % H).to(gl.int64)
    q_start = qb * BLOCK_M
    row = bh.to(gl.int64) * num_query_blocks + qb // PROGRAMS_PER_ROW
    if SEGMENTED:
        # key segment `seg` of the row's sorted list (programs of one segment run together, so
        # their K/V working set fits L2); the dense range belongs to segment 0; partial outputs
        so = SEGMENT_OFFSET + row * (num_segments + 1) + seg
        sel_start = gl.load(so)
        count = (gl.load(so + 1) - sel_start).to(gl.int32)
        dense_end = gl.where(seg == 0, dense_end, dense_start)
    else:
        sel_start = gl.load(COLUMN_OFFSET + row)
        count = gl.load(COLUMN_COUNT + row)
    dense_len = dense_end - dense_start
    n_dense_tiles = (dense_len + BLOCK_N - 1) // BLOCK_N
    n_tiles = n_dense_tiles + (count + BLOCK_N - 1) // BLOCK_N
    # the dropped compensation's weights of this row's groups and their frame (COMPENSATED); each key
    # segment adds 2^-c_shift of the tile's part (c_shift = log2 of the segment count)
    w_base = row * num_groups
    if COMPENSATED:
        lmax = gl.load(LMAX + row)
    else:
        lmax = qk_scale_log2  # unread

    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], gl.bfloat16)
    q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, HEAD_DIM], gl.bfloat16)
    load_layout: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [WARPS, 1], [1, 0])
    offs_m, ok_m = _tokens(QUERY_INDEX, q_start, Sq, BLOCK_M, gl.SliceLayout(1, load_layout), INDEXED)
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, load_layout))
    q = gl.load(Q + b * stride_qb + h * stride_qh + gl.expand_dims(offs_m, 1) * stride_qs
                + gl.expand_dims(offs_d, 0) * stride_qd, mask=gl.expand_dims(ok_m, 1), other=0.0)
    q_smem = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_M, HEAD_DIM], q_layout, q)
    k_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, HEAD_DIM], tile_layout)
    v_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, HEAD_DIM], tile_layout)
    full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(full.index(i), count=PRODUCER_WARPS * 32)  # one noinc arrival per producer thread
        mbarrier.init(empty.index(i), count=CONSUMERS)
    fence_async_shared()  # Q written by plain stores, read by wgmma
    gl.thread_barrier()  # barriers initialised before any partition waits on them

    # the programs' rows are split among CONSUMERS partitions of WARPS warps (the default partition
    # is the first), which share each gathered K/V tile: one gather feeds BLOCK_M query rows
    ROWS: gl.constexpr = BLOCK_M // CONSUMERS
    o_base = b * stride_ob + h * stride_oh + seg * stride_oz
    lse_base = bh.to(gl.int64) * Sq + seg * stride_lz
    if CONSUMERS == 1:
        gl.warp_specialize([
            (_consumer, (q_smem, k_smem, v_smem, full, empty, O, LSE, QUERY_INDEX, o_base, lse_base, stride_os,
                         stride_od, Sq, q_start, count, dense_len, n_dense_tiles, n_tiles, qk_scale_log2,
                         COLUMN_INDEX, W, w_base, lmax, sel_start, CO, CL, row, c_shift,
                         HEAD_DIM, ROWS, BLOCK_N, STAGES, INDEXED, WARPS, COMPENSATED, GROUP_KEYS)),
            (_producer, (K, V, COLUMN_INDEX, k_smem, v_smem, full, empty, b * stride_kb + h * stride_kh,
                         b * stride_vb + h * stride_vh, sel_start, count, dense_start, dense_end, n_dense_tiles,
                         n_tiles, stride_ks, stride_kd, stride_vs, stride_vd, HEAD_DIM, BLOCK_N, STAGES,
                         PRODUCER_WARPS)),
        ], [PRODUCER_WARPS], [PRODUCER_REGS])
    else:
        gl.warp_specialize([
            (_consumer, (q_smem.slice(0, ROWS), k_smem, v_smem, full, empty, O, LSE, QUERY_INDEX, o_base, lse_base,
                         stride_os, stride_od, Sq, q_start, count, dense_len, n_dense_tiles, n_tiles, qk_scale_log2,
                         COLUMN_INDEX, W, w_base, lmax, sel_start, CO, CL, row, c_shift,
                         HEAD_DIM, ROWS, BLOCK_N, STAGES, INDEXED, WARPS, COMPENSATED, GROUP_KEYS)),
            (_consumer, (q_smem.slice(ROWS, ROWS), k_smem, v_smem, full, empty, O, LSE, QUERY_INDEX, o_base,
                         lse_base, stride_os, stride_od, Sq, q_start + ROWS, count, dense_len, n_dense_tiles, n_tiles,
                         qk_scale_log2, COLUMN_INDEX, W, w_base, lmax, sel_start, CO, CL, row, c_shift,
                         HEAD_DIM, ROWS, BLOCK_N, STAGES, INDEXED, WARPS, COMPENSATED, GROUP_KEYS)),
            (_producer, (K, V, COLUMN_INDEX, k_smem, v_smem, full, empty, b * stride_kb + h * stride_kh,
                         b * stride_vb + h * stride_vh, sel_start, count, dense_start, dense_end, n_dense_tiles,
                         n_tiles, stride_ks, stride_kd, stride_vs, stride_vd, HEAD_DIM, BLOCK_N, STAGES,
                         PRODUCER_WARPS)),
        ], [WARPS, PRODUCER_WARPS], [CONSUMER_REGS, PRODUCER_REGS])


# bench/DESIGN.md#gluon-kernel (bench/results/kernel/gluon-sparse-attn-*): two programs per SM (maxnreg 128,
# 3 stages in 2 x 115 KB) is the fastest of 26 variants on H100 and H200; indices further ahead,
# FA3's overlapped softmax (both removed since; in git history at 946c70e), 32-key tiles and fewer
# producer warps are not faster.
CONFIG = dict(BLOCK_M=64, BLOCK_N=64, STAGES=3, PRODUCER_WARPS=4, PRODUCER_REGS=88, maxnreg=128,
              CONSUMERS=1, CONSUMER_REGS=0, WARPS=4)
# 128-query tiles, one program per tile: each gathered K/V tile feeds all 128 rows (half the
# gathers of two 64-row programs). "wide": one consumer of 8 warps (two warpgroups in step);
# "split": two 4-warp consumer partitions that each wait for the tile and release it on their own,
# on 128-key tiles (3 stages). One program per SM (12 warps; maxnreg 168 x 384 threads fills the
# register file; the producer gives back down to 88, so the consumers get 208); Q 32 KB + STAGES x
# 2 x BLOCK_N x 256 B of shared memory (224 KB for split). HunyuanVideo-720p, 25% / 10% attention ms
# (bench/DESIGN.md#rows-128): programs 121.0 / 49.5, split on 64-key tiles (4
# stages) 99.2 / 44.8, split on 128-key tiles 96.6 / 42.9.
TILE128_CONFIGS = {
    "wide": dict(BLOCK_M=128, STAGES=4, maxnreg=168, CONSUMERS=1, WARPS=8),
    "split": dict(BLOCK_M=128, BLOCK_N=128, STAGES=3, maxnreg=168, CONSUMERS=2, CONSUMER_REGS=208, WARPS=4),
}
TILE128_LAYOUTS = ("programs", *TILE128_CONFIGS)
TUNABLE = ("STAGES", "BLOCK_N", "PRODUCER_REGS", "CONSUMER_REGS", "maxnreg", "segments")


def tile128_config(block_size: int) -> dict:
    """`VECDIT_GLUON_TILE128` (an experiment's switch): how 128-query tiles run, `split` (the
    default), `programs` (two 64-row programs on one list, as 64-query tiles run) or `wide`, then
    optional `,KEY=VALUE` overrides of TUNABLE (`split,BLOCK_N=64,STAGES=4,segments=2`)."""
    choice = os.environ.get("VECDIT_GLUON_TILE128", "split")
    name, *overrides = choice.split(",")
    pairs = [item.partition("=") for item in overrides]
    if name not in TILE128_LAYOUTS or any(key not in TUNABLE or not value.isdigit() for key, _, value in pairs):
        raise ValueError(f"`VECDIT_GLUON_TILE128` must be one of {TILE128_LAYOUTS}, optionally followed by "
                         f"',KEY=VALUE' with KEY in {TUNABLE} and an integer VALUE, got {choice!r}")
    if block_size != 128 or name == "programs":
        return {}
    return {**TILE128_CONFIGS[name], **{key: int(value) for key, _, value in pairs}}


def gluon_sparse_attention(q, k, v, column_index, column_offset, column_count, dense_start=0, dense_end=0,
                           scale=None, maxnreg=None, segments=None, query_index=None, block_size=64, dropped=None,
                           **config):
    """Drop-in for vecdit.ops.attention.op._attn_triton (same arguments, returns (out, lse)): q, k, v
    [B, S, H, 128] bf16, lists as in vecdit.ops.VectorSelection, any counts; `query_index` and
    `block_size` as the selection's query tiles give them (None and 64: raster).

    segments: cut each row's list into this many key ranges, run them one after the other and
    merge by lse (vecdit/ops/segments.py); default `auto_segments` (4, or 2 for 128-row
    programs, where one head's K/V exceed L2, else 1). Costs `segments` partial outputs in q's dtype.
    dropped: None, or the "dropped" compensation's (part out, part lse, weights, lmax) as
    `_attn_triton` takes them."""
    cfg = {**CONFIG, **tile128_config(block_size), **config}
    if maxnreg:
        cfg["maxnreg"] = maxnreg
    segments = cfg.pop("segments", segments)
    batch, seq_q, heads, dim = q.shape
    programs = triton.cdiv(seq_q, cfg["BLOCK_M"])
    nseg = auto_segments(k, cfg["BLOCK_M"]) if segments is None else segments
    if nseg == 1:
        out = torch.empty_like(q)
        lse = torch.empty(batch, heads, seq_q, dtype=torch.float32, device=q.device)
        seg_args = (column_offset, 1, 0, 0)
    else:
        out = torch.empty(nseg, batch, seq_q, heads, dim, dtype=q.dtype, device=q.device)
        lse = torch.empty(nseg, batch, heads, seq_q, dtype=torch.float32, device=q.device)
        bounds = segment_bounds(column_index, column_offset, column_count, k.shape[1], nseg)
        seg_args = (bounds, nseg, out.stride(0), lse.stride(0))
    scale = dim ** -0.5 if scale is None else scale
    part_out, part_lse, weights, lmax = dropped if dropped is not None else (column_offset,) * 4  # unread without
    # grid z = segment, slowest: the programs running together share one (segment, head)
    gluon_sparse_attn_kernel[(programs, batch * heads, nseg)](
        q, k, v, out, lse, column_index, column_offset, column_count,
        query_index if query_index is not None else column_offset, weights, lmax, part_out, part_lse, scale * LOG2E,
        *q.stride(), *k.stride(), *v.stride(), *out.stride()[-4:], heads, seq_q, triton.cdiv(seq_q, block_size),
        dense_start, dense_end, weights.shape[-1] if dropped is not None else 0, math.log2(nseg), *seg_args,
        HEAD_DIM=dim, num_warps=cfg["WARPS"], SEGMENTED=nseg > 1, INDEXED=query_index is not None,
        PROGRAMS_PER_ROW=block_size // cfg["BLOCK_M"], COMPENSATED=dropped is not None, GROUP_KEYS=64, **cfg)
    return (out, lse) if nseg == 1 else merge_segments(out, lse, q.dtype)
