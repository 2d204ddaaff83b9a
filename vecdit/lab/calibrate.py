# Copyright 2026 The vecdit authors. Apache-2.0.
"""Per-head threshold calibration: the most total recall at a target average density.

For each (layer, head), a grid of thresholds gives (density, recall) points measured on captured
or synthetic Q/K. Picking one threshold per head to maximise summed recall under a density budget
is a multiple-choice knapsack; its Lagrangian relaxation (each head maximises recall - lam * density,
lam bisected until the mean density meets the target) is then topped up greedily to the budget.
The result is a [layers, heads] table that `VecAttnConfig(threshold=table)` takes.
"""
from __future__ import annotations

import math

import torch

from vecdit.ops.selection.rule import rule_keep
from vecdit.ops.tiles import QueryTiles

from .patterns import block_mean, metrics, probabilities, sample_blocks

THRESHOLD_GRID = tuple(math.exp(x) for x in torch.linspace(-12.0, 0.0, 49).tolist())


def head_curve(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mode: str = "exact", grid=THRESHOLD_GRID,
               query_tiles: QueryTiles | None = None, blocks: int | None = None,
               generator: torch.Generator | None = None) -> list[dict]:
    """(threshold, density, recall) of one head's min-p rule over the threshold grid, on its query
    blocks (`query_tiles`, raster if None; `blocks` sampled ones if given); q, k, v: [S, D]."""
    tiles = query_tiles if query_tiles is not None else QueryTiles.raster()
    rows, block = sample_blocks(tiles, q.shape[0], blocks, generator or torch.Generator().manual_seed(0))
    rows, block = rows.to(q.device), block.to(q.device)
    probs = probabilities(q[rows], k)
    dense = probs @ v.double()
    scores = (block_mean(q[rows].double(), block, int(block.max()) + 1) * q.shape[-1] ** -0.5) @ k.double().T
    points = []
    for t in grid:
        gap = torch.tensor([-math.log(t)], dtype=torch.float64)
        mask = rule_keep(scores[None, None], gap, mode == "running", 0, 0)[0, 0][block]
        points.append({"threshold": t, **metrics(mask, probs, v, dense)})
    return points


def solve_knapsack(curves: list[list[dict]], target_density: float) -> tuple[list[dict], float]:
    """One point per curve maximising total recall with mean density <= target (Lagrangian)."""
    def pick(lam):
        return [max(c, key=lambda p: p["recall"] - lam * p["density"]) for c in curves]

    lo, hi = 0.0, 1e6
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        mean_density = sum(p["density"] for p in pick(mid)) / len(curves)
        lo, hi = (mid, hi) if mean_density > target_density else (lo, mid)
    chosen = pick(hi)
    # the relaxation lands on the convex hull, under budget: spend the rest greedily, best recall
    # gained per unit of density first
    budget = target_density * len(curves)
    while True:
        used = sum(p["density"] for p in chosen)
        moves = [(c_i, p) for c_i, c in enumerate(curves) for p in c
                 if p["density"] > chosen[c_i]["density"] and used - chosen[c_i]["density"] + p["density"] <= budget
                 and p["recall"] > chosen[c_i]["recall"]]
        if not moves:
            break
        c_i, p = max(moves, key=lambda m: (m[1]["recall"] - chosen[m[0]]["recall"]) / (m[1]["density"] - chosen[m[0]]["density"]))
        chosen[c_i] = p
    return chosen, sum(p["density"] for p in chosen) / len(chosen)


def calibrate(layers_qkv, target_density: float, mode: str = "exact", query_tiles: QueryTiles | None = None) -> dict:
    """`layers_qkv`: per layer a (q, k, v) of [1, S, H, D], on the query blocks of `query_tiles`
    (raster if None). Returns the table and what it achieves."""
    curves, shape = [], []
    for q, k, v in layers_qkv:
        shape.append(q.shape[2])
        for h in range(q.shape[2]):
            curves.append(head_curve(q[0, :, h], k[0, :, h], v[0, :, h], mode, query_tiles=query_tiles))
    chosen, density = solve_knapsack(curves, target_density)
    heads = shape[0]
    if any(h != heads for h in shape):
        raise ValueError(f"every layer must have the same number of heads, got {shape}")
    table = torch.tensor([p["threshold"] for p in chosen], dtype=torch.float32).view(len(shape), heads)
    tiles = query_tiles if query_tiles is not None else QueryTiles.raster()
    return {"threshold": table, "density": density, "recall": sum(p["recall"] for p in chosen) / len(chosen),
            "query_tiles": "raster" if tiles.is_raster else list(tiles.tile)}
