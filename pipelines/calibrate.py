# Copyright 2026 The vecdit authors. Apache-2.0.
"""`vecdit calibrate`: per-layer densities for the user's own model, chosen by the one-step error.

A few dense generations capture the transformer's inputs at some denoising steps (`OneStep`). Each
sparse layer's share of the model's error is estimated at every candidate density, and the
densities are allocated so that the layers' errors, which add up in quadrature (their sum of
squares matches the all-sparse error: bench/DESIGN.md#model-error), meet a target one-step error
with the least mean density, or give the least error at a target mean density. The chosen config
is then measured on the captures, and that measured error is what the file reports.

Estimates of a layer's error at density d (`estimate`):
  "exact"    one layer sparse at a time, the others dense: a replay of the captures per layer
             and density (the reference; too slow for 40-60 layers of a large model)
  "grouped"  the layer's own attention error at every density, all layers and densities measured in
             one replay, times a gain from the attention error to the model's error, measured with
             `gain_group` layers sparse at once at one density: a replay per group (the default;
             `gain_group=1` gives each layer its own gain)
  "local"    the attention error alone (gain 1): one replay
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time


from vecdit.config import VecAttnConfig
from vecdit.lab.calibrate import solve_knapsack

from .one_step import OneStep

# candidate top-k densities per layer; 1.0 keeps the layer dense
DENSITY_GRID = (0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 1.0)
ESTIMATES = ("grouped", "exact", "local")
GAIN_DENSITY = 0.1  # where the grouped estimate measures its gains
REFINE_STEPS = 6  # measured steps toward a target one-step error (widen, then bisect)
CALIBRATION_KIND = "vecdit-calibration"


def layer_curves(one: OneStep, config: VecAttnConfig, densities=DENSITY_GRID, estimate: str = "grouped",
                 gain_group: int = 1) -> dict:
    """Estimated one-step error of each layer alone at each density: `{"curves": [layers][densities],
    "local": ..., "gains": ...}`."""
    if estimate not in ESTIMATES:
        raise ValueError(f"`estimate` must be one of {ESTIMATES}, got {estimate!r}")
    densities = tuple(densities)
    layers = one.layers
    if estimate == "exact":
        curves = [[0.0] * len(densities) for _ in range(layers)]
        for j, d in enumerate(densities):
            if d >= 1.0:
                continue
            for i, e in enumerate(one.layer_errors(dataclasses.replace(config, density=d, layer_density=None))):
                curves[i][j] = e
        return {"curves": curves}
    local = one.local_errors(config, densities)  # [layers, densities]
    gains = [1.0] * layers
    if estimate == "grouped":
        if gain_group < 1:
            raise ValueError(f"`gain_group` must be >= 1, got {gain_group}")
        at = min(range(len(densities)), key=lambda j: abs(densities[j] - GAIN_DENSITY))
        for first in range(0, layers, gain_group):
            group = range(first, min(layers, first + gain_group))
            dense = tuple(i for i in range(layers) if i not in group)
            model = one.error(dataclasses.replace(config, density=densities[at], layer_density=None,
                                                  dense_layers=dense))["error"]
            attention = math.sqrt(sum(float(local[i, at]) ** 2 for i in group))
            for i in group:
                gains[i] = model / attention if attention > 0 else 0.0
    curves = [[gains[i] * float(local[i, j]) for j in range(len(densities))] for i in range(layers)]
    return {"curves": curves, "local": local.tolist(), "gains": gains}


def allocate(curves, densities=DENSITY_GRID, target_error: float | None = None,
             target_density: float | None = None) -> dict:
    """One density per layer from the estimated curves (`[layers][densities]`), the layers' errors
    added in quadrature: the least mean density whose predicted error is at most `target_error`, or
    the least predicted error at a mean density of at most `target_density`."""
    if (target_error is None) == (target_density is None):
        raise ValueError("give one of `target_error` (a one-step error) and `target_density` (a mean density)")
    points = [[{"density": d, "recall": -(c[j] ** 2), "index": j} for j, d in enumerate(densities)] for c in curves]

    def solve(budget):
        chosen, mean = solve_knapsack(points, budget)
        return chosen, mean, math.sqrt(-sum(p["recall"] for p in chosen))

    if target_density is not None:
        if not min(densities) <= target_density <= 1:
            raise ValueError(f"`target_density` must lie in [{min(densities)}, 1], got {target_density}")
        chosen, mean, predicted = solve(target_density)
    else:
        if target_error <= 0:
            raise ValueError(f"`target_error` must be > 0, got {target_error}")
        lo, hi = min(densities), 1.0
        best = solve(hi)
        for _ in range(30):  # the least budget that meets the target
            mid = 0.5 * (lo + hi)
            trial = solve(mid)
            if trial[2] <= target_error:
                best, hi = trial, mid
            else:
                lo = mid
        chosen, mean, predicted = best
    return {"layer_density": [p["density"] for p in chosen], "mean_density": mean, "predicted_error": predicted}


def calibrate(pipe, prompts, base_config: VecAttnConfig | None = None, *, target_error: float | None = None,
              target_density: float | None = None, call_kwargs=None, seeds=(0,), capture_steps=(4, 10, 16),
              densities=DENSITY_GRID, estimate: str = "grouped", gain_group: int = 1, progress: bool = True,
              one: OneStep | None = None) -> dict:
    """Per-layer densities for `pipe`'s transformer from its one-step error on `prompts`.

    Args:
        pipe: a diffusers pipeline of a supported family, with its stock attention processors.
        prompts (`list[str]`): what to measure on (a few of the prompts the model will see).
        base_config (`VecAttnConfig`, *optional*): query tiles, compensation, schedule (the per-layer
            densities replace its `density`); defaults to `VecAttnConfig()`.
        target_error / target_density: one of them (see `allocate`).
        call_kwargs (`dict`): the pipeline's call arguments (height, width, num_frames,
            num_inference_steps, guidance_scale, ...).
        seeds, capture_steps: the dense generations (one per prompt and seed) and the steps captured.
        estimate, gain_group: how each layer's error is estimated (module docstring).
        one (`OneStep`, *optional*): captures to reuse instead of generating.

    Returns:
        `{"config": VecAttnConfig, "one_step_error": measured, "mean_density": ..., ...}`;
        `save_calibration` writes it for `VecAttnConfig.from_calibration`.
    """
    base = base_config if base_config is not None else VecAttnConfig()
    if base.rule != "topk":
        raise ValueError("calibrate allocates top-k densities: give a `base_config` without `threshold`")
    bar = _Progress(progress)
    start = time.perf_counter()
    if one is None:
        bar.plan(len(prompts) * len(seeds), max(capture_steps) + 1)
        one = OneStep.capture(pipe, prompts, seeds, capture_steps, call_kwargs, progress=bar.generation)
    one.progress = bar.forward
    layers, n = one.layers, len(one.forwards)
    replays = {"exact": layers * sum(d < 1 for d in densities), "local": 1,
               "grouped": 1 + -(-layers // max(1, gain_group))}[estimate]
    replays += 1 if target_error is None else REFINE_STEPS
    bar.replays(replays * n)
    estimated = layer_curves(one, base, densities, estimate, gain_group)
    curves = estimated["curves"]

    def measure(plan):
        config = dataclasses.replace(base, density=None, layer_density=tuple(plan["layer_density"]))
        return config, one.error(config)

    if target_density is not None:
        plan = allocate(curves, densities, target_density=target_density)
        config, measured = measure(plan)
    else:
        # the layers' errors interact a little (the sum of squares runs ~10% under the measured error on
        # the tiny model): from the predicted budget, bisect the mean density on the measured error
        plan = allocate(curves, densities, target_error=target_error)
        lo, hi, budget, best = min(densities), None, plan["mean_density"], None
        for _ in range(REFINE_STEPS):
            trial = allocate(curves, densities, target_density=budget)
            config, measured = measure(trial)
            if measured["error"] <= target_error:
                best, hi = (trial, config, measured), trial["mean_density"]
            else:
                lo = budget
            # widen by half until the target is met, then halve the bracket
            budget = min(1.0, 1.5 * budget) if hi is None else 0.5 * (lo + hi)
        if best is None:  # not met below the largest budget tried: every layer dense
            trial = allocate(curves, densities, target_density=1.0)
            best = (trial, *measure(trial))
        plan, config, measured = best
    bar.close()
    return {"config": config, "one_step_error": measured["error"], "by_step": measured["by_step"],
            "mean_density": plan["mean_density"], "predicted_error": plan["predicted_error"],
            "target_error": target_error, "target_density": target_density, "estimate": estimate,
            "gain_group": gain_group, "densities": list(densities), "curves": estimated["curves"],
            "gains": estimated.get("gains"), "forwards": n, "seconds": time.perf_counter() - start}


def save_calibration(result: dict, path: str, **extra) -> None:
    """Write `calibrate`'s result as JSON (`VecAttnConfig.from_calibration` and `--config` read it)."""
    payload = {"kind": CALIBRATION_KIND, **{k: v for k, v in result.items() if k != "config"},
               "config": result["config"].to_dict(), **extra}
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(path + ".tmp", path)


class _Progress:
    """One tqdm bar over the whole calibration (generation steps, then replayed forwards), with its
    time estimate; silent when `enabled` is False."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, unit="fwd", desc="vecdit calibrate", dynamic_ncols=True)
        self.steps_per_run = 0

    def plan(self, runs: int, steps_per_run: int):
        self.steps_per_run = steps_per_run
        if self.bar is not None:
            self.bar.total += runs * steps_per_run
            self.bar.set_postfix_str("dense generations")
            self.bar.refresh()

    def generation(self, done: int, total: int):
        if self.bar is not None:
            self.bar.update(self.steps_per_run)

    def replays(self, forwards: int):
        if self.bar is not None:
            self.bar.total += forwards
            self.bar.set_postfix_str("one-step replays")
            self.bar.refresh()

    def forward(self, count: int = 1):
        if self.bar is not None:
            self.bar.update(count)

    def close(self):
        if self.bar is not None:
            self.bar.close()
