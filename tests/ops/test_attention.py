# Copyright 2026 The vecdit authors. Apache-2.0.
"""Vector-sparse attention, its key segments and its kernel choice against the fp32 references (Triton
interpreter on CPU, or the GPU)."""
import math

import pytest
import torch

from ops_testing import DTYPES, IDS, SHAPES, make_qkv, random_selection, rel_err
from vecdit.ops import (
    VectorSelection,
    attention_reference,
    vec_sparse_attention_reference,
    vector_selection,
    vector_sparse_attention,
)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_attention_matches_reference(shape, dtype, device):
    batch, sq, sk, heads, dim = shape
    q, k, v = make_qkv(shape, dtype, device)
    sel = random_selection(batch, heads, sq, sk, 0.4, device)
    out, lse = vector_sparse_attention(q, k, v, sel, return_lse=True)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel)
    assert rel_err(out, ref) <= 1e-2
    assert torch.allclose(lse, ref_lse, atol=2e-2, rtol=0)
    assert out.dtype == dtype and out.shape == q.shape


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=IDS[1:3])
def test_attention_dense_range_is_always_attended(shape, device):
    batch, sq, sk, heads, dim = shape
    q, k, v = make_qkv(shape, torch.bfloat16, device)
    text = 11  # like HunyuanVideo's valid text tokens at the end of the joint sequence
    sel = random_selection(batch, heads, sq, sk - text, 0.3, device, seed=1)
    out = vector_sparse_attention(q, k, v, sel, dense_range=(sk - text, sk))
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, (sk - text, sk))
    assert rel_err(out, ref) <= 1e-2
    only_text = vector_sparse_attention(q, k, v, None, dense_range=(sk - text, sk))
    ref_text, _ = attention_reference(q, k[:, sk - text:], v[:, sk - text:])
    assert rel_err(only_text, ref_text) <= 1e-2


def test_attention_empty_selection_gives_zeros_not_nan(device):
    shape = (1, 130, 90, 2, 64)
    q, k, v = make_qkv(shape, torch.bfloat16, device)
    mask = torch.rand(1, 2, 3, 90) < 0.5
    mask[0, 1, 1] = False  # one block with nothing selected
    mask[0, 0] = False  # a whole head with nothing selected
    sel = VectorSelection.from_mask(mask.to(device))
    out, lse = vector_sparse_attention(q, k, v, sel, return_lse=True, compensate=False)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert torch.all(out[:, :, 0] == 0) and torch.all(out[:, 64:128, 1] == 0)
    assert torch.all(torch.isneginf(lse[0, 0])) and torch.all(torch.isneginf(lse[0, 1, 64:128]))
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, compensate=False)
    assert rel_err(out, ref) <= 1e-2
    # compensated, an empty block attends its dropped keys' group means: finite, as the reference
    out, lse = vector_sparse_attention(q, k, v, sel, return_lse=True)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert rel_err(out, ref) <= 1e-2 and torch.allclose(lse, ref_lse, atol=2e-2, rtol=0)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=IDS[1:3])
def test_full_selection_equals_dense(shape, device):
    batch, sq, sk, heads, dim = shape
    q, k, v = make_qkv(shape, torch.float16, device)
    sel = VectorSelection.from_mask(torch.ones(batch, heads, math.ceil(sq / 64), sk, dtype=torch.bool, device=device))
    out = vector_sparse_attention(q, k, v, sel)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float().transpose(1, 2), k.float().transpose(1, 2), v.float().transpose(1, 2)).transpose(1, 2)
    assert rel_err(out, ref) <= 1e-2


def test_attention_takes_strided_views_without_copies(device):
    qkv = torch.randn(1, 150, 3, 2, 64).to(torch.bfloat16).to(device)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    assert not q.is_contiguous()
    sel = random_selection(1, 2, 150, 150, 0.5, device)
    out = vector_sparse_attention(q, k, v, sel)
    ref = vector_sparse_attention(q.contiguous(), k.contiguous(), v.contiguous(), sel)
    assert rel_err(out, ref) <= 1e-3


def test_selection_then_attention_end_to_end(device):
    shape = (1, 200, 260, 2, 128)
    q, k, v = make_qkv(shape, torch.bfloat16, device, spread=2.0)
    sel = vector_selection(q, k[:, :250], 0.1)
    out = vector_sparse_attention(q, k, v, sel, dense_range=(250, 260))
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, (250, 260))
    assert rel_err(out, ref) <= 1e-2


@pytest.mark.parametrize("segments", [1, 2, 3, 5])
def test_segment_bounds_split_each_list_by_key(segments, device):
    from vecdit.ops.attention.reference import segment_bounds_reference
    from vecdit.ops.attention.segments import segment_bounds

    sel = random_selection(2, 3, 300, 333, 0.3, device, seed=segments)
    mask = sel.to_mask()
    mask[0, 1, 2] = False  # an empty row
    sel = VectorSelection.from_mask(mask)
    count = sel.column_count.reshape(-1)
    got = segment_bounds(sel.column_index, sel.column_offset, sel.column_count, 333, segments)
    want = segment_bounds_reference(sel.column_index, sel.column_offset, count, -(-333 // segments), segments)
    assert torch.equal(got, want)
    # sorted lists: segment z holds exactly the keys in [z * width, (z + 1) * width)
    width = -(-333 // segments)
    for r in (0, 5, 17):
        keys = sel.column_index[got[r, 0]:got[r, -1]].long()
        for z in range(segments):
            part = sel.column_index[got[r, z]:got[r, z + 1]].long()
            assert torch.equal(part, keys[(keys >= z * width) & (keys < (z + 1) * width)])


def test_segment_bounds_partition_unsorted_lists(device):
    # lists out of order lose the locality, never an entry: bounds stay inside the row, non-decreasing
    from vecdit.ops.attention.segments import segment_bounds

    sel = random_selection(1, 2, 200, 256, 0.5, device)
    shuffled = sel.column_index[torch.randperm(sel.column_index.numel(), generator=torch.Generator().manual_seed(0))]
    got = segment_bounds(shuffled.to(device), sel.column_offset, sel.column_count, 256, 4)
    count = sel.column_count.reshape(-1)
    assert torch.equal(got[:, 0], sel.column_offset[:-1]) and torch.equal(got[:, -1], sel.column_offset[:-1] + count)
    assert bool((got[:, 1:] >= got[:, :-1]).all())
    with pytest.raises(ValueError, match="segments"):
        segment_bounds(sel.column_index, sel.column_offset, sel.column_count, 256, 0)


def test_merge_segments_matches_reference(device):
    from vecdit.ops.attention.reference import merge_segments_reference
    from vecdit.ops.attention.segments import merge_segments

    g = torch.Generator().manual_seed(0)
    part = torch.randn(3, 2, 70, 2, 64, generator=g).to(device, torch.bfloat16)
    part_lse = torch.randn(3, 2, 2, 70, generator=g).to(device)
    part_lse[1, 0, 0, :5] = float("-inf")  # a segment with nothing for some rows
    part_lse[:, 1, 1, 7] = float("-inf")  # a row with nothing anywhere
    out, lse = merge_segments(part, part_lse, torch.bfloat16)
    ref, ref_lse = merge_segments_reference(part, part_lse)
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) < 1e-2
    finite = torch.isfinite(ref_lse)
    assert torch.allclose(lse[finite], ref_lse[finite], atol=1e-5) and bool(torch.isinf(lse[~finite]).all())
    assert torch.all(out[1, 7, 1] == 0) and not torch.isnan(out).any()
    # merging the segments of one attention gives the attention over all their keys
    q, k, v = make_qkv((1, 130, 400, 2, 64), torch.float32, device)
    sel = random_selection(1, 2, 130, 400, 0.3, device)
    from vecdit.ops.attention.segments import segment_bounds

    bounds = segment_bounds(sel.column_index, sel.column_offset, sel.column_count, 400, 3)
    parts = []
    for z in range(3):
        count = (bounds[:, z + 1] - bounds[:, z]).to(torch.int32)
        offset = torch.cat([bounds[:, z], bounds[-1:, z + 1]])
        piece = VectorSelection(sel.column_index, offset, count.view(1, 2, -1), 1, 2, sel.num_query_blocks, 400)
        parts.append(vec_sparse_attention_reference(q, k, v, piece, compensate=False))
    out, lse = merge_segments(torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]), torch.float32)
    whole, whole_lse = vec_sparse_attention_reference(q, k, v, sel, compensate=False)
    assert rel_err(out, whole) < 1e-5 and torch.allclose(lse, whole_lse, atol=1e-4)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9),
                    reason="the Gluon kernel is Hopper-only")
def test_gluon_backend_matches_the_triton_kernel(monkeypatch):
    # the Hopper default (VECDIT_ATTN_KERNEL=auto) is the warp-specialized Gluon kernel: same
    # arguments and results as the Triton kernel, both checked against the fp32 reference
    import vecdit.ops.attention._attn_gluon_kernel as gluon_kernel

    calls = []
    launch = gluon_kernel.gluon_sparse_attention
    monkeypatch.setattr(gluon_kernel, "gluon_sparse_attention", lambda *a, **kw: calls.append(1) or launch(*a, **kw))
    # q, k, v as strided views of one fused buffer; 300 queries: a ragged last block
    qkv = torch.randn(2, 2000, 3, 3, 128, dtype=torch.bfloat16, device="cuda")
    q, k, v = qkv[:, :300, 0], qkv[:, :, 1], qkv[:, :, 2]
    sel = random_selection(2, 3, 300, 1900, 0.3, "cuda")
    dense_range = (1900, 2000)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, dense_range)
    got, got_lse = vector_sparse_attention(q, k, v, sel, dense_range=dense_range, return_lse=True)
    assert calls, "auto did not take the Gluon kernel on Hopper"
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "triton")
    want, want_lse = vector_sparse_attention(q, k, v, sel, dense_range=dense_range, return_lse=True)
    assert len(calls) == 1
    for out, lse in ((got, got_lse), (want, want_lse)):
        assert rel_err(out, ref) < 1e-2 and float((lse - ref_lse).abs().max()) < 1e-2
    assert rel_err(got, want) < 1e-2
    # key segments (the default where one head's K/V exceed L2): same result, lse included (the
    # kernel alone: the compensation is merged after it)
    plain, plain_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, dense_range, compensate=False)
    for segments in (2, 3):
        seg_out, seg_lse = launch(q, k, v, sel.column_index, sel.column_offset, sel.column_count.reshape(-1),
                                  *dense_range, 128 ** -0.5, segments=segments)
        assert rel_err(seg_out, plain) < 1e-2 and float((seg_lse - plain_lse).abs().max()) < 1e-2
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "gluon")
    empty = VectorSelection.from_mask(torch.zeros(2, 3, 5, 2000, dtype=torch.bool, device="cuda"))
    out, lse = vector_sparse_attention(q, k, v, empty, return_lse=True, compensate=False)
    assert torch.all(out == 0) and torch.all(lse == float("-inf"))
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "cuda-graphs")
    with pytest.raises(ValueError, match="VECDIT_ATTN_KERNEL"):
        vector_sparse_attention(q, k, v, sel)


def test_gluon_tile128_layout_choice_is_validated(monkeypatch):
    gluon_kernel = pytest.importorskip("vecdit.ops.attention._attn_gluon_kernel")
    assert gluon_kernel.tile128_config(128)["CONSUMERS"] == 2  # default: one program, two consumers per tile
    monkeypatch.setenv("VECDIT_GLUON_TILE128", "programs")
    assert gluon_kernel.tile128_config(128) == {}
    monkeypatch.setenv("VECDIT_GLUON_TILE128", "split,BLOCK_N=64,STAGES=4,segments=2")
    cfg = gluon_kernel.tile128_config(128)
    assert cfg["BLOCK_N"] == 64 and cfg["STAGES"] == 4 and cfg["CONSUMERS"] == 2 and cfg["segments"] == 2
    assert gluon_kernel.tile128_config(64) == {}  # 64-query tiles keep one program per tile
    for bad in ("two", "split,STAGES=x", "split,WARPS=8"):
        monkeypatch.setenv("VECDIT_GLUON_TILE128", bad)
        with pytest.raises(ValueError, match="VECDIT_GLUON_TILE128"):
            gluon_kernel.tile128_config(128)


def test_attention_kernel_choice_is_validated(device, monkeypatch):
    q, k, v = make_qkv((1, 64, 64, 1, 64), torch.bfloat16, device)
    sel = random_selection(1, 1, 64, 64, 0.5, device)
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "fastest")
    with pytest.raises(ValueError, match="VECDIT_ATTN_KERNEL"):
        vector_sparse_attention(q, k, v, sel)
