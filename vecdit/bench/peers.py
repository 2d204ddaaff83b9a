# Copyright 2026 The vecdit authors. Apache-2.0.
"""Peers timed in the same run as vecdit, each with the recall of what it kept.

On the video tokens of a shape (no text: VSA has no joint-text path), per density:
  vecdit           4x4x4 and 4x4x8 tiles, top-k (selection + attention)
  VSA              `fastvideo_kernel.video_sparse_attn` (benchmark-only dependency; the path that ran is
                   recorded): its call on tile-ordered, tile-padded inputs, and with the permutation
                   into and out of its layout that a diffusers user pays
  FlexAttention    block-sparse 128x128 on the tile-ordered sequence with top-k key blocks per query
                   block by pooled scores (mask build timed apart); the sequence is cut to a multiple of
                   128 (at most 127 of ~10^5 tokens)
Recall: the attention mass each method's own selection keeps for the same random query tokens of
the same random heads, against all keys (fp64), on whatever inputs ran (meaningful on `structured`);
density: the kept fraction of the keys (VSA's budget counts tiles, and edge tiles hold fewer keys).
"""
from __future__ import annotations

import math

import torch

from vecdit.lab.match import matched_density, selection_recall, token_recall
from vecdit.ops import QueryTiles, vector_selection, vector_sparse_attention

from .common import do_bench_ms, sampled_dense_error


def _vecdit(q, k, v, grid, density, tile, heads_sampled):
    tiles = QueryTiles(grid, tile)
    sel, measured = selection_recall(q, k, tiles, density, heads_sampled)
    row = {"select_ms": do_bench_ms(lambda: vector_selection(q, k, None, max_density=density, query_tiles=tiles)),
           "attention_ms": do_bench_ms(lambda: vector_sparse_attention(q, k, v, sel)),
           "density": float(sel.density()), **measured}
    row["ms"] = do_bench_ms(lambda: vector_sparse_attention(
        q, k, v, vector_selection(q, k, None, max_density=density, query_tiles=tiles)))
    return row


def _vsa(q, k, v, grid, density, heads_sampled):
    import importlib

    import fastvideo_kernel as fk

    bsa = importlib.import_module("fastvideo_kernel.block_sparse_attn")  # the module, not its same-named function
    meta = fk.build_vsa_metadata(tuple(grid), device=q.device)
    tpi, npi, vbs = meta["tile_partition_indices"], meta["non_pad_index"], meta["variable_block_sizes"]
    n_tiles = math.prod(meta["num_tiles"])
    padded = n_tiles * 64
    topk = max(1, round(density * n_tiles))

    def to_layout(x):  # [1, S, H, D] raster -> [1, H, tiles * 64, D], tile order, zero-padded tiles
        out = x.new_zeros(x.shape[0], padded, x.shape[2], x.shape[3])
        out[:, npi] = x[:, tpi]
        return out.transpose(1, 2).contiguous()

    def from_layout(o):
        o = o.transpose(1, 2)[:, npi]
        out = torch.empty_like(o)
        out[:, tpi] = o
        return out

    qt, kt, vt = (to_layout(x) for x in (q, k, v))

    def call():
        return fk.video_sparse_attn(qt, kt, vt, vbs, vbs, topk, (4, 4, 4))

    def total():
        return from_layout(fk.video_sparse_attn(to_layout(q), to_layout(k), to_layout(v), vbs, vbs, topk, (4, 4, 4)))

    # its sm_90 (ThunderKittens) path needs the compiled forward and backward (block_sparse_attn_from_indices)
    sm90 = None not in bsa._get_sm90_ops() and bsa._is_sm90() and not bsa._force_triton()
    # its selection, as its compression branch computes it: pooled tiles, top-k key tiles per query tile
    real = vbs.clamp_min(1).view(1, 1, -1, 1).to(torch.float32)
    q_c = qt.float().view(1, q.shape[2], n_tiles, 64, -1).sum(3) / real
    k_c = kt.float().view(1, k.shape[2], n_tiles, 64, -1).sum(3) / real
    tile_of_token = torch.empty(q.shape[1], dtype=torch.long, device=q.device)
    tile_of_token[tpi] = torch.arange(n_tiles, device=q.device).repeat_interleave(vbs.long())
    def kept(h, b):
        top = (q_c[0, h, b] @ k_c[0, h].T).topk(topk).indices
        return torch.isin(tile_of_token, top)

    measured = token_recall(q, k, tile_of_token, kept, heads_sampled)
    # its budget counts tiles; edge tiles have fewer keys, so the kept key fraction differs from topk / tiles
    return {"ms": do_bench_ms(total), "call_ms": do_bench_ms(call), "density": measured["key_density"], **measured,
            "path": "sm90 ThunderKittens" if sm90 else "triton", "topk_tiles": topk, "tiles": n_tiles}


def _flex(q, k, v, grid, density, heads_sampled, block=128):
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    index = QueryTiles(grid).query_index(q.device).long()
    seq = q.shape[1] // block * block
    qt, kt, vt = (x[:, index[:seq]].transpose(1, 2).contiguous() for x in (q, k, v))  # [1, H, S, D], tile order
    nb = seq // block
    count = max(1, round(density * nb))

    def build():
        qp = qt.float().view(1, q.shape[2], nb, block, -1).mean(3)
        kp = kt.float().view(1, k.shape[2], nb, block, -1).mean(3)
        top = (qp @ kp.transpose(-1, -2)).topk(count, -1).indices.sort(-1).values.to(torch.int32)
        num = torch.full((1, q.shape[2], nb), count, dtype=torch.int32, device=q.device)
        indices = torch.zeros(1, q.shape[2], nb, nb, dtype=torch.int32, device=q.device)  # the first `num` count
        indices[..., :count] = top
        return BlockMask.from_kv_blocks(num, indices, BLOCK_SIZE=block), top

    mask, top = build()
    attend = torch.compile(flex_attention)
    attend(qt, kt, vt, block_mask=mask)  # compile outside the timing

    token_block = torch.full((q.shape[1],), nb - 1, dtype=torch.long, device=q.device)  # cut tokens: the last block
    token_block[index[:seq]] = torch.arange(seq, device=q.device) // block

    def kept(h, b):
        keys = torch.zeros(nb, dtype=torch.bool, device=q.device)
        keys[top[0, h, b].long()] = True
        out = torch.zeros(q.shape[1], dtype=torch.bool, device=q.device)
        out[index[:seq]] = keys.repeat_interleave(block)
        return out

    return {"ms": do_bench_ms(lambda: attend(qt, kt, vt, block_mask=build()[0])),
            "attention_ms": do_bench_ms(lambda: attend(qt, kt, vt, block_mask=mask)),
            "mask_ms": do_bench_ms(build), "density": count / nb,
            **token_recall(q, k, token_block, kept, heads_sampled), "tokens_cut": q.shape[1] - seq}


def run_peers(shape: str, densities=(0.25, 0.1), inputs: str = "structured", heads_sampled: int = 6) -> dict:
    from .attention import GRIDS, SHAPES, dense_baselines, make_inputs

    video = SHAPES[shape]["video"]
    q, k, v = (x[:, :video].contiguous() for x in make_inputs(shape, inputs=inputs))
    grid = GRIDS[shape]
    res = {"shape": shape, "inputs": inputs, "grid": list(grid), "video_tokens": video, "rows": [], "dense": {}}
    for name, fn in dense_baselines().items():  # cuDNN, flash, SageAttention2 where built: time and error vs fp32
        res["dense"][f"{name}_ms"] = do_bench_ms(lambda: fn(q, k, v))
        res["dense"][f"{name}_err"] = sampled_dense_error(fn(q, k, v), q, k, v)
    for density in densities:
        for name, fn in (("vecdit 4x4x4", lambda: _vecdit(q, k, v, grid, density, (4, 4, 4), heads_sampled)),
                         ("vecdit 4x4x8", lambda: _vecdit(q, k, v, grid, density, (4, 4, 8), heads_sampled)),
                         ("VSA", lambda: _vsa(q, k, v, grid, density, heads_sampled)),
                         ("FlexAttention 128", lambda: _flex(q, k, v, grid, density, heads_sampled))):
            try:
                row = fn()
            except Exception as e:  # noqa: BLE001 - a peer that does not run here is reported, not fatal
                row = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
            res["rows"].append({"method": name, "target_density": density, **row})
            torch.cuda.empty_cache()
            if name in ("VSA", "FlexAttention 128") and "recall" in row:
                # vecdit (4x4x8 tiles, the default kernel's tile) at the density where it keeps the peer's recall
                matched = matched_density(q, k, grid, (4, 4, 8), row["recall"], row["density"], heads_sampled)
                res["rows"].append({"method": f"vecdit 4x4x8 at {name.split()[0]}'s recall", "target_density": density,
                                    "peer": name, "peer_recall": row["recall"], "peer_ms": row["ms"],
                                    **_vecdit(q, k, v, grid, matched, (4, 4, 8), heads_sampled)})
                torch.cuda.empty_cache()
    return res


def peers_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# vecdit and its peers on {env['card']}", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['date']}. Video tokens only, bf16, head_dim 128, "
             "medians of do_bench in one process. `ms` = selection/mask + attention (+ VSA's layout permutations); "
             "recall = attention mass kept by the method's own selection for the same random query tokens of the same random heads (fp64); density = kept fraction of the keys.", ""]
    for r in results:
        d = r["dense"]
        dense = ", ".join(f"{name} {d[name + '_ms']:.1f} ms (err vs fp32 {d[name + '_err']:.1e})"
                          for name in ("cudnn", "flash", "sage2") if name + "_ms" in d)
        lines += [f"## {r['shape']} ({r['inputs']} inputs), grid {r['grid']}", "", f"Dense: {dense}"
                  + ("" if "sage2_ms" in d else " (SageAttention2 not built here)") + ".", "",
                  "| method | density | ms | x cuDNN | x Sage2 | recall | detail |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for row in r["rows"]:
            if "error" in row:
                lines.append(f"| {row['method']} | {row['target_density']} | - | - | - | - | {row['error']} |")
                continue
            detail = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()
                      if k not in ("method", "target_density", "ms", "recall", "density", "peer", "peer_recall", "peer_ms")}
            lines.append(f"| {row['method']} | {row['density']:.3f} | {row['ms']:.1f} | "
                         f"{d['cudnn_ms'] / row['ms']:.2f} | {d['sage2_ms'] / row['ms'] if 'sage2_ms' in d else float('nan'):.2f} | "
                         f"{row['recall']:.3f} | {detail} |")
        matched = [row for row in r["rows"] if "peer_ms" in row]
        if matched:
            lines += ["", "Speed at equal quality (vecdit 4x4x8 at the lowest density keeping the peer's recall):", "",
                      "| peer at density | peer recall | peer ms | vecdit density | vecdit recall | vecdit ms | vecdit / peer time |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            lines += [f"| {row['peer']} at {row['target_density']} | {row['peer_recall']:.3f} | "
                      f"{row['peer_ms']:.1f} | {row['density']:.3f} | {row['recall']:.3f} | {row['ms']:.1f} | "
                      f"{row['ms'] / row['peer_ms']:.2f} |" for row in matched]
        lines.append("")
    return "\n".join(lines) + "\n"


def plot_peers(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, r in zip(axes[0], results):
        for method in dict.fromkeys(row["method"] for row in r["rows"]):
            pts = sorted((row["ms"], row["recall"]) for row in r["rows"] if row["method"] == method and "ms" in row)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
        ax.set(xlabel="ms (selection + attention)", ylabel="recall", title=f"{r['shape']} ({r['inputs']})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
