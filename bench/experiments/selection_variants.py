# Copyright 2026 The vecdit authors. Apache-2.0.
"""Selection-kernel variants at HunyuanVideo-720p, 25% (GPU experiment): launch settings and TMA K loads.

Times the stats pass and the fill pass separately; the kernel is a copy of
vecdit/ops/_select_kernel.py with a TMA switch (K tiles through a tensor descriptor).
"""
import json
import math
import os
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from vecdit.ops._common import mma
from vecdit.ops._select_kernel import PASS_FILL, PASS_STATS
from vecdit.ops.selection import pool_queries, vector_selection

@triton.jit
def select_variant_kernel(
    Q_HI, Q_LO, K, K_DESC,
    GAP, CUTOFF, FIXED, ACTIVE,
    ROW_MAX, ROW_MIN, COUNT, COLUMN_OFFSET, COLUMN_INDEX,
    stride_kb, stride_ks, stride_kh, stride_kd,
    H, Sk, num_query_blocks,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PASS: tl.constexpr,
    RUNNING: tl.constexpr,
    USE_ACTIVE: tl.constexpr,
    UPCAST: tl.constexpr,
    TMA: tl.constexpr,
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
    if PASS == PASS_FILL:
        write_base = tl.load(COLUMN_OFFSET + rows, mask=row_ok, other=0)

    for start in range(0, n_end, BLOCK_N):
        cols = start + offs_n
        col_ok = cols < Sk
        if TMA:
            k = tl.trans(K_DESC.load([b.to(tl.int32), start, h, 0]).reshape(BLOCK_N, HEAD_DIM))
        else:
            k = tl.load(k_base + cols[None, :].to(tl.int64) * stride_ks + offs_d[:, None] * stride_kd,
                        mask=col_ok[None, :], other=0.0)
        # [BM, BN] fp32 scores (already scaled by 1/sqrt(d) through the pooled queries)
        s = mma(q_hi, k, UPCAST) + mma(q_lo, k, UPCAST)
        s_hi = tl.where(col_ok[None, :], s, float("-inf"))
        if PASS == PASS_STATS:
            row_max = tl.maximum(row_max, tl.max(s_hi, 1))
            row_min = tl.minimum(row_min, tl.min(tl.where(col_ok[None, :], s, float("inf")), 1))
            count += tl.sum(((s >= (row_max - gap)[:, None]) & col_ok[None, :]).to(tl.int32), 1)
        else:
            cut = cutoff
            if RUNNING:
                # tile-prefix max: the key tile counts toward the max it is tested against
                row_max = tl.maximum(row_max, tl.max(s_hi, 1))
                cut = tl.where(fixed, cutoff, row_max - gap)
            keep = (s >= cut[:, None]) & col_ok[None, :]
            keep_i = keep.to(tl.int32)
            if PASS == PASS_FILL:
                pos = (write_base + count)[:, None] + tl.cumsum(keep_i, 1) - keep_i
                tl.store(COLUMN_INDEX + pos, cols[None, :] + tl.zeros_like(keep_i),
                         mask=keep & row_ok[:, None])
            count += tl.sum(keep_i, 1)

    if PASS == PASS_STATS:
        tl.store(ROW_MAX + rows, row_max, mask=row_ok)
        tl.store(ROW_MIN + rows, row_min, mask=row_ok)
    tl.store(COUNT + rows, count, mask=row_ok)


def main():
    out_dir = os.environ.get("OUT", ".")
    from vecdit.bench.attention import calibrate_threshold, make_inputs

    q, k, _ = make_inputs("hunyuanvideo-720p")
    q, k = q[:, :118800], k[:, :118800]
    thr = calibrate_threshold(q, k, 0.25)
    ref = vector_selection(q, k, thr)
    batch, seq_q, heads, dim = q.shape
    num_keys = k.shape[1]
    nqb = (seq_q + 63) // 64
    rows = batch * heads * nqb
    pooled = pool_queries(q, dim ** -0.5).reshape(batch * heads, nqb, dim).contiguous()
    q_hi = pooled.to(q.dtype)
    q_lo = (pooled - q_hi.float()).to(q.dtype)
    gap = torch.full((heads,), -math.log(thr), device="cuda")
    f32 = dict(dtype=torch.float32, device="cuda")
    row_max, row_min = torch.empty(rows, **f32), torch.empty(rows, **f32)
    count = torch.empty(rows, dtype=torch.int32, device="cuda")
    fixed = torch.zeros(rows, dtype=torch.int8, device="cuda")
    offset = ref.column_offset
    column_index = torch.empty_like(ref.column_index)
    results = []
    variants = []
    for tma in (False, True):
        for bm, warps in ((64, 4), (128, 4), (128, 8)):
            for bn in (64, 128):
                for stages in (2, 3, 4):
                    variants.append((tma, bm, warps, bn, stages))
    for tma, bm, warps, bn, stages in variants:
        desc = TensorDescriptor(k, list(k.shape), list(k.stride()), [1, bn, 1, dim])
        grid = (triton.cdiv(nqb, bm), batch * heads)

        def launch(pass_, cutoff, out_index):
            select_variant_kernel[grid](
                q_hi, q_lo, k, desc, gap, cutoff, fixed, fixed, row_max, row_min, count, offset, out_index,
                *k.stride(), heads, num_keys, nqb, HEAD_DIM=dim, BLOCK_M=bm, BLOCK_N=bn, PASS=pass_, RUNNING=False,
                USE_ACTIVE=False, UPCAST=False, TMA=tma, num_warps=warps, num_stages=stages)
        name = f"tma{int(tma)} M{bm} w{warps} N{bn} s{stages}"
        try:
            launch(PASS_STATS, row_max, count)
            cutoff = row_max - gap.repeat_interleave(nqb)
            column_index.fill_(-1)
            launch(PASS_FILL, cutoff, column_index)
            same = bool(torch.equal(column_index, ref.column_index)) and bool(torch.equal(count, ref.column_count.reshape(-1)))
            stats_ms = float(triton.testing.do_bench(lambda: launch(PASS_STATS, row_max, count), warmup=20, rep=100, return_mode="median"))
            fill_ms = float(triton.testing.do_bench(lambda: launch(PASS_FILL, cutoff, column_index), warmup=20, rep=100, return_mode="median"))
            r = dict(name=name, stats_ms=stats_ms, fill_ms=fill_ms, same_as_production=same)
        except Exception as e:  # noqa: BLE001
            r = dict(name=name, error=f"{type(e).__name__}: {str(e)[-200:]}")
        results.append(r)
        print(r, flush=True)
    prod_ms = float(triton.testing.do_bench(lambda: vector_selection(q, k, thr), warmup=20, rep=100, return_mode="median"))
    print("production vector_selection ms", prod_ms)
    with open(os.path.join(out_dir, "selection-variants.json"), "w") as f:
        json.dump(dict(card=torch.cuda.get_device_name(), triton=triton.__version__, production_ms=prod_ms,
                       rows=results), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
