# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton helpers shared by the kernels."""
import triton
import triton.language as tl


@triton.jit
def mma(a, b, UPCAST: tl.constexpr):
    # Triton's CPU interpreter (3.9) multiplies bf16 tiles wrongly; bf16 products are exact in
    # fp32, so upcasting there computes the same function as the tensor cores do on the GPU
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def block_tokens(QUERY_INDEX, first, Sq, BLOCK: tl.constexpr, INDEXED: tl.constexpr):
    """(positions, in range, token of each position as int64) of the BLOCK positions from `first`:
    the token the tile order puts there (`QUERY_INDEX`), or the position itself (raster)."""
    pos = first + tl.arange(0, BLOCK)
    ok = pos < Sq
    if INDEXED:
        tok = tl.load(QUERY_INDEX + pos, mask=ok, other=0).to(tl.int64)
    else:
        tok = pos.to(tl.int64)
    return pos, ok, tok
