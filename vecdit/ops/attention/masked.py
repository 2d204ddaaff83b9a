# Copyright 2026 The vecdit authors. Apache-2.0.
"""The sparse attention off the GPU kernels (CPU tensors, fp32, other head sizes), as one SDPA call.

Queries are put in block order and each (batch x head, query block) is one SDPA "head" whose keys
are the head's keys broadcast (a stride-0 view, no copy) and whose mask is the block's row of the
selection, broadcast over the block's queries: no [Sq, Sk] mask is built. At the tiny model's size
(2,304 tokens, 4 heads) the call costs about 1.2x a dense one. The dropped keys' compensation is
merged by log-sum-exp: per query tile (`pooled`; `dropped`, whose part weighs each dropped key by
its group's pooled score) or from a second small call over the 64-key group means (`query`). The
plain reference (`reference.vec_sparse_attention_reference`) stays the tests' oracle.

Traceable by `torch.compile(fullgraph=True)`: no host read decides a shape (every query block but
the last holds the query tiles' `block_size` queries, so the padded block length is known).
"""
from __future__ import annotations

import math

import torch

from .compensation import check_compensation_range, compensation_mode, group_sizes, key_group_means, pooled_part
from ..selection.sparse_format import WORD_KEYS
from .reference import merge_segments_reference
from ..tiles import QueryTiles


def _attention(q, k, v, mask, scale):
    """(out, lse) of SDPA's CPU flash kernel (the public SDPA does not return the lse); q
    `[N, M, L, D]`, k/v `[N, M, S, D]` (broadcast views welcome), mask `[N, M, 1, S]` additive."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, attn_mask=mask,
                                                                         scale=scale)[:2]
    return out, lse


def masked_sparse_attention(q, k, v, selection, dense_range=(0, 0), scale=None, token_block=None,
                            compensate=True, return_lse=False):
    """`vector_sparse_attention` on the CPU: the same function as `vec_sparse_attention_reference`
    within rounding. q, k, v `[B, S, H, D]`; returns out (and lse `[B, H, S]` fp32). `token_block`
    (int64 `[S]`, default from the selection's query tiles): each token's query block, blocks of the
    tiles' `block_size` tokens (the last may be short)."""
    mode = compensation_mode(compensate)
    batch, seq_q, heads, dim = q.shape
    num_keys, nqb = k.shape[1], selection.num_query_blocks
    scale = dim ** -0.5 if scale is None else float(scale)
    tiles = selection.query_tiles if selection.query_tiles is not None else QueryTiles.raster()
    if token_block is None:
        token_block = tiles.token_blocks(seq_q, q.device)
    token_block = token_block.to(q.device)
    # queries per block without a host read (bincount's and max's sizes depend on the data)
    members = torch.zeros(nqb, dtype=torch.float32, device=q.device).index_add_(
        0, token_block, torch.ones(seq_q, dtype=torch.float32, device=q.device))
    block = min(tiles.block_size, seq_q)  # the longest block: the tiles' size (one short block: all tokens)
    order = torch.argsort(token_block, stable=True)  # tokens grouped by query block
    start, end = dense_range
    rows = batch * heads
    # queries in block order, the last block padded: [B * H, NQB, block, D]
    qb = torch.nn.functional.pad(q.index_select(1, order), (0, 0, 0, 0, 0, nqb * block - seq_q))
    qb = qb.transpose(1, 2).reshape(rows, nqb, block, dim)

    def broadcast(x):  # [B, S', H, D] -> [B * H, NQB, S', D], NQB a stride-0 view
        x = x.transpose(1, 2).reshape(rows, x.shape[1], dim)
        return x[:, None].expand(rows, nqb, x.shape[1], dim)

    bias = torch.full((batch, heads, nqb, num_keys), -math.inf, dtype=torch.float32, device=q.device)
    bias[..., :selection.num_keys].masked_fill_(selection.to_mask(), 0.0)
    bias[..., start:end] = 0.0
    bias = bias.view(rows, nqb, 1, num_keys)
    empty = torch.isinf(bias).all(-1, keepdim=True)  # SDPA gives NaN there; the kernel gives zeros
    out, lse = _attention(qb, broadcast(k), broadcast(v), bias.masked_fill(empty, 0.0), scale)
    out, lse = out.float().masked_fill(empty, 0.0), lse.masked_fill(empty[..., 0], -math.inf)
    if mode is not None:
        check_compensation_range(selection.num_keys, start, end)
        kept = selection.kept_per_word().to(q.device)  # [B * H * NQB, G]
        k_mean = key_group_means(k, selection.num_keys)
        v_mean = key_group_means(v, selection.num_keys) if mode != "dropped" else None
        if mode in ("pooled", "dropped"):
            pooled = qb.float().sum(2) / members.clamp_min(1)[:, None]  # [B * H, NQB, D]
            if mode == "pooled":
                part_out, part_lse = pooled_part(pooled * scale, k_mean, v_mean, kept, selection.num_keys)
            else:
                part_out, part_lse = _dropped_part(pooled * scale, k_mean, v, kept, torch.isinf(bias[:, :, 0]),
                                                   selection.num_keys)
            part_out = part_out.view(rows, nqb, 1, dim).expand(rows, nqb, block, dim)
            part_lse = part_lse.view(rows, nqb, 1).expand(rows, nqb, block)
        else:
            log_dropped = torch.log(group_sizes(selection.num_keys, q.device) - kept.float()).view(rows, nqb, 1, -1)
            none = torch.isinf(log_dropped).all(-1, keepdim=True)
            means = (x.to(q.dtype).view(rows, 1, -1, dim).expand(rows, nqb, -1, dim) for x in (k_mean, v_mean))
            part_out, part_lse = _attention(qb, *means, log_dropped.masked_fill(none, 0.0), scale)
            part_lse = part_lse.masked_fill(none[..., 0], -math.inf)
        # two parts merged by lse, as key segments are: [2, B * H, L, 1, D] and [2, B * H, 1, L]
        length = nqb * block
        out, lse = merge_segments_reference(torch.stack([out, part_out.float()]).view(2, rows, length, 1, dim),
                                            torch.stack([lse, part_lse]).view(2, rows, 1, length))
        out, lse = out.view(rows, nqb, block, dim), lse.view(rows, nqb, block)
    # back to token order
    out = out.reshape(batch, heads, nqb * block, dim)[:, :, :seq_q]
    lse = lse.reshape(batch, heads, nqb * block)[:, :, :seq_q]
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(seq_q, device=q.device)
    out = out.index_select(2, inverse).transpose(1, 2).to(q.dtype)
    return (out, lse.index_select(2, inverse)) if return_lse else out


def _dropped_part(pooled_q, k_mean, v, kept, not_attended, num_scored: int):
    """The dropped mode's part per query tile (out fp32 `[B * H * NQB, D]`, lse `[B * H * NQB]`):
    each dropped key j (`not_attended` `[B * H, NQB, Sk]` among the scored keys) weighs
    e_g(j) = exp(pooled_q . mean_key_g(j)), normalized by sum_g n_g e_g (as
    `compensation.dropped_part`, which the kernels split into a group-sum part and a kept-key term)."""
    rows, nqb, dim = pooled_q.shape
    groups = k_mean.shape[2]
    dropped = group_sizes(num_scored, pooled_q.device) - kept.view(rows, nqb, groups).float()
    s = (pooled_q @ k_mean.reshape(rows, groups, dim).transpose(1, 2)).masked_fill(dropped <= 0, -math.inf)
    lse = torch.logsumexp(s + torch.log(dropped), -1)  # [B * H, NQB]
    per_group = torch.exp(s - torch.where(torch.isinf(lse), 0.0, lse)[..., None])
    per_key = per_group.repeat_interleave(WORD_KEYS, -1)[..., :num_scored] * not_attended[..., :num_scored]
    values = v[:, :num_scored].transpose(1, 2).reshape(rows, num_scored, dim).float()
    return (per_key @ values).reshape(-1, dim), lse.reshape(-1)
