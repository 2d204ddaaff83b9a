# Copyright 2026 The vecdit authors. Apache-2.0.
"""The sparse attention off the GPU kernels (CPU tensors, fp32, other head sizes), as one SDPA call.

Queries are put in block order and each (batch x head, query block) is one SDPA "head" whose keys
are the head's keys broadcast (a stride-0 view, no copy) and whose mask is the block's row of the
selection, broadcast over the block's queries: no [Sq, Sk] mask is built. At the tiny model's size
(2,304 tokens, 4 heads) the call costs about 1.2x a dense one. The dropped keys' compensation is
merged by log-sum-exp: per query tile (`pooled`) or from a second small call over the 64-key
group means (`query`). The plain reference (`reference.vec_sparse_attention_reference`) stays the
tests' oracle.
"""
from __future__ import annotations

import math

import torch

from .compensation import check_compensation_range, compensation_mode, group_sizes, key_group_means, pooled_part
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
    within rounding. q, k, v `[B, S, H, D]`; returns out (and lse `[B, H, S]` fp32)."""
    mode = compensation_mode(compensate)
    batch, seq_q, heads, dim = q.shape
    num_keys, nqb = k.shape[1], selection.num_query_blocks
    scale = dim ** -0.5 if scale is None else float(scale)
    if token_block is None:
        tiles = selection.query_tiles if selection.query_tiles is not None else QueryTiles.raster()
        token_block = tiles.token_blocks(seq_q, q.device)
    token_block = token_block.to(q.device)
    members = torch.bincount(token_block, minlength=nqb)
    block = int(members.max())
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
        k_mean, v_mean = key_group_means(k, selection.num_keys), key_group_means(v, selection.num_keys)
        if mode == "pooled":
            pooled = qb.float().sum(2) / members.clamp_min(1).float()[:, None]  # [B * H, NQB, D]
            part_out, part_lse = pooled_part(pooled * scale, k_mean, v_mean, kept, selection.num_keys)
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
