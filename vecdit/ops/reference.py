# Copyright 2026 The vecdit authors. Apache-2.0.
"""Plain PyTorch references of the ops: what the tests compare against, and the CPU path.

They compute in fp32 (attention) or fp64 (selection scores) and use explicit masks, so memory is
O(Sq * Sk) per (batch, head): meant for small shapes.
"""
from __future__ import annotations

import math

import torch

from ._checks import QUERY_BLOCK, num_query_blocks
from .selection import RUNNING_TILE, VectorSelection, pool_queries


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


def selection_key_mask(selection: VectorSelection, seq_q: int, num_keys: int, dense_range=(0, 0)):
    """Bool `[B, H, Sq, Sk]` mask attended by the kernel for this selection and dense range."""
    block_mask = selection.to_mask()
    pad = num_keys - selection.num_keys
    if pad:
        block_mask = torch.nn.functional.pad(block_mask, (0, pad))
    mask = block_mask.repeat_interleave(QUERY_BLOCK, dim=2)[:, :, :seq_q]
    start, end = dense_range
    mask[..., start:end] = True
    return mask


def vec_sparse_attention_reference(q, k, v, selection, dense_range=(0, 0), scale=None):
    """Reference of `vector_sparse_attention`, one (batch, head) at a time; output in q's dtype."""
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[0], q.shape[2], q.shape[1], dtype=torch.float32, device=q.device)
    mask = selection_key_mask(selection, q.shape[1], k.shape[1], dense_range)
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            sl = (slice(b, b + 1), slice(None), slice(h, h + 1))
            o, l = attention_reference(q[sl], k[sl], v[sl], mask[b, h], scale)
            out[sl] = o.to(q.dtype)
            lse[b, h] = l[0, 0]
    return out, lse


def selection_scores(q, k, scale=None):
    """fp64 `[B, H, NQB, Sk]` scores of the pooled queries against every key."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    pooled = pool_queries(q, 1.0).double() * scale
    return pooled @ k.double().permute(0, 2, 3, 1)


def vector_selection_reference(
    q, k, threshold=None, *, gap=None, mode="exact", running=None, max_columns=0, min_columns=0,
    max_density=None, scale=None,
) -> VectorSelection:
    """The selection formula on dense fp64 scores.

    keep j  iff  s_j >= m - gap,  gap = -ln(threshold)  (per head),
    m = row max (`exact`) or max over key tiles of 64 up to j's tile (`running`);
    then at most `max_columns` (top scores) and at least `min_columns` (top scores) per row.
    """
    batch, seq_q, heads, _ = q.shape
    num_keys = k.shape[1]
    if gap is None:
        gap = -torch.log(torch.as_tensor(threshold, dtype=torch.float64)).expand(heads)
    gap = gap.double().to(q.device).view(1, heads, 1, 1)
    if running is None:
        running = mode == "running"
    if max_density is not None:
        max_columns = max(1, math.floor(max_density * num_keys))
    s = selection_scores(q, k, scale)
    if running:
        tiles = math.ceil(num_keys / RUNNING_TILE)
        padded = torch.nn.functional.pad(s, (0, tiles * RUNNING_TILE - num_keys), value=-math.inf)
        tile_max = padded.unflatten(-1, (tiles, RUNNING_TILE)).amax(-1).cummax(-1).values
        m = tile_max.repeat_interleave(RUNNING_TILE, -1)[..., :num_keys]
    else:
        m = s.amax(-1, keepdim=True)
    keep = s >= m - gap
    if max_columns or min_columns:
        count = keep.sum(-1, keepdim=True)
        order = s.argsort(-1, descending=True).argsort(-1)  # rank of each key by score, 0 = best
        if max_columns:
            keep = torch.where(count > max_columns, order < max_columns, keep)
        if min_columns:
            keep = torch.where(count < min_columns, order < min_columns, keep)
    assert num_query_blocks(seq_q) == keep.shape[2]
    return VectorSelection.from_mask(keep)


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
