# Copyright 2026 The vecdit authors. Apache-2.0.
"""Recall of a selection on sampled query tokens, and the density at which one grouping keeps what
another keeps: the quality side of "speed at equal quality" (the peers benchmark times it).

recall = mean over sampled query tokens of the attention mass (fp64 softmax over all keys) on the
keys the token's query block kept. Every method is measured on the same tokens of the same heads
(a paired comparison, whatever the grouping). `python -m vecdit.lab match` finds, on the
benchmark's structured inputs, the density at which 4x4x8 tiles keep the recall 4x4x4 tiles keep;
with `--by error`, the density at which a tile with compensation has no more output error
(|out - dense| / |dense|, what a user sees) than another without.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from vecdit.ops import QueryTiles, VectorSelection, vector_selection

from .compensation import OutputError
from .patterns import block_mean


def sampled_tokens(num_heads: int, seq: int, heads: int, seed: int = 0, tokens: int = 256) -> list:
    """[(head, query token indices)]: the sample every method's recall is measured on."""
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(num_heads, generator=g)[:heads].tolist()
    return [(h, torch.randperm(seq, generator=g)[:tokens]) for h in chosen]


def token_recall(q, k, token_block, kept_keys: Callable, heads: int, seed: int = 0, tokens: int = 256) -> dict:
    """`token_block`: int64 [S] block of each token; `kept_keys(h, b)`: bool [Sk] kept by block b of
    head h. Returns the mean recall and the mean kept fraction of the keys."""
    mass, kept, seen = 0.0, 0.0, 0
    for h, toks in sampled_tokens(q.shape[2], q.shape[1], heads, seed, tokens):
        toks = toks.to(q.device)
        p = torch.softmax((q[0, toks, h].double() @ k[0, :, h].double().T) * q.shape[-1] ** -0.5, -1)
        masks = torch.stack([kept_keys(h, b) for b in token_block[toks].tolist()])
        mass += float((p * masks).sum())
        kept += float(masks.double().mean(1).sum())
        seen += len(toks)
    return {"recall": mass / seen, "key_density": kept / seen}


def _kept_keys(sel: VectorSelection, row: int, num_keys: int, device) -> torch.Tensor:
    start = int(sel.column_offset[row])
    mask = torch.zeros(num_keys, dtype=torch.bool, device=device)
    mask[sel.column_index[start:start + int(sel.column_count.reshape(-1)[row])].long()] = True
    return mask


def _top_k_kept(q, k, tiles: QueryTiles, density: float, heads: int, sampled_heads_only: bool):
    """(selection or None, kept_keys(h, b)) of vecdit's top-k at `density`. `sampled_heads_only`:
    select the sampled heads alone, one at a time (the memory a CPU has; the same keys: heads select
    independently); no selection is returned then."""
    nqb, num_keys = tiles.num_blocks(q.shape[1]), k.shape[1]
    if not sampled_heads_only:
        sel = vector_selection(q, k, None, max_density=density, query_tiles=tiles)
        return sel, lambda h, b: _kept_keys(sel, h * nqb + b, num_keys, q.device)
    per_head = {h: vector_selection(q[:, :, h:h + 1].contiguous(), k[:, :, h:h + 1].contiguous(), None,
                                    max_density=density, query_tiles=tiles)
                for h, _ in sampled_tokens(q.shape[2], q.shape[1], heads)}
    return None, lambda h, b: _kept_keys(per_head[h], b, num_keys, q.device)


def selection_recall(q, k, tiles: QueryTiles, density: float, heads: int,
                     sampled_heads_only: bool = False) -> tuple[VectorSelection | None, dict]:
    """vecdit's top-k selection at `density` (None with `sampled_heads_only`, see `_top_k_kept`)
    and the recall / key density of what it kept."""
    sel, kept = _top_k_kept(q, k, tiles, density, heads, sampled_heads_only)
    return sel, token_recall(q, k, tiles.token_blocks(q.shape[1], q.device), kept, heads)


def token_error(q, k, v, tiles: QueryTiles, kept_keys: Callable, heads: int, compensate: str | None,
                seed: int = 0, tokens: int = 256) -> dict:
    """What a user sees: the mean over the sampled query tokens (those `token_recall` samples) of
    |out - dense| / |dense| (fp64, all keys), the kept keys alone (`compensate` None) or with a
    compensation variant of `vecdit.lab.compensation` (`pooled`, `query`, `tiles`, `exact`)."""
    variant = compensate or "none"
    token_block = tiles.token_blocks(q.shape[1], q.device)
    nqb, scale = tiles.num_blocks(q.shape[1]), q.shape[-1] ** -0.5
    total, seen = 0.0, 0
    for h, toks in sampled_tokens(q.shape[2], q.shape[1], heads, seed, tokens):
        toks = toks.to(q.device)
        qh, kh, vh = (x[0, :, h].double() for x in (q, k, v))
        err = OutputError(qh[toks], kh, vh, token_block[toks], block_mean(qh, token_block, nqb) * scale, tiles.grid,
                          scale, variants=(variant,))
        masks = torch.stack([kept_keys(h, b) for b in token_block[toks].tolist()])
        total += err.errors(masks)[variant] * len(toks)
        seen += len(toks)
    return {"error": total / seen}


def selection_error(q, k, v, tiles: QueryTiles, density: float, heads: int, compensate: str | None,
                    sampled_heads_only: bool = False) -> float:
    """The output error (`token_error`) of vecdit's top-k selection at `density`."""
    kept = _top_k_kept(q, k, tiles, density, heads, sampled_heads_only)[1]
    return token_error(q, k, v, tiles, kept, heads, compensate)["error"]


def matched_density(q, k, grid, tile, recall: float, start: float, heads: int, steps: int = 7,
                    sampled_heads_only: bool = False, reaches: Callable | None = None) -> float:
    """The smallest density (to a 2^-steps step in log density) at which vecdit's top-k with `tile`
    keeps at least `recall` (or at which `reaches(density)` holds). Searches below `start`, or above
    it where vecdit keeps less there."""
    tiles = QueryTiles(grid, tile)

    if reaches is None:
        def reaches(d):
            return selection_recall(q, k, tiles, d, heads, sampled_heads_only)[1]["recall"] >= recall

    lo, hi = start / 8, start
    while not reaches(hi):
        if hi >= 1.0:
            return 1.0
        lo, hi = hi, min(1.0, hi * 2)
    while reaches(lo):  # down by 8x at a time, to 1/512 of `start` (a density floor of the search)
        if lo <= start / 512:
            return lo
        lo, hi = lo / 8, lo
    for _ in range(steps):
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return hi


def match_tiles(q, k, grid, reference_tile, tile, densities, heads: int, steps: int = 7,
                sampled_heads_only: bool = False) -> list[dict]:
    """For each density: the recall `reference_tile` keeps there and the density at which `tile` keeps as much."""
    rows = []
    for d in densities:
        target = selection_recall(q, k, QueryTiles(grid, reference_tile), d, heads, sampled_heads_only)[1]["recall"]
        # searched from above: a coarser tile needs more keys for the same recall
        matched = matched_density(q, k, grid, tile, target, min(1.0, 2 * d), heads, steps, sampled_heads_only)
        got = selection_recall(q, k, QueryTiles(grid, tile), matched, heads, sampled_heads_only)[1]["recall"]
        rows.append({"density": d, "reference_tile": list(reference_tile), "reference_recall": target,
                     "tile": list(tile), "matched_density": matched, "matched_recall": got})
    return rows


def match_by_error(q, k, v, grid, reference_tile, tile, densities, heads: int, compensate: str | None,
                   reference_compensate: str | None = None, steps: int = 7, sampled_heads_only: bool = False) -> list[dict]:
    """For each density: the output error of `reference_tile` there (with `reference_compensate`) and the
    lowest density at which `tile` with `compensate` has no more error."""
    rows = []
    tiles = QueryTiles(grid, tile)
    for d in densities:
        target = selection_error(q, k, v, QueryTiles(grid, reference_tile), d, heads, reference_compensate,
                                 sampled_heads_only)

        def reaches(x):
            return selection_error(q, k, v, tiles, x, heads, compensate, sampled_heads_only) <= target

        matched = matched_density(q, k, grid, tile, math.nan, d, heads, steps, sampled_heads_only, reaches=reaches)
        rows.append({"density": d, "reference_tile": list(reference_tile), "reference_compensate": reference_compensate,
                     "reference_error": target, "tile": list(tile), "compensate": compensate,
                     "matched_density": matched,
                     "matched_error": selection_error(q, k, v, tiles, matched, heads, compensate, sampled_heads_only)})
    return rows
