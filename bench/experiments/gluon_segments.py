# Copyright 2026 The vecdit authors. Apache-2.0.
"""Key segments for the Gluon kernel: does a smaller K/V working set per wave lift the L2 bound?
(GPU experiment, session 3)

ncu on the Gluon kernel (bench/results/ncu-gluon-*-session3.txt): L2 throughput 95%, L2 hit rate
40%, DRAM 77%: concurrent programs of one head gather from all of its 61 MB of K/V, more than L2.
`gluon_sparse_attention(..., segments=n)` cuts each row's sorted list into n key ranges
(vecdit/ops/segments.py), runs programs of one (segment, head) together (grid z = segment) with
partial outputs, and merges them by lse. HunyuanVideo-720p, real exact selection at 25%, text range
in segment 0; times include the bounds search and the merge. Results: $OUT/gluon-segments.json.
"""
import json
import os

import torch
import triton

from vecdit.bench.attention import calibrate_threshold, make_inputs
from vecdit.ops import vector_selection, vector_sparse_attention
from vecdit.ops._attn_gluon_kernel import gluon_sparse_attention


def main():
    q, k, v = make_inputs("hunyuanvideo-720p")
    video, total = 118800, q.shape[1]
    qv = q[:, :video]
    sel = vector_selection(qv, k[:, :video], calibrate_threshold(qv, k[:, :video], 0.25))
    counts = sel.column_count.reshape(-1)
    flops = 4 * 128 * (int(counts.sum()) * 64 + video * (total - video))
    args = (qv, k, v, sel.column_index, sel.column_offset, counts, video, total, 128 ** -0.5)
    ref, ref_lse = gluon_sparse_attention(*args, segments=1)
    rows = []
    # the public op (auto segments) first, then explicit counts in both orders: run 1 of this script
    # saw no gain from segments while the attention benchmark of the same run saw 15%
    public = float(triton.testing.do_bench(
        lambda: vector_sparse_attention(qv, k, v, sel, dense_range=(video, total)), warmup=50, rep=300,
        return_mode="median"))
    rows.append(dict(segments="auto (vector_sparse_attention)", ms=public, tflops=flops / public / 1e9))
    print(rows[-1], flush=True)
    for nseg in (4, 1, 2, 3, 8, 4, 1):
        out, lse = gluon_sparse_attention(*args, segments=nseg)
        diff = float((out.float() - ref.float()).norm() / ref.float().norm())
        ms = float(triton.testing.do_bench(lambda: gluon_sparse_attention(*args, segments=nseg), warmup=50, rep=300,
                                           return_mode="median"))
        rows.append(dict(segments=nseg, ms=ms, tflops=flops / ms / 1e9, rel_diff_vs_unsegmented=diff,
                         max_lse_diff=float((lse - ref_lse).abs().max())))
        print(rows[-1], flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "gluon-segments.json"), "w") as f:
        json.dump(dict(card=torch.cuda.get_device_name(), triton=triton.__version__, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
