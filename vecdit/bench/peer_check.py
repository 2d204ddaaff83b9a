# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.bench peers-check`: which peers `bench/build_peers.py` left importable, and one
small call of each against fp32 SDPA (on the GPU host after `peers-build`; prints one line a peer)."""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F


def vsa_module():
    """fastvideo-kernel's `block_sparse_attn` module. `import fastvideo_kernel.block_sparse_attn as b`
    gives the package's attribute of that name, which its `__init__` rebinds to the function
    `block_sparse_attn`: the module itself is `sys.modules`' entry."""
    return importlib.import_module("fastvideo_kernel.block_sparse_attn")


def _rel(out, ref) -> float:
    return float((out.float() - ref).norm() / ref.norm())


def check_peers(seq: int = 4096, heads: int = 8) -> list[str]:
    lines = []
    cuda = torch.cuda.is_available()
    if cuda:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(1, seq, heads, 128, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
        ref = F.scaled_dot_product_attention(*(x.transpose(1, 2).float() for x in (q, k, v))).transpose(1, 2)
    from . import sage

    if sage.available():
        lines.append(f"sage2 ok, rel err vs fp32 SDPA {_rel(sage.sage_attention(q, k, v, None, 128 ** -0.5), ref):.2e}")
    else:
        lines.append("sage2 not importable" + ("" if cuda else " (no CUDA here)"))
    try:
        bsa = vsa_module()
        ops = bsa._get_sm90_ops()
        lines.append(f"VSA sm90 ops {ops}; takes the sm90 path here: "
                     f"{None not in ops and cuda and bsa._is_sm90() and not bsa._force_triton()}")
    except Exception as e:  # noqa: BLE001 - what failed is the line
        lines.append(f"VSA import failed {type(e).__name__}: {e}")
    try:
        import spas_sage_attn

        if cuda:
            out, sparsity = spas_sage_attn.spas_sage2_attn_meansim_topk_cuda(q, k, v, topk=0.5, tensor_layout="NHD",
                                                                             return_sparsity=True)
            dense = spas_sage_attn.spas_sage2_attn_meansim_topk_cuda(q, k, v, topk=1.0, tensor_layout="NHD")
            lines.append(f"SpargeAttn ok: top-k 0.5 reports density {1 - sparsity:.3f}, rel err vs fp32 SDPA "
                         f"{_rel(out, ref):.2e}; top-k 1.0 (all blocks) {_rel(dense, ref):.2e}")
        else:
            lines.append("SpargeAttn importable (no CUDA here)")
    except Exception as e:  # noqa: BLE001
        lines.append(f"SpargeAttn import failed {type(e).__name__}: {str(e)[:300]}")
    return lines
