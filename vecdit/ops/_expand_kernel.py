# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: expand per-row key bitmasks into ascending index lists.

One program = one row (batch, head, query block) and BLOCK_W bitmask words. Where each word's keys
go comes from an inclusive prefix sum of the per-word counts (computed between the two kernels),
so programs are independent: no loop carries a running position. The layout puts the 64 bits of a
word across lanes, so a word's kept keys land in consecutive positions and the stores coalesce.
"""
import triton
import triton.language as tl


@triton.jit
def expand_bitmask_kernel(
    MASK, WORD_END, COLUMN_OFFSET, COLUMN_INDEX,
    num_words, row_capacity,
    BLOCK_W: tl.constexpr, CAPPED: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    w = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    w_ok = w < num_words
    bit = tl.arange(0, 64).to(tl.int64)
    word = tl.load(MASK + row * num_words + w, mask=w_ok, other=0)
    # end of each word's keys within the row (inclusive prefix of the per-word counts)
    word_end = tl.load(WORD_END + row * num_words + w, mask=w_ok, other=0)
    keep = ((word[:, None] >> bit[None, :]) & 1).to(tl.int32)  # [BLOCK_W, 64]; & 1 makes the shift's sign moot
    within = tl.cumsum(keep, 1)
    rank = (word_end - tl.sum(keep, 1))[:, None] + within - keep  # 0-based place in the row
    cols = w[:, None] * 64 + bit[None, :].to(tl.int32)
    store = keep != 0
    if CAPPED:  # fixed slots per row: the row's first `row_capacity` keys
        store = store & (rank < row_capacity)
    tl.store(COLUMN_INDEX + tl.load(COLUMN_OFFSET + row) + rank, cols, mask=store)
