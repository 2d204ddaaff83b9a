# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: expand per-row key bitmasks into ascending index lists.

One program = one row (batch, head, query block) and BLOCK_W bitmask words, taken one word at a
time with its 64 bits across the lanes (2 warps, one bit each): a word's kept keys land in
consecutive positions, so each store instruction writes one contiguous run. Where each word's keys
end comes from the running sum of the per-word counts (the selection kernel writes it), so
programs are independent: no loop carries a running position; a kept bit's place is that end less
the kept bits at or above it (one popcount).

Until session 10 the program held BLOCK_W words x 64 bits as one tile, which Triton laid out with
the lanes along the words (the only contiguous loads), so each store instruction scattered over
16 words' runs, and a bit's place took a cumulative sum across lanes (about 40 instructions per
bit): 3.3-3.5 ms at HunyuanVideo-720p with 128-query tiles (2.65 G bits). A popcount in that
tile layout was faster at 10% density and slower at 25% (bench/NOTES.md, session 10).
"""
import triton
import triton.language as tl


@triton.jit
def _popc64(x, INTERPRET: tl.constexpr):
    """Set bits of each int64, int32 (the PTX instruction; a SWAR count in Triton's CPU interpreter)."""
    if INTERPRET:
        x = x - ((x >> 1) & 0x5555555555555555)  # the mask drops the arithmetic shift's sign bits
        x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
        return ((x * 0x0101010101010101) >> 56).to(tl.int32)  # top byte <= 64: never negative
    else:
        return tl.inline_asm_elementwise("popc.b64 $0, $1;", "=r,l", [x], dtype=tl.int32, is_pure=True, pack=1)


@triton.jit
def expand_bitmask_kernel(
    MASK, WORD_END, COLUMN_OFFSET, COLUMN_INDEX,
    num_words, row_capacity,
    BLOCK_W: tl.constexpr, CAPPED: tl.constexpr, INTERPRET: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    bit = tl.arange(0, 64)
    one = tl.full([64], 1, tl.int64) << bit.to(tl.int64)  # bit 63: the sign bit, still a single set bit
    at_or_above = ~(one - 1)
    out = COLUMN_INDEX + tl.load(COLUMN_OFFSET + row)
    words = MASK + row * num_words
    ends = WORD_END + row * num_words
    for i in tl.static_range(BLOCK_W):
        w = tl.program_id(1) * BLOCK_W + i + bit * 0  # the same word in every lane
        ok = w < num_words
        word = tl.load(words + w, mask=ok, other=0)
        end = tl.load(ends + w, mask=ok, other=0)  # where the word's kept keys end in the row
        rank = end - _popc64(word & at_or_above, INTERPRET)  # 0-based place in the row of a kept bit
        store = (word & one) != 0
        if CAPPED:  # fixed slots per row: the row's first `row_capacity` keys
            store = store & (rank < row_capacity)
        tl.store(out + rank, w * 64 + bit, mask=store)
