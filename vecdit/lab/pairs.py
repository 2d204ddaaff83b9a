# Copyright 2026 The vecdit authors. Apache-2.0.
"""Two neighbouring 64-query tiles on one 128-row program: how much do their lists share, and what
does attending the union keep? (the kernel issue's question for 64-query tiles).

For sampled pairs of consecutive full 4x4x4 tiles (neighbours along the width in the tile order),
per head and density d:
  own           each tile attends its own top-k list (k = d * Sk): today's kernel, two programs
  union         both attend the union of the two lists: one K/V gather for 128 rows, but
                |union| / k more keys per row (the `union_factor`)
  union-matched both attend the union of their top-k' lists, k' chosen so that the union holds k
                keys: the same compute per row as `own`, one gather
  merged        both attend the top-k of the pair's mean pooled query: one list for 128 queries,
                what a 128-query tile (4x4x8) does
recall = attention mass kept per query row (fp64), mean over the pair's rows, heads and pairs.
`python -m vecdit.lab pairs --geometry wan2.1-480p --pairs 8`.
"""
from __future__ import annotations

import math

import torch

from vecdit.ops.tiles import QueryTiles

from .patterns import probabilities


def _top(scores: torch.Tensor, count: int) -> torch.Tensor:
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[scores.topk(count).indices] = True
    return mask


def _matched_union(sa: torch.Tensor, sb: torch.Tensor, target: int) -> torch.Tensor:
    """Union of the two rows' top-k' with k' the largest whose union holds at most `target` keys."""
    lo, hi = 1, target
    best = _top(sa, 1) | _top(sb, 1)
    while lo <= hi:
        mid = (lo + hi) // 2
        union = _top(sa, mid) | _top(sb, mid)
        if int(union.sum()) <= target:
            best, lo = union, mid + 1
        else:
            hi = mid - 1
    return best


def pair_rows(q, k, grid, densities, pairs: int = 8, seed: int = 0) -> list[dict]:
    """Per (head, pair, density): union factor, and recall of own / union / union-matched lists."""
    _, seq, heads, dim = q.shape
    tiles = QueryTiles(tuple(grid), (4, 4, 4))
    t, h, w = grid
    full = (t // 4) * (h // 4) * (w // 4)  # full tiles come first, one per block
    index = tiles.query_index("cpu").long()
    g = torch.Generator().manual_seed(seed)
    firsts = (torch.randperm(full // 2, generator=g)[:pairs] * 2).tolist()
    scale = dim ** -0.5
    out = []
    for head in range(heads):
        qh, kh = q[0, :, head].double(), k[0, :, head].double()
        for first in firsts:
            rows = [index[b * 64:(b + 1) * 64] for b in (first, first + 1)]
            pooled = [qh[r].mean(0) * scale for r in rows]
            scores = [p @ kh.T for p in pooled]
            probs = [probabilities(qh[r], kh) for r in rows]
            for d in densities:
                budget = max(1, math.floor(d * seq))
                own = [_top(s, budget) for s in scores]
                union = own[0] | own[1]
                matched = _matched_union(scores[0], scores[1], budget)
                merged = _top((scores[0] + scores[1]) / 2, budget)  # one list from the pair's mean query

                def recall(masks):
                    return sum(float((p * m).sum(-1).mean()) for p, m in zip(probs, masks)) / 2

                out.append({"head": head, "pair": first, "density": d, "union_factor": float(union.sum()) / budget,
                            "own": recall(own), "union": recall([union, union]),
                            "union_matched": recall([matched, matched]), "merged": recall([merged, merged]),
                            "matched_keys_per_tile": int(matched.sum())})
    return out


def summarize_pairs(rows: list[dict]) -> list[dict]:
    res = []
    for d in sorted({r["density"] for r in rows}):
        sel = [r for r in rows if r["density"] == d]
        mean = {key: sum(r[key] for r in sel) / len(sel) for key in ("union_factor", "own", "union", "union_matched", "merged")}
        worst_head = min((sum(r["union_matched"] - r["own"] for r in sel if r["head"] == hh) /
                          max(1, sum(1 for r in sel if r["head"] == hh)), hh) for hh in {r["head"] for r in sel})
        res.append({"density": d, **mean, "matched_minus_own_worst_head": worst_head[0], "worst_head": worst_head[1]})
    return res


def pairs_markdown(results: dict, card: str) -> str:
    lines = [f"# Neighbouring 4x4x4 tiles on one 128-row program: own lists vs their union ({card})", "",
             "Structured proxy (vecdit/lab/synthetic.py). `union factor` = keys in the union / keys per tile "
             "(the compute a 128-row program spends per row over the union, relative to own lists); recall = "
             "attention mass kept per query; `union at equal compute` = the union of top-k' lists holding k keys.", "",
             "| geometry | density | union factor | recall own | recall union | recall union at equal compute | "
             "equal compute - own (worst head) | recall merged (one list, the 128-query tile) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for geometry, res in results.items():
        for s in res["summary"]:
            lines.append(f"| {geometry} | {s['density']:g} | {s['union_factor']:.3f} | {s['own']:.4f} | {s['union']:.4f} | "
                         f"{s['union_matched']:.4f} | {s['matched_minus_own_worst_head']:+.4f} (head {s['worst_head']}) | "
                         f"{s['merged']:.4f} |")
    return "\n".join(lines) + "\n"

