# Copyright 2026 The vecdit authors. Apache-2.0.
"""Vector selection against the rule's fp64 reference: min-p, budget, the sampled cut, the bitmask
and its expansion (Triton interpreter on CPU, or the GPU)."""
import math

import pytest
import torch

from ops_testing import IDS, SHAPES, assert_same_selection, make_qkv, rule_cutoffs
from vecdit.ops import (
    QueryTiles,
    VectorSelection,
    vector_selection,
    vector_selection_bitmask,
    vector_selection_reference,
)
from vecdit.ops.selection import rule as rule_module
from vecdit.ops.selection.reference import selection_scores
from vecdit.ops.selection.sparse_format import SelectionBitmask


@pytest.mark.parametrize("mode", ["exact", "running"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_selection_matches_reference(shape, mode, device):
    batch, sq, sk, heads, dim = shape
    q, k, _ = make_qkv(shape, torch.bfloat16, device, spread=3.0)
    for threshold in (0.2, torch.linspace(0.05, 0.6, heads)):
        sel = vector_selection(q, k, threshold, mode=mode)
        ref = vector_selection_reference(q.cpu(), k.cpu(), threshold, mode=mode)
        scores = selection_scores(q, k).cpu()
        assert_same_selection(sel, ref, scores, rule_cutoffs(scores, threshold, mode))
        assert int(sel.column_count.min()) >= 1  # the max itself is always kept


def test_running_keeps_a_superset_of_exact(device):
    q, k, _ = make_qkv((1, 100, 300, 2, 64), torch.bfloat16, device, spread=3.0)
    exact = vector_selection(q, k, 0.1, mode="exact").to_mask()
    running = vector_selection(q, k, 0.1, mode="running").to_mask()
    assert torch.all(running | ~exact) and running.sum() >= exact.sum()


@pytest.mark.parametrize("mode", ["exact", "running"])
def test_selection_density_cap_and_floor(mode, device):
    shape = (1, 130, 300, 2, 64)
    # fixed inputs: in running mode a near-tie at a row's running cutoff can flip whether the row is
    # capped/floored at all, and then the two rules keep sets that differ far from any cutoff
    q, k, _ = make_qkv(shape, torch.bfloat16, device, spread=3.0, seed=11)
    scores = selection_scores(q, k).cpu()
    capped = vector_selection(q, k, 1e-6, mode=mode, max_density=0.1)
    assert int(capped.column_count.max()) <= 30
    assert_same_selection(capped, vector_selection_reference(q.cpu(), k.cpu(), 1e-6, mode=mode, max_density=0.1),
                          scores, rule_cutoffs(scores, 1e-6, mode))
    floored = vector_selection(q, k, 0.9, mode=mode, min_columns=17)
    assert int(floored.column_count.min()) >= 17
    assert_same_selection(floored, vector_selection_reference(q.cpu(), k.cpu(), 0.9, mode=mode, min_columns=17),
                          scores, rule_cutoffs(scores, 0.9, mode))


def test_selection_extremes_keep_everything_or_the_best(device):
    q, k, _ = make_qkv((1, 70, 90, 1, 64), torch.bfloat16, device, spread=3.0)
    everything = vector_selection(q, k, 1e-30)
    assert torch.all(everything.column_count == 90)
    best = vector_selection(q, k, 1.0)
    assert torch.equal(best.to_mask(), vector_selection_reference(q.cpu(), k.cpu(), 1.0).to_mask().to(device))


def test_selection_memory_is_proportional_to_kept(device):
    q, k, _ = make_qkv((1, 128, 400, 2, 64), torch.bfloat16, device, spread=3.0)
    sel = vector_selection(q, k, 0.5)
    kept = int(sel.column_count.sum())
    # counted (as a bitmask) before the index buffer is allocated: exactly the kept size
    assert sel.column_index.numel() == kept < 2 * 2 * 400
    assert int(sel.column_offset[-1]) == kept
    assert 0 < float(sel.density()) < 0.5


def test_selection_lists_are_ascending_over_many_mask_words(device):
    # 1,137 keys = 18 bitmask words: the expansion crosses its 16-word steps and a ragged last word
    q, k, _ = make_qkv((1, 70, 1137, 2, 64), torch.bfloat16, device, spread=3.0)
    sel = vector_selection(q, k, 0.3)
    ref = vector_selection_reference(q.cpu(), k.cpu(), 0.3)
    scores = selection_scores(q, k).cpu()
    assert_same_selection(sel, ref, scores, rule_cutoffs(scores, 0.3, "exact"))
    off, count = sel.column_offset.cpu(), sel.column_count.reshape(-1).cpu()
    assert torch.equal(off[1:] - off[:-1], count.long())
    for r in range(count.numel()):
        row = sel.column_index[off[r]:off[r] + count[r]].cpu()
        assert bool((row[1:] > row[:-1]).all()) and int(row.min()) >= 0 and int(row.max()) < 1137


@pytest.mark.parametrize("mode", ["exact", "running"])
def test_selection_bitmask_expands_to_the_same_lists(mode, device):
    # the compact form kept for reuse: same keys as vector_selection, 9/64 bytes per (block, key)
    q, k, _ = make_qkv((2, 150, 1137, 2, 64), torch.bfloat16, device, spread=3.0)
    threshold = torch.tensor([0.2, 0.5])
    sel = vector_selection(q, k, threshold, mode=mode)
    bits = vector_selection_bitmask(q, k, threshold, mode=mode)
    again = bits.expand()
    assert torch.equal(again.column_index, sel.column_index) and torch.equal(again.column_offset, sel.column_offset)
    assert torch.equal(again.column_count, sel.column_count)
    assert bits.nbytes() == 2 * 2 * 3 * 18 * 9  # rows x words x (8 + 1) bytes
    ref = vector_selection_reference(q.cpu(), k.cpu(), threshold, mode=mode)
    packed = SelectionBitmask.from_selection(ref)  # round trip of the reference: exact
    assert torch.equal(packed.expand().to_mask(), ref.to_mask())
    assert bits.word_count.dtype == torch.uint8
    assert torch.equal(bits.word_count.sum(1).cpu().int(), sel.column_count.reshape(-1).cpu())
    scores = selection_scores(q, k).cpu()
    assert_same_selection(again, ref, scores, rule_cutoffs(scores, threshold, mode))


@pytest.mark.parametrize("capacity", [None, 40])
def test_expansion_kernel_writes_each_rows_keys_in_order(capacity, device):
    # words of every kind (empty, full, bit 63 alone, random at several densities) and a word count
    # that leaves the last program partly past the row's end; every listed key compared
    from vecdit.ops.selection.sparse_format import _expand_triton

    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    rows, num_words = 5, 37
    bits = torch.rand(rows, num_words, 64, generator=g) < torch.tensor([0.02, 0.1, 0.5, 0.9, 1.0]).view(rows, 1, 1)
    bits[0, 3], bits[1, 4], bits[2, 5] = False, True, False
    bits[2, 5, 63] = True
    weights = torch.ones(64, dtype=torch.int64) << torch.arange(64)  # bit 63's weight wraps to -2^63
    mask = (bits.long() * weights).sum(-1)
    word_end = bits.sum(-1).cumsum(1).int()
    count = bits.sum((1, 2)).int()
    index, offset, got_count = _expand_triton(mask.to(device), word_end.to(device), count.to(device), capacity)
    keep = capacity if capacity is not None else int(count.max())
    for r in range(rows):
        want = bits[r].flatten().nonzero().flatten().int()[:keep]
        assert int(got_count[r]) == want.numel()
        assert torch.equal(index[int(offset[r]):int(offset[r]) + want.numel()].cpu(), want), r


def test_sampled_budget_keeps_about_the_budget_on_average(device, monkeypatch):
    # long rows place the cut by rank in a fixed key sample (no sort of all keys); shrink the
    # sample so that path runs on a small shape
    monkeypatch.setattr(rule_module, "SAMPLE_KEYS", 200)
    grid = (2, 8, 8)
    q, k, _ = make_qkv((1, 128, 1200, 2, 64), torch.bfloat16, device, spread=2.0, seed=7)
    tiles = QueryTiles(grid)
    sel = vector_selection(q, k, None, max_density=0.25, query_tiles=tiles)
    ref = vector_selection_reference(q.cpu(), k.cpu(), None, max_density=0.25, query_tiles=tiles)
    assert abs(float(sel.density()) - 0.25) < 0.03
    assert int((sel.to_mask().cpu() ^ ref.to_mask()).sum()) <= 4  # the same cut: near-ties only
    scores = selection_scores(q.cpu(), k.cpu(), query_tiles=tiles)
    kept = sel.to_mask().cpu()
    # a cut, not a scatter: every kept key outscores every dropped one of its block
    assert bool((torch.where(kept, scores, math.inf).amin(-1) >= torch.where(kept, -math.inf, scores).amax(-1) - 1e-3).all())


def test_budget_sizes_the_index_on_the_host(device, monkeypatch):
    """Under a budget the index buffer has `row_capacity` slots per row (no read-back of counts,
    no host sync); the kept keys are the rule's, in selection and in its reused bitmask form."""
    from vecdit.ops.selection.rule import row_capacity

    monkeypatch.setattr(rule_module, "SAMPLE_KEYS", 200)  # the sampled cut on a small shape
    tiles = QueryTiles((2, 8, 8))
    q, k, _ = make_qkv((1, 128, 1200, 2, 64), torch.bfloat16, device, spread=2.0, seed=3)
    cap = row_capacity(1200, 300)
    assert 300 < cap < 1200
    sel = vector_selection(q, k, None, max_density=0.25, query_tiles=tiles)
    rows = sel.column_count.numel()
    assert sel.column_index.numel() == rows * cap
    assert torch.equal(sel.column_offset.cpu(), torch.arange(rows + 1) * cap)
    assert int(sel.column_count.max()) <= cap
    ref = vector_selection_reference(q.cpu(), k.cpu(), None, max_density=0.25, query_tiles=tiles)
    assert ref.column_index.numel() == rows * cap  # the reference keeps the same layout
    assert int((sel.to_mask().cpu() ^ ref.to_mask()).sum()) <= 4
    again = vector_selection_bitmask(q, k, None, max_density=0.25, query_tiles=tiles).expand()
    assert again.column_index.numel() == rows * cap and torch.equal(again.to_mask(), sel.to_mask())
    minp = vector_selection(q, k, 0.5, query_tiles=tiles)  # min-p without a cap: count, then fill
    assert minp.column_index.numel() == int(minp.column_count.sum())


def test_a_row_past_its_capacity_keeps_its_first_keys(device):
    from vecdit.ops.selection.sparse_format import SelectionBitmask

    g = torch.Generator().manual_seed(11)
    mask = torch.rand(1, 2, 3, 300, generator=g) < 0.5
    bits = SelectionBitmask.from_selection(VectorSelection.from_mask(mask.to(device)), row_capacity=100)
    sel = bits.expand()
    assert sel.column_index.numel() == 6 * 100 and int(sel.column_count.max()) == 100
    first = mask & (mask.cumsum(-1) <= 100)
    assert torch.equal(sel.to_mask().cpu(), first)
    assert torch.equal(VectorSelection.from_mask(mask, row_capacity=100).to_mask(), first)


def test_sample_scores_kernel_scores_the_sampled_keys_as_fp32(device):
    """The budget cut's sampled scores: the pooled queries (bf16, as the rule rounds them) against
    the sampled K rows read in place (strided K, a chunk of heads): exact products summed in fp32."""
    from vecdit.ops.selection.op import sample_scores_triton

    g = torch.Generator().manual_seed(7)
    batch, heads, nqb, dim, num_keys = 2, 3, 70, 64, 300
    k = torch.randn(batch, heads, num_keys, dim, generator=g).to(torch.bfloat16).transpose(1, 2)  # [B, Sk, H, D], strided
    pooled = (torch.randn(batch * heads, nqb, dim, generator=g) * 0.3).to(torch.bfloat16)
    sample = torch.randperm(num_keys, generator=g)[:150].sort().values
    scores = sample_scores_triton(pooled.to(device), k.to(device), sample.to(device), 1, 2).cpu()  # heads 1 and 2
    want = pooled.double().view(batch, heads, nqb, dim)[:, 1:] @ k.double()[:, sample].permute(0, 2, 3, 1)[:, 1:]
    assert scores.shape == (batch, 2, nqb, 150) and torch.isfinite(scores).all()
    assert ((scores.double() - want).norm() / want.norm()).item() < 1e-6
    every = sample_scores_triton(pooled.to(device), k.to(device), None, 0, heads).cpu()  # no sample: all keys
    want = pooled.double().view(batch, heads, nqb, dim) @ k.double().permute(0, 2, 3, 1)
    assert every.shape == (batch, heads, nqb, num_keys)
    assert ((every.double() - want).norm() / want.norm()).item() < 1e-6


@pytest.mark.parametrize("n, rank", [(8192, 2048), (8192, 820), (300, 75), (257, 256)])
def test_sample_cut_kernel_places_the_reference_cut(n, rank, device):
    from vecdit.ops.selection.rule import budget_cuts
    from vecdit.ops.selection.op import sample_cut

    g = torch.Generator().manual_seed(n + rank)
    scores = torch.randn(2, 3, n, generator=g) * 3 - 1  # negative and positive scores
    scores[0, 0] = scores[0, 0].round()  # many ties
    scores[0, 1, : n // 2] = -math.inf  # masked keys
    lower, _ = budget_cuts(scores, n, rank, 0)  # Sk = n: the cut sits between ranks `rank` and rank + 1
    out = torch.empty(2, 3, device=device)
    sample_cut(scores.to(device), rank, out)
    assert torch.equal(out.cpu(), lower)


def test_sample_cut_kernel_on_rows_the_interpolation_finds_hard(device):
    # the cut's search guesses from the row's mean and spread, then interpolates: rows far from
    # normal (heavy tails, two modes, one repeated value, a few distinct values) and ranks at the
    # ends still get the reference cut exactly
    from vecdit.ops.selection.rule import budget_cuts
    from vecdit.ops.selection.op import sample_cut

    g = torch.Generator().manual_seed(7)
    n = 1024
    rows = [
        torch.randn(n, generator=g) / torch.randn(n, generator=g).abs().clamp_min(1e-3),  # Cauchy-like tails
        torch.cat([torch.randn(900, generator=g), 8 + torch.randn(124, generator=g)]),
        torch.full((n,), 0.75),
        torch.randint(-3, 4, (n,), generator=g).float(),
        torch.randn(n, generator=g).exp() * 1e-30,  # tiny positive scores
        -torch.randn(n, generator=g).exp() * 1e30,  # huge negative scores
    ]
    scores = torch.stack(rows).view(2, 3, n)
    for rank in (1, 100, 512, n - 1):
        lower, _ = budget_cuts(scores, n, rank, 0)
        out = torch.empty(2, 3, device=device)
        sample_cut(scores.to(device), rank, out)
        assert torch.equal(out.cpu(), lower), rank
