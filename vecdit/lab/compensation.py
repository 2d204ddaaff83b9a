# Copyright 2026 The vecdit authors. Apache-2.0.
"""Output error of a selection with and without the dropped keys' compensation, in fp64.

Variants (what `vecdit.ops.attention.compensation` could compute; the lab chooses):
  none          the kept keys alone, renormalized (what top-k alone gives)
  query         64-key raster groups, whole-group mean key and value, one score per query row
  pooled        the same groups, one score per query tile (the tile's mean query)
  tiles         3D key tiles (4x4x4 of the latent grid) as the groups, per query row
  exact         64-key raster groups, mean key and value of the dropped keys only, per query row
  dropped       the product's `dropped` mode: pooled scores of the whole groups' mean keys, the dropped keys'
                own values (each dropped key weighs its group's pooled weight)
Output error = mean over query rows of |out - dense| / |dense| (what a user sees), beside recall.
"""
from __future__ import annotations

import math

import torch

from vecdit.ops.tiles import QueryTiles

VARIANTS = ("none", "query", "pooled", "dropped", "tiles", "exact")
GROUP_KEYS = 64


class Groups:
    """One head's keys cut into groups: `gid` `[Sk]`, sizes `[G]`, mean key and value `[G, D]` (fp64)."""

    def __init__(self, gid: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.gid = gid
        self.count = int(gid.max()) + 1
        self.size = torch.bincount(gid, minlength=self.count).double()
        self.k_sum = torch.zeros(self.count, k.shape[1], dtype=torch.float64, device=k.device).index_add_(0, gid, k)
        self.v_sum = torch.zeros(self.count, v.shape[1], dtype=torch.float64, device=v.device).index_add_(0, gid, v)
        self.k_mean = self.k_sum / self.size[:, None]
        self.v_mean = self.v_sum / self.size[:, None]

    @classmethod
    def raster(cls, k, v):
        return cls(torch.arange(k.shape[0], device=k.device) // GROUP_KEYS, k, v)

    @classmethod
    def key_tiles(cls, k, v, grid):
        return cls(QueryTiles(tuple(grid)).token_blocks(k.shape[0], k.device), k, v)

    def kept(self, mask: torch.Tensor) -> torch.Tensor:
        """Kept keys per group `[R, G]` of a bool mask `[R, Sk]`."""
        return torch.zeros(mask.shape[0], self.count, dtype=torch.float64, device=mask.device).index_add_(
            1, self.gid, mask.double())


class OutputError:
    """The dense reference of sampled query rows of one head, and the output error of masks on them.

    q_rows `[R, D]`, k, v `[Sk, D]` (fp64), `block` `[R]` the query tile of each row, `pooled`
    `[nb, D]` the tiles' mean queries (times the scale), `grid` the latent grid (3D key tiles)."""

    def __init__(self, q_rows, k, v, block, pooled, grid, scale, variants=VARIANTS):
        self.variants = variants
        self.block = block
        self.scale = scale
        self.q = q_rows
        self.k, self.v = k, v
        logits = (q_rows @ k.T) * scale
        self.lse = torch.logsumexp(logits, -1, keepdim=True)
        self.probs = torch.exp(logits - self.lse)
        self.dense = self.probs @ v
        self.dense_norm = self.dense.norm(dim=-1).clamp_min(1e-300)
        self.raster = Groups.raster(k, v)
        self.tiles = Groups.key_tiles(k, v, grid) if "tiles" in variants else None
        self.t_query = (q_rows @ self.raster.k_mean.T) * scale - self.lse
        self.t_pooled = (pooled @ self.raster.k_mean.T)[block] - self.lse
        if self.tiles is not None:
            self.t_tiles = (q_rows @ self.tiles.k_mean.T) * scale - self.lse

    def _error(self, out) -> float:
        return float(((out - self.dense).norm(dim=-1) / self.dense_norm).mean())

    def errors(self, mask: torch.Tensor) -> dict:
        """{variant: output error} for the bool mask `[R, Sk]` (each row its tile's kept keys)."""
        kept_p = self.probs * mask
        num, den = kept_p @ self.v, kept_p.sum(-1, keepdim=True)
        res = {}
        for variant in self.variants:
            if variant == "none":
                res[variant] = self._error(torch.where(den > 0, num / den.clamp_min(1e-300), 0.0))
                continue
            if variant == "exact":
                res[variant] = self._error(self._exact(mask, num, den))
                continue
            if variant == "dropped":
                w = torch.exp(self.t_pooled)[:, self.raster.gid] * ~mask  # [R, Sk]: each dropped key's weight
                res[variant] = self._error((num + w @ self.v) / (den + w.sum(-1, keepdim=True)))
                continue
            groups, t = {"query": (self.raster, self.t_query), "pooled": (self.raster, self.t_pooled),
                         "tiles": (self.tiles, getattr(self, "t_tiles", None))}[variant]
            dropped = groups.size - groups.kept(mask)
            w = dropped * torch.exp(t)
            res[variant] = self._error((num + w @ groups.v_mean) / (den + w.sum(-1, keepdim=True)))
        return res

    def _exact(self, mask, num, den):
        """Mean key and value of each group's dropped keys (rows of one tile share them)."""
        out = torch.empty_like(num)
        g = self.raster
        for b in torch.unique(self.block).tolist():
            rows = (self.block == b).nonzero().squeeze(1)
            drop = ~mask[rows[0]]
            n = torch.bincount(g.gid[drop], minlength=g.count).double()
            k_drop = torch.zeros_like(g.k_sum).index_add_(0, g.gid[drop], self.k[drop]) / n.clamp_min(1)[:, None]
            v_drop = torch.zeros_like(g.v_sum).index_add_(0, g.gid[drop], self.v[drop]) / n.clamp_min(1)[:, None]
            t = (self.q[rows] @ k_drop.T) * self.scale - self.lse[rows]
            w = torch.where(n > 0, n * torch.exp(t), 0.0)
            out[rows] = (num[rows] + w @ v_drop) / (den[rows] + w.sum(-1, keepdim=True))
        return out


def summary_table(rows: list[dict], variants=VARIANTS) -> list[str]:
    """Markdown table (header included): per pattern and density, the mean output error of each
    variant, the cut of the product's default mode (`DEFAULT_COMPENSATION`) against none, and the
    heads it makes worse."""
    from vecdit.ops.attention.compensation import DEFAULT_COMPENSATION as default

    out = ["| pattern | density | recall | " + " | ".join(variants) + " | cut | worse |",
           "| --- |" + " --- |" * (len(variants) + 4)]
    keys = sorted({(r["pattern"], r["target_density"]) for r in rows if "out_err" in r}, key=lambda x: (x[1], x[0]))
    for pattern, d in keys:
        sel = [r for r in rows if r["pattern"] == pattern and r["target_density"] == d and "out_err" in r]
        mean = {v: sum(r["out_err"][v] for r in sel) / len(sel) for v in variants}
        worse = sum(r["out_err"][default] > r["out_err"]["none"] for r in sel)
        cut = 1 - mean[default] / mean["none"] if mean["none"] > 0 else math.nan
        out.append(f"| {pattern} | {d:g} | {sum(r['recall'] for r in sel) / len(sel):.3f} | "
                   + " | ".join(f"{mean[v]:.4f}" for v in variants) + f" | {cut:.0%} | {worse} of {len(sel)} |")
    return out
