# Copyright 2026 The vecdit authors. Apache-2.0.
"""Key segments of the sparse attention: cut each row's list into key ranges, attend one range at a
time, merge the partial outputs by log-sum-exp.

At HunyuanVideo-720p the concurrent programs of one head gather from 61 MB of K/V, more than the
50 MB L2; with 4 segments the working set fits, and the Gluon kernel plus bounds and merge runs
0-13% faster than unsegmented in the same run, never slower (H100,
bench/DESIGN.md#segments).
Used by the Hopper kernel when one head's K/V exceed `SEGMENT_MIN_BYTES`; the cost is `segments`
partial outputs in the input dtype.
"""
from __future__ import annotations

import torch

from .._checks import use_triton

SEGMENT_MIN_BYTES = 48 << 20  # one head's K + V rows; below this they already fit L2
# by query rows per program, best at HunyuanVideo-720p: 64 rows 4 (of 2, 3, 4, 8); 128 rows (each
# gather feeds twice the rows) 2 (of 1, 2, 4: 10% 40.2 / 40.4 / 42.6 ms, 25% 95.1 / 92.7 / 94.2 ms;
# bench/DESIGN.md#segments)
SEGMENTS = {64: 4, 128: 2}


def auto_segments(k: torch.Tensor, rows_per_program: int = 64) -> int:
    """How many key segments the Hopper kernel uses for these keys: SEGMENTS[rows_per_program] or 1."""
    large = 2 * k.shape[1] * k.shape[3] * k.element_size() >= SEGMENT_MIN_BYTES
    return SEGMENTS[rows_per_program] if large else 1


def segment_bounds(column_index, column_offset, column_count, num_keys: int, segments: int) -> torch.Tensor:
    """int64 `[rows, segments + 1]`: segment z of row r is `column_index[b[r, z] : b[r, z + 1]]`, the
    entries with keys in `[z * ceil(num_keys / segments), (z + 1) * ...)` (lists ascending within a
    row, as `VectorSelection` keeps them). Whatever the order, the segments partition each row."""
    if segments < 1:
        raise ValueError(f"`segments` must be >= 1, got {segments}")
    count = column_count.reshape(-1)
    segment_keys = -(-num_keys // segments)
    if not use_triton(column_index):
        from .reference import segment_bounds_reference

        return segment_bounds_reference(column_index, column_offset, count, segment_keys, segments)
    import triton

    from ._segment_kernel import segment_bounds_kernel

    rows = count.numel()
    bounds = torch.empty(rows, segments + 1, dtype=torch.int64, device=column_index.device)
    block = 128
    segment_bounds_kernel[(triton.cdiv(rows, block),)](
        column_index, column_offset, count, bounds, rows, segment_keys,
        NUM_SEGMENTS=segments, SEARCH_STEPS=max(num_keys, 1).bit_length() + 1, BLOCK=block)
    return bounds


def merge_segments(part: torch.Tensor, part_lse: torch.Tensor, dtype: torch.dtype):
    """`part` `[n, B, S, H, D]`, `part_lse` `[n, B, H, S]` (natural log) -> (out `[B, S, H, D]` in
    `dtype`, lse `[B, H, S]` fp32); a row empty in every segment gets zeros and lse = -inf."""
    if not use_triton(part):
        from .reference import merge_segments_reference

        out, lse = merge_segments_reference(part, part_lse)
        return out.to(dtype), lse
    import triton

    from ._merge_kernel import merge_segments_kernel

    n, batch, seq, heads, dim = part.shape
    out = torch.empty(batch, seq, heads, dim, dtype=dtype, device=part.device)
    lse = torch.empty(batch, heads, seq, dtype=torch.float32, device=part.device)
    rows = batch * seq * heads
    block = 32
    merge_segments_kernel[(triton.cdiv(rows, block),)](
        part, part_lse, out, lse, rows, seq, heads, n, part.stride(0), part_lse.stride(0), HEAD_DIM=dim,
        BLOCK=block, num_warps=4)
    return out, lse
