# Copyright 2026 The vecdit authors. Apache-2.0.
"""Peers timed in the same run as vecdit, each with its output error against dense and the recall of
what it kept, and the speed at equal output error.

On the video tokens of a shape (no text: VSA has no joint-text path), each method at several settings:
  vecdit           4x4x8 tiles, top-k, compensated as shipped (`compensate=True`): selection + attention
  VSA              `fastvideo_kernel.video_sparse_attn` (benchmark-only dependency; the path that ran is
                   recorded): its call on tile-ordered, tile-padded inputs, and with the permutation
                   into and out of its layout that a diffusers user pays. Its output is the sparse branch
                   (`compress_attn_weight` 0): the compression branch is the input of a gate that only a
                   model trained with VSA has; added ungated it would double the output
  FlexAttention    block-sparse 128x128 on the tile-ordered sequence with top-k key blocks per query
                   block by pooled scores (mask build timed apart); the sequence is cut to a multiple of
                   128 (at most 127 of ~10^5 tokens: their rows are filled from dense attention, untimed)
  SpargeAttn       `spas_sage2_attn_meansim_topk_cuda` (a density per query block) and
                   `spas_sage2_attn_meansim_cuda` (its CDF threshold, with its default similarity
                   threshold and PV threshold), INT8 QK / FP8 PV block-sparse on sm90 (built by
                   `bench/build_peers.py sparge`), called on the raster sequence as a diffusers user
                   would; the density it reports (1 - its `qk_sparsity`) is recorded
  dense            cuDNN and flash SDPA, SageAttention2 (where built): one setting each
Output error, on the same sampled query rows of the same heads for every method (those recall is
measured on), against fp32 attention over all keys: `error` = mean over rows of
|O - O_dense| / |O_dense| (vecdit's metric, vecdit.lab), `error_l1` = sum |O - O_dense| / sum |O_dense|
(SpargeAttn's L1, the metric its per-layer tuning targets). Recall: the attention mass each method's
own selection keeps (fp64), meaningful on `structured` inputs; density: the kept fraction of the keys.

Equal error (`equal_error`): for vecdit at its preset's densities (10% and 25%), the time each peer needs
for the same output error, interpolated on the peer's time-vs-error curve (its fastest settings at
each error, linear in log error); "not reached" where no setting of the peer is that accurate, an
upper bound on the peer's time where even its sparsest setting is more accurate (vecdit's fraction is
then a lower bound, marked >=).
"""
from __future__ import annotations

import math

import torch

from vecdit.lab.match import matched_density, sampled_tokens, selection_recall, token_recall
from vecdit.ops import QueryTiles, attention_reference, vector_selection, vector_sparse_attention

from .common import do_bench_ms

DENSITIES = (0.4, 0.25, 0.15, 0.1, 0.05)
LEVELS = (0.25, 0.1)  # vecdit's preset density (0.1) and the earlier one (0.25): the equal-error table's rows
VECDIT = "vecdit 4x4x8"
SPARGE_CDF = (0.8, 0.9, 0.95, 0.98)  # spas_sage2_attn_meansim_cuda's cdfthreshd (its default 0.98)
METHODS = ("vecdit", "vsa", "flex", "sparge", "dense")
DENSE_LABELS = {"cudnn": "cuDNN (dense)", "flash": "flash (dense)", "sage2": "SageAttention2 (dense)"}


def output_errors(got: torch.Tensor, ref: torch.Tensor) -> dict:
    """`got`, `ref`: `[rows, D]`. `error`: mean over rows of |got - ref| / |ref| (L2 per row, vecdit's
    metric); `error_l1`: sum |got - ref| / sum |ref| (SpargeAttn's)."""
    got, ref = got.double(), ref.double()
    diff = got - ref
    return {"error": float((diff.norm(dim=-1) / ref.norm(dim=-1).clamp_min(1e-30)).mean()),
            "error_l1": float(diff.abs().sum() / ref.abs().sum().clamp_min(1e-30))}


class DenseRows:
    """The fp32 dense reference (all keys) of the sampled query rows every method is scored on: the
    tokens and heads `vecdit.lab.match.sampled_tokens` draws (recall's sample)."""

    def __init__(self, q, k, v, heads: int, tokens: int = 256, seed: int = 0):
        self.samples = sampled_tokens(q.shape[2], q.shape[1], heads, seed, tokens)
        self.ref = torch.cat([attention_reference(q[:, t.to(q.device), h:h + 1], k[:, :, h:h + 1],
                                                  v[:, :, h:h + 1])[0][0, :, 0] for h, t in self.samples])

    def errors(self, out: torch.Tensor) -> dict:
        """Output errors of `out` (`[1, S, H, D]`, raster order) on the sampled rows."""
        got = torch.cat([out[0, t.to(out.device), h].float() for h, t in self.samples])
        return output_errors(got, self.ref.to(got.device))


def time_at_error(points, target: float) -> dict:
    """The time a method needs for an output error of at most `target`, from its `(error, ms)` points
    (its settings): on its frontier (the fastest setting at each error), linear in log error between
    the two settings around `target`. `how`: `interpolated`, `one setting` (a dense method),
    `at most` (even its sparsest setting is more accurate: an upper bound on its time) or
    `not reached` (no setting is that accurate; `ms` None)."""
    pts = sorted((e, t) for e, t in points if e is not None and t is not None and math.isfinite(e))
    if not pts:
        return {"ms": None, "how": "no result"}
    frontier = []
    for e, t in pts:  # by error, rising: keep a setting only if it is faster than every more accurate one
        if not frontier or t < frontier[-1][1]:
            frontier.append((e, t))
    if target < frontier[0][0]:
        return {"ms": None, "how": "not reached", "best_error": frontier[0][0]}
    if len(pts) == 1:
        return {"ms": frontier[0][1], "how": "one setting"}
    if target >= frontier[-1][0]:
        return {"ms": frontier[-1][1], "how": "at most"}
    for (e0, t0), (e1, t1) in zip(frontier, frontier[1:]):
        if e0 <= target <= e1:
            w = 0.0 if e1 == e0 else (math.log(target) - math.log(e0)) / (math.log(e1) - math.log(e0))
            return {"ms": t0 + w * (t1 - t0), "how": "interpolated", "between": [[e0, t0], [e1, t1]]}
    raise AssertionError("unreachable: target lies within the frontier")


def equal_error(rows: list[dict], metric: str = "error", reference: str = VECDIT, levels=LEVELS) -> list[dict]:
    """For vecdit (`reference`) at each density of `levels`: every other method's time at vecdit's
    output error (`metric`) there, and the fraction of it vecdit needs."""
    out = []
    ok = [r for r in rows if "ms" in r and r.get(metric) is not None]
    methods = list(dict.fromkeys(r["method"] for r in ok if not r["method"].startswith("vecdit")))
    for level in levels:
        mine = [r for r in ok if r["method"] == reference and r["target_density"] == level]
        if not mine:
            continue
        v = mine[0]
        for method in methods:
            peer = time_at_error([(r[metric], r["ms"]) for r in ok if r["method"] == method], v[metric])
            fraction = v["ms"] / peer["ms"] if peer["ms"] else None
            out.append({"level": level, "metric": metric, "vecdit_error": v[metric], "vecdit_ms": v["ms"],
                        "vecdit_density": v["density"], "peer": method, "peer_ms": peer["ms"], "how": peer["how"],
                        "best_error": peer.get("best_error"), "fraction": fraction,
                        # an upper bound on the peer's time bounds vecdit's fraction from below
                        "fraction_is_lower_bound": peer["how"] == "at most"})
    return out


def _vecdit(q, k, v, grid, density, tile, heads_sampled, reference: DenseRows | None = None, compensate=True):
    from vecdit.ops.attention.compensation import compensation_mode

    tiles = QueryTiles(grid, tile)
    sel, measured = selection_recall(q, k, tiles, density, heads_sampled)
    row = {"select_ms": do_bench_ms(lambda: vector_selection(q, k, None, max_density=density, query_tiles=tiles)),
           "attention_ms": do_bench_ms(lambda: vector_sparse_attention(q, k, v, sel, compensate=compensate)),
           "density": float(sel.density()), "compensate": compensate,
           "compensation_mode": compensation_mode(compensate), **measured}  # what `True` means in this version
    row["ms"] = do_bench_ms(lambda: vector_sparse_attention(
        q, k, v, vector_selection(q, k, None, max_density=density, query_tiles=tiles), compensate=compensate))
    if reference is not None:
        row.update(reference.errors(vector_sparse_attention(q, k, v, sel, compensate=compensate)))
    return row


def _vsa(q, k, v, grid, density, heads_sampled, reference: DenseRows | None = None):
    import importlib

    import fastvideo_kernel as fk

    bsa = importlib.import_module("fastvideo_kernel.block_sparse_attn")  # the module, not its same-named function
    meta = fk.build_vsa_metadata(tuple(grid), device=q.device)
    tpi, npi, vbs = meta["tile_partition_indices"], meta["non_pad_index"], meta["variable_block_sizes"]
    n_tiles = math.prod(meta["num_tiles"])
    padded = n_tiles * 64
    topk = max(1, round(density * n_tiles))
    gate = torch.zeros((), device=q.device, dtype=q.dtype)  # the sparse branch alone (see the module's doc)

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
        return fk.video_sparse_attn(qt, kt, vt, vbs, vbs, topk, (4, 4, 4), compress_attn_weight=gate)

    def total():
        return from_layout(fk.video_sparse_attn(to_layout(q), to_layout(k), to_layout(v), vbs, vbs, topk, (4, 4, 4),
                                                compress_attn_weight=gate))

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
    row = {"ms": do_bench_ms(total), "call_ms": do_bench_ms(call), "density": measured["key_density"], **measured,
           "path": "sm90 ThunderKittens" if sm90 else "triton", "topk_tiles": topk, "tiles": n_tiles}
    if reference is not None:
        row.update(reference.errors(total()))
    return row


def _flex(q, k, v, grid, density, heads_sampled, block=128, reference: DenseRows | None = None):
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
    out_t = attend(qt, kt, vt, block_mask=mask)  # compile outside the timing

    token_block = torch.full((q.shape[1],), nb - 1, dtype=torch.long, device=q.device)  # cut tokens: the last block
    token_block[index[:seq]] = torch.arange(seq, device=q.device) // block

    def kept(h, b):
        keys = torch.zeros(nb, dtype=torch.bool, device=q.device)
        keys[top[0, h, b].long()] = True
        out = torch.zeros(q.shape[1], dtype=torch.bool, device=q.device)
        out[index[:seq]] = keys.repeat_interleave(block)
        return out

    row = {"ms": do_bench_ms(lambda: attend(qt, kt, vt, block_mask=build()[0])),
           "attention_ms": do_bench_ms(lambda: attend(qt, kt, vt, block_mask=mask)),
           "mask_ms": do_bench_ms(build), "density": count / nb,
           **token_recall(q, k, token_block, kept, heads_sampled), "tokens_cut": q.shape[1] - seq}
    if reference is not None:
        out = torch.empty_like(q)
        out[:, index[:seq]] = out_t.transpose(1, 2).to(q.dtype)
        if seq < q.shape[1]:  # the cut tokens, dense (untimed)
            rest = index[seq:]
            o, _ = attention_reference(q[:, rest], k, v)
            out[:, rest] = o.to(q.dtype)
        row.update(reference.errors(out))
    return row


def sparge_blocks() -> tuple[int, int]:
    """SpargeAttn's (query, key) block sizes: 64 x 128 on sm90, 128 x 64 elsewhere (its core.py)."""
    sm90 = torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)
    return (64, 128) if sm90 else (128, 64)


def _sparge(q, k, v, setting: float, mode: str, heads_sampled, reference: DenseRows | None = None):
    """SpargeAttn at `setting`: `mode` "topk" (its density per query block) or "cdf" (its CDF threshold)."""
    import spas_sage_attn as sparge
    from spas_sage_attn.utils import get_block_map_meansim_fuse_quant

    if mode == "topk":
        fn, kwargs, select = sparge.spas_sage2_attn_meansim_topk_cuda, {"topk": setting}, \
            dict(simthreshd1=-0.1, cdfthreshd=None, topk=setting)  # its defaults beside topk
    elif mode == "cdf":
        fn, kwargs, select = sparge.spas_sage2_attn_meansim_cuda, {"cdfthreshd": setting}, \
            dict(simthreshd1=0.6, cdfthreshd=setting, topk=None)
    else:
        raise ValueError(f"mode must be 'topk' or 'cdf', got {mode!r}")

    def call():
        return fn(q, k, v, tensor_layout="NHD", **kwargs)

    out, sparsity = fn(q, k, v, tensor_layout="NHD", return_sparsity=True, **kwargs)
    # its selection, as its call computes it (the block map its kernel's LUT comes from), for the recall
    blkq, blkk = sparge_blocks()
    qh, kh = (x.transpose(1, 2).contiguous() for x in (q, k))
    block_map = get_block_map_meansim_fuse_quant(qh, kh, kh.mean(dim=-2, keepdim=True), is_causal=False,
                                                 BLKQ=blkq, BLKK=blkk, return_lut=False, **select)[0]
    token_block = torch.arange(q.shape[1], device=q.device) // blkq

    def kept(h, b):
        return block_map[0, h, b].repeat_interleave(blkk)[:k.shape[1]]

    measured = token_recall(q, k, token_block, kept, heads_sampled)
    row = {"ms": do_bench_ms(call), "density": measured["key_density"], "reported_density": 1.0 - float(sparsity),
           "block_density": float(block_map.float().mean()), **measured, "setting": setting, "blocks": [blkq, blkk]}
    if reference is not None:
        row.update(reference.errors(out))
    return row


def compare(q, k, v, grid, densities=DENSITIES, heads_sampled: int = 6, methods=METHODS, sparge_cdf=SPARGE_CDF,
            dense: dict | None = None, match_recall: bool = False, log=print) -> dict:
    """Every method of `methods` on `[1, S, H, D]` video tokens on `grid`: rows of time, density,
    recall and output error; `dense`: {name: fn(q, k, v)} (default: the attention benchmark's
    baselines). vecdit also runs at `LEVELS`, the equal-error table's rows."""
    reference = DenseRows(q, k, v, heads_sampled)
    res = {"grid": list(grid), "video_tokens": q.shape[1], "heads": q.shape[2], "heads_sampled": heads_sampled,
           "rows_sampled": len(reference.ref), "rows": [], "dense": {}}

    def add(method, setting, fn):
        try:
            row = fn()
        except Exception as e:  # noqa: BLE001 - a peer that does not run here is reported, not fatal
            row = {"error_message": f"{type(e).__name__}: {str(e)[:300]}"}
        res["rows"].append({"method": method, "target_density": setting, **row})
        if "ms" in row:
            log(f"  {method} {setting}: {row['ms']:.2f} ms, density {row['density']:.3f}, "
                f"error {row.get('error', float('nan')):.4f} / L1 {row.get('error_l1', float('nan')):.4f}")
        else:
            log(f"  {method} {setting}: {row['error_message']}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return row

    if "dense" in methods:
        if dense is None:
            from .attention import dense_baselines

            dense = dense_baselines()
        for name, fn in dense.items():
            def run(fn=fn):
                ms = do_bench_ms(lambda: fn(q, k, v))
                return {"ms": ms, "density": 1.0, "recall": 1.0, **reference.errors(fn(q, k, v))}

            row = add(DENSE_LABELS.get(name, name), 1.0, run)
            if "ms" in row:  # the speed-ups' denominators and the old file's fields
                res["dense"][f"{name}_ms"], res["dense"][f"{name}_err"] = row["ms"], row["error"]
    sparse = sorted(set(densities) | (set(LEVELS) if "vecdit" in methods else set()), reverse=True)
    for density in sparse:
        if "vecdit" in methods:
            add(VECDIT, density, lambda: _vecdit(q, k, v, grid, density, (4, 4, 8), heads_sampled, reference))
        if density not in densities:
            continue
        if "vsa" in methods:
            row = add("VSA", density, lambda: _vsa(q, k, v, grid, density, heads_sampled, reference))
            if match_recall and "recall" in row:
                _matched(res, q, k, v, grid, "VSA", row, density, heads_sampled)
        if "flex" in methods:
            row = add("FlexAttention 128", density, lambda: _flex(q, k, v, grid, density, heads_sampled,
                                                                  reference=reference))
            if match_recall and "recall" in row:
                _matched(res, q, k, v, grid, "FlexAttention 128", row, density, heads_sampled)
        if "sparge" in methods:
            add("SpargeAttn top-k", density, lambda: _sparge(q, k, v, density, "topk", heads_sampled, reference))
    if "sparge" in methods:
        for threshold in sparge_cdf:
            add("SpargeAttn cdf", threshold, lambda: _sparge(q, k, v, threshold, "cdf", heads_sampled, reference))
    res["equal_error"] = equal_error(res["rows"], "error") + equal_error(res["rows"], "error_l1")
    return res


def _matched(res, q, k, v, grid, name, row, density, heads_sampled):
    """vecdit 4x4x8 at the density where it keeps the peer's recall (the earlier equal-quality rows)."""
    matched = matched_density(q, k, grid, (4, 4, 8), row["recall"], row["density"], heads_sampled)
    res["rows"].append({"method": f"vecdit 4x4x8 at {name.split()[0]}'s recall", "target_density": density,
                        "peer": name, "peer_recall": row["recall"], "peer_ms": row["ms"],
                        **_vecdit(q, k, v, grid, matched, (4, 4, 8), heads_sampled)})


def run_peers(shape: str, densities=DENSITIES, inputs: str = "structured", heads_sampled: int = 6, methods=METHODS,
              match_recall: bool = False) -> dict:
    from .attention import GRIDS, SHAPES, make_inputs

    video = SHAPES[shape]["video"]
    q, k, v = (x[:, :video].contiguous() for x in make_inputs(shape, inputs=inputs))
    print(f"[{shape}] {inputs} inputs: {video} video tokens, {q.shape[2]} heads", flush=True)
    res = compare(q, k, v, GRIDS[shape], densities, heads_sampled, methods, match_recall=match_recall,
                  log=lambda s: print(s, flush=True))
    return {"shape": shape, "inputs": inputs, **res}


def _f(x, fmt=".3f"):
    return "-" if x is None else format(x, fmt)


def peers_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# vecdit and its peers on {env['card']}", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['date']}. Video tokens only, bf16, head_dim 128, "
             "medians of do_bench in one process. `ms` = selection/mask + attention (+ VSA's layout permutations, "
             "SpargeAttn's own prediction and quantization); density = kept fraction of the keys; recall = attention "
             "mass kept by the method's own selection (fp64); error = mean over sampled query rows of "
             "|O - O_dense| / |O_dense| against fp32 attention over all keys, L1 = SpargeAttn's sum |O - O_dense| / "
             "sum |O_dense|, on the same rows for every method. vecdit is compensated as shipped.", ""]
    for r in results:
        d = r["dense"]
        lines += [f"## {r['shape']} ({r['inputs']} inputs), grid {r['grid']}, "
                  f"{r.get('rows_sampled', '?')} sampled rows",
                  "", ("" if "sage2_ms" in d else "SageAttention2 not built here. ") + "Every setting:", "",
                  "| method | setting | density | ms | x cuDNN | x Sage2 | recall | error | L1 error | detail |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for row in r["rows"]:
            if "ms" not in row:
                lines.append(f"| {row['method']} | {row['target_density']} | - | - | - | - | - | - | - | "
                             f"{row.get('error_message', '')} |")
                continue
            detail = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                      if k not in ("method", "target_density", "ms", "recall", "density", "peer", "peer_recall",
                                   "peer_ms", "error", "error_l1", "key_density")}
            lines.append(f"| {row['method']} | {row['target_density']:g} | {row['density']:.3f} | {row['ms']:.1f} | "
                         f"{_f(d['cudnn_ms'] / row['ms'] if 'cudnn_ms' in d else None, '.2f')} | "
                         f"{_f(d['sage2_ms'] / row['ms'] if 'sage2_ms' in d else None, '.2f')} | "
                         f"{_f(row.get('recall'))} | {_f(row.get('error'), '.4f')} | "
                         f"{_f(row.get('error_l1'), '.4f')} | "
                         f"{detail} |")
        for metric, title in (("error", "vecdit's error (mean row |O - O_dense| / |O_dense|)"),
                              ("error_l1", "SpargeAttn's L1 error")):
            table = [e for e in r.get("equal_error", []) if e["metric"] == metric]
            if not table:
                continue
            lines += ["", f"Speed at equal output error, by {title}: the fraction of each peer's time vecdit needs "
                      "(below 1: vecdit is faster); the peer's time interpolated on its time-vs-error curve:", "",
                      "| vecdit at | its error | its ms | peer | peer ms at that error | vecdit / peer time | how |",
                      "| --- | --- | --- | --- | --- | --- | --- |"]
            for e in table:
                if e["fraction"] is None:
                    frac = "not reached" + (f" (best {e['best_error']:.4f})" if e.get("best_error") is not None else "")
                else:
                    frac = (">= " if e["fraction_is_lower_bound"] else "") + f"{e['fraction']:.2f}"
                lines.append(f"| {e['level']:.0%} ({e['vecdit_density']:.3f}) | {e['vecdit_error']:.4f} | "
                             f"{e['vecdit_ms']:.1f} | {e['peer']} | {_f(e['peer_ms'], '.1f')} | {frac} | {e['how']} |")
        matched = [row for row in r["rows"] if "peer_ms" in row]
        if matched:
            lines += ["", "Speed at equal recall (vecdit 4x4x8 at the lowest density keeping the peer's recall):", "",
                      "| peer at density | peer recall | peer ms | vecdit density | vecdit recall | vecdit ms | "
                      "vecdit / peer time |",
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

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, r in zip(axes[0], results):
        for method in dict.fromkeys(row["method"] for row in r["rows"]):
            pts = sorted((row["ms"], row["error"]) for row in r["rows"]
                         if row["method"] == method and row.get("error") is not None and "ms" in row)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=method)
        ax.set(xlabel="ms (selection + attention)", ylabel="output error vs fp32 dense", yscale="log",
               title=f"{r['shape']} ({r['inputs']})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
