# Copyright 2026 The vecdit authors. Apache-2.0.
"""The Gluon sparse kernel (vecdit/ops/_attn_gluon_kernel.py) against the Triton kernel (GPU experiment).

Local (no GPU):  python bench/experiments/gluon_sparse_attn.py --compile-only   (needs triton 3.6)
GPU:             python bench/experiments/gluon_sparse_attn.py                  (check + timings -> $OUT)
"""
import json
import re
import os
import sys
import threading

import torch
import triton

from vecdit.ops._attn_gluon_kernel import CONFIG, gluon_sparse_attention, gluon_sparse_attn_kernel

# Session 3, H200 (bench/results/gluon-sparse-attn-*-session3-run1.jsonl): of the first eight, only
# maxnreg 128 (two programs per SM) beat the Triton kernel (129 vs 136 ms); one program per SM is
# consumer-bound whatever the depth. So: two programs per SM with deeper rings (STAGES 3 fits
# 2 x 115 KB), fewer producer warps so the consumer can hold more registers (2 programs x
# (4 + PRODUCER_WARPS) warps x maxnreg <= 64K), 32-key tiles with more stages.
# Run 2 (H100): one producer warpgroup beats two or one warps by far (T ~ 56 ms + 316 ms / warps):
# the producer bounds the kernel. Tried next: its indices more tiles early. (Eight producer warps
# at two programs per SM: ptxas rejects Gluon's register split.)
# Run 3 (H200): indices 2-3 tiles ahead and the overlapped softmax were no faster either; both knobs
# are gone from the kernel (git history at 946c70e has them). What is left to vary:
# BLOCK_N, STAGES, PRODUCER_WARPS, PRODUCER_REGS, maxnreg.
def _v(bn, stages, pwarps, regs, maxnreg):
    return dict(BLOCK_N=bn, STAGES=stages, PRODUCER_WARPS=pwarps, PRODUCER_REGS=regs, maxnreg=maxnreg)


VARIANTS = [_v(64, 3, 4, 88, 128), _v(64, 2, 4, 88, 128), _v(32, 6, 4, 88, 128), _v(64, 3, 4, 88, None)]


def _ptxas_usage(kernel):
    """Registers and spills as ptxas reports them (CompiledKernel.n_regs needs a GPU)."""
    import re
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(kernel.asm["ptx"])
    log = subprocess.run([get_ptxas(90).path, "-arch=sm_90a", "-v", f.name, "-o", "/dev/null"], capture_output=True,
                         text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return f"ptxas: {regs.group(1) if regs else '?'} regs, {spills.group(1) if spills else '?'} B spill stores;"


def compile_only():
    """Lower the kernel for sm_90a without a GPU: catches API and layout errors here."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    names = ["Q", "K", "V", "O", "LSE", "COLUMN_INDEX", "COLUMN_OFFSET", "COLUMN_COUNT", "qk_scale_log2"]
    types = ["*bf16"] * 4 + ["*fp32", "*i32", "*i64", "*i32", "fp32"]
    strides = [f"stride_{t}{a}" for t in "qkvo" for a in "bshd"]
    names += strides + ["H", "Sq", "num_query_blocks", "dense_start", "dense_end"]
    types += ["i32"] * (len(strides) + 5)
    names += ["SEGMENT_OFFSET", "num_segments", "stride_oz", "stride_lz"]
    types += ["*i64", "i32", "i32", "i32"]
    sig = dict(zip(names, types))
    # as the JIT specializes: pointers and the strides other than head_dim 16-divisible, head_dim strides 1
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n[0].isupper() or
             (n.startswith("stride_") and not n.endswith("d"))}
    for variant in VARIANTS + [dict(VARIANTS[0], SEGMENTED=True)]:
        maxnreg = variant["maxnreg"]
        constexprs = {"HEAD_DIM": 128, **{n: x for n, x in {**CONFIG, **variant}.items() if n != "maxnreg"},
                      **{n: 1 for n in strides if n.endswith("d")}}
        constexprs.setdefault("SEGMENTED", False)
        full_sig = {**sig, **{name: "constexpr" for name in constexprs}}
        if constexprs["SEGMENTED"]:
            full_sig["O"] = "*fp32"  # fp32 partial outputs
        src = GluonASTSource(gluon_sparse_attn_kernel, full_sig, constexprs, attrs)
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": maxnreg})
        ptx = kernel.asm["ptx"]
        print(f"{_ptxas_usage(kernel)} {variant}: shared {kernel.metadata.shared} bytes; "
              f"wgmma {ptx.count('wgmma.mma_async')}, cp.async {ptx.count('cp.async.cg') + ptx.count('cp.async.ca')}, "
              f"noinc arrives {ptx.count('cp.async.mbarrier.arrive.noinc')}, "
              f"{sorted(set(re.findall(r'setmaxnreg[^;]*', ptx)))}")


def main(start=0):
    """HunyuanVideo-720p, random inputs, exact selection at ~25% density, text range attended:
    the production kernel vs the Gluon variants from `start` on, same run; errors vs the
    production kernel and vs an fp32 reference on sampled blocks. Rows go to
    $OUT/gluon-sparse-attn.jsonl as they finish; a variant that hangs (a barrier never completes)
    is recorded and the process exits with HANG, so the caller restarts at the next variant."""
    out_dir = os.environ.get("OUT", ".")
    from vecdit.bench.attention import calibrate_threshold, make_inputs
    from vecdit.bench.common import sampled_block_error
    from vecdit.ops import vector_selection
    from vecdit.ops.attention import _attn_triton

    log = open(os.path.join(out_dir, "gluon-sparse-attn.jsonl"), "a")

    def record(row):
        row = dict(card=torch.cuda.get_device_name(), triton=triton.__version__, **row)
        print(row, flush=True)
        log.write(json.dumps(row) + "\n")
        log.flush()

    q, k, v = make_inputs("hunyuanvideo-720p")
    video, total = 118800, q.shape[1]
    qv = q[:, :video]
    thr = calibrate_threshold(qv, k[:, :video], 0.25)
    sel = vector_selection(qv, k[:, :video], thr)
    args = (qv, k, v, sel.column_index, sel.column_offset, sel.column_count.reshape(-1), video, total, 128 ** -0.5)
    flops = 4 * 128 * (int(sel.column_count.sum()) * 64 + video * (total - video))
    base_out, base_lse = _attn_triton(*args)
    if start == 0:
        ms = float(triton.testing.do_bench(lambda: _attn_triton(*args), warmup=30, rep=200, return_mode="median"))
        record(dict(kernel="triton (production)", ms=ms, tflops=flops / ms / 1e9, density=float(sel.density()),
                    worst_block_err_vs_fp32=sampled_block_error(qv, k, v, sel, (video, total))))
    for i in range(start, len(VARIANTS)):
        cfg = VARIANTS[i]
        # compile first (no watchdog: compiling takes a while), then run under a watchdog
        watchdog = threading.Timer(60.0, lambda: (record(dict(kernel="gluon ws", variant=i, **cfg, error="hang (60 s)")),
                                                  os._exit(HANG)))
        try:
            watchdog.start()
            out, lse = gluon_sparse_attention(*args, **cfg)
            torch.cuda.synchronize()
            diff = float((out.float() - base_out.float()).norm() / base_out.float().norm())
            lse_diff = float((lse - base_lse).abs().max())
            ms = float(triton.testing.do_bench(lambda: gluon_sparse_attention(*args, **cfg), warmup=30, rep=200,
                                               return_mode="median"))
            watchdog.cancel()
            row = dict(kernel="gluon ws", variant=i, **cfg, ms=ms, tflops=flops / ms / 1e9, rel_diff_vs_triton=diff,
                       max_lse_diff=lse_diff)
            if diff < 1e-2:
                row["worst_block_err_vs_fp32"] = sampled_block_error(qv, k, v, sel, (video, total), out=out)
            record(row)
        except Exception as e:  # noqa: BLE001
            watchdog.cancel()
            record(dict(kernel="gluon ws", variant=i, **cfg, error=f"{type(e).__name__}: {str(e)[-300:]}"))
    return 0


if __name__ == "__main__":
    if "--compile-only" in sys.argv:
        compile_only()
        sys.exit(0)
    sys.exit(main(int(sys.argv[sys.argv.index('--start') + 1]) if '--start' in sys.argv else 0))
