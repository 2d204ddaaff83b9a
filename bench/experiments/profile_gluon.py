# Copyright 2026 The vecdit authors. Apache-2.0.
"""Why does the Gluon sparse kernel stop at ~330 TFLOP/s? (GPU experiment, session 3)

1. Times the Gluon and Triton kernels on the same HunyuanVideo-720p rows (4 heads) with three kinds
   of 25% lists: the real exact selection (random inputs), one contiguous run of keys per block
   (coalesced rows), and the real lists shifted to whole 64-key tiles' worth of consecutive rows.
   If contiguous lists are much faster, the memory access pattern bounds the kernel; if not, its
   structure does.
2. With --profile-once, launches each kernel once on the real selection (for ncu).
Results: $OUT/profile-gluon.json.
"""
import json
import os
import sys

import torch
import triton

from vecdit.bench.attention import calibrate_threshold, make_inputs
from vecdit.ops import vector_selection
from vecdit.ops._attn_gluon_kernel import gluon_sparse_attention
from vecdit.ops.attention import _attn_triton

HEADS = 4


def main(profile_once: bool):
    q, k, v = make_inputs("hunyuanvideo-720p")
    q, k, v = q[:, :, :HEADS], k[:, :, :HEADS], v[:, :, :HEADS]
    video, total = 118800, q.shape[1]
    qv = q[:, :video]
    sel = vector_selection(qv, k[:, :video], calibrate_threshold(qv, k[:, :video], 0.25))
    counts = sel.column_count.reshape(-1)
    nqb = sel.num_query_blocks
    # contiguous: each block's count keys as one run starting at a random 64-aligned key
    g = torch.Generator(device="cuda").manual_seed(0)
    starts = torch.randint(0, video // 64, (counts.numel(),), device="cuda", generator=g) * 64
    starts = torch.minimum(starts, video - counts.long())
    pos = torch.arange(sel.column_index.numel(), device="cuda")
    row = torch.repeat_interleave(torch.arange(counts.numel(), device="cuda"), counts.long())
    contiguous = (starts[row] + pos - sel.column_offset[:-1][row]).to(torch.int32)
    assert sel.column_index.numel() == int(counts.sum()), "expected exact-size lists"
    lists = {"real": sel.column_index, "contiguous": contiguous}
    flops = 4 * 128 * (int(counts.sum()) * 64 + video * (total - video))
    kernels = {"gluon": gluon_sparse_attention, "triton": _attn_triton}
    if profile_once:
        for fn in kernels.values():
            fn(qv, k, v, sel.column_index, sel.column_offset, counts, video, total, 128 ** -0.5)
        torch.cuda.synchronize()
        return
    rows = []
    for name, idx in lists.items():
        for kname, fn in kernels.items():
            args = (qv, k, v, idx, sel.column_offset, counts, video, total, 128 ** -0.5)
            ms = float(triton.testing.do_bench(lambda: fn(*args), warmup=25, rep=100, return_mode="median"))
            rows.append(dict(lists=name, kernel=kname, ms=ms, tflops=flops / ms / 1e9))
            print(rows[-1], flush=True)
    with open(os.path.join(os.environ.get("OUT", "."), "profile-gluon.json"), "w") as f:
        json.dump(dict(card=torch.cuda.get_device_name(), heads=HEADS, nqb=nqb, rows=rows), f, indent=2)


if __name__ == "__main__":
    main("--profile-once" in sys.argv)
