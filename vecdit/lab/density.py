# Copyright 2026 The vecdit authors. Apache-2.0.
"""Achieved vs target density of the product's selection (the top-k rule) on the structured proxy
at full size, with the host-sync check: `python -m vecdit.lab density` (GPU: the Triton kernels).

Each seed of the proxy stands for one layer (its heads are the proxy's head families, global to
local). On CUDA the selection and the sparse attention run under `torch.cuda.set_sync_debug_mode("error")`:
any host sync inside them (reading a count back to size a buffer, `.item()`) raises, so a finished
run shows none.
"""
from __future__ import annotations

import contextlib

import torch

from vecdit.ops import QueryTiles, vector_selection, vector_sparse_attention

from .synthetic import GEOMETRIES, SyntheticConfig, structured_qkv


@contextlib.contextmanager
def no_host_sync(device):
    """Raise on any synchronizing CUDA call inside (no-op on the CPU)."""
    if torch.device(device).type != "cuda":
        yield False
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield True
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def density_rows(geometry: str, targets, layers: int = 4, heads: int = 8, tile=(4, 4, 4), device="cuda") -> list[dict]:
    grid = GEOMETRIES[geometry][0]
    tiles = QueryTiles(grid, tile)
    rows = []
    for layer in range(layers):
        q, k, v = structured_qkv(SyntheticConfig(geometry=geometry, heads=heads, head_dim=128, seed=layer), device=device)
        q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)  # what the model hands the ops
        warm = vector_selection(q, k, None, max_density=targets[0], query_tiles=tiles)  # compiled kernels, key sample
        vector_sparse_attention(q, k, v, warm)
        for target in targets:
            with no_host_sync(q.device) as checked:  # the attention call as the processor makes it
                sel = vector_selection(q, k, None, max_density=target, query_tiles=tiles)
                vector_sparse_attention(q, k, v, sel)
            per_row = sel.column_count.float() / k.shape[1]  # [B, H, blocks]
            per_head = per_row.mean((0, 2))
            rows.append({"geometry": geometry, "layer": layer, "target": target, "achieved": float(per_head.mean()),
                         "per_head": per_head.tolist(), "row_min": float(per_row.min()), "row_max": float(per_row.max()),
                         "index_slots_per_row": sel.column_index.numel() // sel.column_count.numel(),
                         "host_sync_checked": checked})
        del q, k, v
    return rows


def markdown(rows: list[dict], card: str) -> str:
    lines = [f"# Achieved vs target density, top-k rule on 4x4x4 tiles ({card})", "",
             "Structured proxy at full size (vecdit/lab/synthetic.py), each seed one layer of 8 head families; "
             "density = kept keys / all keys, per layer (mean over heads), worst head, and the range over rows "
             "(query tiles). `no host sync`: selection + attention ran under torch.cuda.set_sync_debug_mode('error').", "",
             "| geometry | layer | target | achieved | worst head | rows min / max | index slots per row | no host sync |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        worst = max(r["per_head"], key=lambda d: abs(d - r["target"]))
        lines.append(f"| {r['geometry']} | {r['layer']} | {r['target']:g} | {r['achieved']:.4f} | {worst:.4f} | "
                     f"{r['row_min']:.4f} / {r['row_max']:.4f} | {r['index_slots_per_row']} | "
                     f"{'yes' if r['host_sync_checked'] else 'not checked (CPU)'} |")
    return "\n".join(lines) + "\n"
