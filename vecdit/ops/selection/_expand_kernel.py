# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: expand per-row key bitmasks into ascending index lists.

One program = one row (batch, head, query block) and BLOCK_W bitmask words, taken one word at a
time: the word's 64 bits lie across the lanes (one warp, two bits a lane), each bit's place in the row is where the
word's keys start plus the popcount of the word's bits below it, so each store instruction writes
one contiguous run of the row's list. Where each word's keys end in the row comes from the
inclusive prefix of the per-word counts (the mask pass writes it), so programs are independent.
(A [words, 64] tile was slower: Triton laid its lanes along the words, the only contiguous loads,
and every store scattered over 16 words' runs.) The kernel is bound by instruction issue (one
word's work whatever its bits), so one warp, not two, shares each word's scalar work.
"""
import triton
import triton.language as tl


@triton.jit
def _popcount64(x, INTERPRET: tl.constexpr):
    """Set bits of each int64 as int32: one `popc.b64` on the GPU; SWAR under the interpreter."""
    if INTERPRET:
        u = x.to(tl.uint64, bitcast=True)
        u = u - ((u >> 1) & 0x5555555555555555)
        u = (u & 0x3333333333333333) + ((u >> 2) & 0x3333333333333333)
        u = (u + (u >> 4)) & 0x0F0F0F0F0F0F0F0F
        return ((u * 0x0101010101010101) >> 56).to(tl.int32)
    else:
        return tl.inline_asm_elementwise("popc.b64 $0, $1;", "=r,l", [x], dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def expand_bitmask_kernel(
    MASK, WORD_END, COLUMN_OFFSET, COLUMN_INDEX,
    num_words, row_capacity,
    BLOCK_W: tl.constexpr, CAPPED: tl.constexpr, INTERPRET: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    w0 = tl.program_id(1) * BLOCK_W
    bit = tl.arange(0, 64)
    # bits strictly below each lane's own: 2^bit - 1 (bit 63: 0x7FFF..., as the int64 wraps)
    below = (tl.full((64,), 1, tl.int64) << bit.to(tl.int64)) - 1
    out = COLUMN_INDEX + tl.load(COLUMN_OFFSET + row)
    for i in tl.static_range(BLOCK_W):  # unrolled: the words' loads are independent and issue together
        w = w0 + i
        ok = w < num_words  # a word past the row's end reads as 0: no bits, no stores
        word = tl.load(MASK + row * num_words + w, mask=ok, other=0)
        end = tl.load(WORD_END + row * num_words + w, mask=ok, other=0)
        if word != 0:  # a uniform branch: an empty word costs its loads only (on the lab's proxy 92-100% hold a key)
            keep = ((word >> bit) & 1) != 0  # & 1 makes the arithmetic shift's sign moot
            place = end - _popcount64(word, INTERPRET) + _popcount64(word & below, INTERPRET)
            if CAPPED:  # fixed slots per row: the row's first `row_capacity` keys
                keep = keep & (place < row_capacity)
            tl.store(out + place, w * 64 + bit, mask=keep)
