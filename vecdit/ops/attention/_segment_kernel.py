# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: where each row's selected-key list crosses the bounds of n key segments.

Why segments: concurrent programs of one head gather K/V rows from anywhere in the head's keys;
at HunyuanVideo-720p that is 61 MB per head, more than the 50 MB L2 (ncu; bench/DESIGN.md#segments).
Cutting every list into key ranges and running one range at a time keeps the working set in L2.
"""
import triton
import triton.language as tl


@triton.jit
def segment_bounds_kernel(COLUMN_INDEX, COLUMN_OFFSET, COLUMN_COUNT, BOUNDS, rows, segment_keys,
                          NUM_SEGMENTS: tl.constexpr, SEARCH_STEPS: tl.constexpr, BLOCK: tl.constexpr):
    # BOUNDS [rows, NUM_SEGMENTS + 1] int64: segment z of row r is column_index[BOUNDS[r, z]:BOUNDS[r, z + 1]].
    # A binary search per bound, clamped to be non-decreasing: the segments always partition the
    # row's list (each entry in exactly one segment), sorted or not; sorted lists also split by key.
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = r < rows
    start = tl.load(COLUMN_OFFSET + r, mask=ok, other=0)
    end = start + tl.load(COLUMN_COUNT + r, mask=ok, other=0)
    out = BOUNDS + r.to(tl.int64) * (NUM_SEGMENTS + 1)
    tl.store(out, start, mask=ok)
    prev = start
    for z in tl.static_range(1, NUM_SEGMENTS):
        target = z * segment_keys
        lo = start
        hi = end
        for _ in tl.static_range(SEARCH_STEPS):  # first position whose key >= target
            live = lo < hi
            mid = (lo + hi) // 2
            key = tl.load(COLUMN_INDEX + mid, mask=ok & live, other=0)
            right = live & (key < target)
            lo = tl.where(right, mid + 1, lo)
            hi = tl.where(live & ~right, mid, hi)
        prev = tl.maximum(prev, lo)
        tl.store(out + z, prev, mask=ok)
    tl.store(out + NUM_SEGMENTS, end, mask=ok)
