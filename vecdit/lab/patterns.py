# Copyright 2026 The vecdit authors. Apache-2.0.
"""Sparsity patterns at matched density, per head, and what they keep of full attention.

A pattern is a query grouping and a rule. Groupings: `raster` (64 consecutive tokens, the paper's
blocks), `tiles` (4x4x4 tiles of the latent grid, vecdit's default), `tiles128` (4x4x8). Rules on
the block's pooled scores, through `vecdit.ops.selection.rule.rule_keep` (the product's own rule):
  minp         keys within a gap of the best (one threshold per head, bisected to the density)
  minp-budget  min-p inside a per-block budget of 1.5x the density (threshold bisected)
  topk         each block's `density * Sk` best keys (vecdit's default rule)
and the references:
  vsa          Video Sparse Attention's rule (fastvideo-kernel): 4x4x4 query tiles pick the top
               4x4x4 key tiles by pooled query . pooled key, at the same key count
  tiles-oracle per 4x4x4 tile, the keys with the largest mean probability (the best any
               vector selection on these tiles can do)
  oracle       per query, the keys with the largest probability
Long sequences are measured on sampled query blocks against all keys: every pattern decides per
block or per row, so sampled blocks are exact, and each grouping samples its own blocks.
"""
from __future__ import annotations

import math

import torch

from vecdit.ops.selection.rule import rule_keep
from vecdit.ops.tiles import QueryTiles

GROUPINGS = {"raster": "raster", "tiles": (4, 4, 4), "tiles128": (4, 4, 8)}
# pattern -> the query grouping its blocks come from
PATTERN_GROUPING = {"raster-minp": "raster", "raster-topk": "raster", "tiles-minp": "tiles", "tiles-minp-budget": "tiles",
                    "tiles-topk": "tiles", "tiles128-topk": "tiles128", "vsa": "tiles", "tiles-oracle": "tiles",
                    "oracle": "raster"}
PATTERNS = tuple(PATTERN_GROUPING)
# the budget of `minp-budget`, relative to the target density
BUDGET_FACTOR = 1.5


def probabilities(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Dense softmax [Sq, Sk] in fp64 for one head; q, k: [S, D]."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax((q.double() @ k.double().T) * scale, -1)


def metrics(mask: torch.Tensor, probs: torch.Tensor, v: torch.Tensor, dense: torch.Tensor | None = None) -> dict:
    """recall = mean over queries of the kept probability mass; density = kept fraction;
    rel_l2 = |out_sparse - out_dense| / |out_dense|, out_sparse renormalized over the kept keys.
    `dense` (= probs @ v) can be passed in when one head is measured many times."""
    kept = probs * mask
    mass = kept.sum(-1, keepdim=True)
    dense = probs @ v.double() if dense is None else dense
    sparse = torch.where(mass > 0, kept / mass.clamp_min(1e-300), 0.0) @ v.double()
    return {"recall": float(mass.mean()), "density": float(mask.double().mean()),
            "rel_l2": float((sparse - dense).norm() / dense.norm())}


def _rows_top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the `count` largest entries of each row."""
    count = max(0, min(count, scores.shape[-1]))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if count:
        mask.scatter_(-1, scores.topk(count, -1).indices, True)
    return mask


def grouping_tiles(grouping: str, grid) -> QueryTiles:
    tile = GROUPINGS[grouping]
    return QueryTiles.raster() if tile == "raster" else QueryTiles(tuple(grid), tile)


def sample_blocks(tiles: QueryTiles, seq_q: int, blocks: int | None, generator: torch.Generator):
    """(token rows, block of each row): `blocks` random whole query blocks of this grouping (all if None)."""
    nqb = tiles.num_blocks(seq_q)
    picks = torch.arange(nqb) if blocks is None or blocks >= nqb else torch.randperm(nqb, generator=generator)[:blocks].sort().values
    pos = (picks[:, None] * tiles.block_size + torch.arange(tiles.block_size)[None]).reshape(-1)
    block = torch.arange(len(picks)).repeat_interleave(tiles.block_size)
    keep = pos < seq_q
    pos, block = pos[keep], block[keep]
    index = tiles.query_index("cpu")
    rows = pos if index is None else index.long()[pos]
    return rows, block


def block_mean(x: torch.Tensor, block: torch.Tensor, n: int) -> torch.Tensor:
    """Mean of the rows of x [R, ...] per block (block [R] in [0, n))."""
    out = torch.zeros(n, *x.shape[1:], dtype=x.dtype, device=x.device).index_add_(0, block, x)
    return out / torch.bincount(block, minlength=n).clamp_min(1).to(x.dtype).view(-1, *[1] * (x.dim() - 1))


def _matched(make, density: float, steps: int = 24):
    """The mask of `make(ln threshold)` whose density is closest below `density` (bisection)."""
    lo, hi = -60.0, 0.0
    best = None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        mask = make(mid)
        if float(mask.double().mean()) > density:
            lo = mid
        else:
            hi, best = mid, mask
    return best if best is not None else make(hi)


def block_keep(name: str, scores: torch.Tensor, density: float, key_tiles=None, coarse=None) -> torch.Tensor:
    """Bool [blocks, Sk] kept keys of rule `name` from the blocks' pooled scores [blocks, Sk]."""
    num_keys = scores.shape[-1]
    s = scores[None, None]
    inf = torch.full((1,), math.inf, dtype=torch.float64)
    budget = max(1, math.floor(density * num_keys))
    if name.endswith("-topk"):
        return rule_keep(s, inf, False, budget if density < 1 else 0, 0)[0, 0]
    if name.endswith("-minp"):
        return _matched(lambda lt: rule_keep(s, torch.tensor([-lt], dtype=torch.float64), False, 0, 0)[0, 0], density)
    if name.endswith("-minp-budget"):
        cap = min(num_keys, max(1, math.floor(BUDGET_FACTOR * density * num_keys)))
        return _matched(lambda lt: rule_keep(s, torch.tensor([-lt], dtype=torch.float64), False, cap, 0)[0, 0], density)
    if name == "vsa":
        key_block, n_key_tiles = key_tiles
        top = _rows_top(coarse, max(1, round(density * n_key_tiles)))  # [blocks, key tiles]
        return top[:, key_block]
    raise ValueError(f"unknown pattern {name!r}; choose one of {PATTERNS}")


# the patterns whose output error is also measured with the dropped keys' compensation
COMPENSATED = ("raster-topk", "tiles-topk", "tiles128-topk")


def compare_head(q, k, v, grid, densities, patterns=PATTERNS, blocks: int | None = None, seed: int = 0,
                 rule_dtype: torch.dtype | None = None, compensation: bool = False) -> list[dict]:
    """Per pattern and density: recall, achieved density and output error of one head (q, k, v: [S, D]).
    `rule_dtype` (e.g. bf16): the rules score keys held in that dtype with the pooled query rounded
    to it, as the kernels do (`rule.rule_query`); None: in fp64 (the idealized rule).
    `compensation`: the top-k patterns also get `out_err`, the mean per-row output error without and
    with each compensation variant (`vecdit.lab.compensation`)."""
    from .compensation import OutputError

    seq_q, num_keys = q.shape[0], k.shape[0]
    scale = q.shape[-1] ** -0.5
    g = torch.Generator().manual_seed(seed)
    rows_out = []
    kd, vd = k.double(), v.double()
    k_rule = kd if rule_dtype is None else k.to(rule_dtype).double()  # the keys as the rules score them
    by_grouping: dict[str, list[str]] = {}
    for name in patterns:
        if name not in PATTERNS:
            raise ValueError(f"unknown pattern {name!r}; choose one of {PATTERNS}")
        by_grouping.setdefault(PATTERN_GROUPING[name], []).append(name)
    key_tiles = None
    for grouping, names in by_grouping.items():
        tiles = grouping_tiles(grouping, grid)
        rows, block = sample_blocks(tiles, seq_q, blocks, g)
        rows, block = rows.to(q.device), block.to(q.device)
        nb = int(block.max()) + 1
        probs = probabilities(q[rows], k, scale)
        dense = probs @ vd
        pooled = block_mean(q[rows].to(rule_dtype or q.dtype).double(), block, nb) * scale
        if rule_dtype is not None:
            pooled = pooled.to(rule_dtype).double()
        scores = pooled @ k_rule.T
        errors = None
        if compensation and any(n in COMPENSATED for n in names):
            pooled64 = block_mean(q[rows].double(), block, nb) * scale
            errors = OutputError(q[rows].double(), kd, vd, block, pooled64, grid, scale)
        if "vsa" in names:
            key_block = QueryTiles(tuple(grid)).token_blocks(num_keys, q.device)
            n_key_tiles = int(key_block.max()) + 1
            coarse = pooled @ block_mean(kd, key_block, n_key_tiles).T
            key_tiles = (key_block, n_key_tiles)
        for d in densities:
            for name in names:
                if name == "oracle":
                    mask = _rows_top(probs, round(d * num_keys))
                elif name == "tiles-oracle":
                    mask = _rows_top(block_mean(probs, block, nb), round(d * num_keys))[block]
                else:
                    mask = block_keep(name, scores, d, key_tiles, coarse if name == "vsa" else None)[block]
                row = {"pattern": name, "target_density": d, **metrics(mask, probs, vd, dense)}
                if errors is not None and name in COMPENSATED:
                    row["out_err"] = errors.errors(mask)
                rows_out.append(row)
    return rows_out


def compare_patterns(q, k, v, grid, densities=(0.1, 0.25, 0.5), patterns=PATTERNS, blocks: int | None = None,
                     seed: int = 0, rule_dtype: torch.dtype | None = None, compensation: bool = False) -> list[dict]:
    """Per head, pattern and density: recall, achieved density and output error. q, k, v: [1, S, H, D]
    on a (frames, height, width) `grid`. `blocks` samples that many query blocks per head and
    grouping (long sequences: dense probabilities of all rows would not fit)."""
    out = []
    for h in range(q.shape[2]):
        for r in compare_head(q[0, :, h], k[0, :, h], v[0, :, h], grid, densities, patterns, blocks, seed + h,
                              rule_dtype, compensation):
            out.append({"head": h, **r})
    return out
