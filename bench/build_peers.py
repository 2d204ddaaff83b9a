# Copyright 2026 The vecdit authors. Apache-2.0.
"""Builds the peers' compiled Hopper kernels on the GPU host (benchmark-only; never a dependency of vecdit).

  python3 bench/build_peers.py sage --src .peers/SageAttention --dest /tmp/peers
  python3 bench/build_peers.py vsa --src .peers/fastvideo-kernel --tk .peers/ThunderKittens --dest /tmp/peers

`sage`: SageAttention2's sm_90a extensions only (`_qattn_sm90`, the INT8-QK / FP8-PV kernel that `sageattn`
dispatches to on Hopper, and `_fused`, its quantisation kernels), its Python package beside them, and a
dist-info so that diffusers' `set_attention_backend("sage")` finds it.
`vsa`: fastvideo-kernel's ThunderKittens block-sparse forward and backward (`block_sparse_h100.cu`; the
Python side needs both to take its sm_90 path) as `fastvideo_kernel._C.fastvideo_kernel_ops`, with
fastvideo-kernel's Python package from the same source tree.
Sources come as snapshots carried in `.peers/` (git-ignored); `--dest` goes on PYTHONPATH. Prints one JSON
line: what was built, in how many seconds, or why it failed. `.peers/` from the public repositories' mirrors:
  SageAttention/     thu-ml/SageAttention:  git archive HEAD csrc sageattention setup.py LICENSE
  fastvideo-kernel/  hao-ai-lab/FastVideo:  git archive HEAD fastvideo-kernel/python fastvideo-kernel/csrc/attention
  ThunderKittens/    HazyResearch/ThunderKittens at FastVideo's submodule commit (6c27e28c):
                     git archive 6c27e28c8115d1839d9eeeb530913c184a75fc87 include prototype LICENSE
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
    info = dest / "sageattention-2.2.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sageattention\nVersion: 2.2.0\n")
    (info / "top_level.txt").write_text("sageattention\n")
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("peer", choices=("sage", "vsa"))
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--tk", type=Path, help="ThunderKittens' source (vsa)")
    p.add_argument("--dest", type=Path, required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0a")  # wgmma/TMA kernels: sm_90a only
    os.environ.setdefault("MAX_JOBS", "8")
    args.dest.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        built = build_sage(args.src, args.dest) if args.peer == "sage" else build_vsa(args.src, args.tk, args.dest)
        row = {"peer": args.peer, "ok": True, **built}
    except Exception as e:  # noqa: BLE001 - a build failure is a result to record, with its reason
        row = {"peer": args.peer, "ok": False, "error": f"{type(e).__name__}: {str(e)[-1500:]}"}
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(row), flush=True)
    return 0 if row["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
