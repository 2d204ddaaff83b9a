# Copyright 2026 The vecdit authors. Apache-2.0.
"""Key segments for the Gluon kernel: does a smaller K/V working set per wave lift the L2 bound?
(GPU experiment, session 3)

ncu on the Gluon kernel (bench/results/ncu-gluon-*-session3.txt): L2 throughput 95%, L2 hit rate
40%, DRAM 77%: concurrent programs of one head gather from all of its 61 MB of K/V, more than L2.
Here each row's sorted list is cut into n key segments, programs of one (segment, head) run
together (grid z = segment), each writes an fp32 partial output + lse, and a Triton kernel merges
them by lse. HunyuanVideo-720p, real exact selection at 25%, text range in segment 0.
Results: $OUT/gluon-segments.json.
"""
import json
import os

import torch
import triton
import triton.language as tl

from vecdit.bench.attention import calibrate_threshold, make_inputs
from vecdit.ops import vector_selection
from vecdit.ops._attn_gluon_kernel import gluon_sparse_attention


@triton.jit
def merge_kernel(P, PL, O, L, rows, S, H, nseg, stride_pz, stride_lz, D: tl.constexpr, BLOCK: tl.constexpr):
    # P [nseg, B, S, H, D] fp32, PL [nseg, B, H, S]; O [B, S, H, D] contiguous, L [B, H, S]
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = r < rows
    h = r % H
    bs = r // H
    lidx = (bs // S * H + h) * S + bs % S
    d = tl.arange(0, D)
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    for z in range(nseg):
        m = tl.maximum(m, tl.load(PL + z * stride_lz + lidx, mask=ok, other=float("-inf")))
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    acc = tl.zeros([BLOCK, D], tl.float32)
    wsum = tl.zeros([BLOCK], tl.float32)
    # pointers advanced segment by segment: z * stride_pz would pass 2^31 at 8 segments of 720p
    p_ptr = P + r[:, None].to(tl.int64) * D + d[None, :]
    l_ptr = PL + lidx
    for z in range(nseg):
        w = tl.exp(tl.load(l_ptr, mask=ok, other=float("-inf")) - m_safe)
        acc += w[:, None] * tl.load(p_ptr, mask=ok[:, None], other=0.0)
        wsum += w
        p_ptr += stride_pz
        l_ptr += stride_lz
    has = wsum > 0
    tl.store(O + r[:, None].to(tl.int64) * D + d[None, :], (acc / tl.where(has, wsum, 1.0)[:, None]).to(O.dtype.element_ty),
             mask=ok[:, None])
    tl.store(L + lidx, tl.where(has, m_safe + tl.log(tl.where(has, wsum, 1.0)), float("-inf")), mask=ok)


def merge(part, plse, dtype):
    nseg, b, s, h, d = part.shape
    out = torch.empty(b, s, h, d, dtype=dtype, device=part.device)
    lse = torch.empty(b, h, s, dtype=torch.float32, device=part.device)
    rows = b * s * h
    merge_kernel[(triton.cdiv(rows, 32),)](part, plse, out, lse, rows, s, h, nseg, part.stride(0), plse.stride(0),
                                           D=d, BLOCK=32, num_warps=4)
    return out, lse


def segment_offsets(sel, bounds):
    """int64 [rows, n + 1]: where each row's sorted list crosses the key bounds (per head, bounded memory)."""
    counts = sel.column_count.reshape(-1)
    rows, nqb = counts.numel(), sel.num_query_blocks
    out = torch.empty(rows, bounds.numel(), dtype=torch.int64, device=counts.device)
    for r0 in range(0, rows, nqb):
        r1 = min(rows, r0 + nqb)
        a, b = int(sel.column_offset[r0]), int(sel.column_offset[r1])
        local = torch.repeat_interleave(torch.arange(r1 - r0, device=counts.device), counts[r0:r1].long())
        keys = local * sel.num_keys + sel.column_index[a:b].long()
        targets = torch.arange(r1 - r0, device=counts.device)[:, None] * sel.num_keys + bounds[None, :]
        out[r0:r1] = torch.searchsorted(keys, targets) + a
    return out


def small_check():
    """Segmented + merged == unsegmented on a small problem (ragged tail, text range), before timing."""
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(1, 1100, 3, 2, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    q, k, v = qkv[:, :1000, 0], qkv[:, :, 1], qkv[:, :, 2]
    sel = vector_selection(q, k[:, :1000], 0.02)
    counts = sel.column_count.reshape(-1)
    args = (q, k, v, sel.column_index, sel.column_offset, counts, 1000, 1100, 128 ** -0.5)
    ref, ref_lse = gluon_sparse_attention(*args)
    torch.cuda.synchronize()
    print("small: unsegmented ok", flush=True)
    seg = segment_offsets(sel, torch.tensor([0, 400, 1000], device="cuda"))
    part, plse = gluon_sparse_attention(*args, segment_offset=seg)
    torch.cuda.synchronize()
    print("small: segmented kernel ok", flush=True)
    out, lse = merge(part, plse, q.dtype)
    torch.cuda.synchronize()
    diff = float((out.float() - ref.float()).norm() / ref.float().norm())
    print(f"small: merged, rel diff {diff:.2e}, max lse diff {float((lse - ref_lse).abs().max()):.2e}", flush=True)
    assert diff < 1e-2


def main():
    small_check()
    q, k, v = make_inputs("hunyuanvideo-720p")
    video, total = 118800, q.shape[1]
    qv = q[:, :video]
    sel = vector_selection(qv, k[:, :video], calibrate_threshold(qv, k[:, :video], 0.25))
    counts = sel.column_count.reshape(-1)
    assert sel.column_index.numel() == int(counts.sum())
    flops = 4 * 128 * (int(counts.sum()) * 64 + video * (total - video))
    base_args = (qv, k, v, sel.column_index, sel.column_offset, counts, video, total, 128 ** -0.5)
    ref, ref_lse = gluon_sparse_attention(*base_args)
    ms = float(triton.testing.do_bench(lambda: gluon_sparse_attention(*base_args), warmup=25, rep=150,
                                       return_mode="median"))
    rows = [dict(segments=1, kernel_ms=ms, merge_ms=0.0, total_ms=ms, tflops=flops / ms / 1e9)]
    print(rows[-1], flush=True)
    for nseg in (2, 3, 4, 8):
        bounds = torch.linspace(0, video, nseg + 1, device="cuda").round().long()
        seg = segment_offsets(sel, bounds)
        assert torch.equal(seg[:, 0], sel.column_offset[:-1]) and torch.equal(seg[:, -1], sel.column_offset[:-1] + counts)
        part, plse = gluon_sparse_attention(*base_args, segment_offset=seg)
        out, lse = merge(part, plse, q.dtype)
        diff = float((out.float() - ref.float()).norm() / ref.float().norm())
        lse_diff = float((lse - ref_lse).abs().max())
        kms = float(triton.testing.do_bench(lambda: gluon_sparse_attention(*base_args, segment_offset=seg), warmup=25,
                                            rep=150, return_mode="median"))
        mms = float(triton.testing.do_bench(lambda: merge(part, plse, q.dtype), warmup=10, rep=50, return_mode="median"))
        rows.append(dict(segments=nseg, kernel_ms=kms, merge_ms=mms, total_ms=kms + mms, tflops=flops / kms / 1e9,
                         rel_diff_vs_unsegmented=diff, max_lse_diff=lse_diff))
        print(rows[-1], flush=True)
        del part, plse, out, lse, seg
    with open(os.path.join(os.environ.get("OUT", "."), "gluon-segments.json"), "w") as f:
        json.dump(dict(card=torch.cuda.get_device_name(), triton=triton.__version__, rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
