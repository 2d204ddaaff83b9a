# Copyright 2026 The vecdit authors. Apache-2.0.
"""Time each stage of vector selection at HunyuanVideo-720p, 25% (GPU experiment), and the
bitmask expansion's launch settings: pooling, stats pass, mask pass, expansion."""
import json
import math
import os
import sys

import torch
import triton

from vecdit.bench.attention import calibrate_threshold, make_inputs
from vecdit.ops._expand_kernel import expand_bitmask_kernel
from vecdit.ops._select_kernel import PASS_MASK, PASS_STATS, vec_select_kernel
from vecdit.ops.selection import RUNNING_TILE, SELECT_CONFIG, pool_queries, vector_selection


def bench(fn):
    return float(triton.testing.do_bench(fn, warmup=20, rep=100, return_mode="median"))


def main():
    out_dir = os.environ.get("OUT", ".")
    q, k, _ = make_inputs("hunyuanvideo-720p")
    q, k = q[:, :118800], k[:, :118800]
    thr = calibrate_threshold(q, k, 0.25)
    ref = vector_selection(q, k, thr)
    batch, seq_q, heads, dim = q.shape
    nqb = (seq_q + 63) // 64
    rows = batch * heads * nqb
    num_words = triton.cdiv(k.shape[1], RUNNING_TILE)
    res = {"total_ms": bench(lambda: vector_selection(q, k, thr))}

    def pool():
        pooled = pool_queries(q, dim ** -0.5).reshape(batch * heads, nqb, dim).contiguous()
        hi = pooled.to(q.dtype)
        return hi, (pooled - hi.float()).to(q.dtype)
    res["pool_ms"] = bench(pool)
    q_hi, q_lo = pool()
    gap = torch.full((heads,), -math.log(thr), device="cuda")
    row_max, row_min = torch.empty(rows, device="cuda"), torch.empty(rows, device="cuda")
    count = torch.empty(rows, dtype=torch.int32, device="cuda")
    fixed = torch.zeros(rows, dtype=torch.int8, device="cuda")
    mask = torch.empty(rows, num_words, dtype=torch.int64, device="cuda")
    word_count = torch.empty(rows, num_words, dtype=torch.int32, device="cuda")
    cfg = dict(HEAD_DIM=dim, BLOCK_N=RUNNING_TILE, UPCAST=False, **SELECT_CONFIG)
    grid = (triton.cdiv(nqb, cfg["BLOCK_M"]), batch * heads)

    def launch(pass_, cutoff):
        vec_select_kernel[grid](q_hi, q_lo, k, gap, cutoff, fixed, fixed, row_max, row_min, count, mask, word_count,
                                *k.stride(), heads, k.shape[1], nqb, num_words, PASS=pass_, RUNNING=False,
                                USE_ACTIVE=False, **cfg)
    launch(PASS_STATS, row_max)
    cutoff = row_max - gap.repeat_interleave(nqb)
    res["stats_ms"] = bench(lambda: launch(PASS_STATS, row_max))
    res["mask_ms"] = bench(lambda: launch(PASS_MASK, cutoff))
    res["prefix_ms"] = bench(lambda: word_count.clone().cumsum_(1))
    word_count.cumsum_(1)
    offset = torch.zeros(rows + 1, dtype=torch.int64, device="cuda")
    torch.cumsum(count, 0, out=offset[1:])
    index = torch.empty(int(offset[-1]), dtype=torch.int32, device="cuda")
    res["expand"] = []
    for bw in (4, 8, 16, 32, 64):
        for warps in (1, 2, 4, 8):
            def run():
                expand_bitmask_kernel[(rows, triton.cdiv(num_words, bw))](mask, word_count, offset, index, num_words,
                                                                         BLOCK_W=bw, num_warps=warps)
            index.fill_(-1)
            run()
            same = bool(torch.equal(index, ref.column_index))
            r = dict(BLOCK_W=bw, num_warps=warps, ms=bench(run), same=same)
            res["expand"].append(r)
            print(r, flush=True)
    print({k_: v for k_, v in res.items() if k_ != "expand"})
    with open(os.path.join(out_dir, "selection-stages.json"), "w") as f:
        json.dump(dict(card=torch.cuda.get_device_name(), triton=triton.__version__, **res), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
