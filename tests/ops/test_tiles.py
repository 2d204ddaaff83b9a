# Copyright 2026 The vecdit authors. Apache-2.0.
"""Query blocks as tiles of the latent grid: the order, and selection and attention through it."""
import math

import pytest
import torch

from ops_testing import assert_same_selection, make_qkv, rel_err
from vecdit.ops import (
    QueryTiles,
    VectorSelection,
    vec_sparse_attention_reference,
    vector_selection,
    vector_selection_bitmask,
    vector_selection_reference,
    vector_sparse_attention,
)
from vecdit.ops.selection.reference import selection_scores
from vecdit.ops.selection.rule import budget_cuts


# (grid, tile): ragged edges on every axis, a single frame, 128-query tiles, a grid thinner than the tile
TILINGS = [
    ((5, 6, 9), (4, 4, 4)),
    ((1, 6, 14), (4, 4, 4)),
    ((3, 5, 9), (2, 8, 8)),
    ((2, 9, 10), (4, 4, 8)),
]
TILING_IDS = ["{}x{}x{}".format(*g) + "-tile{}x{}x{}".format(*t) for g, t in TILINGS]


@pytest.mark.parametrize("grid, tile", TILINGS, ids=TILING_IDS)
def test_tile_order_is_a_permutation_of_compact_tiles(grid, tile):
    tiles = QueryTiles(grid, tile)
    seq = math.prod(grid)
    index = tiles.query_index("cpu")
    assert index.dtype == torch.int32 and torch.equal(index.sort().values, torch.arange(seq, dtype=torch.int32))
    assert tiles.num_blocks(seq) == math.ceil(seq / tiles.block_size)  # as many blocks as raster order
    t, h, w = grid
    et = tiles.effective_tile
    assert math.prod(et) == tiles.block_size or any(e * 2 > g for e, g in zip(et, grid))
    # every full tile is exactly one block, an et-shaped box (tiles cut smaller by a thin grid pack two per block)
    full = (t // et[0]) * (h // et[1]) * (w // et[2]) if math.prod(et) == tiles.block_size else 0
    pos = torch.stack([index // (h * w), index // w % h, index % w], -1).long()
    for b in range(full):
        members = pos[b * tiles.block_size:(b + 1) * tiles.block_size]
        extent = members.amax(0) - members.amin(0) + 1
        assert extent.tolist() == list(et)
    # edge blocks hold real, distinct tokens only; block_of_token inverts the order
    blocks = tiles.token_blocks(seq, "cpu")
    assert torch.equal(blocks[index.long()], torch.arange(seq) // tiles.block_size)


def test_single_frame_tile_is_reshaped_and_raster_keeps_the_paper_blocks():
    assert QueryTiles((1, 30, 52)).effective_tile == (1, 8, 8)
    assert QueryTiles((21, 30, 52)).effective_tile == (4, 4, 4)
    raster = QueryTiles.raster()
    assert raster.query_index("cpu") is None and raster.block_size == 64
    q, k, _ = make_qkv((1, 150, 90, 2, 64), torch.bfloat16, "cpu", spread=3.0, seed=3)
    a = vector_selection_reference(q, k, 0.2)
    b = vector_selection_reference(q, k, 0.2, query_tiles=QueryTiles((1, 10, 15), "raster"))
    assert torch.equal(a.to_mask(), b.to_mask())


def _budget_cutoffs(scores, max_columns, min_columns):
    lower, upper = budget_cuts(scores, scores.shape[-1], max_columns, min_columns)
    return lower[..., None], upper[..., None]


@pytest.mark.parametrize("grid, tile", TILINGS, ids=TILING_IDS)
def test_selection_in_tile_order_matches_reference(grid, tile, device):
    tiles = QueryTiles(grid, tile)
    seq, heads = math.prod(grid), 2
    q, k, _ = make_qkv((1, seq, 170, heads, 64), torch.bfloat16, device, spread=3.0)
    scores = selection_scores(q.cpu(), k.cpu(), query_tiles=tiles)
    threshold = torch.tensor([0.1, 0.4])  # one threshold per head
    sel = vector_selection(q, k, threshold, query_tiles=tiles)
    ref = vector_selection_reference(q.cpu(), k.cpu(), threshold, query_tiles=tiles)
    gap = -torch.log(threshold.double()).view(1, heads, 1, 1)
    assert_same_selection(sel, ref, scores, scores.amax(-1, keepdim=True) - gap)
    assert sel.num_query_blocks == tiles.num_blocks(seq) and sel.query_tiles is tiles
    # the per-tile budget: exactly the top floor(0.1 * Sk) keys of each tile (Sk <= SAMPLE_KEYS: exact)
    top = vector_selection(q, k, None, max_density=0.1, query_tiles=tiles)
    # a near-tie at the cut (17th and 18th scores within the mask pass's ~16-bit precision) can
    # move one key: counts within one of 17, the key sets checked against near-ties below
    assert torch.all((top.column_count - 17).abs() <= 1) and int((top.column_count != 17).sum()) <= 1
    lower, _ = _budget_cutoffs(scores, 17, 0)
    assert_same_selection(top, vector_selection_reference(q.cpu(), k.cpu(), None, max_density=0.1, query_tiles=tiles),
                          scores, lower)
    # min-p inside the budget: never more than the budget, never a key below the min-p cut
    both = vector_selection(q, k, 0.05, max_density=0.1, query_tiles=tiles)
    assert int(both.column_count.max()) <= 17
    minp = vector_selection_reference(q.cpu(), k.cpu(), 0.05, query_tiles=tiles).to_mask()
    assert bool((both.to_mask().cpu() & ~minp).sum() <= 2)
    # bitmask reuse keeps the grouping and the same lists
    bits = vector_selection_bitmask(q, k, None, max_density=0.1, query_tiles=tiles)
    again = bits.expand()
    assert again.query_tiles is tiles and torch.equal(again.column_index, top.column_index)


@pytest.mark.parametrize("grid, tile", TILINGS, ids=TILING_IDS)
def test_attention_in_tile_order_matches_reference(grid, tile, device):
    tiles = QueryTiles(grid, tile)
    seq, heads = math.prod(grid), 2
    # q, k, v strided views of one fused projection, as diffusers often hands them
    qkv = torch.randn(2, seq + 30, 3, heads, 64).to(torch.bfloat16).to(device)
    q, k, v = qkv[:, :seq, 0], qkv[:, :, 1], qkv[:, :, 2]
    g = torch.Generator().manual_seed(int(torch.seed() % 2**31))
    mask = torch.rand(2, heads, tiles.num_blocks(seq), seq + 10, generator=g) < 0.3
    mask[1, 0, 0] = False  # an empty block: only the text range
    sel = VectorSelection.from_mask(mask.to(device), tiles)
    text = (seq + 10, seq + 30)  # HunyuanVideo's valid text keys, attended by every video query
    out, lse = vector_sparse_attention(q, k, v, sel, dense_range=text, return_lse=True)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, text)
    assert rel_err(out, ref) <= 1e-2 and float((lse - ref_lse).abs().max()) < 2e-2
    # every key kept equals dense attention, in any query order
    everything = VectorSelection.from_mask(torch.ones(2, heads, tiles.num_blocks(seq), seq + 30, dtype=torch.bool,
                                                      device=device), tiles)
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.float().transpose(1, 2), k.float().transpose(1, 2), v.float().transpose(1, 2)).transpose(1, 2)
    assert rel_err(vector_sparse_attention(q, k, v, everything), dense) <= 1e-2


def test_tile_selection_then_attention_end_to_end(device):
    tiles = QueryTiles((3, 5, 9), (2, 4, 8))
    # q, k, v as strided chunks of one fused projection: selection and attention read them in place
    qkv = (torch.randn(1, 145, 3, 2, 128) * 1.5).to(torch.bfloat16).to(device)
    q, k, v = qkv[:, :135, 0], qkv[:, :, 1], qkv[:, :, 2]
    sel = vector_selection(q, k[:, :135], None, max_density=0.2, query_tiles=tiles)
    again = vector_selection(q.contiguous(), k[:, :135].contiguous(), None, max_density=0.2, query_tiles=tiles)
    assert torch.equal(sel.to_mask(), again.to_mask())
    out = vector_sparse_attention(q, k, v, sel, dense_range=(135, 145))
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, (135, 145))
    assert rel_err(out, ref) <= 1e-2
    with pytest.raises(ValueError, match="grid"):  # the selection's grid must hold the queries
        vector_sparse_attention(q[:, :134], k, v, sel)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9),
                    reason="the Gluon kernel is Hopper-only")
@pytest.mark.parametrize("tile,layout", [((4, 4, 4), "split"), ((4, 4, 8), "split"), ((4, 4, 8), "programs"),
                                         ((4, 4, 8), "wide"), ((4, 4, 8), "split,BLOCK_N=64,STAGES=4")],
                         ids=["tile64", "tile128", "tile128-programs", "tile128-wide", "tile128-split-n64"])
def test_gluon_kernel_in_tile_order_matches_the_fp32_reference(tile, layout, monkeypatch):
    # 128-query tiles: two 64-row programs per tile, or one program whose gathers feed all 128 rows
    import vecdit.ops.attention._attn_gluon_kernel as gluon_kernel

    monkeypatch.setenv("VECDIT_GLUON_TILE128", layout)

    calls = []
    launch = gluon_kernel.gluon_sparse_attention
    monkeypatch.setattr(gluon_kernel, "gluon_sparse_attention", lambda *a, **kw: calls.append(1) or launch(*a, **kw))
    grid = (5, 9, 13)  # 585 queries: ragged edge tiles on every axis
    seq = math.prod(grid)
    tiles = QueryTiles(grid, tile)
    qkv = torch.randn(2, seq + 100, 3, 3, 128, dtype=torch.bfloat16, device="cuda")
    q, k, v = qkv[:, :seq, 0], qkv[:, :, 1], qkv[:, :, 2]
    sel = vector_selection(q, k[:, :seq], None, max_density=0.3, query_tiles=tiles)
    text = (seq, seq + 100)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, text)
    got, got_lse = vector_sparse_attention(q, k, v, sel, dense_range=text, return_lse=True)
    assert calls and rel_err(got, ref) < 1e-2 and float((got_lse - ref_lse).abs().max()) < 1e-2
    # the kernel alone (the compensation is merged after it)
    plain, plain_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, text, compensate=False)
    for segments in (2, 3):  # key segments write partial outputs through the index too
        out, lse = launch(q, k, v, sel.column_index, sel.column_offset, sel.column_count.reshape(-1), *text,
                          128 ** -0.5, segments=segments, query_index=tiles.query_index("cuda"),
                          block_size=tiles.block_size)
        assert rel_err(out, plain) < 1e-2 and float((lse - plain_lse).abs().max()) < 1e-2
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "triton")
    assert rel_err(vector_sparse_attention(q, k, v, sel, dense_range=text), ref) < 1e-2
