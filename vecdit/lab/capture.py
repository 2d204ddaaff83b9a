# Copyright 2026 The vecdit authors. Apache-2.0.
"""Calibration from a real pipeline run: capture Q/K at chosen steps, reduce them at once.

A `CalibrationProcessor` stands in for `VecAttnProcessor` for one generation: it computes dense
attention (the video is unchanged) and, at the chosen steps, hands each sparse-capable layer's
post-RoPE q, k, v to a `CurveSink`. The sink keeps no tensors: it samples a few 64-query blocks
per head, measures (density, recall) over the threshold grid against all keys right away, and
accumulates the averages. Memory is bounded by one layer's attention inputs.
"""
from __future__ import annotations

import torch

from vecdit.config import VecAttnConfig
from vecdit.processors import VecAttnProcessor

from .calibrate import THRESHOLD_GRID, solve_knapsack
from .patterns import BLOCK, _expand_blocks, metrics, probabilities


class CurveSink:
    def __init__(self, blocks_per_head: int = 16, mode: str = "exact", seed: int = 0):
        self.blocks, self.mode = blocks_per_head, mode
        self.generator = torch.Generator().manual_seed(seed)
        self.sums: dict[tuple[int, int], torch.Tensor] = {}  # (layer, head) -> [grid, 2] summed density, recall
        self.counts: dict[tuple[int, int], int] = {}

    def __call__(self, layer: int, q, k, v, first_head: int = 0):
        from vecdit.ops.reference import vector_selection_reference

        nqb = q.shape[1] // BLOCK
        for h in range(q.shape[2]):
            picks = torch.randperm(max(nqb, 1), generator=self.generator)[: self.blocks].tolist()
            rows = torch.cat([torch.arange(b * BLOCK, min((b + 1) * BLOCK, q.shape[1])) for b in picks]).to(q.device)
            qs, kh, vh = q[0, rows, h].float(), k[0, :, h].float(), v[0, :, h].float()
            probs = probabilities(qs, kh)
            acc = torch.zeros(len(THRESHOLD_GRID), 2, dtype=torch.float64)
            for i, t in enumerate(THRESHOLD_GRID):
                sel = vector_selection_reference(qs[None, :, None], kh[None, :, None], t, mode=self.mode)
                m = metrics(_expand_blocks(sel.to_mask()[0, 0], qs.shape[0]), probs, vh)
                acc[i, 0], acc[i, 1] = m["density"], m["recall"]
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
        return {"threshold": table.tolist(), "density": density,
                "recall": sum(p["recall"] for p in chosen) / len(chosen), "target_density": target_density}


class CalibrationProcessor(VecAttnProcessor):
    """Dense attention, plus capture of q, k, v at `steps` (every branch)."""

    def __init__(self, sink: CurveSink, steps):
        super().__init__(VecAttnConfig(dense_steps=0))
        self.sink, self.steps = sink, set(steps)

    def _sparse(self, q, k, v, n_select, dense_range, phase, hook, layer, heads=None):
        if hook is not None and layer is not None and hook.t.step in self.steps:
            self.sink(layer, q, k[:, :n_select], v[:, :n_select], heads[0] if heads else 0)
        return self._dense(q, k, v)
