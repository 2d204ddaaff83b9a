# Copyright 2026 The vecdit authors. Apache-2.0.
"""Plain PyTorch references of the sparse attention, its key segments and its compensation: what
the tests compare the kernels against (and what `vector_sparse_attention` runs without Triton).

They compute in fp32 and use explicit masks, so memory is O(Sq * Sk) per (batch, head): meant for
small shapes.
"""
from __future__ import annotations

import math

import torch

from ..selection.sparse_format import WORD_KEYS, VectorSelection
from ..tiles import QueryTiles
from .compensation import check_compensation_range, compensation_mode, group_sizes, key_group_means


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
                                                      token_block.to(q.device), mode,
                                                      selection.to_mask() if mode == "dropped" else None)
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
    `[G, D]` values, or `[S, G, D]`: one value per row and column): (out `[S, D]`, lse `[S]`); a
    row with no finite logit gets zeros, -inf."""
    logits = ((q.float() @ k.float().T) * scale).masked_fill(~key_mask, -math.inf)
    logits = torch.cat([logits, extra_logits.float()], -1)
    lse = torch.logsumexp(logits, -1)
    probs = torch.exp(logits - torch.where(torch.isinf(lse), 0.0, lse)[:, None])
    if extra_values.dim() == 2:
        return probs @ torch.cat([v.float(), extra_values.float()]), lse
    n = k.shape[0]
    return probs[:, :n] @ v.float() + (probs[:, n:, None] * extra_values.float()).sum(1), lse


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


def compensation_logits_reference(q, k, v, kept, num_keys: int, scale: float, token_block, mode: str,
                                  kept_mask=None):
    """The compensation as extra softmax columns, fp32, one per 64-key group (the test oracle):
    (logits `[B, H, Sq, G]` = score + log(dropped), -inf where nothing is dropped; mean values
    `[B, H, G, D]`). `kept`: `[B, H, NQB, G]` kept keys per group; `token_block`: int64 `[Sq]`.
    "dropped" (pooled scores): the values are each query block's dropped keys' mean per group,
    `[B, H, Sq, G, D]` (zeros where nothing is dropped), from `kept_mask` (bool
    `[B, H, NQB, num_keys]`, the selection's `to_mask()`): exp(logit) * value = e_g * (the sum of the
    dropped values), the mode's formula."""
    k_mean, v_mean = key_group_means(k.float(), num_keys), key_group_means(v.float(), num_keys)
    qf = q.float().transpose(1, 2)  # [B, H, Sq, D]
    if mode == "dropped":
        if kept_mask is None:
            raise ValueError("the dropped mode's reference needs `kept_mask` (the selection's to_mask())")
        v_mean = _dropped_means_reference(v, kept_mask, num_keys)[:, :, token_block]
    if mode in ("pooled", "dropped"):
        nqb = kept.shape[2]
        sums = torch.zeros(*qf.shape[:2], nqb, qf.shape[-1], device=q.device).index_add_(2, token_block, qf)
        members = torch.bincount(token_block, minlength=nqb).clamp_min(1).float()
        scores = ((sums / members[:, None]) @ k_mean.transpose(-1, -2) * scale)[:, :, token_block]
    else:
        scores = qf @ k_mean.transpose(-1, -2) * scale
    dropped = (group_sizes(num_keys, q.device) - kept.float())[:, :, token_block]
    logits = torch.where(dropped > 0, scores + torch.log(dropped.clamp_min(1)), -math.inf)
    return logits, v_mean


def _dropped_means_reference(v, kept_mask, num_keys: int):
    """fp32 `[B, H, NQB, G, D]`: the mean value of each 64-key group's dropped keys per query block
    (the group's value sum less its kept keys', over the dropped count; zeros where none is dropped)."""
    groups = -(-num_keys // WORD_KEYS)
    pad = groups * WORD_KEYS - num_keys
    dropped = torch.nn.functional.pad((~kept_mask[..., :num_keys]).float(), (0, pad)).unflatten(-1, (groups, WORD_KEYS))
    vf = torch.nn.functional.pad(v[:, :num_keys].float(), (0, 0, 0, 0, 0, pad)).unflatten(1, (groups, WORD_KEYS))
    sums = torch.einsum("bhrgj,bgjhd->bhrgd", dropped, vf)
    count = dropped.sum(-1, keepdim=True)
    return sums / count.clamp_min(1)
