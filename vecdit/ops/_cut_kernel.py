# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: a row's budget cut, the midpoint between its r-th and (r+1)-th largest sampled score.

One program = one row of the sampled scores (at most SAMPLE_KEYS = 8192, held in registers). The
r-th largest is found by bisection over the scores' order-preserving int32 keys: 32 halvings of
the int range, each a count over the row, give it exactly (no sort, no top-k buffer); the
(r+1)-th is the largest score below it, or the same value when it repeats. Same cut as
`reference.budget_cuts` (which takes them from `torch.topk`). The keys stay int32 (the bounds
are int64 scalars): int64 vectors, and above all int64 division, made it 10x slower.
"""
import triton
import triton.language as tl


@triton.jit
def budget_cut_kernel(SCORES, CUT, n, rank, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    s = tl.load(SCORES + row * n + offs, mask=offs < n, other=float("-inf"))
    bits = s.to(tl.int32, bitcast=True)
    # IEEE order as integer order: negative floats have their magnitude bits flipped
    key = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    # invariant: count(key >= lo) >= rank > count(key >= hi)
    lo = tl.min(key, 0).to(tl.int64)
    hi = tl.max(key, 0).to(tl.int64) + 1
    for _ in tl.static_range(32):
        mid = lo + ((hi - lo) >> 1)  # in [lo, hi): fits int32
        enough = tl.sum((key >= mid.to(tl.int32)).to(tl.int32), 0) >= rank
        lo = tl.where(enough, mid, lo)
        hi = tl.where(enough, hi, mid)
    top = lo.to(tl.int32)  # the key of the rank-th largest score
    first = tl.max(tl.where(key <= top, s, float("-inf")), 0)
    repeats = tl.sum((key >= top).to(tl.int32), 0) > rank
    below = tl.max(tl.where(key < top, s, float("-inf")), 0)
    second = tl.where(repeats, first, below)
    tl.store(CUT + row, 0.5 * (first + second))
