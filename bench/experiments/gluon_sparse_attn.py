# Copyright 2026 The vecdit authors. Apache-2.0.
"""The Gluon sparse kernel (vecdit/ops/_attn_gluon_kernel.py) against the Triton kernel (GPU experiment).

Local (no GPU):  python bench/experiments/gluon_sparse_attn.py --compile-only   (needs triton 3.6)
GPU:             python bench/experiments/gluon_sparse_attn.py                  (check + timings -> $OUT)
"""
import json
import os
import sys

import torch
import triton

from vecdit.ops._attn_gluon_kernel import CONFIG, gluon_sparse_attention, gluon_sparse_attn_kernel

# (STAGES, PRODUCER_WARPS, PRODUCER_REGS, maxnreg, OVERLAP): STAGES 2 uses 82 KB of shared memory,
# so two programs fit an SM if registers allow (maxnreg 128: 256 threads x 128); STAGES 3-4 run one
# per SM; OVERLAP issues the next tile's Q K^T before this tile's softmax
VARIANTS = [(2, 4, 88, None, False), (2, 4, 88, 128, False), (3, 4, 88, None, False), (4, 4, 88, None, False),
            (2, 2, 120, 128, False), (2, 4, 88, 128, True), (3, 4, 88, None, True), (4, 4, 88, None, True)]


def compile_only():
    """Lower the kernel for sm_90a without a GPU: catches API and layout errors here."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    names = ["Q", "K", "V", "O", "LSE", "COLUMN_INDEX", "COLUMN_OFFSET", "COLUMN_COUNT", "qk_scale_log2"]
    types = ["*bf16"] * 4 + ["*fp32", "*i32", "*i64", "*i32", "fp32"]
    strides = [f"stride_{t}{a}" for t in "qkvo" for a in "bshd"]
    names += strides + ["H", "Sq", "num_query_blocks", "dense_start", "dense_end"]
    types += ["i32"] * (len(strides) + 5)
    sig = dict(zip(names, types))
    # as the JIT specializes: pointers and the strides other than head_dim 16-divisible, head_dim strides 1
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n[0].isupper() or
             (n.startswith("stride_") and not n.endswith("d"))}
    for stages, pwarps, regs, maxnreg, overlap in VARIANTS:
        constexprs = {"HEAD_DIM": 128, **CONFIG, "STAGES": stages, "PRODUCER_WARPS": pwarps, "PRODUCER_REGS": regs,
                      "OVERLAP": overlap,
                      **{n: 1 for n in strides if n.endswith("d")}}
        full_sig = {**sig, **{name: "constexpr" for name in constexprs}}
        src = GluonASTSource(gluon_sparse_attn_kernel, full_sig, constexprs, attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": maxnreg})
        ptx = kernel.asm["ptx"]
        print(f"STAGES {stages} producer warps {pwarps} regs {regs} maxnreg {maxnreg} overlap {overlap}: shared {kernel.metadata.shared} bytes; "
              f"wgmma {ptx.count('wgmma.mma_async')}, cp.async {ptx.count('cp.async.cg') + ptx.count('cp.async.ca')}, "
              f"noinc arrives {ptx.count('cp.async.mbarrier.arrive.noinc')}")


def main():
    """HunyuanVideo-720p, random inputs, exact selection at ~25% density, text range attended:
    the production kernel vs the Gluon variants, same run; errors vs the production kernel and
    vs an fp32 reference on sampled blocks."""
    out_dir = os.environ.get("OUT", ".")
    from vecdit.bench.attention import calibrate_threshold, make_inputs
    from vecdit.bench.common import sampled_block_error
    from vecdit.ops import vector_selection
    from vecdit.ops.attention import _attn_triton

    q, k, v = make_inputs("hunyuanvideo-720p")
    video, total = 118800, q.shape[1]
    qv = q[:, :video]
    thr = calibrate_threshold(qv, k[:, :video], 0.25)
    sel = vector_selection(qv, k[:, :video], thr)
    args = (qv, k, v, sel.column_index, sel.column_offset, sel.column_count.reshape(-1), video, total, 128 ** -0.5)
    flops = 4 * 128 * (int(sel.column_count.sum()) * 64 + video * (total - video))
    base_out, base_lse = _attn_triton(*args)
    ms = float(triton.testing.do_bench(lambda: _attn_triton(*args), warmup=30, rep=200, return_mode="median"))
    rows = [dict(kernel="triton (production)", ms=ms, tflops=flops / ms / 1e9, density=float(sel.density()),
                 worst_block_err_vs_fp32=sampled_block_error(qv, k, v, sel, (video, total)))]
    print(rows[-1], flush=True)
    for stages, pwarps, regs, maxnreg, overlap in VARIANTS:
        cfg = dict(STAGES=stages, PRODUCER_WARPS=pwarps, PRODUCER_REGS=regs, maxnreg=maxnreg, OVERLAP=overlap)
        try:
            out, lse = gluon_sparse_attention(*args, **cfg)
            torch.cuda.synchronize()
            diff = float((out.float() - base_out.float()).norm() / base_out.float().norm())
            lse_diff = float((lse - base_lse).abs().max())
            ms = float(triton.testing.do_bench(lambda: gluon_sparse_attention(*args, **cfg), warmup=30, rep=200,
                                               return_mode="median"))
            rows.append(dict(kernel="gluon ws", **cfg, ms=ms, tflops=flops / ms / 1e9, rel_diff_vs_triton=diff,
                             max_lse_diff=lse_diff))
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
