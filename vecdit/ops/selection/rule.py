# Copyright 2026 The vecdit authors. Apache-2.0.
"""The selection rule: what the product's selection computes, defined once.

A query block's pooled query (`rule_query`) scores every key; `rule_keep` keeps key j iff its score
clears the min-p cut, clamped between the budget's cuts (`budget_cuts`), which are ranks among a
fixed key sample (`key_sample`, `cut_ranks`); `row_capacity` sizes the index buffer a budget
needs. The Triton path (`op.py`) places the same cuts; `rule_select` is the selection's CPU path
(fp64), and the lab scores its masks through `rule_keep`.
"""
from __future__ import annotations

import functools
import math

import torch

from .sparse_format import WORD_KEYS

# keys sampled to place a row's budget cut: a rank among SAMPLE_KEYS scores instead of a sort of
# all Sk (exact top-k when Sk <= SAMPLE_KEYS; at 8192 the kept count's relative spread is about
# sqrt((1 - d) / (d * 8192)): 3% at d = 10%)
SAMPLE_KEYS = 8192


def pool_queries(q, query_index=None, block_size: int = 64) -> torch.Tensor:
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
    return (pool_queries(q, query_index, block_size) * scale).to(q.dtype).double()


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


def rule_scores(q, k, scale, query_index=None, block_size: int = 64) -> torch.Tensor:
    """fp64 `[B, H, NQB, Sk]`: the pooled queries' scores against every key."""
    return rule_query(q, scale, query_index, block_size) @ k.double().permute(0, 2, 3, 1)


def rule_select(q, k, gap, running, max_columns, min_columns, scale, query_index=None, block_size=64):
    """Bool `[B, H, NQB, Sk]` kept keys from fp64 scores (the selection's CPU path)."""
    return rule_keep(rule_scores(q, k, scale, query_index, block_size), gap, running, max_columns, min_columns)
