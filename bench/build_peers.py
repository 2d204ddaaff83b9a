# Copyright 2026 The vecdit authors. Apache-2.0.
"""Builds the peers' compiled Hopper kernels on the GPU host (benchmark-only; never a dependency of vecdit).

  python3 bench/build_peers.py sage --src .peers/SageAttention --dest /tmp/peers
  python3 bench/build_peers.py vsa --src .peers/fastvideo-kernel --tk .peers/ThunderKittens --dest /tmp/peers
  python3 bench/build_peers.py sparge --src .peers/SpargeAttn --dest /tmp/peers

`sage`: SageAttention2's sm_90a extensions only (`_qattn_sm90`, the INT8-QK / FP8-PV kernel that `sageattn`
dispatches to on Hopper, and `_fused`, its quantisation kernels), its Python package beside them, and a
dist-info so that diffusers' `set_attention_backend("sage")` finds it.
`vsa`: fastvideo-kernel's ThunderKittens block-sparse forward and backward (`block_sparse_h100.cu`; the
Python side needs both to take its sm_90 path) as `fastvideo_kernel._C.fastvideo_kernel_ops`, with
fastvideo-kernel's Python package from the same source tree.
`sparge`: SpargeAttn's sm90 kernel only (`spas_sage_attn._qattn` with the two sm90 entry points that
`spas_sage2_attn_meansim_cuda` / `..._topk_cuda` call on Hopper; its setup.py also compiles the sm80 and
sm89 sources and 96 instantiations per architecture): its own sm90 autogen run for head_dim 128, bf16
output, non-causal (9 instantiations: the 3 QK quantisation granularities x the PV-threshold modes), the
sm90 dispatcher narrowed to those (any other head_dim, dtype or causal call raises), `_fused` (its V
quantisation kernels), its Python package and a dist-info; the instantiations compile in parallel
(MAX_JOBS, default 12 for this peer).
Sources come as snapshots carried in `.peers/` (git-ignored; about 3.5 MB); `--dest` goes on PYTHONPATH. Prints
one JSON line: what was built, in how many seconds, or why it failed. `.peers/` from the public
repositories (the `fetch` tool gives each as a bare git directory, /work/.mirror/OWNER+NAME/repo;
`G="git --git-dir=/work/.mirror/OWNER+NAME/repo"`):
  SageAttention/     thu-ml/SageAttention (d1a57a54):
                     $G archive HEAD csrc sageattention setup.py LICENSE | tar -x -C .peers/SageAttention
  fastvideo-kernel/  hao-ai-lab/FastVideo (2f3d4074):
                     $G archive HEAD fastvideo-kernel/python fastvideo-kernel/csrc/attention fastvideo-kernel/LICENSE
                       | tar -x --strip-components=1 -C .peers/fastvideo-kernel
  ThunderKittens/    HazyResearch/ThunderKittens at FastVideo's submodule commit (fastvideo-kernel/include/tk):
                     $G archive 6c27e28c8115d1839d9eeeb530913c184a75fc87 include prototype LICENSE
                       | tar -x -C .peers/ThunderKittens
  SpargeAttn/        thu-ml/SpargeAttn (bfd980b7):
                     $G archive HEAD csrc spas_sage_attn setup.py LICENSE | tar -x -C .peers/SpargeAttn
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

VSA_BINDING = """
#include <torch/extension.h>
#include <vector>
std::vector<torch::Tensor> block_sparse_attention_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v,
    torch::Tensor q2k_block_sparse_index, torch::Tensor q2k_block_sparse_num, torch::Tensor block_size);
std::vector<torch::Tensor> block_sparse_attention_backward(torch::Tensor q, torch::Tensor k, torch::Tensor v,
    torch::Tensor o, torch::Tensor l_vec, torch::Tensor og, torch::Tensor k2q_block_sparse_index,
    torch::Tensor k2q_block_sparse_num, torch::Tensor block_size);
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("block_sparse_fwd", torch::wrap_pybind_function(block_sparse_attention_forward), "VSA forward (Hopper, TK)");
  m.def("block_sparse_bwd", torch::wrap_pybind_function(block_sparse_attention_backward), "VSA backward (Hopper, TK)");
}
"""


def _load(name, sources, build, **kwargs):
    from torch.utils.cpp_extension import load

    build.mkdir(parents=True, exist_ok=True)
    return load(name=name, sources=[str(s) for s in sources], build_directory=str(build), verbose=False, **kwargs)


def build_sage(src: Path, dest: Path) -> dict:
    pkg = dest / "sageattention"
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(src / "sageattention", pkg)
    # SageAttention's own setup.py flags for its CUDA sources (sm_90a comes from TORCH_CUDA_ARCH_LIST)
    nvcc = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__", "--use_fast_math",
            "--threads=8", "-diag-suppress=174", "-DENABLE_BF16"]
    cxx = ["-O3", "-std=c++17", "-fopenmp", "-DENABLE_BF16"]
    built = []
    for name, sources, ldflags in (
            ("_qattn_sm90", ["csrc/qattn/pybind_sm90.cpp", "csrc/qattn/qk_int_sv_f8_cuda_sm90.cu"], ["-lcuda"]),
            ("_fused", ["csrc/fused/pybind.cpp", "csrc/fused/fused.cu"], [])):
        module = _load(name, [src / s for s in sources], dest / "build" / name, extra_cflags=cxx,
                       extra_cuda_cflags=nvcc, extra_ldflags=ldflags)
        shutil.copy(module.__file__, pkg / Path(module.__file__).name)
        built.append(Path(module.__file__).name)
    _dist_info(dest, "sageattention", "2.2.0")
    return {"built": built}


def build_vsa(src: Path, tk: Path, dest: Path) -> dict:
    pkg = dest / "fastvideo_kernel"
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(src / "python" / "fastvideo_kernel", pkg)
    build = dest / "build" / "fastvideo_kernel_ops"
    build.mkdir(parents=True, exist_ok=True)
    binding = build / "vsa_binding.cpp"
    binding.write_text(VSA_BINDING)
    # fastvideo-kernel's CMakeLists.txt flags for its ThunderKittens sources
    nvcc = ["-DNDEBUG", "-O3", "-std=c++20", "--use_fast_math", "--expt-extended-lambda", "--expt-relaxed-constexpr",
            "-Xcompiler=-fno-strict-aliasing", "-DTORCH_COMPILE", "-DKITTENS_HOPPER"]
    module = _load("fastvideo_kernel_ops", [binding, src / "csrc" / "attention" / "block_sparse_h100.cu"], build,
                   extra_cflags=["-O3", "-std=c++20"], extra_cuda_cflags=nvcc, extra_ldflags=["-lcuda"],
                   extra_include_paths=[str(tk / "include"), str(tk / "prototype"), str(src / "csrc")])
    (pkg / "_C").mkdir(exist_ok=True)
    (pkg / "_C" / "__init__.py").write_text("")
    shutil.copy(module.__file__, pkg / "_C" / Path(module.__file__).name)
    return {"built": [f"_C/{Path(module.__file__).name}"]}


SPARGE_BINDING = """
#include <pybind11/pybind11.h>
#include "attn_cuda.h"
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("qk_int8_sv_f8_accum_f32_block_sparse_attn_inst_buf_fuse_v_scale_sm90",
        &qk_int8_sv_f8_accum_f32_block_sparse_attn_inst_buf_fuse_v_scale_sm90);
  m.def("qk_int8_sv_f8_accum_f32_block_sparse_attn_inst_buf_fuse_v_scale_with_pv_threshold_sm90",
        &qk_int8_sv_f8_accum_f32_block_sparse_attn_inst_buf_fuse_v_scale_with_pv_threshold_sm90);
}
"""
# the sm90 autogen's sweeps, narrowed: head_dim 128, bf16 output, non-causal (QK granularity and PV modes all kept)
SPARGE_SWEEPS = {"head_dims = [64, 128]": "head_dims = [128]",
                 'dtypes_out = ["half", "nv_bfloat16"]': 'dtypes_out = ["nv_bfloat16"]',
                 "is_causals = [True, False]": "is_causals = [False]"}
# the sm90 dispatcher's macros, narrowed to the same instantiations (the others are never compiled)
SPARGE_DISPATCH = r"""
#undef DISPATCH_HEAD_DIM
#define DISPATCH_HEAD_DIM(head_dim, HEAD_DIM, ...) \
if (head_dim == 128) { constexpr int HEAD_DIM = 128; __VA_ARGS__ } \
else { throw std::invalid_argument("this SpargeAttn build (bench/build_peers.py) has head_dim 128 only"); }
#undef DISPATCH_CAUSAL
#define DISPATCH_CAUSAL(is_causal, IS_CAUSAL, ...) \
if (is_causal == 0) { constexpr bool IS_CAUSAL = false; __VA_ARGS__ } \
else { throw std::invalid_argument("this SpargeAttn build (bench/build_peers.py) is non-causal only"); }
#undef DISPATCH_PYTORCH_DTYPE_TO_CTYPE_FP16
#define DISPATCH_PYTORCH_DTYPE_TO_CTYPE_FP16(pytorch_dtype, c_type, ...) \
if (pytorch_dtype == at::ScalarType::BFloat16) { using c_type = nv_bfloat16; __VA_ARGS__ } \
else { TORCH_CHECK(false, "this SpargeAttn build (bench/build_peers.py) has bf16 output only"); }
"""


def sparge_instantiations(src: Path) -> list[Path]:
    """Runs SpargeAttn's sm90 autogen with its sweeps narrowed (`SPARGE_SWEEPS`): the instantiation
    files it writes beside itself, as its setup.py would, for head_dim 128, bf16, non-causal only."""
    autogen = src / "csrc" / "qattn" / "instantiations_sm90" / "autogen.py"
    code = autogen.read_text()
    for old, new in SPARGE_SWEEPS.items():
        if old not in code:
            raise RuntimeError(f"SpargeAttn's sm90 autogen changed: no `{old}` in {autogen}")
        code = code.replace(old, new)
    for stale in autogen.parent.glob("inst_*.cu"):
        stale.unlink()
    exec(compile(code, str(autogen), "exec"), {"__file__": str(autogen), "__name__": "__main__"})  # noqa: S102
    return sorted(autogen.parent.glob("inst_*.cu"))


def sparge_dispatcher(src: Path, build: Path) -> Path:
    """SpargeAttn's sm90 entry points (`qk_int_sv_f8_cuda_sm90.cu`) with its dispatch macros narrowed
    (`SPARGE_DISPATCH`), written to `build`; compiled with `src/csrc` and `src/csrc/qattn` on the
    include path."""
    text = (src / "csrc" / "qattn" / "qk_int_sv_f8_cuda_sm90.cu").read_text()
    includes = '#include "../pytorch_extensions_utils.cuh"\n#include "decl.cuh"\n'
    if includes not in text:
        raise RuntimeError("SpargeAttn's qk_int_sv_f8_cuda_sm90.cu changed its includes")
    text = text.replace(includes, '#include "pytorch_extensions_utils.cuh"\n#include "decl.cuh"\n' + SPARGE_DISPATCH)
    build.mkdir(parents=True, exist_ok=True)
    out = build / "qk_int_sv_f8_cuda_sm90_narrow.cu"
    out.write_text(text)
    return out


def build_sparge(src: Path, dest: Path) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    pkg = dest / "spas_sage_attn"
    shutil.rmtree(pkg, ignore_errors=True)
    shutil.copytree(src / "spas_sage_attn", pkg)
    build = dest / "build" / "sparge"
    insts = sparge_instantiations(src)
    binding = build / "qattn" / "sparge_sm90_binding.cpp"
    dispatcher = sparge_dispatcher(src, build / "qattn")
    binding.write_text(SPARGE_BINDING)
    # SpargeAttn's setup.py flags (sm_90a from TORCH_CUDA_ARCH_LIST; -DHAS_SM90 as it sets for 9.0) but its
    # `-Xcompiler -include,cassert`: with nvcc 13.0 and g++ 12 it redefines libstdc++'s config (the sm90 header
    # includes <cassert> itself); the dispatcher and an instantiation compiled without it (nvcc 13.0, sm_90a)
    nvcc = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__", "--use_fast_math",
            "-diag-suppress=174", "-DHAS_SM90"]
    cxx = ["-O3", "-fopenmp", "-std=c++17", "-DENABLE_BF16", "-DHAS_SM90"]
    include = [str(src / "csrc"), str(src / "csrc" / "qattn")]
    jobs = {
        "_qattn": ([binding, dispatcher, *insts], ["-lcuda"]),
        "_fused": ([src / "csrc" / "fused" / "pybind.cpp", src / "csrc" / "fused" / "fused.cu"], []),
    }
    with ThreadPoolExecutor(2) as pool:  # both modules at once: their nvcc runs share the MAX_JOBS slots
        futures = {name: pool.submit(_load, name, sources, build / name, extra_cflags=cxx, extra_cuda_cflags=nvcc,
                                     extra_ldflags=ldflags, extra_include_paths=include)
                   for name, (sources, ldflags) in jobs.items()}
        modules = {name: f.result() for name, f in futures.items()}
    built = []
    for module in modules.values():
        shutil.copy(module.__file__, pkg / Path(module.__file__).name)
        built.append(Path(module.__file__).name)
    _dist_info(dest, "spas_sage_attn", "0.1.0")
    return {"built": built, "instantiations": [p.name for p in insts]}


def _dist_info(dest: Path, name: str, version: str) -> None:
    """A minimal dist-info, so that `importlib.metadata` (and the peer's own version checks) find the package."""
    info = dest / f"{name}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(f"{name}\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("peer", choices=("sage", "vsa", "sparge"))
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--tk", type=Path, help="ThunderKittens' source (vsa)")
    p.add_argument("--dest", type=Path, required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")  # wgmma/TMA kernels: sm_90a only
    os.environ.setdefault("MAX_JOBS", "12" if args.peer == "sparge" else "8")  # sparge: 11 translation units
    args.dest.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        if args.peer == "sage":
            built = build_sage(args.src, args.dest)
        elif args.peer == "vsa":
            built = build_vsa(args.src, args.tk, args.dest)
        else:
            built = build_sparge(args.src, args.dest)
        row = {"peer": args.peer, "ok": True, **built}
    except Exception as e:  # noqa: BLE001 - a build failure is a result to record, with its reason
        row = {"peer": args.peer, "ok": False, "error": f"{type(e).__name__}: {str(e)[-1500:]}"}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    return 0 if row["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
