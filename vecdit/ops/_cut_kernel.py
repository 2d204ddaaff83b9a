# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: a row's budget cut, the midpoint between its r-th and (r+1)-th largest sampled score.

One program = one row of the sampled scores (at most SAMPLE_KEYS = 8192, held in registers). The
cut is searched over the scores' order-preserving int32 keys for a threshold t that exactly `rank`
scores reach: then the r-th largest is the smallest score at or above t and the (r+1)-th the
largest below it (no sort, no top-k buffer). Each round is one count over the row (a reduction
across the program: what the kernel's time goes to). The first guess is the row's mean plus
`z` standard deviations (`z` the normal quantile of the rank, from the host); then each round
interpolates the threshold linearly in score value between the bracket's ends, with the Illinois
rule (an end kept twice in a row counts half), so that a smooth distribution takes a few rounds;
after INTERPOLATED_ROUNDS the key range is halved, so the search ends within 16 + 32 rounds
whatever the scores. A score that repeats across the rank ends it with the bracket one key wide,
at that score. Same cut as `reference.budget_cuts` (which takes the ranks from `torch.topk`).
Until session 10 it was 32 halvings for every row (1.47 ms at HunyuanVideo-720p with 128-query
tiles); on normal, exponential, bimodal and Student-t(2) rows of 8192 at ranks 820 and 2048 the
search takes 6-11 rounds on average (a numpy replica, bench/NOTES.md). The keys stay int32 (the
bounds are int64 scalars): int64 vectors, and above all int64 division, made it 10x slower.
"""
import triton
import triton.language as tl


@triton.jit
def _key_value(key):
    """The score (fp32) of an order-preserving int32 key, for an int64 scalar key in int32 range."""
    bits = key.to(tl.int32)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.float32, bitcast=True)


INTERPOLATED_ROUNDS = tl.constexpr(16)


@triton.jit
def _key(v):
    bits = v.to(tl.int32, bitcast=True)
    # IEEE order as integer order: negative floats have their magnitude bits flipped
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)


@triton.jit
def budget_cut_kernel(SCORES, CUT, n, rank, z, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    valid = offs < n
    s = tl.load(SCORES + row * n + offs, mask=valid, other=float("-inf"))
    key = _key(s)
    # bracket: count(key >= lo) = c_lo >= rank > c_hi = count(key >= hi)
    lo = tl.min(key, 0).to(tl.int64)
    hi = tl.max(key, 0).to(tl.int64) + 1
    c_lo = tl.sum((key >= lo.to(tl.int32)).to(tl.int32), 0)
    c_hi = c_lo * 0
    # first guess: mean + z std of the row (NaN where a score is -inf: then it halves)
    sv = tl.where(valid, s, 0.0)
    mean = tl.sum(sv, 0) / n
    var = tl.maximum(tl.sum(tl.where(valid, sv * sv, 0.0), 0) / n - mean * mean, 0.0)
    guess = mean + z * tl.sqrt(var)
    w_lo = guess * 0 + 1.0  # Illinois weights of the bracket's ends
    w_hi = w_lo
    side = c_lo * 0  # which end moved last: 1 lo, 2 hi
    rounds = c_lo * 0
    go = (hi - lo > 1) & (c_lo != rank)
    while go:
        g_key = tl.minimum(tl.maximum(_key(guess).to(tl.int64), lo + 1), hi - 1)
        interpolate = (guess == guess) & (tl.abs(guess) < float("inf")) & (rounds < INTERPOLATED_ROUNDS)
        mid = tl.where(interpolate, g_key, lo + ((hi - lo) >> 1))
        c = tl.sum((key >= mid.to(tl.int32)).to(tl.int32), 0)
        enough = c >= rank
        lo = tl.where(enough, mid, lo)
        c_lo = tl.where(enough, c, c_lo)
        hi = tl.where(enough, hi, mid)
        c_hi = tl.where(enough, c_hi, c)
        moved = tl.where(enough, 1, 2)
        w_lo = tl.where(enough, 1.0, tl.where(side == 2, w_lo * 0.5, 1.0))
        w_hi = tl.where(enough, tl.where(side == 1, w_hi * 0.5, 1.0), 1.0)
        side = moved
        rounds += 1
        # next guess: linear in score value between the ends, weighted by their count errors
        v_lo = _key_value(lo)
        v_hi = _key_value(hi)
        a = (c_lo - rank).to(tl.float32) * w_lo
        b = (rank - c_hi).to(tl.float32) * w_hi
        guess = v_lo + (v_hi - v_lo) * (a / (a + b))
        go = (hi - lo > 1) & (c_lo != rank)
    # exactly `rank` keys reach lo, or the bracket is one key wide at the rank-th largest key
    first = tl.min(tl.where(key >= lo.to(tl.int32), s, float("inf")), 0)
    below = tl.max(tl.where(key < lo.to(tl.int32), s, float("-inf")), 0)
    second = tl.where(c_lo > rank, first, below)  # the rank-th score repeats past the rank
    tl.store(CUT + row, 0.5 * (first + second))
