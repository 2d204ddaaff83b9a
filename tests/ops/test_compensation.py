# Copyright 2026 The vecdit authors. Apache-2.0.
"""Compensation of the dropped keys: the kernel path against the fp32 reference, and what the
reference itself must mean (exact where a group's keys are alike, neutral where nothing is dropped)."""
import math

import pytest
import torch

from vecdit.ops import (
    QueryTiles,
    SelectionBitmask,
    VectorSelection,
    attention_reference,
    vec_sparse_attention_reference,
    vector_selection,
    vector_selection_bitmask,
    vector_sparse_attention,
)
from vecdit.ops.attention.compensation import COMPENSATION_MODES, key_group_means


def rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def _qkv(batch, sq, sk, heads, dim, seed, spread=2.0, dtype=torch.bfloat16, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, sq, heads, dim, generator=g)
    k = torch.randn(batch, sk, heads, dim, generator=g) * spread
    v = torch.randn(batch, sk, heads, dim, generator=g)
    return (t.to(dtype).to(device) for t in (q, k, v))


def _random_mask(batch, heads, nqb, sk, density, seed, device):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, heads, nqb, sk, generator=g) < density).to(device)


@pytest.mark.parametrize("mode", COMPENSATION_MODES)
def test_kernel_matches_reference_on_a_ragged_tiled_grid_with_text(mode, device):
    # 3x7x9 grid (189 queries): edge tiles of 4x4x4, a short last block; 150 scored keys (a short
    # last group) and 13 text keys after them, always attended and never compensated
    grid, text = (3, 7, 9), 13
    sq = math.prod(grid)
    sk = 150 + text
    q, k, v = _qkv(2, sq, sk, 3, 64, seed=1, device=device)
    tiles = QueryTiles(grid, (4, 4, 4))
    mask = _random_mask(2, 3, tiles.num_blocks(sq), 150, 0.25, seed=2, device=device)
    mask[0, 1, 2] = True  # a block that keeps everything
    mask[1, 0, 0] = False  # a block that keeps nothing
    sel = VectorSelection.from_mask(mask, tiles)
    out, lse = vector_sparse_attention(q, k, v, sel, dense_range=(150, sk), compensate=mode, return_lse=True)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, (150, sk), compensate=mode)
    assert rel_err(out, ref) <= 1e-2 and float((lse - ref_lse).abs().max()) <= 2e-2
    plain = vector_sparse_attention(q, k, v, sel, dense_range=(150, sk), compensate=False)
    assert rel_err(plain, ref) > 5 * rel_err(out, ref)  # it compensated something
    # the block that keeps every key: bit-equal to uncompensated attention
    rows = tiles.query_index(device)[2 * 64:3 * 64].long()
    assert torch.equal(out[0, rows, 1], plain[0, rows, 1])


@pytest.mark.parametrize("block", [(4, 4, 4), (4, 4, 8)])
def test_kernel_matches_reference_with_fused_qkv_strides(block, device):
    grid = (2, 8, 12)
    sq = math.prod(grid)
    qkv = torch.randn(1, sq, 3, 2, 128, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16).to(device)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # strided views, as diffusers' fused projections give
    tiles = QueryTiles(grid, block)
    sel = VectorSelection.from_mask(_random_mask(1, 2, tiles.num_blocks(sq), sq, 0.2, seed=4, device=device), tiles)
    for mode in COMPENSATION_MODES:
        out = vector_sparse_attention(q, k, v, sel, compensate=mode)
        ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, compensate=mode)
        assert rel_err(out, ref) <= 1e-2


def test_no_compensation_reproduces_the_kernel_alone(device):
    from vecdit.ops.attention.op import _attn_triton
    from vecdit.ops._checks import use_triton

    q, k, v = _qkv(1, 130, 200, 2, 64, seed=5, device=device)
    mask = _random_mask(1, 2, 3, 200, 0.3, seed=6, device=device)
    sel = VectorSelection.from_mask(mask)
    out, lse = vector_sparse_attention(q, k, v, sel, compensate=False, return_lse=True)
    if use_triton(q):
        alone, alone_lse = _attn_triton(q, k, v, sel.column_index, sel.column_offset, sel.column_count.reshape(-1), 0, 0,
                                        64 ** -0.5)
    else:
        alone, alone_lse = vec_sparse_attention_reference(q, k, v, sel, compensate=False)
    assert torch.equal(out, alone) and torch.equal(lse, alone_lse)


def test_compensation_is_exact_where_each_groups_keys_are_alike(device):
    # every key of a 64-key group equal (and its values): the group mean is each dropped key, so
    # per-query compensation gives dense attention whatever was dropped
    sk, heads = 192 + 40, 2
    g = torch.Generator().manual_seed(7)
    groups = -(-sk // 64)
    k = torch.randn(1, groups, heads, 64, generator=g).repeat_interleave(64, 1)[:, :sk] * 2
    v = torch.randn(1, groups, heads, 64, generator=g).repeat_interleave(64, 1)[:, :sk]
    q = torch.randn(1, 100, heads, 64, generator=g)
    mask = _random_mask(1, heads, 2, sk, 0.1, seed=8, device="cpu")
    sel = VectorSelection.from_mask(mask)
    dense, dense_lse = attention_reference(q, k, v)
    out, lse = vec_sparse_attention_reference(q, k, v, sel, compensate="query")
    assert rel_err(out, dense) < 1e-5 and float((lse - dense_lse).abs().max()) < 1e-4
    plain, _ = vec_sparse_attention_reference(q, k, v, sel, compensate=False)
    assert rel_err(plain, dense) > 0.1


def test_reuse_and_fresh_selection_compensate_alike(device):
    # a reuse step expands the kept bitmask: the same lists and the same per-word counts
    q, k, v = _qkv(1, 160, 300, 2, 64, seed=9, device=device)
    tiles = QueryTiles((2, 8, 10), (1, 8, 8))
    fresh = vector_selection(q, k, None, max_density=0.2, query_tiles=tiles)
    bits = vector_selection_bitmask(q, k, None, max_density=0.2, query_tiles=tiles)
    reused = bits.expand()
    assert torch.equal(fresh.kept_per_word(), reused.kept_per_word())
    counted = VectorSelection(fresh.column_index, fresh.column_offset, fresh.column_count, fresh.batch, fresh.heads,
                              fresh.num_query_blocks, fresh.num_keys, tiles)  # no word counts: from the lists
    assert torch.equal(counted.kept_per_word(), fresh.kept_per_word())
    assert torch.equal(SelectionBitmask.from_selection(fresh).word_count, bits.word_count)
    a = vector_sparse_attention(q, k, v, fresh)
    b = vector_sparse_attention(q, k, v, reused)
    assert torch.equal(a, b)


def test_group_means_of_strided_keys(device):
    x = torch.randn(2, 150, 3, 2, 64).to(device)[:, :, 1]  # strided
    means = key_group_means(x, 140)
    ref = torch.stack([x[:, :64].mean(1), x[:, 64:128].mean(1), x[:, 128:140].mean(1)], 2)
    assert means.shape == (2, 2, 3, 64) and torch.allclose(means, ref, atol=1e-6)


def test_bad_compensation_arguments_are_named(device):
    from vecdit import VecAttnConfig

    q, k, v = _qkv(1, 64, 100, 1, 64, seed=10, device=device)
    sel = VectorSelection.from_mask(_random_mask(1, 1, 1, 90, 0.3, seed=11, device=device))
    with pytest.raises(ValueError, match="compensate"):
        vector_sparse_attention(q, k, v, sel, compensate="exact")
    with pytest.raises(ValueError, match="dense_range"):
        vector_sparse_attention(q, k, v, sel, dense_range=(80, 100))
    vector_sparse_attention(q, k, v, sel, dense_range=(80, 100), compensate=False)  # allowed uncompensated
    with pytest.raises(ValueError, match="compensate"):
        VecAttnConfig(compensate="always")
    assert VecAttnConfig().compensate is True and VecAttnConfig(compensate="pooled").compensate == "pooled"
