# Copyright 2026 The vecdit authors. Apache-2.0.
"""Compensation of the dropped keys: the kernel path against the fp32 reference, and what the
reference itself must mean (exact where a group's keys are alike, neutral where nothing is dropped,
the "dropped" mode's formula written out, its error falling with density on a broad head)."""
import math

import pytest
import torch
from ops_testing import IDS, SHAPES, make_qkv, random_selection

from vecdit.ops import (
    QueryTiles,
    masked_sparse_attention,
    SelectionBitmask,
    VectorSelection,
    attention_reference,
    vec_sparse_attention_reference,
    vector_selection,
    vector_selection_bitmask,
    vector_selection_reference,
    vector_sparse_attention,
)
from vecdit.ops.attention.compensation import COMPENSATION_MODES, key_group_means, key_group_sums


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


@pytest.mark.parametrize("block", [(4, 4, 4), (4, 4, 8)], ids=["tiles64", "tiles128"])
@pytest.mark.parametrize("mode", COMPENSATION_MODES)
def test_kernel_matches_reference_on_a_ragged_tiled_grid_with_text(mode, block, device):
    # 3x7x9 grid (189 queries): edge tiles, a short last block (4x4x8: 128-query tiles, two programs
    # per tile); 150 scored keys (a short last group) and 13 text keys after them, always attended
    # and never compensated
    grid, text = (3, 7, 9), 13
    sq = math.prod(grid)
    sk = 150 + text
    q, k, v = _qkv(2, sq, sk, 3, 64, seed=1, device=device)
    tiles = QueryTiles(grid, block)
    mask = _random_mask(2, 3, tiles.num_blocks(sq), 150, 0.25, seed=2, device=device)
    mask[0, 1, 1] = True  # a block that keeps everything
    mask[1, 0, 0] = False  # a block that keeps nothing
    sel = VectorSelection.from_mask(mask, tiles)
    out, lse = vector_sparse_attention(q, k, v, sel, dense_range=(150, sk), compensate=mode, return_lse=True)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, (150, sk), compensate=mode)
    assert rel_err(out, ref) <= 1e-2 and float((lse - ref_lse).abs().max()) <= 2e-2
    plain = vector_sparse_attention(q, k, v, sel, dense_range=(150, sk), compensate=False)
    assert rel_err(plain, ref) > 5 * rel_err(out, ref)  # it compensated something
    # the block that keeps every key: bit-equal to uncompensated attention
    size = tiles.block_size
    rows = tiles.query_index(device)[size:2 * size].long()
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


@pytest.mark.parametrize("mode", [True, "dropped"])
def test_reuse_and_fresh_selection_compensate_alike(mode, device):
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
    a = vector_sparse_attention(q, k, v, fresh, compensate=mode)
    b = vector_sparse_attention(q, k, v, reused, compensate=mode)
    assert torch.equal(a, b)
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), reused, compensate=mode)
    assert rel_err(b, ref) <= 1e-2


def test_group_means_of_strided_keys(device):
    x = torch.randn(2, 150, 3, 2, 64).to(device)[:, :, 1]  # strided
    means = key_group_means(x, 140)
    ref = torch.stack([x[:, :64].mean(1), x[:, 64:128].mean(1), x[:, 128:140].mean(1)], 2)
    assert means.shape == (2, 2, 3, 64) and torch.allclose(means, ref, atol=1e-6)
    sums = key_group_sums(x, 140)
    ref = torch.stack([x[:, :64].sum(1), x[:, 64:128].sum(1), x[:, 128:140].sum(1)], 2)
    assert sums.shape == (2, 2, 3, 64) and torch.allclose(sums, ref, atol=1e-4)


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


def _dropped_formula(q, k, v, selection, dense_range, scale):
    """The "dropped" mode written out in fp64, one query block at a time: each block's softmax over
    its kept keys and `dense_range`, plus, per 64-key group g with n_g > 0 dropped keys,
    e_g * (the sum of g's dropped values) in the numerator and n_g * e_g in the denominator, with
    e_g = exp(mean query of the block . mean key of g * scale). (out `[B, S, H, D]`, lse `[B, H, S]`)."""
    q, k, v = q.double(), k.double(), v.double()
    batch, seq, heads, dim = q.shape
    tiles = selection.query_tiles if selection.query_tiles is not None else QueryTiles.raster()
    token_block = tiles.token_blocks(seq, q.device)
    keep = selection.to_mask()
    num_scored = selection.num_keys
    out = torch.zeros_like(q)
    lse = torch.zeros(batch, heads, seq, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            for r in range(selection.num_query_blocks):
                rows = (token_block == r).nonzero()[:, 0]
                cols = torch.cat([keep[b, h, r].nonzero()[:, 0], torch.arange(*dense_range)])
                w = torch.exp(q[b, rows, h] @ k[b, cols, h].T * scale)
                num, den = w @ v[b, cols, h], w.sum(1)
                pooled = q[b, rows, h].mean(0)
                for g0 in range(0, num_scored, 64):
                    dropped = (~keep[b, h, r, g0:min(g0 + 64, num_scored)]).nonzero()[:, 0] + g0
                    if len(dropped):
                        e = torch.exp(pooled @ k[b, g0:min(g0 + 64, num_scored), h].mean(0) * scale)
                        num = num + e * v[b, dropped, h].sum(0)
                        den = den + e * len(dropped)
                out[b, rows, h] = num / torch.where(den > 0, den, 1.0)[:, None]
                lse[b, h, rows] = torch.log(den)
    return out, lse


def test_dropped_reference_is_the_formula():
    # the oracle itself: extra columns (per-group logits, the block's dropped keys' mean values)
    # against the formula written out; the CPU path too. A block keeping everything, one nothing.
    grid, text = (3, 5, 9), 7  # 135 queries: 3 blocks, the last short
    seq = math.prod(grid)
    q, k, v = _qkv(1, seq, 150 + text, 2, 64, seed=21, dtype=torch.float32)
    tiles = QueryTiles(grid, (2, 4, 8))
    mask = _random_mask(1, 2, tiles.num_blocks(seq), 150, 0.3, seed=22, device="cpu")
    mask[0, 0, 1], mask[0, 1, 2] = True, False
    sel = VectorSelection.from_mask(mask, tiles)
    want, want_lse = _dropped_formula(q, k, v, sel, (150, 150 + text), 64 ** -0.5)
    got, lse = vec_sparse_attention_reference(q, k, v, sel, (150, 150 + text), compensate="dropped")
    assert rel_err(got, want) < 1e-5 and float((lse - want_lse).abs().max()) < 1e-4
    cpu, cpu_lse = masked_sparse_attention(q, k, v, sel, (150, 150 + text), compensate="dropped", return_lse=True)
    assert rel_err(cpu, want) < 1e-5 and float((cpu_lse - want_lse).abs().max()) < 1e-4
    # where nothing is dropped every mode is no compensation (the CPU path: bit for bit)
    full = VectorSelection.from_mask(torch.ones_like(mask), tiles)
    plain, _ = vec_sparse_attention_reference(q, k, v, full, (150, 150 + text), compensate=False)
    plain_cpu = masked_sparse_attention(q, k, v, full, (150, 150 + text), compensate=False)
    for mode in COMPENSATION_MODES:
        ref, _ = vec_sparse_attention_reference(q, k, v, full, (150, 150 + text), compensate=mode)
        assert rel_err(ref, plain) < 1e-6
        assert torch.equal(masked_sparse_attention(q, k, v, full, (150, 150 + text), compensate=mode), plain_cpu)


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_dropped_kernel_on_fresh_inputs(shape, device):
    # fresh inputs at every run (the seed is in the message), raster blocks, both head sizes, Sq != Sk
    seed = torch.seed() % 2**31
    q, k, v = make_qkv(shape, torch.bfloat16, device, spread=1.5, seed=seed)
    batch, sq, sk, heads, _ = shape
    sel = random_selection(batch, heads, sq, sk, 0.2, device, seed=seed)
    out, lse = vector_sparse_attention(q, k, v, sel, compensate="dropped", return_lse=True)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, compensate="dropped")
    assert torch.isfinite(out).all() and rel_err(out, ref) <= 1e-2, f"seed {seed}: {rel_err(out, ref)}"
    assert float((lse - ref_lse).abs().max()) <= 2e-2, f"seed {seed}"


def test_dropped_mode_edges_stay_finite(device):
    # no dense range: a block with no kept key (compensation alone), one keeping everything, a
    # selection that keeps nothing at all; and a group whose pooled logit (about 150) dwarfs its two
    # kept keys' own logits (about 3): their probabilities underflow in the weights' frame while
    # their correction must still count
    q, k, v = _qkv(1, 192, 200, 2, 64, seed=23, device=device)
    q = q + 1  # the blocks' mean queries near the all-ones direction
    keys = torch.arange(64, 128, device=device)
    k[:, keys[(keys != 100) & (keys != 101)]] = 20
    mask = _random_mask(1, 2, 3, 200, 0.1, seed=24, device=device)
    mask[..., 64:128] = False
    mask[..., 100:102] = True
    mask[0, 0, 0], mask[0, 1, 1] = False, True
    for m in (mask, torch.zeros_like(mask)):
        sel = VectorSelection.from_mask(m)
        out, lse = vector_sparse_attention(q, k, v, sel, compensate="dropped", return_lse=True)
        ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, compensate="dropped")
        assert torch.isfinite(out).all() and torch.isfinite(lse).all()
        # lse near 150: the pooled query's bf16 rounding (as the selection pools it) moves it by ~1e-3 relative
        assert rel_err(out, ref) <= 1e-2 and bool(((lse - ref_lse).abs() <= 2e-2 * ref_lse.abs().clamp_min(1)).all())


def _broad_head(seed):
    """A broad (flat) head: small logits (q, k at 0.3), values along the keys plus noise (what a
    kept key holds is not what a dropped one holds), 2x16x16 grid, fp32."""
    g = torch.Generator().manual_seed(seed)
    grid = (2, 16, 16)
    q = torch.randn(1, math.prod(grid), 2, 64, generator=g) * 0.3
    k = torch.randn(1, math.prod(grid), 2, 64, generator=g) * 0.3
    v = k / 0.3 + 0.5 * torch.randn(1, math.prod(grid), 2, 64, generator=g)
    return q, k, v, QueryTiles(grid)


def test_dropped_error_falls_with_density_on_a_broad_head():
    # the whole group's mean value (pooled) leaves an error floor that rises with density (the kept
    # keys' values are counted twice); the dropped keys' own mean (dropped) falls toward zero
    q, k, v, tiles = _broad_head(seed=0)
    dense, _ = attention_reference(q, k, v)
    err = {}
    for density in (0.1, 0.25, 0.5):
        sel = vector_selection_reference(q, k, None, max_density=density, query_tiles=tiles)
        for mode in ("pooled", "dropped"):
            out = masked_sparse_attention(q, k, v, sel, compensate=mode)
            ref, _ = vec_sparse_attention_reference(q, k, v, sel, compensate=mode)
            assert rel_err(out, ref) < 1e-5
            err[mode, density] = rel_err(out, dense)
    assert err["dropped", 0.5] <= 0.6 * err["dropped", 0.1] and err["dropped", 0.25] < err["dropped", 0.1]
    assert err["pooled", 0.5] >= err["pooled", 0.1]  # the floor
    assert all(err["dropped", d] < 0.5 * err["pooled", d] for d in (0.1, 0.25, 0.5))


def _gluon_applies() -> bool:
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9:
        return False
    from vecdit.ops.attention.op import _gluon_available

    return _gluon_available()


@pytest.mark.skipif(not _gluon_applies(), reason="the Gluon kernel is Hopper-only")
@pytest.mark.parametrize("block, layout", [((4, 4, 4), "split"), ((4, 4, 8), "split"), ((4, 4, 8), "wide"),
                                           ((4, 4, 8), "programs")], ids=["tiles64", "tiles128-split",
                                                                          "tiles128-wide", "tiles128-programs"])
def test_gluon_dropped_matches_reference(block, layout, monkeypatch):
    # the Hopper kernel with the dropped keys' correction in its P matrix and the tile's part merged in
    # its epilogue: ragged grid, HunyuanVideo-style text after the scored keys, fused-QKV views, a
    # block keeping everything (bit-equal to uncompensated), one keeping nothing, key segments
    import vecdit.ops.attention._attn_gluon_kernel as gluon_kernel
    from vecdit.ops.attention.compensation import dropped_prepare_triton

    monkeypatch.setenv("VECDIT_GLUON_TILE128", layout)
    calls = []
    launch = gluon_kernel.gluon_sparse_attention
    monkeypatch.setattr(gluon_kernel, "gluon_sparse_attention",
                        lambda *a, **kw: calls.append(kw.get("dropped") is not None) or launch(*a, **kw))
    grid, text, heads = (5, 9, 13), 37, 2
    seq = math.prod(grid)
    g = torch.Generator().manual_seed(31)
    qkv = torch.randn(1, seq + text, 3, heads, 128, generator=g).to(torch.bfloat16).cuda()
    q, k, v = qkv[:, :seq, 0], qkv[:, :, 1], qkv[:, :, 2]
    tiles = QueryTiles(grid, block)
    mask = _random_mask(1, heads, tiles.num_blocks(seq), seq, 0.2, seed=32, device="cuda")
    mask[0, 1, 1], mask[0, 0, 0] = True, False
    sel = VectorSelection.from_mask(mask, tiles)
    dense_range = (seq, seq + text)
    out, lse = vector_sparse_attention(q, k, v, sel, dense_range=dense_range, compensate="dropped", return_lse=True)
    assert calls == [True], "the dropped mode did not take the Gluon kernel"
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, dense_range,
                                                  compensate="dropped")
    assert rel_err(out, ref) <= 1e-2 and float((lse - ref_lse).abs().max()) <= 2e-2
    plain = vector_sparse_attention(q, k, v, sel, dense_range=dense_range, compensate=False)
    assert rel_err(plain, ref) > 5 * rel_err(out, ref)
    size = tiles.block_size
    rows = tiles.query_index("cuda")[size:2 * size].long()
    assert torch.equal(out[0, rows, 1], plain[0, rows, 1])
    # key segments, each adding an equal share of the tile's part: the same function
    index = tiles.query_index("cuda")
    dropped = dropped_prepare_triton(q, k, v, sel.kept_per_word(), sel.num_keys, 128 ** -0.5, index, size)
    for segments in (1, 2, 3):
        seg_out, seg_lse = launch(q, k, v, sel.column_index, sel.column_offset, sel.column_count.reshape(-1),
                                  *dense_range, 128 ** -0.5, segments=segments, query_index=index, block_size=size,
                                  dropped=dropped)
        assert rel_err(seg_out, ref) <= 1e-2 and float((seg_lse - ref_lse).abs().max()) <= 2e-2, segments
    # the portable Triton kernel agrees; a selection keeping nothing is the compensation alone
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "triton")
    assert rel_err(vector_sparse_attention(q, k, v, sel, dense_range=dense_range, compensate="dropped"), ref) <= 1e-2
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "auto")
    empty = VectorSelection.from_mask(torch.zeros_like(mask), tiles)
    out = vector_sparse_attention(q, k[:, :seq], v[:, :seq], empty, compensate="dropped")
    ref, _ = vec_sparse_attention_reference(q.float(), k[:, :seq].float(), v[:, :seq].float(), empty,
                                            compensate="dropped")
    assert torch.isfinite(out).all() and rel_err(out, ref) <= 1e-2
