# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.bench selection`: where the selection's time goes, stage by stage, next to the
dense cuDNN time of the same shape (the selection's budget is a share of it).

Stages of the top-k selection (`vector_selection(q, k, None, max_density=d)`): pooling of the
query tiles, the budget cut (scores of the pooled queries against the 8,192-key sample by a
kernel, then the cut per row: the search kernel, timed beside plain bisection), the mask pass over all keys, the bitmask
expansion into index lists. (The fp32 GEMM and `torch.topk` the cut replaced were timed here
before: bench/results/selection/selection-nvidia-h200-2026-12-02.md, bench/DESIGN.md#topk-rule.)
Medians of triton.testing.do_bench.
"""
from __future__ import annotations

import torch

from vecdit.ops import QueryTiles, vector_selection
from vecdit.ops.selection.op import (
    SELECT_CONFIG,
    _budget_cuts_triton,
    _check_budget,
    _select_bitmask_triton,
    pool_queries_triton,
    sample_cut,
    sample_scores_triton,
)
from vecdit.ops.selection.rule import key_sample, row_capacity
from vecdit.ops.selection.sparse_format import EXPAND_CONFIG, _expand_triton

from .attention import SHAPES, dense_sdpa, make_inputs
from .common import do_bench_ms

GRIDS = {"hunyuanvideo-720p": (33, 45, 80), "wan2.1-14b-720p": (21, 45, 80), "wan2.1-1.3b-480p": (21, 30, 52)}


def stage_times(q, k, tiles: QueryTiles, density: float) -> dict:
    num_keys = k.shape[1]
    max_columns, _ = _check_budget(density, 0, num_keys)
    scale = q.shape[-1] ** -0.5
    index, bs = tiles.query_index(q.device), tiles.block_size
    gap = torch.full((q.shape[2],), float("inf"), device=q.device)
    t = {"pool": do_bench_ms(lambda: pool_queries_triton(q, scale, index, bs))}
    pooled = pool_queries_triton(q, scale, index, bs)
    t["cut (scores + search)"] = do_bench_ms(lambda: _budget_cuts_triton(pooled, k, max_columns, 0))
    sample = key_sample(num_keys, k.device)
    h = k.shape[2]
    t["cut: sample scores alone (kernel, all heads)"] = do_bench_ms(lambda: sample_scores_triton(pooled, k, sample, 0, h))
    scores = sample_scores_triton(pooled, k, sample, 0, h)
    n = scores.shape[-1]
    rank = -(-max_columns * n // num_keys)
    out = torch.empty(scores.shape[:-1], device=q.device)
    t["cut: search kernel alone (guess + interpolation)"] = do_bench_ms(lambda: sample_cut(scores, rank, out))
    t["cut: search kernel alone (plain bisection)"] = do_bench_ms(lambda: sample_cut(scores, rank, out, False))
    scores = None
    t["pool + cut + mask pass"] = do_bench_ms(
        lambda: _select_bitmask_triton(q, k, gap, False, False, max_columns, 0, scale, index, bs, running_sum=True))
    mask, word_end, count = _select_bitmask_triton(q, k, gap, False, False, max_columns, 0, scale, index, bs,
                                                   running_sum=True)
    cap = row_capacity(num_keys, max_columns)
    t["expand (fixed capacity)"] = do_bench_ms(lambda: _expand_triton(mask, word_end, count, cap))
    t["expand (count then fill, a host sync)"] = do_bench_ms(lambda: _expand_triton(mask, word_end, count, None))
    t["words holding a kept key (share)"] = float((mask != 0).float().mean())  # what the expansion's skip saves
    for block_w, warps in ((32, 2), (64, 2), (16, 1), (32, 1)):  # launch settings next to EXPAND_CONFIG's
        t[f"expand (fixed capacity), BLOCK_W {block_w}, {warps} warps"] = do_bench_ms(
            lambda: _expand_triton(mask, word_end, count, cap, dict(BLOCK_W=block_w, num_warps=warps)))
    t["mask pass (derived)"] = t["pool + cut + mask pass"] - t["pool"] - t["cut (scores + search)"]
    t["vector_selection total"] = do_bench_ms(lambda: vector_selection(q, k, None, max_density=density, query_tiles=tiles))
    return t


def run_selection(shape: str, densities, tiles_list) -> dict:
    cfg = SHAPES[shape]
    q, k, v = make_inputs(shape, inputs="structured")
    video = cfg["video"]
    qv, kv = q[:, :video], k[:, :video]
    dense = do_bench_ms(lambda: dense_sdpa(q, k, v, "cudnn"))
    rows = []
    for tile in tiles_list:
        tiles = QueryTiles(GRIDS[shape], tile)
        for d in densities:
            t = stage_times(qv, kv, tiles, d)
            rows.append({"tile": list(tile), "density": d, "ms": t,
                         "selection_share_of_dense": t["vector_selection total"] / dense})
    return {"shape": shape, "heads": cfg["heads"], "video_tokens": video, "dense_cudnn_ms": dense,
            "config": dict(SELECT_CONFIG), "expand_config": dict(EXPAND_CONFIG), "rows": rows}


def selection_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# Selection stages on {env['card']}", "", f"torch {env['torch']}, triton {env['triton']}, {env['date']}. "
             "Top-k rule, structured inputs, bf16, medians of do_bench (ms).", ""]
    for r in results:
        stages = list(r["rows"][0]["ms"])
        lines += [f"## {r['shape']}: {r['heads']} heads, {r['video_tokens']} video keys, dense cuDNN {r['dense_cudnn_ms']:.1f} ms", "",
                  "| tile | density | " + " | ".join(stages) + " | share of dense |",
                  "| --- | --- |" + " --- |" * (len(stages) + 1)]
        for row in r["rows"]:
            lines.append(f"| {'x'.join(map(str, row['tile']))} | {row['density']:g} | "
                         + " | ".join(f"{row['ms'][s]:.2f}" for s in stages) + f" | {row['selection_share_of_dense']:.1%} |")
        lines.append("")
    return "\n".join(lines) + "\n"
