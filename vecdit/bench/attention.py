# Copyright 2026 The vecdit authors. Apache-2.0.
"""Attention benchmark: dense SDPA (cuDNN, flash) against vecdit selection + sparse attention.

Inputs are bf16 tensors in diffusers' [B, S, H, D] layout at the real token counts (random, or the
lab's structured proxy). Variants per density: the query grouping (raster strips or tiles of the
latent grid) and the rule (the default top-k per block keeps the density exactly; the published
min-p rule gets its threshold calibrated to the density first, untimed). Relative error vs dense
is large by construction on random (flat) attention; the kernel's own error is checked against an
fp32 reference of the same selection on sampled query blocks (in the selection's query order).
"""
from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from vecdit.ops import QueryTiles, vector_selection, vector_sparse_attention
from vecdit.ops.attention.compensation import COMPENSATION_MODES, DEFAULT_COMPENSATION

from .common import do_bench_ms, sampled_block_error, sampled_dense_error

SHAPES = {
    "wan2.1-1.3b-480p": dict(heads=12, video=32760, text=0),
    "wan2.1-14b-720p": dict(heads=40, video=75600, text=0),
    "hunyuanvideo-720p": dict(heads=24, video=118800, text=256),
}
# post-patchify (frames, height, width) of each shape's video tokens
GRIDS = {"wan2.1-1.3b-480p": (21, 30, 52), "wan2.1-14b-720p": (21, 45, 80), "hunyuanvideo-720p": (33, 45, 80)}
DENSITIES = (0.25, 0.1)
HEAD_DIM = 128


# the fidelity lab's structured proxy of each shape's video grid (vecdit/lab/synthetic.py)
STRUCTURED_GEOMETRY = {"wan2.1-1.3b-480p": "wan2.1-480p", "wan2.1-14b-720p": "wan2.1-720p",
                       "hunyuanvideo-720p": "hunyuanvideo-720p"}
INPUTS = ("random", "structured")


def make_inputs(shape: str, seed: int = 0, device="cuda", inputs: str = "random"):
    """bf16 q, k, v `[1, S, H, 128]`. `random`: i.i.d. normal (no locality: neighbouring query
    blocks select unrelated keys, the worst case for caches). `structured`: the lab's proxy of
    video attention (smooth content on the frame grid, the model's 3D RoPE, local to global heads),
    with the text tokens (HunyuanVideo) i.i.d. normal."""
    cfg = SHAPES[shape]
    seq = cfg["video"] + cfg["text"]
    g = torch.Generator(device=device).manual_seed(seed)
    if inputs == "random":
        # one fused projection output split into q, k, v: strided views, as diffusers often hands them
        qkv = torch.randn(1, seq, 3, cfg["heads"], HEAD_DIM, device=device, dtype=torch.bfloat16, generator=g)
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if inputs != "structured":
        raise ValueError(f"`inputs` must be one of {INPUTS}, got {inputs!r}")
    from vecdit.lab.synthetic import SyntheticConfig, structured_qkv

    video = structured_qkv(SyntheticConfig(geometry=STRUCTURED_GEOMETRY[shape], heads=cfg["heads"], head_dim=HEAD_DIM,
                                           seed=seed), device=device)
    text = torch.randn(3, 1, cfg["text"], cfg["heads"], HEAD_DIM, device=device, generator=g)
    return tuple(torch.cat([x, t], 1).to(torch.bfloat16) for x, t in zip(video, text))


def calibrate_threshold(q, k, density: float, steps: int = 18, query_tiles=None) -> float:
    """Scalar min-p threshold whose selection keeps about `density` of the keys (bisection on ln t)."""
    lo, hi = -30.0, 0.0  # ln threshold: lo keeps everything, hi keeps about one key per block
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        d = float(vector_selection(q, k, math.exp(mid), query_tiles=query_tiles).density())
        lo, hi = (mid, hi) if d > density else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def dense_sdpa(q, k, v, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    with sdpa_kernel(b):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def dense_baselines() -> dict:
    """The dense kernels a user would run instead, by name: SDPA cuDNN and flash, and SageAttention2
    (INT8 QK, FP8 PV) where it was built (`bench/build_peers.py`)."""
    from . import sage

    fns = {"cudnn": lambda q, k, v: dense_sdpa(q, k, v, "cudnn"), "flash": lambda q, k, v: dense_sdpa(q, k, v, "flash")}
    if sage.available():
        fns["sage2"] = lambda q, k, v: sage.sage_attention(q, k, v, None, q.shape[-1] ** -0.5)
    return fns


# vecdit variants timed per density: (label, query tiles, rule); `tiles-topk` is the default
VARIANTS = {
    "raster-minp": ("raster", "minp"),  # the method as published
    "raster-topk": ("raster", "topk"),
    "tiles-topk": ((4, 4, 4), "topk"),
    "tiles128-topk": ((4, 4, 8), "topk"),
}
# kernel experiments (not in the default run), all on 128-query tiles: the portable Triton kernel
# (two 64-row programs per tile); the Gluon kernel as two 64-row programs per tile (`programs`, the
# earlier default, bench/DESIGN.md#rows-128), one program of one 8-warp consumer (`wide`), or the
# default (`split`: two 4-warp consumer partitions sharing each gathered 128-key tile) on 64-key
# tiles or with fewer key segments
KERNEL_VARIANTS = {
    "tiles128-triton": ((4, 4, 8), "topk", {"VECDIT_ATTN_KERNEL": "triton"}),
    "tiles128-programs": ((4, 4, 8), "topk", {"VECDIT_GLUON_TILE128": "programs"}),
    "tiles128-wide": ((4, 4, 8), "topk", {"VECDIT_GLUON_TILE128": "wide"}),
    "tiles128-n64": ((4, 4, 8), "topk", {"VECDIT_GLUON_TILE128": "split,BLOCK_N=64,STAGES=4"}),
    "tiles128-seg1": ((4, 4, 8), "topk", {"VECDIT_GLUON_TILE128": "split,segments=1"}),
    "tiles128-seg4": ((4, 4, 8), "topk", {"VECDIT_GLUON_TILE128": "split,segments=4"}),
    "tiles128-n64-seg2": ((4, 4, 8), "topk", {"VECDIT_GLUON_TILE128": "split,BLOCK_N=64,STAGES=4,segments=2"}),
}


def run_shape(shape: str, densities=DENSITIES, variants=tuple(VARIANTS), inputs: str = "random") -> dict:
    cfg = SHAPES[shape]
    video, text, heads = cfg["video"], cfg["text"], cfg["heads"]
    q, k, v = make_inputs(shape, inputs=inputs)
    seq = video + text
    dense_flops = 4 * seq * seq * heads * HEAD_DIM
    res = {"shape": shape, "grid": GRIDS[shape], "inputs": inputs, "heads": heads, "video_tokens": video,
           "text_tokens": text, "head_dim": HEAD_DIM, "dense_tflop": dense_flops / 1e12, "dense": {}, "vecdit": []}
    ref = None
    for backend, fn in dense_baselines().items():
        ms = do_bench_ms(lambda: fn(q, k, v))
        out = fn(q, k, v)
        res["dense"][backend] = {"ms": ms, "tflops": dense_flops / ms / 1e9, "rel_err_vs_fp32": sampled_dense_error(out, q, k, v)}
        if backend == "cudnn":
            ref = out
        out = None
    qv, kv = q[:, :video], k[:, :video]
    dense_range = (video, seq) if text else None
    for density in densities:
        for label in variants:
            tile, rule, env = (*VARIANTS[label], {}) if label in VARIANTS else KERNEL_VARIANTS[label]
            saved_env = {key: os.environ.get(key) for key in env}
            os.environ.update(env)
            tiles = None if tile == "raster" else QueryTiles(GRIDS[shape], tile)
            if rule == "minp":
                thr, cap = calibrate_threshold(qv, kv, density, query_tiles=tiles), None
            else:
                thr, cap = None, density

            def select():
                return vector_selection(qv, kv, thr, max_density=cap, query_tiles=tiles)

            sel = select()

            def attend():
                out = vector_sparse_attention(qv, k, v, sel, dense_range=dense_range)
                if text:  # text queries attend everything, densely
                    dense_sdpa(q[:, video:], k, v, "cudnn")
                return out

            def total():
                s = select()
                out = vector_sparse_attention(qv, k, v, s, dense_range=dense_range)
                if text:
                    dense_sdpa(q[:, video:], k, v, "cudnn")
                return out

            sel_ms = do_bench_ms(select)
            att_ms = do_bench_ms(attend)
            # the dropped keys' compensation per mode: its time over the uncompensated attention, its kernel error
            compensation = {}
            for mode in (False, *COMPENSATION_MODES):
                ms = do_bench_ms(lambda: vector_sparse_attention(qv, k, v, sel, dense_range=dense_range, compensate=mode))
                err = _kernel_error(qv, k, v, sel, dense_range, mode)
                compensation[str(mode).lower()] = {"attention_ms": ms, "kernel_rel_err_vs_fp32_ref": err}
            for mode in COMPENSATION_MODES:
                extra = compensation[mode]["attention_ms"] - compensation["false"]["attention_ms"]
                compensation[mode].update(extra_ms=extra, extra_share_of_cudnn=extra / res["dense"]["cudnn"]["ms"])
            print(compensation_line(label, float(sel.density()), res["dense"]["cudnn"]["ms"], compensation), flush=True)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            tot_ms = do_bench_ms(total)
            peak = torch.cuda.max_memory_allocated() - base
            out = vector_sparse_attention(qv, k, v, sel, dense_range=dense_range)
            kept = int(sel.column_count.sum()) * (tiles.block_size if tiles is not None else 64)
            entries = kept + video * text  # computed (query, key) pairs of the video queries (last block ragged)
            dens = float(sel.density())
            rel_dense = float((out.float() - ref[:, :video].float()).norm() / ref[:, :video].float().norm())
            kern_err = sampled_block_error(qv, k, v, sel, dense_range, out=out, compensate=True)
            cudnn = res["dense"]["cudnn"]["ms"]
            res["vecdit"].append({
                "variant": label, "query_tiles": "raster" if tiles is None else list(tiles.tile), "rule": rule,
                "target_density": density, "density": dens, "threshold": thr,
                "selection_ms": sel_ms, "attention_ms": att_ms, "total_ms": tot_ms,
                "speedup_vs_cudnn": cudnn / tot_ms, "speedup_vs_flash": res["dense"]["flash"]["ms"] / tot_ms,
                "speedup_vs_sage2": res["dense"]["sage2"]["ms"] / tot_ms if "sage2" in res["dense"] else None,
                "selection_share_of_dense": sel_ms / cudnn,
                "attention_tflops_on_computed": 4 * HEAD_DIM * entries / att_ms / 1e9,
                "peak_extra_mem_gb": peak / 2**30, "index_buffer_gb": sel.nbytes() / 2**30,
                "rel_err_vs_dense": rel_dense, "kernel_rel_err_vs_fp32_ref": kern_err,
                "compensate": str(DEFAULT_COMPENSATION), "compensation": compensation,
            })
            sel = out = None  # free the lists before the next variant
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return res


def index_overhead(shape: str, densities=DENSITIES, inputs: str = "random", repeats: int = 3) -> dict:
    """What reading query rows and writing output rows through the tile index costs the kernel:
    one tile-order top-k selection attended twice, through its query index, and with the same lists
    handed to consecutive query blocks (raster addressing), timed alternately `repeats` times."""
    from vecdit.ops import VectorSelection

    cfg = SHAPES[shape]
    video, text = cfg["video"], cfg["text"]
    q, k, v = make_inputs(shape, inputs=inputs)
    qv, kv = q[:, :video], k[:, :video]
    dense_range = (video, video + text) if text else None
    tiles = QueryTiles(GRIDS[shape])
    rows = []
    for density in densities:
        tiled = vector_selection(qv, kv, None, max_density=density, query_tiles=tiles)
        plain = VectorSelection(tiled.column_index, tiled.column_offset, tiled.column_count, tiled.batch, tiled.heads,
                                tiled.num_query_blocks, tiled.num_keys)  # the same lists, no index
        times = {"tiles": [], "raster-addressed": []}
        for _ in range(repeats):
            for label, sel in (("tiles", tiled), ("raster-addressed", plain)):
                times[label].append(do_bench_ms(lambda: vector_sparse_attention(qv, k, v, sel, dense_range=dense_range)))
        med = {key: sorted(val)[len(val) // 2] for key, val in times.items()}
        rows.append({"target_density": density, "density": float(tiled.density()), "ms": times, "median_ms": med,
                     "index_cost": med["tiles"] / med["raster-addressed"] - 1})
        del tiled, plain
    return {"shape": shape, "inputs": inputs, "repeats": repeats, "rows": rows}


def compensation_line(variant: str, density: float, cudnn_ms: float, compensation: dict) -> str:
    """One line per (variant, density): each compensation mode's attention time, its extra over the
    uncompensated attention as a share of dense cuDNN, and its kernel error."""
    none = compensation["false"]["attention_ms"]
    parts = [f"compensation {variant} {density:.3f} (cuDNN {cudnn_ms:.2f} ms): none {none:.2f} ms"]
    for mode in COMPENSATION_MODES:
        c = compensation[mode]
        parts.append(f"{mode} {c['attention_ms']:.2f} ms ({c['extra_ms']:+.2f}, {c['extra_share_of_cudnn']:.1%} "
                     f"of cuDNN, err {c['kernel_rel_err_vs_fp32_ref']:.1e})")
    return "; ".join(parts)


def _kernel_error(q, k, v, selection, dense_range, mode, blocks: int = 16, seed: int = 0) -> float:
    """`common.sampled_block_error`, and for the "dropped" mode (whose fp32 reference needs each block's
    kept keys, not only their counts per group) the same sampled blocks against that reference."""
    if mode != "dropped":
        return sampled_block_error(q, k, v, selection, dense_range, blocks=blocks, seed=seed, compensate=mode)
    from vecdit.ops.attention.reference import _attention_with_columns, compensation_logits_reference

    out = vector_sparse_attention(q, k, v, selection, dense_range=dense_range, compensate=mode)
    kept = selection.kept_per_word()
    g = torch.Generator().manual_seed(seed)
    heads, nqb, num_keys = selection.heads, selection.num_query_blocks, selection.num_keys
    tiles = selection.query_tiles if selection.query_tiles is not None else QueryTiles.raster()
    index = tiles.query_index(q.device)
    start, end = dense_range or (0, 0)
    scale = q.shape[-1] ** -0.5
    worst = 0.0
    for _ in range(blocks):  # the draws of sampled_block_error: the same blocks
        h = int(torch.randint(heads, (1,), generator=g))
        qb = int(torch.randint(nqb, (1,), generator=g))
        row = h * nqb + qb
        a = int(selection.column_offset[row])
        b = a + int(selection.column_count.reshape(-1)[row])
        selected = selection.column_index[a:b].long()
        cols = torch.cat([selected, torch.arange(start, end, device=q.device)])
        pos = torch.arange(qb * tiles.block_size, min((qb + 1) * tiles.block_size, q.shape[1]), device=q.device)
        rows = pos if index is None else index[pos].long()
        keep_mask = torch.zeros(num_keys, dtype=torch.bool, device=q.device)
        keep_mask[selected] = True
        sl = (slice(0, 1), slice(None), slice(h, h + 1))
        extra, values = compensation_logits_reference(
            q[:, rows, h:h + 1], k[sl], v[sl], kept[row].view(1, 1, 1, -1), num_keys, scale,
            torch.zeros(len(rows), dtype=torch.long, device=q.device), mode, keep_mask.view(1, 1, 1, -1))
        keep = torch.ones(len(rows), len(cols), dtype=torch.bool, device=q.device)
        o, _ = _attention_with_columns(q[0, rows, h], k[0, cols, h], v[0, cols, h], keep, scale, extra[0, 0],
                                       values[0, 0])
        got = out[0, rows, h].float()
        worst = max(worst, float((got - o).norm() / o.norm().clamp_min(1e-30)))
    return worst
