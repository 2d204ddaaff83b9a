# Copyright 2026 The vecdit authors. Apache-2.0.
"""Where does the 64-row gathered kernel stop? (GPU experiment, not part of the package.)

At HunyuanVideo-720p (24 heads, 118,800 keys, D 128, bf16) it times, in one run:
  - SDPA cuDNN (dense baseline)
  - dense Triton kernels that load K/V with TMA tensor descriptors, 64 and 128 query rows
  - the vecdit kernel on contiguous lists of all keys, 64 and 128 query rows
  - the vecdit kernel on random 25% lists, 64 and 128 query rows, several launch settings
TFLOP/s count computed (query, key) pairs. Writes JSON to $OUT (or the cwd).
"""
import json
import os
import sys

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from vecdit.ops._attn_kernel import _softmax_step, vec_sparse_attn_fwd_kernel

HEADS, SEQ, D = 24, 118800, 128
LOG2E = 1.4426950408889634


@triton.jit
def tma_dense_kernel(desc_q, desc_k, desc_v, O, S, qk_scale_log2, stride_os, stride_oh,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WS: tl.constexpr):
    qb = tl.program_id(0)
    h = tl.program_id(1)
    q = desc_q.load([qb * BLOCK_M, h * HEAD_DIM])
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    full_end = S // BLOCK_N * BLOCK_N
    for start in tl.range(0, full_end, BLOCK_N, warp_specialize=WS):
        k = desc_k.load([start, h * HEAD_DIM])
        v = desc_v.load([start, h * HEAD_DIM])
        m_i, l_i, acc = _softmax_step(q, tl.trans(k), v, offs_n, m_i, l_i, acc, qk_scale_log2, False, False)
    if full_end < S:
        k = desc_k.load([full_end, h * HEAD_DIM])
        v = desc_v.load([full_end, h * HEAD_DIM])
        m_i, l_i, acc = _softmax_step(q, tl.trans(k), v, full_end + offs_n < S, m_i, l_i, acc, qk_scale_log2, False, True)
    offs_m = qb * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    tl.store(O + offs_m[:, None] * stride_os + h * stride_oh + offs_d[None, :], (acc / l_i[:, None]).to(O.dtype.element_ty),
             mask=(offs_m < S)[:, None])


def bench(fn):
    return float(triton.testing.do_bench(fn, warmup=30, rep=200, return_mode="median"))


def main():
    out_dir = os.environ.get("OUT", ".")
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, SEQ, HEADS, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    scale = D ** -0.5
    full_flops = 4 * SEQ * SEQ * HEADS * D
    rows = []

    def record(name, ms, flops, **kw):
        rows.append(dict(name=name, ms=ms, tflops=flops / ms / 1e9, **kw))
        print(f"{name:58s} {ms:9.2f} ms {flops / ms / 1e9:7.0f} TFLOP/s {kw}", flush=True)

    from torch.nn.attention import SDPBackend, sdpa_kernel
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ref = torch.nn.functional.scaled_dot_product_attention(qt, kt, vt).transpose(1, 2)
        record("sdpa-cudnn dense", bench(lambda: torch.nn.functional.scaled_dot_product_attention(qt, kt, vt)), full_flops)

    # dense TMA kernels
    q2, k2, v2 = (t.reshape(SEQ, HEADS * D) for t in (q, k, v))
    out = torch.empty_like(q)
    for bm, bn, warps, stages, ws in [(64, 64, 4, 3, False), (64, 128, 4, 2, False), (64, 64, 4, 3, True),
                                       (128, 64, 8, 3, False), (128, 128, 8, 2, False), (128, 128, 8, 3, True),
                                       (128, 64, 4, 3, True)]:
        dq = TensorDescriptor.from_tensor(q2, [bm, D])
        dk = TensorDescriptor.from_tensor(k2, [bn, D])
        dv = TensorDescriptor.from_tensor(v2, [bn, D])
        grid = (triton.cdiv(SEQ, bm), HEADS)

        def run():
            tma_dense_kernel[grid](dq, dk, dv, out, SEQ, scale * LOG2E, out.stride(1), out.stride(2),
                                   HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, WS=ws, num_warps=warps, num_stages=stages)
        try:
            run()
            err = float((out.float() - ref.float()).norm() / ref.float().norm())
            record(f"tma-dense M{bm} N{bn} w{warps} s{stages} ws{int(ws)}", bench(run), full_flops, err=err)
        except Exception as e:  # noqa: BLE001
            print("tma-dense", bm, bn, warps, stages, ws, "failed:", type(e).__name__, str(e)[:200])

    # gathered kernel: all keys (every row points at one arange list) and random 25% lists
    g = torch.Generator(device="cuda").manual_seed(1)
    all_index = torch.arange(SEQ, device="cuda", dtype=torch.int32)
    n_lists = 64
    kept = SEQ // 4
    rand_lists = torch.stack([torch.randperm(SEQ, device="cuda", generator=g)[:kept].sort().values for _ in range(n_lists)])
    rand_index = rand_lists.reshape(-1).to(torch.int32)
    lse = torch.empty(1, HEADS, SEQ, device="cuda", dtype=torch.float32)

    def gathered(name, index, count, bm, bn, warps, stages, ws):
        nqb = triton.cdiv(SEQ, bm)
        nrows = HEADS * nqb
        if count == SEQ:
            offset = torch.zeros(nrows + 1, device="cuda", dtype=torch.int64)
        else:
            offset = (torch.arange(nrows + 1, device="cuda", dtype=torch.int64) % n_lists) * kept
        counts = torch.full((nrows,), count, device="cuda", dtype=torch.int32)

        def run():
            vec_sparse_attn_fwd_kernel[(nqb, HEADS)](
                q, k, v, out, lse, index, offset, counts, scale * LOG2E,
                *q.stride(), *k.stride(), *v.stride(), *out.stride(), HEADS, SEQ, nqb, 0, 0,
                HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn, UPCAST=False, WARP_SPECIALIZE=ws, num_warps=warps, num_stages=stages)
        try:
            run()
            err = float((out.float() - ref.float()).norm() / ref.float().norm()) if count == SEQ else None
            record(f"{name} M{bm} N{bn} w{warps} s{stages} ws{int(ws)}", bench(run), full_flops * count / SEQ, err=err)
        except Exception as e:  # noqa: BLE001
            print(name, bm, bn, warps, stages, ws, "failed:", type(e).__name__, str(e)[:200])

    for bm, bn, warps, stages, ws in [(64, 64, 4, 3, False), (64, 64, 4, 3, True), (128, 64, 8, 3, False),
                                       (128, 128, 8, 2, False), (128, 64, 8, 3, True)]:
        gathered("gather-all", all_index, SEQ, bm, bn, warps, stages, ws)
    for bm, bn, warps, stages, ws in [(64, 64, 4, 3, False), (64, 64, 4, 3, True), (64, 32, 4, 4, False),
                                       (64, 128, 4, 2, False), (64, 64, 4, 4, False), (64, 64, 4, 2, False),
                                       (128, 64, 8, 3, False), (128, 128, 8, 2, False), (128, 64, 8, 3, True)]:
        gathered("gather-rand25", rand_index, kept, bm, bn, warps, stages, ws)

    env = dict(card=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__)
    with open(os.path.join(out_dir, "kernel-ceiling.json"), "w") as f:
        json.dump(dict(environment=env, shape=dict(heads=HEADS, seq=SEQ, head_dim=D), rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
