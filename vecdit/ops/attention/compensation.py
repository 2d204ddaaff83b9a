# Copyright 2026 The vecdit authors. Apache-2.0.
"""Compensation of the dropped keys: what a query block does not select still weighs in the softmax.

Top-k drops keys and renormalizes over the kept ones, so on broad heads the output drifts toward
the few kept values. Each group of 64 consecutive scored keys (one bitmask word) stands for its
dropped keys instead: with n the group's dropped count, mk / mv its mean key and mean value, the
group adds n * exp(q . mk * scale) * mv to the numerator and n * exp(q . mk * scale) to the
denominator. Modes:
  "query"   one score per query row (a 64-key-group attention: 1/64 of the dense FLOPs)
  "pooled"  one score row per query tile (the tile's mean query; about free)
  "dropped" pooled scores, but the dropped keys' own mean value instead of the whole group's: with
            e_g = exp(pooled_q . mk_g * scale), the numerator gets
            sum_g e_g * (sum of v over g's dropped keys) = sum_g e_g vsum_g - sum_{kept j} e_g(j) v_j,
            the denominator sum_g n_g e_g as in "pooled". The first sum is a per-tile part
            (`dropped_part`, merged in the attention kernel's epilogue); the second is folded into
            its P matrix (each kept key's probability minus its group's pooled weight, in the
            online softmax's frame: no extra MMA), read from a per-(tile, group) weight table.
            The whole group's mean value leaves an error floor on broad heads (the kept keys'
            values count twice) that this removes.
The group means come from the current call's K and V (reuse steps too); the dropped counts come
from the selection's per-word kept counts. Keys outside the scored range (HunyuanVideo's text in
`dense_range`) are never dropped and get none; a block that keeps all of a group's keys gets
nothing for it, and a block that keeps everything stays bit-equal to uncompensated attention.
"""
from __future__ import annotations

import math

import torch

from ..selection.sparse_format import WORD_KEYS

COMPENSATION_MODES = ("query", "pooled", "dropped")
# what `compensate=True` means: the lab's output error and the H200 cost chose it (bench/README.md)
DEFAULT_COMPENSATION = "pooled"
LOG2E = 1.4426950408889634
# scores of pooled compensation held at once (bounds the transient memory)
_POOLED_CHUNK_BYTES = 256 << 20


def compensation_mode(compensate) -> str | None:
    """`compensate` (True, False/None, or a mode name) -> the mode, or None for no compensation."""
    if compensate is None or compensate is False:
        return None
    if compensate is True:
        return DEFAULT_COMPENSATION
    if compensate not in COMPENSATION_MODES:
        raise ValueError(f"`compensate` must be True, False or one of {COMPENSATION_MODES}, got {compensate!r}")
    return compensate


def group_sizes(num_keys: int, device) -> torch.Tensor:
    """fp32 `[G]`: keys per 64-key group of `num_keys` scored keys (the last one may be short)."""
    groups = -(-num_keys // WORD_KEYS)
    sizes = torch.full((groups,), float(WORD_KEYS), device=device)
    sizes[-1] = num_keys - (groups - 1) * WORD_KEYS
    return sizes


def key_group_means(x: torch.Tensor, num_keys: int) -> torch.Tensor:
    """fp32 `[B, H, G, D]`: the mean of each group of 64 consecutive rows among the first
    `num_keys` of x `[B, Sk, H, D]` (any strides; summed in fp32 without an fp32 copy of x)."""
    return _key_group_reduce(x, num_keys, mean=True)


def key_group_sums(x: torch.Tensor, num_keys: int) -> torch.Tensor:
    """fp32 `[B, H, G, D]`: as `key_group_means`, the sums."""
    return _key_group_reduce(x, num_keys, mean=False)


def _key_group_reduce(x: torch.Tensor, num_keys: int, mean: bool) -> torch.Tensor:
    full = num_keys // WORD_KEYS
    parts = []
    if full:
        s = x[:, :full * WORD_KEYS].unflatten(1, (full, WORD_KEYS)).sum(2, dtype=torch.float32)
        parts.append(s / WORD_KEYS if mean else s)
    tail = num_keys - full * WORD_KEYS
    if tail:
        s = x[:, full * WORD_KEYS:num_keys].sum(1, keepdim=True, dtype=torch.float32)
        parts.append(s / tail if mean else s)
    means = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    return means.transpose(1, 2).contiguous()


def check_compensation_range(num_keys: int, dense_start: int, dense_end: int) -> None:
    """The scored keys `[0, num_keys)` hold no always-attended key (it would count as dropped)."""
    if dense_end > dense_start and dense_start < num_keys:
        raise ValueError(f"with compensation, `dense_range` ({dense_start}, {dense_end}) must lie after the selection's "
                         f"{num_keys} scored keys; pass compensate=False to attend it inside the scored range")


def pooled_part(pooled_q, k_mean, v_mean, kept, num_keys: int):
    """The pooled mode's compensation per query tile: (out fp32 `[rows, D]`, lse fp32 `[rows]`),
    from the tiles' pooled queries `[B * H, NQB, D]` (already times the scale), the group means
    `[B, H, G, D]` and the kept counts uint8 `[rows, G]`; a few heads at a time."""
    bh, nqb, dim = pooled_q.shape
    groups = k_mean.shape[2]
    km, vm = k_mean.reshape(bh, groups, dim), v_mean.reshape(bh, groups, dim)
    log_dropped = torch.log(group_sizes(num_keys, kept.device) - kept.view(bh, nqb, groups).float())
    out = torch.empty(bh * nqb, dim, dtype=torch.float32, device=pooled_q.device)
    lse = torch.empty(bh * nqb, dtype=torch.float32, device=pooled_q.device)
    step = max(1, _POOLED_CHUNK_BYTES // max(1, nqb * groups * 4))
    for h in range(0, bh, step):
        s = pooled_q[h:h + step].float() @ km[h:h + step].transpose(1, 2) + log_dropped[h:h + step]
        part_lse = torch.logsumexp(s, -1)
        p = torch.exp(s - torch.where(torch.isinf(part_lse), 0.0, part_lse)[..., None])
        out[h * nqb:(h + step) * nqb] = (p @ vm[h:h + step]).reshape(-1, dim)
        lse[h * nqb:(h + step) * nqb] = part_lse.reshape(-1)
    return out, lse


def dropped_part(pooled_q, k_mean, v_sum, kept, num_keys: int):
    """The dropped mode's per-tile part and the attention kernel's weight table, from the tiles'
    pooled queries `[B * H, NQB, D]` (already times the scale), the group means of K and sums of V
    `[B, H, G, D]` and the kept counts uint8 `[rows, G]`; a few heads at a time. Returns
      out fp32 `[rows, D]` = sum_g e_g vsum_g / sum_g n_g e_g and lse fp32 `[rows]` = log sum_g n_g e_g
          (natural log), over the groups with n_g > 0 dropped keys (none: zeros, -inf);
      weights fp32 `[rows, G]` = exp(s_g - max_g s_g) = e_g / e_max, 0 where n_g = 0;
      lmax fp32 `[rows]` = max_g s_g in log2 units (-inf where nothing is dropped),
    with s_g = pooled_q . mean_key_g (scaled) and e_g = exp(s_g). The kernel subtracts
    weights[g(j)] * 2^(lmax - m) from each kept key j's probability (m: the online softmax's max, log2)."""
    bh, nqb, dim = pooled_q.shape
    groups = k_mean.shape[2]
    km, vs = k_mean.reshape(bh, groups, dim), v_sum.reshape(bh, groups, dim)
    dropped = group_sizes(num_keys, kept.device) - kept.view(bh, nqb, groups).float()
    log_dropped, none = torch.log(dropped), dropped <= 0
    device = pooled_q.device
    out = torch.empty(bh * nqb, dim, dtype=torch.float32, device=device)
    lse = torch.empty(bh * nqb, dtype=torch.float32, device=device)
    weights = torch.empty(bh * nqb, groups, dtype=torch.float32, device=device)
    lmax = torch.empty(bh * nqb, dtype=torch.float32, device=device)
    step = max(1, _POOLED_CHUNK_BYTES // max(1, nqb * groups * 4))
    for h in range(0, bh, step):
        rows = slice(h * nqb, (h + step) * nqb)
        s = (pooled_q[h:h + step].float() @ km[h:h + step].transpose(1, 2)).masked_fill(none[h:h + step], -math.inf)
        part_lse = torch.logsumexp(s + log_dropped[h:h + step], -1)
        out[rows] = (torch.exp(s - _finite(part_lse)[..., None]) @ vs[h:h + step]).reshape(-1, dim)
        lse[rows] = part_lse.reshape(-1)
        s_max = s.amax(-1)
        weights[rows] = torch.exp(s - _finite(s_max)[..., None]).reshape(-1, groups)
        lmax[rows] = (s_max * LOG2E).reshape(-1)
    return out, lse, weights, lmax


def _finite(x):
    return torch.where(torch.isinf(x), 0.0, x)


def dropped_prepare_triton(q, k, v, kept, num_keys: int, scale: float, query_index, block_size: int):
    """The dropped mode's inputs to the attention kernel (`dropped_part`'s out, lse, weights, lmax),
    from the tiles' pooled queries (Triton pooling, as the selection's rule pools them)."""
    from ..selection.op import pool_queries_triton

    return dropped_part(pool_queries_triton(q, scale, query_index, block_size), key_group_means(k, num_keys),
                        key_group_sums(v, num_keys), kept, num_keys)


def compensate_triton(q, k, v, out, lse, kept, num_keys: int, scale: float, query_index, block_size: int,
                      mode: str, config: dict | None = None) -> None:
    """Merge the dropped keys' compensation into the attention's `out` `[B, S, H, D]` and `lse`
    `[B, H, S]` in place (Triton), modes "query" and "pooled" ("dropped" is merged by the attention
    kernel itself). `kept`: uint8 `[rows, G]` kept keys per 64-key group."""
    import triton

    from .._checks import QUERY_BLOCK, interpret_mode
    from ._compensate_kernel import compensate_kernel

    if mode not in ("query", "pooled"):
        raise ValueError(f"`compensate_triton` merges the query and pooled modes, got {mode!r}")
    batch, seq_q, heads, dim = q.shape
    k_mean, v_mean = key_group_means(k, num_keys), key_group_means(v, num_keys)
    groups = k_mean.shape[2]
    nqb = -(-seq_q // block_size)
    if mode == "pooled":
        from ..selection.op import pool_queries_triton

        part_out, part_lse = pooled_part(pool_queries_triton(q, scale, query_index, block_size), k_mean, v_mean,
                                         kept, num_keys)
    else:
        part_out = part_lse = lse  # unread
    cfg = dict(BLOCK_G=64, num_warps=4, num_stages=2, **(config or {}))
    compensate_kernel[(triton.cdiv(seq_q, QUERY_BLOCK), batch * heads)](
        q, k_mean, v_mean, kept, part_out, part_lse, out, lse,
        query_index if query_index is not None else kept, scale * 1.4426950408889634,
        *q.stride(), *out.stride(), heads, seq_q, nqb, groups, num_keys,
        HEAD_DIM=dim, BLOCK_M=QUERY_BLOCK, GROUP_KEYS=WORD_KEYS, UPCAST=interpret_mode(),
        INDEXED=query_index is not None, POOLED=mode == "pooled", PROGRAMS_PER_ROW=block_size // QUERY_BLOCK, **cfg)
