# Copyright 2026 The vecdit authors. Apache-2.0.
"""Triton kernel: merge per-segment partial attention outputs by their log-sum-exp (see
`_segment_kernel.py` for why the keys are cut into segments)."""
import triton
import triton.language as tl


@triton.jit
def merge_segments_kernel(PART, PART_LSE, O, LSE, rows, S, H, num_segments, stride_pz, stride_lz,
                          HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr):
    # PART [n, B, S, H, D] and PART_LSE [n, B, H, S] (natural log) -> O [B, S, H, D], LSE [B, H, S],
    # all contiguous; one program = BLOCK (b, s, h) rows. Segments with lse = -inf weigh nothing;
    # a row empty in all of them gets zeros and lse = -inf, as the kernel gives.
    r = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = r < rows
    h = r % H
    bs = r // H
    lidx = (bs // S * H + h) * S + bs % S
    d = tl.arange(0, HEAD_DIM)
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    l_ptr = PART_LSE + lidx
    for _ in range(num_segments):
        m = tl.maximum(m, tl.load(l_ptr, mask=ok, other=float("-inf")))
        l_ptr += stride_lz
    m_safe = tl.where(m == float("-inf"), 0.0, m)
    acc = tl.zeros([BLOCK, HEAD_DIM], tl.float32)
    wsum = tl.zeros([BLOCK], tl.float32)
    # pointers advance segment by segment: z * stride_pz would pass 2^31 on 720p outputs
    p_ptr = PART + r[:, None].to(tl.int64) * HEAD_DIM + d[None, :]
    l_ptr = PART_LSE + lidx
    for _ in range(num_segments):
        w = tl.exp(tl.load(l_ptr, mask=ok, other=float("-inf")) - m_safe)
        acc += w[:, None] * tl.load(p_ptr, mask=ok[:, None], other=0.0).to(tl.float32)
        wsum += w
        p_ptr += stride_pz
        l_ptr += stride_lz
    has = wsum > 0
    out = acc / tl.where(has, wsum, 1.0)[:, None]
    tl.store(O + r[:, None].to(tl.int64) * HEAD_DIM + d[None, :], out.to(O.dtype.element_ty), mask=ok[:, None])
    tl.store(LSE + lidx, tl.where(has, m_safe + tl.log(tl.where(has, wsum, 1.0)), float("-inf")), mask=ok)
