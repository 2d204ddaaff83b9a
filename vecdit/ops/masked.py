# Copyright 2026 The vecdit authors. Apache-2.0.
"""The sparse attention off the GPU kernels (CPU tensors, fp32, other head sizes): the selection as
an additive mask of `scaled_dot_product_attention`, a few heads per call, the dropped keys'
compensation as extra key columns. At the tiny model's 2,304 tokens a masked SDPA call costs about
what a dense one does, where the plain reference (`reference.vec_sparse_attention_reference`, the
tests' oracle) loops over heads with explicit fp32 probabilities.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .compensation import check_compensation_range, compensation_mode, group_sizes, key_group_means
from .tiles import QueryTiles

# (batch x heads) per SDPA call: bounds the additive mask, [heads, Sq, Sk + groups] in q's dtype
HEAD_BLOCK = 4


def masked_sparse_attention(q, k, v, selection, dense_range=(0, 0), scale=None, token_block=None,
                            compensate=True) -> torch.Tensor:
    """`vector_sparse_attention`'s output (no lse) through SDPA with the selection as a mask: the
    same function as `vec_sparse_attention_reference` within rounding. q, k, v `[B, S, H, D]`."""
    mode = compensation_mode(compensate)
    batch, seq_q, heads, dim = q.shape
    num_keys = k.shape[1]
    scale = dim ** -0.5 if scale is None else scale
    if token_block is None:
        tiles = selection.query_tiles if selection.query_tiles is not None else QueryTiles.raster()
        token_block = tiles.token_blocks(seq_q, q.device)
    token_block = token_block.to(q.device)
    start, end = dense_range
    # per query block: 0 where attended, -inf elsewhere; gathered once per token in each head block
    keep = selection.to_mask()
    block_bias = torch.full((batch, heads, selection.num_query_blocks, num_keys), -math.inf, dtype=q.dtype,
                            device=q.device)
    block_bias[..., :selection.num_keys].masked_fill_(keep, 0.0)
    block_bias[..., start:end] = 0.0
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, H, S, D] views
    if mode is not None:
        check_compensation_range(selection.num_keys, start, end)
        kept = selection.kept_per_word().view(batch, heads, selection.num_query_blocks, -1).to(q.device)
        log_dropped = torch.log(group_sizes(selection.num_keys, q.device) - kept.float())  # -inf: nothing dropped
        k_mean32 = key_group_means(k, selection.num_keys)
        kt = torch.cat([kt, k_mean32.to(q.dtype)], 2)
        vt = torch.cat([vt, key_group_means(v, selection.num_keys).to(q.dtype)], 2)
        block_bias = torch.cat([block_bias, log_dropped.to(q.dtype)], -1)
        if mode == "pooled":  # SDPA scores q_i . mean_key; the bias moves it to the tile's mean query
            members = torch.bincount(token_block, minlength=selection.num_query_blocks).clamp_min(1).to(torch.float32)
            pooled = torch.zeros(batch, heads, selection.num_query_blocks, dim, device=q.device).index_add_(
                2, token_block, qt.float()) / members[:, None]
    # a row with no finite score would give NaN in SDPA; the kernel gives zeros there
    empty = torch.isinf(block_bias).all(-1)  # [B, H, NQB]
    block_bias.masked_fill_(empty[..., None], 0.0)
    out = torch.empty_like(qt)
    for first in range(0, heads, HEAD_BLOCK):
        hs = slice(first, first + HEAD_BLOCK)
        bias = block_bias[:, hs].index_select(2, token_block)  # [B, h, Sq, Sk (+ G)]
        if mode == "pooled":
            groups = k_mean32.shape[2]
            delta = (pooled[:, hs].index_select(2, token_block) - qt[:, hs].float()) @ k_mean32[:, hs].transpose(-1, -2) * scale
            bias[..., -groups:] += delta.to(q.dtype)
        o = F.scaled_dot_product_attention(qt[:, hs], kt[:, hs], vt[:, hs], attn_mask=bias, scale=scale)
        out[:, hs] = o.masked_fill(empty[:, hs].index_select(2, token_block)[..., None], 0.0)
    return out.transpose(1, 2)
