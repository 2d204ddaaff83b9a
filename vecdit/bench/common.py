# Copyright 2026 The vecdit authors. Apache-2.0.
"""Timing, error checks and result files shared by the benchmarks."""
from __future__ import annotations

import datetime
import json
import os
import platform
import re

import torch

from vecdit.ops import attention_reference


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


def sampled_dense_error(out, q, k, v, rows: int = 512, seed: int = 0) -> float:
    """Relative error (norm over rows) of a dense output `[1, S, H, D]` on `rows` random (query, head)s
    against the fp32 reference over all keys."""
    g = torch.Generator().manual_seed(seed)
    qi = torch.randint(q.shape[1], (rows,), generator=g).to(q.device)
    hi = torch.randint(q.shape[2], (rows,), generator=g).to(q.device)
    err = ref_norm = 0.0
    for h in hi.unique().tolist():
        pick = qi[hi == h]
        ref = attention_reference(q[:, pick, h:h + 1], k[:, :, h:h + 1], v[:, :, h:h + 1])[0]
        err += float((out[:, pick, h:h + 1].float() - ref).square().sum())
        ref_norm += float(ref.square().sum())
    return (err / ref_norm) ** 0.5


def sampled_block_error(q, k, v, selection, dense_range=None, blocks: int = 16, seed: int = 0, out=None,
                        compensate=False) -> float:
    """Worst relative error on sampled (head, query block)s against an fp32 reference, of `out`
    (default: the kernel's output with `compensate`); with `compensate`, the reference adds each
    64-key group's dropped keys as one more softmax column (`vecdit.ops.attention.compensation`)."""
    from vecdit.ops import vector_sparse_attention
    from vecdit.ops.attention.compensation import compensation_mode
    from vecdit.ops.attention.reference import _attention_with_columns, compensation_logits_reference

    mode = compensation_mode(compensate)
    if out is None:
        out = vector_sparse_attention(q, k, v, selection, dense_range=dense_range, compensate=compensate)
    from vecdit.ops import QueryTiles

    if mode is not None:
        kept = selection.kept_per_word()

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
        if mode is None:
            o, _ = attention_reference(q[:, rows, h:h + 1], k[:, cols, h:h + 1], v[:, cols, h:h + 1])
        else:
            # the block as a one-block problem: its rows, all keys' group means, its kept counts
            sl = (slice(0, 1), slice(None), slice(h, h + 1))
            extra, v_mean = compensation_logits_reference(
                q[:, rows, h:h + 1], k[sl], v[sl], kept[row].view(1, 1, 1, -1), selection.num_keys,
                q.shape[-1] ** -0.5, torch.zeros(len(rows), dtype=torch.long, device=q.device), mode)
            keep = torch.ones(len(rows), len(cols), dtype=torch.bool, device=q.device)
            o, _ = _attention_with_columns(q[0, rows, h], k[0, cols, h], v[0, cols, h], keep, q.shape[-1] ** -0.5,
                                           extra[0, 0], v_mean[0, 0])
            o = o[None, :, None]
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
