# Copyright 2026 The vecdit authors. Apache-2.0.
"""Timing, error checks and result files shared by the benchmarks."""
from __future__ import annotations

import datetime
import json
import os
import platform
import re

import torch

from vecdit.ops.reference import attention_reference


def do_bench_ms(fn) -> float:
    """Median milliseconds of `fn` with triton.testing.do_bench (CUDA events, warm-up first)."""
    import triton

    return float(triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median"))


def card_name() -> str:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()


def environment() -> dict:
    import triton

    return {
        "card": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # the attention kernel's switches as the run began (None: the kernel's own default); a
        # variant's own setting is in its label
        "attention_kernel": {key: os.environ.get(key) for key in ("VECDIT_ATTN_KERNEL", "VECDIT_GLUON_TILE128")},
    }


def sampled_block_error(q, k, v, selection, dense_range=None, blocks: int = 16, seed: int = 0, out=None) -> float:
    """Worst relative error on sampled (head, query block)s against an fp32 reference, of `out`
    (default: the kernel's output)."""
    from vecdit.ops import vector_sparse_attention

    if out is None:
        out = vector_sparse_attention(q, k, v, selection, dense_range=dense_range)
    from vecdit.ops import QueryTiles

    g = torch.Generator().manual_seed(seed)
    heads, nqb = selection.heads, selection.num_query_blocks
    tiles = selection.query_tiles if selection.query_tiles is not None else QueryTiles.raster()
    index = tiles.query_index(q.device)
    worst = 0.0
    start, end = dense_range or (0, 0)
    for _ in range(blocks):
        h = int(torch.randint(heads, (1,), generator=g))
        qb = int(torch.randint(nqb, (1,), generator=g))
        row = h * nqb + qb
        a = int(selection.column_offset[row])
        b = a + int(selection.column_count.reshape(-1)[row])
        cols = torch.cat([selection.column_index[a:b].long(), torch.arange(start, end, device=q.device)])
        pos = torch.arange(qb * tiles.block_size, min((qb + 1) * tiles.block_size, q.shape[1]), device=q.device)
        rows = pos if index is None else index[pos].long()  # the block's tokens, in the selection's order
        o, _ = attention_reference(q[:, rows, h:h + 1], k[:, cols, h:h + 1], v[:, cols, h:h + 1])
        got = out[:, rows, h:h + 1].float()
        worst = max(worst, float((got - o).norm() / o.norm().clamp_min(1e-30)))
    return worst


def write_results(name: str, payload: dict, markdown: str, out_dir: str) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    stem = f"{name}-{card_name()}-{datetime.date.today().isoformat()}"
    jpath, mpath = os.path.join(out_dir, stem + ".json"), os.path.join(out_dir, stem + ".md")
    with open(jpath, "w") as f:
        json.dump(payload, f, indent=2)
    with open(mpath, "w") as f:
        f.write(markdown)
    return jpath, mpath
