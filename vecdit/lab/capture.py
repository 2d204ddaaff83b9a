# Copyright 2026 The vecdit authors. Apache-2.0.
"""Calibration from a real pipeline run: capture Q/K at chosen steps, reduce them at once.

`vecdit.processors.CalibrationProcessor` stands in for `VecAttnProcessor` for one generation: it
computes dense attention (the video is unchanged) and, at the chosen steps, hands each sparse-capable
layer's post-RoPE q, k, v to a `CurveSink`, with the query tiles of the forward's grid. The sink keeps no
tensors: it samples a few query blocks (tiles, as the processor will select them) per head,
measures (density, recall) over the threshold grid against all keys right away, and accumulates
the averages. Memory is bounded by one layer's attention inputs.
"""
from __future__ import annotations

import torch

from vecdit.processors import CalibrationProcessor

from .calibrate import THRESHOLD_GRID, head_curve, solve_knapsack


class CurveSink:
    def __init__(self, blocks_per_head: int = 16, mode: str = "exact", seed: int = 0):
        self.blocks, self.mode = blocks_per_head, mode
        self.generator = torch.Generator().manual_seed(seed)
        self.sums: dict[tuple[int, int], torch.Tensor] = {}  # (layer, head) -> [grid, 2] summed density, recall
        self.counts: dict[tuple[int, int], int] = {}
        self.query_tiles = None  # the grouping the curves were measured in (the last layer's)

    def __call__(self, layer: int, q, k, v, first_head: int = 0, query_tiles=None):
        self.query_tiles = query_tiles
        for h in range(q.shape[2]):
            points = head_curve(q[0, :, h].float(), k[0, :, h].float(), v[0, :, h].float(), self.mode,
                                query_tiles=query_tiles, blocks=self.blocks, generator=self.generator)
            acc = torch.tensor([[p["density"], p["recall"]] for p in points], dtype=torch.float64)
            key = (layer, first_head + h)
            self.sums[key] = self.sums.get(key, 0) + acc
            self.counts[key] = self.counts.get(key, 0) + 1

    def solve(self, target_density: float) -> dict:
        keys = sorted(self.sums)
        if not keys:
            raise ValueError("nothing was captured: check the capture steps against the number of steps")
        curves = [[{"threshold": t, "density": float(d), "recall": float(r)}
                   for t, (d, r) in zip(THRESHOLD_GRID, (self.sums[key] / self.counts[key]).tolist())] for key in keys]
        chosen, density = solve_knapsack(curves, target_density)
        layers = max(k[0] for k in keys) + 1
        heads = max(k[1] for k in keys) + 1
        table = torch.full((layers, heads), 1.0)
        for key, point in zip(keys, chosen):
            table[key] = point["threshold"]
        tiles = self.query_tiles
        return {"threshold": table.tolist(), "density": density,
                "recall": sum(p["recall"] for p in chosen) / len(chosen), "target_density": target_density,
                "query_tiles": "raster" if tiles is None or tiles.is_raster else list(tiles.tile)}


__all__ = ["CalibrationProcessor", "CurveSink"]
