# Copyright 2026 The vecdit authors. Apache-2.0.
"""Vector selection: for each query block, the key columns ("vertical vectors") to attend."""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Literal

import torch

from .._checks import check_qkv, check_threshold, interpret_mode, use_triton
from .rule import cut_ranks, key_sample, row_capacity, rule_select
from .sparse_format import WORD_KEYS, SelectionBitmask, VectorSelection, _expand_triton
from ..tiles import QueryTiles

SELECTION_MODES = ("exact", "running")
# key tile of the `running` max: each tile is tested against the max of all tiles up to it
RUNNING_TILE = WORD_KEYS
# launch settings of the selection kernel (one RUNNING_TILE of keys, one bitmask word, per step)
SELECT_CONFIG = dict(BLOCK_M=64, num_warps=4, num_stages=3)
# sampled scores held at once while finding the budget cuts (bounds the transient memory)
_BUDGET_CHUNK_BYTES = 256 << 20


def _check_budget(max_density, min_columns, num_keys) -> tuple[int, int]:
    """(max_columns, min_columns) per row; 0 max_columns means no cap."""
    max_columns = 0
    if max_density is not None:
        if not 0 < float(max_density) <= 1:
            raise ValueError(f"`max_density` must lie in (0, 1] or be None, got {max_density}")
        max_columns = max(1, math.floor(float(max_density) * num_keys))
    if int(min_columns) < 0:
        raise ValueError(f"`min_columns` must be >= 0, got {min_columns}")
    min_columns = min(int(min_columns), num_keys)
    if max_columns and min_columns > max_columns:
        raise ValueError(
            f"`min_columns`={min_columns} exceeds the cap floor(max_density * Sk)={max_columns}; lower one of them"
        )
    return max_columns, min_columns


def _check_tiles(query_tiles, seq_q: int) -> QueryTiles:
    if query_tiles is None:
        return QueryTiles.raster()
    if not isinstance(query_tiles, QueryTiles):
        raise ValueError(f"`query_tiles` must be a vecdit.ops.QueryTiles or None (raster), got {type(query_tiles).__name__}")
    query_tiles.check(seq_q)
    return query_tiles


def _selection_args(q, k, threshold, mode, max_density, min_columns, scale, query_tiles):
    """Checked arguments of a selection: (per-head gap, max_columns, min_columns, scale, tiles)."""
    check_qkv(q, k)
    if mode not in SELECTION_MODES:
        raise ValueError(f"`mode` must be one of {SELECTION_MODES}, got {mode!r}")
    if threshold is None and max_density is None:
        raise ValueError("`threshold=None` keeps the top `max_density` of each block's keys: set `max_density` in (0, 1]")
    tiles = _check_tiles(query_tiles, q.shape[1])
    gap = check_threshold(threshold, q.shape[2], q.device)
    max_columns, min_columns = _check_budget(max_density, min_columns, k.shape[1])
    return gap, max_columns, min_columns, q.shape[3] ** -0.5 if scale is None else float(scale), tiles


def vector_selection(
    q: torch.Tensor,
    k: torch.Tensor,
    threshold: float | torch.Tensor | None = 0.05,
    *,
    mode: Literal["exact", "running"] = "exact",
    max_density: float | None = None,
    min_columns: int = 0,
    scale: float | None = None,
    query_tiles: QueryTiles | None = None,
) -> VectorSelection:
    """Select key columns per query block: the method's min-p rule, a per-block budget, or both.

    Each block's queries are mean-pooled (summed in fp32), times `scale`, and rounded to q's dtype:
    q̄; key j gets the score s_j = q̄ · k_j (exact products, summed in fp32), and
    is kept if s_j >= m - gap with gap = -ln(threshold), i.e. p_j >= threshold * p_max, and if it
    is among the block's `max_density * Sk` best (the budget).

    Args:
        q (`torch.Tensor`): `[B, Sq, H, D]`, bf16 or fp16, any strides.
        k (`torch.Tensor`): `[B, Sk, H, D]`; slice it to the keys that should be scored (e.g. the
            video part of a joint sequence; always-attended keys go to the attention's `dense_range`).
        threshold (`float`, `[H]` tensor or None, defaults to 0.05): in (0, 1]; lower keeps more
            keys. None: no min-p rule, each block keeps its top `max_density` of the keys (top-k).
        mode (`str`, defaults to `"exact"`): `"exact"` uses the true row max (one extra pass over K);
            `"running"` is the original single-pass rule, with m the max over key tiles of 64 up to
            and including the key's tile, which keeps a superset biased toward early keys.
        max_density (`float`, *optional*): the per-block budget: keep at most about
            `floor(max_density * Sk)` keys per block, highest scores first. The cut is the budget's
            rank among the scores of a fixed sample of `SAMPLE_KEYS` keys (all keys when Sk is
            smaller: exact top-k), so no sort or bisection over all keys is needed; with sampling,
            counts vary by a few percent around the budget (unbiased on average).
        min_columns (`int`, defaults to 0): keep at least about this many keys per block (same cut).
        scale (`float`, *optional*): score scale, defaults to 1/sqrt(D).
        query_tiles (`QueryTiles`, *optional*): how queries form blocks; None is raster order
            (64 consecutive queries, the paper's blocks). Tiles are read through an index: no copy.

    Returns:
        `VectorSelection`, ragged, count then fill: no score matrix is stored. The kept keys are
        first written as a bitmask (Sk/8 bytes per query block, with per-word counts: Sk/16 bytes),
        then expanded into an index buffer of exactly the kept size; peak memory is the kept
        indices plus those Sk * 3/16 bytes per query block, at any sequence length.
    """
    gap, max_columns, min_columns, scale, tiles = _selection_args(q, k, threshold, mode, max_density, min_columns,
                                                                  scale, query_tiles)
    batch, seq_q, heads, _ = q.shape
    index, offset, count, word_count = torch.ops.vecdit.vec_select(q, k, gap, threshold is not None, mode == "running",
                                                                   max_columns, min_columns, scale,
                                                                   tiles.query_index(q.device), tiles.block_size)
    nqb = tiles.num_blocks(seq_q)
    return VectorSelection(index, offset, count.view(batch, heads, nqb), batch, heads, nqb, k.shape[1], query_tiles,
                           word_count)


def pool_queries_triton(q, scale, query_index, block_size) -> torch.Tensor:
    """`[B * H, num_blocks, D]` in q's dtype: each block's mean query times `scale`, summed in fp32
    and rounded once (the rule's pooled query; one read of q)."""
    import triton

    from ._pool_kernel import pool_queries_kernel

    batch, seq_q, heads, dim = q.shape
    nqb = triton.cdiv(seq_q, block_size)
    pooled = torch.empty(batch * heads, nqb, dim, dtype=torch.float32, device=q.device)
    pool_queries_kernel[(nqb, batch * heads)](
        q, query_index if query_index is not None else pooled, pooled, *q.stride(), heads, seq_q, nqb, scale,
        HEAD_DIM=dim, BLOCK_SIZE=block_size, INDEXED=query_index is not None, num_warps=4)
    # rounded by torch (to nearest even; Triton's interpreter truncates): a tiny [B * H, blocks, D] copy
    return pooled.to(q.dtype)


def sample_scores_triton(pooled, k, sample, head_start: int, heads: int) -> torch.Tensor:
    """fp32 `[B, heads, NQB, n]`: the pooled queries (`[B * H, NQB, D]`, k's dtype) of heads
    `head_start ..` against the keys `sample` (int64 `[n]`, or None: all Sk) of k `[B, Sk, H, D]`."""
    import triton

    from ._sample_scores_kernel import sample_scores_kernel

    batch, _, num_heads, dim = k.shape
    nqb, n = pooled.shape[1], (k.shape[1] if sample is None else sample.shape[0])
    out = torch.empty(batch, heads, nqb, n, dtype=torch.float32, device=k.device)
    block_m, block_n = 64, 128
    grid = (triton.cdiv(nqb, block_m), triton.cdiv(n, block_n), batch * heads)
    sample_scores_kernel[grid](pooled, k, k if sample is None else sample, out, *k.stride(), num_heads, head_start,
                               heads, nqb, n, HEAD_DIM=dim, BLOCK_M=block_m, BLOCK_N=block_n, SAMPLED=sample is not None,
                               UPCAST=interpret_mode(), num_warps=4)
    return out


def _budget_cuts_triton(pooled, k, max_columns, min_columns):
    """(lower, upper) fp32 `[rows]` from the pooled queries' scores against the key sample (scored
    as the mask pass scores, `sample_scores_triton`), a few heads at a time (their sampled scores
    are the only transient)."""
    batch, num_keys, heads, _ = k.shape
    sample = key_sample(num_keys, k.device)
    nqb, n = pooled.shape[1], (num_keys if sample is None else sample.shape[0])
    step = max(1, _BUDGET_CHUNK_BYTES // max(1, batch * nqb * n * 4))
    cap, floor, keep_all = cut_ranks(n, num_keys, max_columns, min_columns)
    lower = torch.full((batch, heads, nqb), -math.inf, dtype=torch.float32, device=k.device)
    upper = torch.full_like(lower, -math.inf if keep_all else math.inf)
    for h in range(0, heads, step):
        scores = sample_scores_triton(pooled, k, sample, h, min(step, heads - h))  # [B, h, nqb, n]
        for rank, cut in ((cap, lower), (floor, upper)):
            if rank:
                sample_cut(scores, rank, cut[:, h:h + step])
    return lower.reshape(-1), upper.reshape(-1)


def sample_cut(scores: torch.Tensor, rank: int, out: torch.Tensor, interpolate: bool = True) -> None:
    """`out[...]` = midpoint of each row's rank-th and (rank+1)-th largest of `scores` `[..., n]`
    (fp32, n <= 8192), as `budget_cuts` places it; one Triton program per row. `interpolate=False`:
    plain bisection of the key range (the benchmark's baseline)."""
    import triton

    from ._cut_kernel import budget_cut_kernel

    n = scores.shape[-1]
    rows = scores.numel() // n
    cut = torch.empty(rows, dtype=torch.float32, device=scores.device)
    # the search's first guess: where the rank-th largest of n normal scores would sit, in standard deviations
    z = NormalDist().inv_cdf(min(max(1 - rank / n, 1e-6), 1 - 1e-6))
    budget_cut_kernel[(rows,)](scores.contiguous(), cut, n, rank, z, BLOCK=triton.next_power_of_2(n),
                               INTERP=interpolate, num_warps=8 if n > 2048 else 4)
    out.copy_(cut.view(out.shape))


def _select_bitmask_triton(q, k, gap, minp, running, max_columns, min_columns, scale, query_index, block_size,
                           running_sum=False):
    """Pool, budget cuts, scoring passes: (bitmask int64 [rows, words], per word the kept count
    (uint8) or with `running_sum` their running sum along the row (int32: where each word's keys end
    in the row's list, what the expansion reads), kept count per row)."""
    import triton

    from ._select_kernel import PASS_MASK, PASS_STATS, vec_select_kernel

    batch, seq_q, heads, dim = q.shape
    num_keys = k.shape[1]
    pooled = pool_queries_triton(q, scale, query_index, block_size)
    nqb = pooled.shape[1]
    rows = batch * heads * nqb
    num_words = triton.cdiv(num_keys, RUNNING_TILE)  # one 64-bit word per key tile
    f32 = dict(dtype=torch.float32, device=q.device)
    if max_columns or min_columns:
        lower, upper = _budget_cuts_triton(pooled, k, max_columns, min_columns)
    else:
        lower, upper = torch.full((rows,), -math.inf, **f32), torch.full((rows,), math.inf, **f32)
    row_max = torch.zeros(rows, **f32)
    count = torch.empty(rows, dtype=torch.int32, device=q.device)
    # the bitmask is Sk/8 bytes per row: 1/8 of what int32 indices of all keys would take
    mask = torch.empty(rows, num_words, dtype=torch.int64, device=q.device)
    per_word = torch.empty(rows, num_words, dtype=torch.int32 if running_sum else torch.uint8, device=q.device)
    cfg = dict(HEAD_DIM=dim, UPCAST=interpret_mode(), **SELECT_CONFIG)
    grid = (triton.cdiv(nqb, cfg["BLOCK_M"]), batch * heads)

    def launch(pass_):
        vec_select_kernel[grid](
            pooled, k, gap, row_max, lower, upper, count, mask, per_word,
            k.stride(0), k.stride(1), k.stride(2), k.stride(3),
            heads, num_keys, nqb, num_words, PASS=pass_, RUNNING=running, RUNNING_SUM=running_sum, **cfg)

    # the exact min-p cut needs the row max first; without a threshold (gap = inf) it is moot
    if minp and not running:
        launch(PASS_STATS)
    launch(PASS_MASK)  # the kept keys as bits, their count per word (or its running sum) and per row
    return mask, per_word, count


def _select_triton(q, k, gap, minp, running, max_columns, min_columns, scale, query_index, block_size):
    mask, word_end, count = _select_bitmask_triton(q, k, gap, minp, running, max_columns, min_columns, scale,
                                                   query_index, block_size, running_sum=True)
    # kept keys per word, for the compensation: the running sum's steps (a row past its capacity,
    # about one in 10^6, keeps fewer keys than counted here: its last keys go uncompensated)
    word_count = torch.diff(word_end, dim=1, prepend=word_end.new_zeros(word_end.shape[0], 1)).to(torch.uint8)
    return (*_expand_triton(mask, word_end, count, row_capacity(k.shape[1], max_columns)), word_count)


def vector_selection_bitmask(
    q: torch.Tensor,
    k: torch.Tensor,
    threshold: float | torch.Tensor | None = 0.05,
    *,
    mode: Literal["exact", "running"] = "exact",
    max_density: float | None = None,
    min_columns: int = 0,
    scale: float | None = None,
    query_tiles: QueryTiles | None = None,
) -> SelectionBitmask:
    """`vector_selection`, stopped before the index lists: the compact form kept for reuse.

    Same arguments and the same kept keys; `.expand()` gives what `vector_selection` returns.
    """
    gap, max_columns, min_columns, scale, tiles = _selection_args(q, k, threshold, mode, max_density, min_columns,
                                                                  scale, query_tiles)
    batch, seq_q, heads, _ = q.shape
    num_keys = k.shape[1]
    nqb = tiles.num_blocks(seq_q)
    mask, word_count = torch.ops.vecdit.vec_select_bitmask(q, k, gap, threshold is not None, mode == "running",
                                                           max_columns, min_columns, scale,
                                                           tiles.query_index(q.device), tiles.block_size)
    return SelectionBitmask(mask, word_count, batch, heads, nqb, num_keys, query_tiles,
                            row_capacity(num_keys, max_columns))


@torch.library.custom_op("vecdit::vec_select_bitmask", mutates_args=())
def _vec_select_bitmask_op(
    q: torch.Tensor, k: torch.Tensor, gap: torch.Tensor, minp: bool, running: bool, max_columns: int,
    min_columns: int, scale: float, query_index: torch.Tensor | None, block_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(bitmask int64 `[rows, words]`, kept keys per word uint8 `[rows, words]`)."""
    if use_triton(q):
        mask, word_count, _ = _select_bitmask_triton(q, k, gap, minp, running, max_columns, min_columns, scale,
                                                     query_index, block_size)
        return mask, word_count
    keep = rule_select(q, k, gap, running, max_columns, min_columns, scale, query_index, block_size)
    bits = SelectionBitmask.from_selection(VectorSelection.from_mask(keep))
    return bits.mask, bits.word_count


@_vec_select_bitmask_op.register_fake
def _(q, k, gap, minp, running, max_columns, min_columns, scale, query_index, block_size):
    rows = q.shape[0] * q.shape[2] * (-(-q.shape[1] // block_size))
    words = -(-k.shape[1] // WORD_KEYS)
    return q.new_empty((rows, words), dtype=torch.int64), q.new_empty((rows, words), dtype=torch.uint8)


@torch.library.custom_op("vecdit::vec_select", mutates_args=())
def _vec_select_op(
    q: torch.Tensor, k: torch.Tensor, gap: torch.Tensor, minp: bool, running: bool, max_columns: int,
    min_columns: int, scale: float, query_index: torch.Tensor | None, block_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(column_index, column_offset, column_count, kept keys per 64-key word uint8 `[rows, words]`)."""
    if use_triton(q):
        return _select_triton(q, k, gap, minp, running, max_columns, min_columns, scale, query_index, block_size)
    sel = VectorSelection.from_mask(rule_select(q, k, gap, running, max_columns, min_columns, scale, query_index,
                                                block_size), None, row_capacity(k.shape[1], max_columns))
    return sel.column_index, sel.column_offset, sel.column_count.reshape(-1), sel.word_count


@_vec_select_op.register_fake
def _(q, k, gap, minp, running, max_columns, min_columns, scale, query_index, block_size):
    rows = q.shape[0] * q.shape[2] * (-(-q.shape[1] // block_size))
    capacity = row_capacity(k.shape[1], max_columns)
    # under a budget the size is known from the shapes: no data-dependent output (no graph break)
    total = rows * capacity if capacity is not None else torch.library.get_ctx().new_dynamic_size()
    return (q.new_empty((total,), dtype=torch.int32), q.new_empty((rows + 1,), dtype=torch.int64),
            q.new_empty((rows,), dtype=torch.int32), q.new_empty((rows, -(-k.shape[1] // WORD_KEYS)), dtype=torch.uint8))
