# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: a row's budget cut, the midpoint between its r-th and (r+1)-th largest sampled score.

One program = one row of the sampled scores (at most SAMPLE_KEYS = 8192, held in registers). The
search runs over the scores' order-preserving int32 keys with the bracket invariant
count(key >= lo) >= rank > count(key >= hi); each round is one count over the row. Instead of 32
plain halvings it guesses first from the row's mean and spread (`z`, the normal quantile of the
rank, comes from the host), then interpolates in score value between the bracket's ends with the
Illinois rule (the kept end's weight halves when one end is kept twice), and halves the key range
only after INTERP_ROUNDS rounds, so no row takes more than INTERP_ROUNDS + 32. It stops as soon as a
threshold leaves exactly `rank` scores at or above it: the rank-th largest is then the smallest of
those, the (r+1)-th the largest below. Same cut as `rule.budget_cuts` (from `torch.topk`).
The keys stay int32 (bounds are int64 scalars): int64 vectors, and int64 division, were 10x slower.
"""
import triton
import triton.language as tl

INTERP_ROUNDS = tl.constexpr(16)


@triton.jit
def _key(x):  # IEEE order as integer order: negative floats have their magnitude bits flipped
    bits = x.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@triton.jit
def budget_cut_kernel(SCORES, CUT, n, rank, z, BLOCK: tl.constexpr, INTERP: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    valid = offs < n
    s = tl.load(SCORES + row * n + offs, mask=valid, other=float("-inf"))
    key = _key(s)
    lo_v = tl.min(tl.where(valid, s, float("inf")), 0)  # -inf where the row has masked keys
    hi_v = tl.max(s, 0)
    lo = _key(lo_v).to(tl.int64)
    hi = _key(hi_v).to(tl.int64) + 1
    c_lo = tl.sum((key >= lo.to(tl.int32)).to(tl.int32), 0)  # n, unless rows hold -inf (masked keys)
    # f(t) = count(s >= t) - rank falls with t; the bracket's weights are f at its ends (Illinois);
    # nothing reaches hi (count 0)
    f_lo = (c_lo - rank).to(tl.float32)
    f_hi = (c_lo * 0 - rank).to(tl.float32)
    is_finite = valid & (s > float("-inf"))
    num_finite = tl.maximum(tl.sum(is_finite.to(tl.int32), 0), 1).to(tl.float32)
    m = tl.sum(tl.where(is_finite, s, 0.0), 0) / num_finite
    d = tl.where(is_finite, s - m, 0.0)
    guess = m + z * tl.sqrt(tl.sum(d * d, 0) / num_finite)
    found = c_lo == rank
    side = tl.full((), 0, tl.int32)  # which end the last round moved: 1 = lo, -1 = hi
    rounds = tl.full((), 0, tl.int32)
    while (hi - lo > 1) & (found == 0):
        if rounds == 0:
            t = guess
        else:
            t = lo_v + (hi_v - lo_v) * (f_lo / (f_lo - f_hi))
        interp = _key(t).to(tl.int64)
        halve = lo + ((hi - lo) >> 1)
        # interpolation needs finite ends (a row with masked keys starts from -inf: halve until it moves)
        use_interp = (rounds < INTERP_ROUNDS) & (INTERP != 0) & (t == t) & (lo_v > float("-inf"))
        mid = tl.where(use_interp, tl.minimum(tl.maximum(interp, lo + 1), hi - 1), halve)
        c = tl.sum((key >= mid.to(tl.int32)).to(tl.int32), 0)
        # the score value at key `mid` (the inverse of _key)
        mb = mid.to(tl.int32)
        mid_v = tl.where(mb < 0, mb ^ 0x7FFFFFFF, mb).to(tl.float32, bitcast=True)
        found = c == rank
        up = c >= rank
        if up:
            lo, lo_v, c_lo, f_lo = mid, mid_v, c, (c - rank).to(tl.float32)
            f_hi = tl.where(side == 1, f_hi * 0.5, f_hi)
            side = 1
        else:
            hi, hi_v, f_hi = mid, mid_v, (c - rank).to(tl.float32)
            f_lo = tl.where(side == -1, f_lo * 0.5, f_lo)
            side = -1
        rounds += 1
    # count(key >= lo) >= rank: exactly rank when found, else lo is the rank-th largest's own key
    first = tl.min(tl.where(key >= lo.to(tl.int32), s, float("inf")), 0)
    repeats = c_lo > rank
    below = tl.max(tl.where(key < lo.to(tl.int32), s, float("-inf")), 0)
    second = tl.where(repeats, first, below)
    tl.store(CUT + row, 0.5 * (first + second))
