# Copyright 2026 The vecdit authors. Apache-2.0.
"""Does L2 locality limit the gathered kernel? (GPU experiment, HunyuanVideo-720p, random 25% lists.)

One head's K and V (118,800 x 128 x bf16 x 2) are 61 MB, more than the H100's 50 MB L2, and every
program walks its whole list, so concurrently running programs touch keys all over the head.
Variants: lists shared by many programs (cache-friendly, as in kernel-ceiling.json) vs distinct per
row (as a real selection); distinct lists split into key segments, programs ordered segment-major
within a head, partial results (fp32 out, lse) merged afterwards.
"""
import json
import os
import sys

import torch
import triton
import triton.language as tl

from vecdit.ops._attn_kernel import _gather_kv, _softmax_step

HEADS, SEQ, D = 24, 118800, 128
LOG2E = 1.4426950408889634


@triton.jit
def seg_kernel(Q, K, V, O, LSE, COLUMN_INDEX, SEG_START, SEG_END, qk_scale_log2,
               stride_qs, stride_qh, stride_ks, stride_kh, stride_vs, stride_vh,
               Sq, num_query_blocks, num_segments,
               HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WS: tl.constexpr,
               PARTIAL: tl.constexpr):
    qb = tl.program_id(0)
    seg = tl.program_id(1)
    h = tl.program_id(2).to(tl.int64)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(Q + h * stride_qh + offs_m[:, None] * stride_qs + offs_d[None, :], mask=(offs_m < Sq)[:, None], other=0.0)
    k_base = K + h * stride_kh
    v_base = V + h * stride_vh
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    row = (h * num_query_blocks + qb) * num_segments + seg
    sel_start = tl.load(SEG_START + row)
    sel_end = tl.load(SEG_END + row)
    full_end = sel_start + (sel_end - sel_start) // BLOCK_N * BLOCK_N
    for start in tl.range(sel_start, full_end, BLOCK_N, warp_specialize=WS):
        cols = tl.load(COLUMN_INDEX + start + offs_n).to(tl.int64)
        k, v = _gather_kv(k_base, v_base, cols, cols, offs_d, stride_ks, 1, stride_vs, 1, False)
        m_i, l_i, acc = _softmax_step(q, k, v, cols, m_i, l_i, acc, qk_scale_log2, False, False)
    if full_end < sel_end:
        pos = full_end + offs_n
        valid = pos < sel_end
        cols = tl.load(COLUMN_INDEX + pos, mask=valid, other=0).to(tl.int64)
        k, v = _gather_kv(k_base, v_base, cols, valid, offs_d, stride_ks, 1, stride_vs, 1, True)
        m_i, l_i, acc = _softmax_step(q, k, v, valid, m_i, l_i, acc, qk_scale_log2, False, True)
    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, m_i + tl.log2(tl.where(has, l_i, 1.0)), float("-inf"))
    # partial layout [seg, H, Sq, D] fp32; full layout [H, Sq, D] bf16
    if PARTIAL:
        base = (seg * tl.num_programs(2) + h) * Sq
        tl.store(O + (base + offs_m[:, None]) * HEAD_DIM + offs_d[None, :], out, mask=(offs_m < Sq)[:, None])
        tl.store(LSE + base + offs_m, lse, mask=offs_m < Sq)
    else:
        tl.store(O + (h * Sq + offs_m[:, None]) * HEAD_DIM + offs_d[None, :], out.to(O.dtype.element_ty),
                 mask=(offs_m < Sq)[:, None])


def merge(part, lse):
    m = lse.amax(0, keepdim=True)
    w = torch.exp2(lse - m)
    return ((part * w[..., None]).sum(0) / w.sum(0)[..., None]).to(torch.bfloat16)


def main():
    out_dir = os.environ.get("OUT", ".")
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, SEQ, HEADS, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    nqb = triton.cdiv(SEQ, 64)
    rows = HEADS * nqb
    kept = SEQ // 4
    g = torch.Generator(device="cuda").manual_seed(1)
    distinct = torch.empty(rows, kept, device="cuda", dtype=torch.int32)
    for a in range(0, rows, 2048):
        b = min(rows, a + 2048)
        distinct[a:b] = torch.rand(b - a, SEQ, device="cuda", generator=g).topk(kept, 1).indices.sort(1).values.int()
    shared = distinct[:64]
    flops = 4 * SEQ * kept * HEADS * D
    results = []
    ref = None
    for name, lists in (("shared64", shared), ("distinct", distinct)):
        for nseg in (1, 2, 4, 8):
            if name == "shared64" and nseg > 1:
                continue
            n = lists.shape[0]
            bounds = torch.linspace(0, SEQ, nseg + 1, device="cuda").round().int()
            starts = torch.searchsorted(lists, bounds.expand(n, -1).contiguous(), right=False).long()
            base = (torch.arange(n, device="cuda", dtype=torch.int64) * kept)[:, None]
            seg_start = (base + starts[:, :-1])
            seg_end = (base + starts[:, 1:])
            ridx = torch.arange(rows, device="cuda") % n
            seg_start, seg_end = seg_start[ridx].reshape(-1).contiguous(), seg_end[ridx].reshape(-1).contiguous()
            index = lists.reshape(-1)
            partial = nseg > 1
            o = torch.empty((nseg, HEADS, SEQ, D) if partial else (HEADS, SEQ, D), device="cuda",
                            dtype=torch.float32 if partial else torch.bfloat16)
            lse = torch.empty(nseg, HEADS, SEQ, device="cuda", dtype=torch.float32)
            for ws in (False, True):
                def run():
                    seg_kernel[(nqb, nseg, HEADS)](
                        q, k, v, o, lse, index, seg_start, seg_end, D ** -0.5 * LOG2E,
                        q.stride(1), q.stride(2), k.stride(1), k.stride(2), v.stride(1), v.stride(2),
                        SEQ, nqb, nseg, HEAD_DIM=D, BLOCK_M=64, BLOCK_N=64, WS=ws, PARTIAL=partial,
                        num_warps=4, num_stages=3)
                try:
                    run()
                    full = merge(o, lse) if partial else o
                    if name == "distinct":
                        if ref is None:
                            ref = full.float()
                        diff = float((full.float() - ref).norm() / ref.norm())
                    else:
                        diff = None
                    ms = float(triton.testing.do_bench(run, warmup=30, rep=200, return_mode="median"))
                    merge_ms = float(triton.testing.do_bench(lambda: merge(o, lse), warmup=10, rep=50,
                                                             return_mode="median")) if partial else 0.0
                    r = dict(lists=name, segments=nseg, ws=ws, ms=ms, merge_ms=merge_ms, tflops=flops / ms / 1e9,
                             diff_vs_unsegmented=diff)
                    results.append(r)
                    print(r, flush=True)
                except Exception as e:  # noqa: BLE001
                    print(name, nseg, ws, "failed:", type(e).__name__, str(e)[-300:], flush=True)
            del o, lse
    with open(os.path.join(out_dir, "l2-locality.json"), "w") as f:
        json.dump(dict(card=torch.cuda.get_device_name(), triton=triton.__version__, rows=results), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
