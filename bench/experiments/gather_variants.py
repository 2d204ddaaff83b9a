# Copyright 2026 The vecdit authors. Apache-2.0.
"""Gather variants of the sparse kernel on random 25% lists at HunyuanVideo-720p (GPU experiment).

kernel-ceiling.json showed dense TMA kernels at ~480 TFLOP/s for 64 and 128 rows alike, and the
gathered kernel at ~340-358: the gap is the gather, not the 64-row tile. Variants here:
  KROW      load K rows as [BN, D] (row-major, like V) and transpose in registers/smem for the dot
  PREFETCH  load the next tile's indices one iteration ahead (loop-carried)
Prints registers/spills and the number of async copies in the PTX, and the time.
"""
import json
import os
import re
import sys

import torch
import triton
import triton.language as tl

from vecdit.ops._attn_kernel import _softmax_step

HEADS, SEQ, D = 24, 118800, 128
LOG2E = 1.4426950408889634


@triton.jit
def gather_kernel(Q, K, V, O, COLUMN_INDEX, COLUMN_OFFSET, COLUMN_COUNT, qk_scale_log2,
                  stride_qs, stride_qh, stride_ks, stride_kh, stride_vs, stride_vh, stride_os, stride_oh,
                  Sq, num_query_blocks,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  KROW: tl.constexpr, PREFETCH: tl.constexpr, WS: tl.constexpr):
    qb = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(Q + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :], mask=(offs_m < Sq)[:, None], other=0.0)
    k_base = K + h * stride_kh
    v_base = V + h * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    row = h * num_query_blocks + qb
    sel_start = tl.load(COLUMN_OFFSET + row)
    n_tiles = tl.load(COLUMN_COUNT + row) // BLOCK_N
    if PREFETCH == 1:
        cols = tl.load(COLUMN_INDEX + sel_start + offs_n).to(tl.int64)
        for t in tl.range(0, n_tiles, warp_specialize=WS):
            nxt = tl.load(COLUMN_INDEX + sel_start + (t + 1) * BLOCK_N + offs_n).to(tl.int64)
            if KROW:
                k = tl.trans(tl.load(k_base + cols[:, None] * stride_ks + offs_d[None, :]))
            else:
                k = tl.load(k_base + cols[None, :] * stride_ks + offs_d[:, None])
            v = tl.load(v_base + cols[:, None] * stride_vs + offs_d[None, :])
            m_i, l_i, acc = _softmax_step(q, k, v, cols, m_i, l_i, acc, qk_scale_log2, False, False)
            cols = nxt
    elif PREFETCH == 2:
        # indices two tiles ahead: the K/V addresses of a tile never wait on a load of the same iteration
        cols = tl.load(COLUMN_INDEX + sel_start + offs_n).to(tl.int64)
        cols1 = tl.load(COLUMN_INDEX + sel_start + BLOCK_N + offs_n).to(tl.int64)
        for t in tl.range(0, n_tiles, warp_specialize=WS):
            nxt = tl.load(COLUMN_INDEX + sel_start + (t + 2) * BLOCK_N + offs_n).to(tl.int64)
            if KROW:
                k = tl.trans(tl.load(k_base + cols[:, None] * stride_ks + offs_d[None, :]))
            else:
                k = tl.load(k_base + cols[None, :] * stride_ks + offs_d[:, None])
            v = tl.load(v_base + cols[:, None] * stride_vs + offs_d[None, :])
            m_i, l_i, acc = _softmax_step(q, k, v, cols, m_i, l_i, acc, qk_scale_log2, False, False)
            cols = cols1
            cols1 = nxt
    else:
        for t in tl.range(0, n_tiles, warp_specialize=WS):
            cols = tl.load(COLUMN_INDEX + sel_start + t * BLOCK_N + offs_n).to(tl.int64)
            if KROW:
                k = tl.trans(tl.load(k_base + cols[:, None] * stride_ks + offs_d[None, :]))
            else:
                k = tl.load(k_base + cols[None, :] * stride_ks + offs_d[:, None])
            v = tl.load(v_base + cols[:, None] * stride_vs + offs_d[None, :])
            m_i, l_i, acc = _softmax_step(q, k, v, cols, m_i, l_i, acc, qk_scale_log2, False, False)
    out = acc / l_i[:, None]
    tl.store(O + h * stride_oh + offs_m[:, None] * stride_os + offs_d[None, :], out.to(O.dtype.element_ty),
             mask=(offs_m < Sq)[:, None])


def main():
    out_dir = os.environ.get("OUT", ".")
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, SEQ, HEADS, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    g = torch.Generator(device="cuda").manual_seed(1)
    kept = SEQ // 4 // 64 * 64
    n_lists = 64
    lists = torch.stack([torch.randperm(SEQ, device="cuda", generator=g)[:kept].sort().values for _ in range(n_lists)])
    index = torch.cat([lists.reshape(-1), torch.zeros(128, device="cuda", dtype=torch.int64)]).to(torch.int32)
    nqb = triton.cdiv(SEQ, 64)
    offset = (torch.arange(HEADS * nqb + 1, device="cuda", dtype=torch.int64) % n_lists) * kept
    count = torch.full((HEADS * nqb,), kept, device="cuda", dtype=torch.int32)
    out = torch.empty_like(q)
    flops = 4 * SEQ * kept * HEADS * D
    rows = []
    ref = None
    variants = [(kr, pf, False, st) for kr in (False, True) for pf in (0, 1, 2) for st in (2, 3, 4)]
    for krow, prefetch, ws, stages in variants:
        def run():
            return gather_kernel[(nqb, HEADS)](
                q, k, v, out, index, offset, count, D ** -0.5 * LOG2E,
                q.stride(1), q.stride(2), k.stride(1), k.stride(2), v.stride(1), v.stride(2),
                out.stride(1), out.stride(2), SEQ, nqb,
                HEAD_DIM=D, BLOCK_M=64, BLOCK_N=64, KROW=krow, PREFETCH=prefetch, WS=ws,
                num_warps=4, num_stages=stages)
        name = f"krow{int(krow)} prefetch{int(prefetch)} ws{int(ws)} s{stages}"
        try:
            kern = run()
            if ref is None:
                ref = out.clone()
            diff = float((out.float() - ref.float()).norm() / ref.float().norm())
            ms = float(triton.testing.do_bench(run, warmup=30, rep=200, return_mode="median"))
            ptx = kern.asm.get("ptx", "")
            info = dict(regs=kern.n_regs, spills=kern.n_spills,
                        cp_async=len(re.findall(r"cp\.async\.(?:ca|cg)", ptx)),
                        wait_group=len(re.findall(r"cp\.async\.wait_group", ptx)),
                        wgmma=len(re.findall(r"wgmma\.mma_async", ptx)),
                        ld_global=len(re.findall(r"ld\.global", ptx)))
            rows.append(dict(name=name, ms=ms, tflops=flops / ms / 1e9, diff_vs_first=diff, **info))
            print(f"{name:36s} {ms:8.2f} ms {flops / ms / 1e9:6.0f} TFLOP/s diff {diff:.1e} {info}", flush=True)
            if name in ("krow1 prefetch2 ws0 s3", "krow0 prefetch2 ws0 s3"):
                with open(os.path.join(out_dir, name.replace(" ", "_") + ".ttgir"), "w") as f:
                    f.write(kern.asm["ttgir"])
        except Exception as e:  # noqa: BLE001
            print(name, "failed:", type(e).__name__, str(e)[:300], flush=True)
    with open(os.path.join(out_dir, "gather-variants.json"), "w") as f:
        json.dump(dict(card=torch.cuda.get_device_name(), triton=triton.__version__, rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
