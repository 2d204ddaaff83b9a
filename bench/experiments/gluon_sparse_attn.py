# Copyright 2026 The vecdit authors. Apache-2.0.
"""Warp-specialized vector-sparse attention in Gluon (Triton 3.6): a GPU experiment for issue 2.

bench/NOTES.md: the Triton kernel's gathers are poorly pipelined (one or two K/V tiles in flight,
~290-350 TFLOP/s) while a dense Triton kernel with the same 64-row softmax runs at 482. Here the
gather gets its own warps, FlashAttention-3 style:
  producer (PRODUCER_WARPS warps): loads each tile's key indices (one tile ahead), gathers the K and
      V rows with 16-byte cp.async into a STAGES-deep shared-memory ring, and signals `full[s]`
      with cp.async.mbarrier.arrive.noinc (one arrival per producer thread, when its copies land);
  consumer (the default 4 warps, one warpgroup): waits `full[s]`, S = Q K^T and O += P V with
      wgmma (Q and K/V from shared memory, P from registers), online softmax in fp32, then
      releases the stage on `empty[s]`.
Scope of the experiment: full 64-key tiles only (lists padded to a multiple of 64), no dense
range, no LSE; the production kernel keeps those. Not wired into the package.

Local (no GPU):  python bench/experiments/gluon_sparse_attn.py --compile-only   (needs triton 3.6)
GPU:             python bench/experiments/gluon_sparse_attn.py                  (check + timings -> $OUT)
"""
import json
import os
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, warpgroup_mma, warpgroup_mma_wait

LOG2E = 1.4426950408889634


@gluon.jit
def _producer(K, V, COLUMN_INDEX, k_smem, v_smem, full, empty, k_base, v_base, sel_start, n_tiles,
              stride_ks, stride_vs,
              HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, PRODUCER_WARPS: gl.constexpr):
    # 8 bf16 = 16 bytes per thread along the head dim: one cp.async each
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [PRODUCER_WARPS, 1], [1, 0])
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, layout))
    cols = gl.load(COLUMN_INDEX + sel_start + offs_n, mask=offs_n < n_tiles * BLOCK_N, other=0).to(gl.int64)
    for t in range(n_tiles):
        s = t % STAGES
        # the next tile's indices, so the gather below never waits on its own index load
        next_pos = (t + 1) * BLOCK_N + offs_n
        next_cols = gl.load(COLUMN_INDEX + sel_start + next_pos, mask=next_pos < n_tiles * BLOCK_N, other=0).to(gl.int64)
        # a fresh barrier passes a wait on parity 1: the first STAGES tiles do not wait
        mbarrier.wait(empty.index(s), ((t // STAGES) & 1) ^ 1)
        rows = gl.expand_dims(cols, 1)
        d = gl.expand_dims(offs_d, 0)
        async_copy.async_copy_global_to_shared(k_smem.index(s), K + k_base + rows * stride_ks + d)
        async_copy.async_copy_global_to_shared(v_smem.index(s), V + v_base + rows * stride_vs + d)
        async_copy.mbarrier_arrive(full.index(s), increment_count=False)
        cols = next_cols


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, full, empty, O, o_base, stride_os, Sq, q_start, n_tiles, qk_scale_log2,
              HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr):
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=gl.SliceLayout(1, s_layout))
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)
    zero_s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    for t in range(n_tiles):
        s = t % STAGES
        mbarrier.wait(full.index(s), (t // STAGES) & 1)
        # cp.async wrote the tile through the generic proxy; wgmma reads it through the async proxy
        fence_async_shared()
        qk = warpgroup_mma(q_smem, k_smem.index(s).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk, ))
        scores = qk * qk_scale_log2
        m_new = gl.maximum(m_i, gl.max(scores, 1))
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(scores - gl.expand_dims(m_new, 1))
        l_i = l_i * alpha + gl.sum(p, 1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, gl.SliceLayout(1, o_layout)), 1)
        acc = warpgroup_mma(gl.convert_layout(p.to(gl.bfloat16), p_layout), v_smem.index(s), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc, ))
        # every consumer warp has waited for its wgmma; then one thread releases the stage
        gl.thread_barrier()
        mbarrier.arrive(empty.index(s))
        m_i = m_new
    l_safe = gl.where(l_i > 0.0, l_i, 1.0)  # a block with nothing selected stores zeros, not NaN
    out = acc / gl.expand_dims(gl.convert_layout(l_safe, gl.SliceLayout(1, o_layout)), 1)
    offs_m = q_start + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, o_layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    ptrs = O + o_base + gl.expand_dims(offs_m, 1) * stride_os + gl.expand_dims(offs_d, 0)
    gl.store(ptrs, out.to(gl.bfloat16), mask=gl.expand_dims(offs_m < Sq, 1))


@gluon.jit
def gluon_sparse_attn_kernel(Q, K, V, O, COLUMN_INDEX, COLUMN_OFFSET, COLUMN_COUNT, qk_scale_log2,
                             stride_qs, stride_qh, stride_ks, stride_kh, stride_vs, stride_vh, stride_os, stride_oh,
                             H, Sq, num_query_blocks,
                             HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                             STAGES: gl.constexpr, PRODUCER_WARPS: gl.constexpr, PRODUCER_REGS: gl.constexpr):
    qb = gl.program_id(0)
    h = gl.program_id(1).to(gl.int64)  # batch 1 in this experiment
    q_start = qb * BLOCK_M
    row = h * num_query_blocks + qb
    sel_start = gl.load(COLUMN_OFFSET + row)
    n_tiles = gl.load(COLUMN_COUNT + row) // BLOCK_N

    tile_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], gl.bfloat16)
    q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_M, HEAD_DIM], gl.bfloat16)
    load_layout: gl.constexpr = gl.BlockedLayout([1, 8], [2, 16], [4, 1], [1, 0])
    offs_m = q_start + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, load_layout))
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, load_layout))
    q = gl.load(Q + h * stride_qh + gl.expand_dims(offs_m, 1) * stride_qs + gl.expand_dims(offs_d, 0),
                mask=gl.expand_dims(offs_m < Sq, 1), other=0.0)
    q_smem = gl.allocate_shared_memory(gl.bfloat16, [BLOCK_M, HEAD_DIM], q_layout, q)
    k_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, HEAD_DIM], tile_layout)
    v_smem = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BLOCK_N, HEAD_DIM], tile_layout)
    full = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(full.index(i), count=PRODUCER_WARPS * 32)  # one noinc arrival per producer thread
        mbarrier.init(empty.index(i), count=1)
    fence_async_shared()  # Q written by plain stores, read by wgmma
    gl.thread_barrier()  # barriers initialised before any partition waits on them

    gl.warp_specialize([
        (_consumer, (q_smem, k_smem, v_smem, full, empty, O, h * stride_oh, stride_os, Sq, q_start, n_tiles,
                     qk_scale_log2, HEAD_DIM, BLOCK_M, BLOCK_N, STAGES)),
        (_producer, (K, V, COLUMN_INDEX, k_smem, v_smem, full, empty, h * stride_kh, h * stride_vh, sel_start,
                     n_tiles, stride_ks, stride_vs, HEAD_DIM, BLOCK_N, STAGES, PRODUCER_WARPS)),
    ], [PRODUCER_WARPS], [PRODUCER_REGS])


CONFIG = dict(BLOCK_M=64, BLOCK_N=64, STAGES=3, PRODUCER_WARPS=4, PRODUCER_REGS=88)


def gluon_sparse_attention(q, k, v, column_index, column_offset, column_count, scale=None, maxnreg=None, **config):
    """q, k, v [1, S, H, 128] bf16; lists as in vecdit.ops.VectorSelection, counts multiples of 64."""
    cfg = {**CONFIG, **config}
    if maxnreg:
        cfg["maxnreg"] = maxnreg
    _, seq_q, heads, dim = q.shape
    nqb = triton.cdiv(seq_q, cfg["BLOCK_M"])
    out = torch.empty_like(q)
    scale = dim ** -0.5 if scale is None else scale
    gluon_sparse_attn_kernel[(nqb, heads)](
        q, k, v, out, column_index, column_offset, column_count, scale * LOG2E,
        q.stride(1), q.stride(2), k.stride(1), k.stride(2), v.stride(1), v.stride(2), out.stride(1), out.stride(2),
        heads, seq_q, nqb, HEAD_DIM=dim, num_warps=4, **cfg)
    return out


# (STAGES, PRODUCER_WARPS, PRODUCER_REGS, maxnreg): STAGES 2 uses 82 KB of shared memory, so two
# programs fit an SM if registers allow (maxnreg 128: 256 threads x 128); STAGES 3-4 run one per SM
VARIANTS = [(2, 4, 88, None), (2, 4, 88, 128), (3, 4, 88, None), (4, 4, 88, None), (2, 2, 120, 128), (3, 2, 120, None)]


def compile_only():
    """Lower the kernel for sm_90a without a GPU: catches API and layout errors here."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    sig = {n: t for n, t in zip(
        ["Q", "K", "V", "O", "COLUMN_INDEX", "COLUMN_OFFSET", "COLUMN_COUNT", "qk_scale_log2",
         "stride_qs", "stride_qh", "stride_ks", "stride_kh", "stride_vs", "stride_vh", "stride_os", "stride_oh",
         "H", "Sq", "num_query_blocks"],
        ["*bf16", "*bf16", "*bf16", "*bf16", "*i32", "*i64", "*i32", "fp32"] + ["i32"] * 11)}
    attrs = {(i,): [["tt.divisibility", 16]] for i in list(range(7)) + list(range(8, 16))}  # as JIT specializes
    for stages, pwarps, regs, maxnreg in VARIANTS:
        constexprs = {"HEAD_DIM": 128, **CONFIG, "STAGES": stages, "PRODUCER_WARPS": pwarps, "PRODUCER_REGS": regs}
        full_sig = {**sig, **{name: "constexpr" for name in constexprs}}
        src = GluonASTSource(gluon_sparse_attn_kernel, full_sig, constexprs, attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": maxnreg})
        ptx = kernel.asm["ptx"]
        print(f"STAGES {stages} producer warps {pwarps} regs {regs} maxnreg {maxnreg}: shared {kernel.metadata.shared} bytes; "
              f"wgmma {ptx.count('wgmma.mma_async')}, cp.async {ptx.count('cp.async.cg') + ptx.count('cp.async.ca')}, "
              f"noinc arrives {ptx.count('cp.async.mbarrier.arrive.noinc')}")


def main():
    out_dir = os.environ.get("OUT", ".")
    from vecdit.ops import VectorSelection, vector_sparse_attention
    from vecdit.ops.reference import attention_reference

    heads, seq, dim = 24, 118800, 128
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, seq, heads, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    nqb = triton.cdiv(seq, 64)
    kept = seq // 4 // 64 * 64
    g = torch.Generator(device="cuda").manual_seed(1)
    lists = torch.empty(heads * nqb, kept, device="cuda", dtype=torch.int32)
    for a in range(0, lists.shape[0], 2048):
        b = min(lists.shape[0], a + 2048)
        lists[a:b] = torch.rand(b - a, seq, device="cuda", generator=g).topk(kept, 1).indices.sort(1).values.int()
    index = lists.reshape(-1)
    offset = torch.arange(heads * nqb + 1, device="cuda", dtype=torch.int64) * kept
    count = torch.full((heads * nqb,), kept, device="cuda", dtype=torch.int32)
    sel = VectorSelection(index, offset, count.view(1, heads, nqb), 1, heads, nqb, seq)
    flops = 4 * seq * kept * heads * dim
    rows = []
    base = vector_sparse_attention(q, k, v, sel)
    ms = float(triton.testing.do_bench(lambda: vector_sparse_attention(q, k, v, sel), warmup=30, rep=200,
                                       return_mode="median"))
    rows.append(dict(kernel="triton (production)", ms=ms, tflops=flops / ms / 1e9))
    print(rows[-1], flush=True)
    for stages, pwarps, regs, maxnreg in VARIANTS:
        cfg = dict(STAGES=stages, PRODUCER_WARPS=pwarps, PRODUCER_REGS=regs, maxnreg=maxnreg)
        try:
            out = gluon_sparse_attention(q, k, v, index, offset, count, **cfg)
            diff = float((out.float() - base.float()).norm() / base.float().norm())
            # fp32 reference on a few blocks
            worst = 0.0
            for h, qb in ((0, 0), (5, 777), (23, nqb - 1)):
                cols = lists[h * nqb + qb].long()
                qs = q[:, qb * 64:(qb + 1) * 64, h:h + 1]
                ref, _ = attention_reference(qs, k[:, cols, h:h + 1], v[:, cols, h:h + 1])
                got = out[:, qb * 64:(qb + 1) * 64, h:h + 1].float()
                worst = max(worst, float((got - ref).norm() / ref.norm()))
            ms = float(triton.testing.do_bench(lambda: gluon_sparse_attention(q, k, v, index, offset, count, **cfg),
                                               warmup=30, rep=200, return_mode="median"))
            rows.append(dict(kernel="gluon ws", **cfg, ms=ms, tflops=flops / ms / 1e9, rel_diff_vs_triton=diff,
                             worst_block_err_vs_fp32=worst))
        except Exception as e:  # noqa: BLE001
            rows.append(dict(kernel="gluon ws", **cfg, error=f"{type(e).__name__}: {str(e)[-300:]}"))
        print(rows[-1], flush=True)
    with open(os.path.join(out_dir, "gluon-sparse-attn.json"), "w") as f:
        json.dump(dict(card=torch.cuda.get_device_name(), triton=triton.__version__, rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    if "--compile-only" in sys.argv:
        compile_only()
        sys.exit(0)
    sys.exit(main())
