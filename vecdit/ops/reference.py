# Copyright 2026 The vecdit authors. Apache-2.0.
"""Plain PyTorch references of the ops: what the tests compare against, and the CPU path.

They compute in fp32 (attention) or fp64 (selection scores) and use explicit masks, so memory is
O(Sq * Sk) per (batch, head): meant for small shapes. The selection rule itself (`rule_keep`,
`budget_cuts`, `key_sample`) is defined here once; the kernels and the lab follow it.
"""
from __future__ import annotations

import functools
import math

import torch

from ._checks import check_threshold
from .sparse_format import WORD_KEYS, VectorSelection
from .tiles import QueryTiles

# keys sampled to place a row's budget cut: a rank among SAMPLE_KEYS scores instead of a sort of
# all Sk (exact top-k when Sk <= SAMPLE_KEYS; at 8192 the kept count's relative spread is about
# sqrt((1 - d) / (d * 8192)): 3% at d = 10%)
SAMPLE_KEYS = 8192


def attention_reference(q, k, v, key_mask=None, scale=None, compute_dtype=torch.float32):
    """Attention from an explicit boolean mask.

    Args:
        q, k, v: `[B, Sq, H, D]`, `[B, Sk, H, D]`, `[B, Sk, H, D]`.
        key_mask: bool, broadcastable to `[B, H, Sq, Sk]`; True = attend. None attends everything.

    Returns:
        (out `[B, Sq, H, D]` in `compute_dtype`, lse `[B, H, Sq]` fp32). Rows that attend nothing
        give zeros and lse = -inf, as the kernel does.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    qf, kf, vf = (t.to(compute_dtype).transpose(1, 2) for t in (q, k, v))
    logits = (qf @ kf.transpose(-1, -2)) * scale
    if key_mask is not None:
        logits = logits.masked_fill(~key_mask, -math.inf)
    lse = torch.logsumexp(logits, -1)
    probs = torch.exp(logits - torch.where(torch.isinf(lse), 0.0, lse)[..., None])
    out = (probs @ vf).transpose(1, 2)
    return out, lse.float()


def selection_key_mask(selection: VectorSelection, seq_q: int, num_keys: int, dense_range=(0, 0), token_block=None):
    """Bool `[B, H, Sq, Sk]` mask attended by the kernel for this selection and dense range: each
    query (token) row takes its block's keys; `token_block` (int64 `[Sq]`) defaults to the
    selection's query tiles' (raster without them)."""
    block_mask = selection.to_mask()
    pad = num_keys - selection.num_keys
    if pad:
        block_mask = torch.nn.functional.pad(block_mask, (0, pad))
    if token_block is None:
        tiles = selection.query_tiles if selection.query_tiles is not None else QueryTiles.raster()
        token_block = tiles.token_blocks(seq_q, block_mask.device)
    mask = block_mask[:, :, token_block.to(block_mask.device)]
    start, end = dense_range
    mask[..., start:end] = True
    return mask


def vec_sparse_attention_reference(q, k, v, selection, dense_range=(0, 0), scale=None, token_block=None,
                                   compensate=True):
    """Reference of `vector_sparse_attention`, one (batch, head) at a time; output in q's dtype.
    `compensate` (True, False or a mode of `compensation.COMPENSATION_MODES`): each 64-key group's
    dropped keys enter the softmax as extra columns (`compensation_logits_reference`)."""
    from .compensation import check_compensation_range, compensation_logits_reference, compensation_mode

    mode = compensation_mode(compensate)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32, device=q.device)
    mask = selection_key_mask(selection, q.shape[1], k.shape[1], dense_range, token_block)
    if mode is not None:
        check_compensation_range(selection.num_keys, *dense_range)
        if token_block is None:
            tiles = selection.query_tiles if selection.query_tiles is not None else QueryTiles.raster()
            token_block = tiles.token_blocks(q.shape[1], q.device)
        kept = selection.kept_per_word().view(selection.batch, selection.heads, selection.num_query_blocks, -1)
        extra, v_mean = compensation_logits_reference(q, k, v, kept, selection.num_keys, scale,
                                                      token_block.to(q.device), mode)
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            sl = (slice(b, b + 1), slice(None), slice(h, h + 1))
            if mode is None:
                o, l = attention_reference(q[sl], k[sl], v[sl], mask[b, h], scale)
                o, l = o[0, :, 0], l[0, 0]
            else:
                o, l = _attention_with_columns(q[b, :, h], k[b, :, h], v[b, :, h], mask[b, h], scale, extra[b, h],
                                               v_mean[b, h])
            out[b, :, h] = o.to(q.dtype)
            lse[b, h] = l
    return out, lse


def _attention_with_columns(q, k, v, key_mask, scale, extra_logits, extra_values):
    """fp32 attention of q `[S, D]` over the masked keys plus extra columns (`[S, G]` logits,
    `[G, D]` values): (out `[S, D]`, lse `[S]`); a row with no finite logit gets zeros, -inf."""
    logits = ((q.float() @ k.float().T) * scale).masked_fill(~key_mask, -math.inf)
    logits = torch.cat([logits, extra_logits.float()], -1)
    lse = torch.logsumexp(logits, -1)
    probs = torch.exp(logits - torch.where(torch.isinf(lse), 0.0, lse)[:, None])
    return probs @ torch.cat([v.float(), extra_values.float()]), lse


def pool_queries_reference(q, query_index=None, block_size: int = 64) -> torch.Tensor:
    """fp64 `[B, H, NQB, D]`: mean of each query block's members (tile order through `query_index`)."""
    seq = q.shape[1]
    order = q if query_index is None else q[:, query_index.long()]
    nqb = -(-seq // block_size)
    padded = torch.nn.functional.pad(order.double(), (0, 0, 0, 0, 0, nqb * block_size - seq))
    members = torch.full((nqb,), float(block_size), dtype=torch.float64, device=q.device)
    members[-1] = seq - (nqb - 1) * block_size
    pooled = padded.unflatten(1, (nqb, block_size)).sum(2) / members[None, :, None, None]
    return pooled.permute(0, 2, 1, 3)


def rule_query(q, scale, query_index=None, block_size: int = 64) -> torch.Tensor:
    """fp64 `[B, H, NQB, D]`: the selection rule's pooled query, each block's mean times `scale`,
    rounded to q's dtype as the kernels hold it (one dot instead of two in the kernels; the lab's
    proxy recall moves by at most 0.0001 at the real geometries, `lab compare --rule-dtype bf16`)."""
    return (pool_queries_reference(q, query_index, block_size) * scale).to(q.dtype).double()


def selection_scores(q, k, scale=None, query_tiles: QueryTiles | None = None):
    """fp64 `[B, H, NQB, Sk]` scores of the pooled queries against every key."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    tiles = query_tiles if query_tiles is not None else QueryTiles.raster()
    pooled = rule_query(q, scale, tiles.query_index(q.device), tiles.block_size)
    return pooled @ k.double().permute(0, 2, 3, 1)


@functools.cache
def _sample(num_keys: int, size: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randperm(num_keys, generator=g)[:size].sort().values.to(device)  # once per device, not per call


def key_sample(num_keys: int, device) -> torch.Tensor | None:
    """int64 indices of the fixed key sample that places budget cuts (None: all keys, Sk <= SAMPLE_KEYS).
    Random, not strided: a stride would alias with the grid's rows and miss a local head's peak."""
    return None if num_keys <= SAMPLE_KEYS else _sample(num_keys, SAMPLE_KEYS, torch.device(device))


# a row's index capacity under a budget: the budget plus this many standard deviations of the
# sampled cut's kept fraction (sqrt(p (1 - p) / SAMPLE_KEYS)), so buffers are sized on the host
CAPACITY_SIGMAS = 5.0


def row_capacity(num_keys: int, max_columns: int) -> int | None:
    """Index slots per row when a budget bounds the kept keys (None: no budget, count then fill).

    The budget cut keeps `max_columns` keys per row up to the sample's noise (exact below
    SAMPLE_KEYS keys, ties aside); the capacity adds CAPACITY_SIGMAS of it and one 64-key word, so
    the index buffer is sized without reading the counts back (no host sync). A row past it (about
    one in 10^6 at 5 sigma) keeps its first `capacity` keys in key order.
    """
    if not max_columns:
        return None
    if num_keys <= SAMPLE_KEYS:
        return min(num_keys, max_columns + WORD_KEYS)
    p = max_columns / num_keys
    spread = CAPACITY_SIGMAS * math.sqrt(p * (1 - p) / SAMPLE_KEYS) * num_keys
    return min(num_keys, max_columns + math.ceil(spread) + WORD_KEYS)


def budget_cuts(sample_scores: torch.Tensor, num_keys: int, max_columns: int, min_columns: int):
    """(lower, upper) per row from the scores of the key sample `[..., n]`.

    Keeping `s >= lower` keeps at most `max_columns * n / Sk` of the sample, `s >= upper` at least
    `min_columns * n / Sk`; each cut lies halfway between the two ranks it separates, so scores
    summed in another order (the kernels' fp32 accumulation) fall on the same side; +-inf: no budget.
    """
    n = sample_scores.shape[-1]
    inf = torch.full(sample_scores.shape[:-1], math.inf, dtype=sample_scores.dtype, device=sample_scores.device)
    lower, upper = -inf, inf
    cap, floor, keep_all = cut_ranks(n, num_keys, max_columns, min_columns)
    need = max(cap, floor) + 1 if (cap or floor) else 0
    if need:
        top = sample_scores.topk(need, -1).values
        if cap:
            lower = 0.5 * (top[..., cap - 1] + top[..., cap])
        if floor:
            upper = 0.5 * (top[..., floor - 1] + top[..., floor])
    if keep_all:
        upper = -inf
    return lower, upper


def cut_ranks(n: int, num_keys: int, max_columns: int, min_columns: int) -> tuple[int, int, bool]:
    """(cap, floor, keep_all): the sample ranks of the budget's lower and upper cuts (0: no cut),
    and whether the floor is every key."""
    cap = math.ceil(max_columns * n / num_keys) if max_columns and max_columns < num_keys else 0
    floor = math.ceil(min_columns * n / num_keys) if min_columns else 0
    keep_all = floor >= n
    return (cap if cap < n else 0), (floor if floor < n else 0), keep_all


def rule_keep(s: torch.Tensor, gap: torch.Tensor, running: bool, max_columns: int, min_columns: int) -> torch.Tensor:
    """The selection rule on scores `[B, H, NQB, Sk]` (gap `[H]`, inf = no min-p rule):
    keep j iff s_j >= min(max(m - gap, lower), upper), m the row max (`exact`) or the max over
    key tiles of 64 up to j's (`running`), lower/upper the budget cuts (`budget_cuts`)."""
    num_keys = s.shape[-1]
    gap = gap.to(s.dtype).to(s.device).view(1, -1, 1, 1)
    if running:
        tiles = math.ceil(num_keys / WORD_KEYS)
        padded = torch.nn.functional.pad(s, (0, tiles * WORD_KEYS - num_keys), value=-math.inf)
        tile_max = padded.unflatten(-1, (tiles, WORD_KEYS)).amax(-1).cummax(-1).values
        m = tile_max.repeat_interleave(WORD_KEYS, -1)[..., :num_keys]
    else:
        m = s.amax(-1, keepdim=True)
    cut = m - gap
    if max_columns or min_columns:
        sample = key_sample(num_keys, s.device)
        lower, upper = budget_cuts(s if sample is None else s[..., sample], num_keys, max_columns, min_columns)
        cut = torch.minimum(torch.maximum(cut, lower[..., None]), upper[..., None])
    return s >= cut


def selection_reference(q, k, gap, running, max_columns, min_columns, scale, query_index=None, block_size=64):
    """Bool `[B, H, NQB, Sk]` kept keys from fp64 scores (the ops' CPU path)."""
    pooled = rule_query(q, scale, query_index, block_size)
    return rule_keep(pooled @ k.double().permute(0, 2, 3, 1), gap, running, max_columns, min_columns)


def vector_selection_reference(
    q, k, threshold=0.05, *, mode="exact", max_columns=0, min_columns=0, max_density=None, scale=None,
    query_tiles: QueryTiles | None = None,
) -> VectorSelection:
    """The selection formula on dense fp64 scores (`rule_keep`); same arguments as `vector_selection`,
    plus `max_columns` (a count instead of `max_density`)."""
    if max_density is not None:
        max_columns = max(1, math.floor(max_density * k.shape[1]))
    gap = check_threshold(threshold, q.shape[2], "cpu")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    tiles = query_tiles if query_tiles is not None else QueryTiles.raster()
    keep = selection_reference(q, k, gap, mode == "running", max_columns, min(min_columns, k.shape[1]), scale,
                               tiles.query_index(q.device), tiles.block_size)
    return VectorSelection.from_mask(keep, query_tiles, row_capacity(k.shape[1], max_columns))


def segment_bounds_reference(column_index, column_offset, column_count, segment_keys: int, segments: int):
    """Reference of `segments.segment_bounds`: per row, the first position whose key reaches each bound."""
    rows = column_count.numel()
    bounds = torch.empty(rows, segments + 1, dtype=torch.int64, device=column_index.device)
    for r in range(rows):
        start, count = int(column_offset[r]), int(column_count[r])
        keys = column_index[start:start + count].long()
        prev = start
        bounds[r, 0] = start
        for z in range(1, segments):
            # sorted lists: entries below the bound; the running max keeps the bounds non-decreasing
            prev = max(prev, start + int(torch.searchsorted(keys, torch.tensor(z * segment_keys, device=keys.device))))
            bounds[r, z] = prev
        bounds[r, segments] = start + count
    return bounds


def merge_segments_reference(part, part_lse):
    """Reference of `segments.merge_segments` in fp32: softmax weights of the segments' lse."""
    lse = torch.logsumexp(part_lse.float(), 0)  # [B, H, S]
    weights = torch.exp(part_lse.float() - torch.where(torch.isinf(lse), 0.0, lse))  # -inf parts weigh 0
    out = (part.float() * weights.permute(0, 1, 3, 2)[..., None]).sum(0)
    return out, lse
