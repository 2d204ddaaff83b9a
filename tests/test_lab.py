# Copyright 2026 The vecdit authors. Apache-2.0.
"""Fidelity lab: metrics on hand-computed cases, patterns at density 1, calibration to a target."""
import math

import pytest
import torch

from vecdit import VecAttnConfig
from vecdit.lab import SyntheticConfig, calibrate, compare_patterns, metrics, probabilities, structured_qkv
from vecdit.lab.synthetic import GEOMETRIES
from vecdit.ops import QueryTiles, vector_selection_reference


def test_metrics_hand_computed():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]], dtype=torch.float64)
    v = torch.tensor([[1.0], [2.0], [4.0]])
    mask = torch.tensor([[True, True, False], [False, False, True]])
    m = metrics(mask, probs, v)
    assert m["recall"] == pytest.approx((0.8 + 0.8) / 2)
    assert m["density"] == pytest.approx(3 / 6)
    dense = torch.tensor([0.5 + 0.6 + 0.8, 0.1 + 0.2 + 3.2])
    sparse = torch.tensor([(0.5 * 1 + 0.3 * 2) / 0.8, 4.0])
    assert m["rel_l2"] == pytest.approx(float((sparse - dense).norm() / dense.norm()))


TINY = GEOMETRIES["tiny"][0]  # (3, 8, 8): 192 tokens, three 64-query blocks in either grouping


def test_every_pattern_keeps_everything_at_density_one():
    q, k, v = structured_qkv(SyntheticConfig(heads=1, head_dim=64))
    for r in compare_patterns(q, k, v, TINY, densities=(1.0,)):
        assert r["recall"] == pytest.approx(1.0) and r["density"] == pytest.approx(1.0), r["pattern"]


def test_patterns_at_matched_density_and_oracle_bounds():
    q, k, v = structured_qkv(SyntheticConfig(geometry="cpu-small", heads=2, head_dim=64, seed=3))
    rows = compare_patterns(q, k, v, GEOMETRIES["cpu-small"][0], densities=(0.25,), blocks=6)
    for r in rows:
        assert abs(r["density"] - 0.25) < 0.03, r
    for h in range(2):
        by = {r["pattern"]: r for r in rows if r["head"] == h}
        # the per-row oracle keeps the most mass at a given density; top-k per tile is the tile
        # oracle's estimate, and tiles beat raster strips with the same rule
        assert by["oracle"]["recall"] >= max(r["recall"] for r in by.values()) - 0.02
        assert by["tiles-oracle"]["recall"] >= by["tiles-topk"]["recall"] - 1e-9
        assert by["tiles-topk"]["recall"] > by["raster-topk"]["recall"]
        assert by["tiles-topk"]["recall"] > by["raster-minp"]["recall"]


def test_rules_scored_as_the_kernels_round_keep_the_mass_of_the_fp64_rules():
    # rule_dtype=bf16: bf16 keys and the pooled query rounded to bf16 (reference.rule_query); the
    # masks may differ at the cut, the kept attention mass barely
    q, k, v = structured_qkv(SyntheticConfig(geometry="cpu-small", heads=2, head_dim=64, seed=3))
    args = (q, k, v, GEOMETRIES["cpu-small"][0], (0.1, 0.25), ["tiles-topk", "tiles128-topk"], 6)
    exact, rounded = compare_patterns(*args), compare_patterns(*args, rule_dtype=torch.bfloat16)
    assert [r["pattern"] for r in exact] == [r["pattern"] for r in rounded]
    assert any(a["recall"] != b["recall"] for a, b in zip(exact, rounded))  # the option takes effect
    for a, b in zip(exact, rounded):
        assert abs(a["recall"] - b["recall"]) < 0.01 and abs(a["density"] - b["density"]) < 0.005, (a, b)


def test_lab_topk_is_the_product_selection():
    # the lab's rule is the ops' rule: tile-order top-k over all blocks equals vector_selection_reference's
    from vecdit.lab.patterns import block_keep, block_mean, sample_blocks

    q, k, _ = structured_qkv(SyntheticConfig(heads=1, head_dim=64, seed=4))
    tiles = QueryTiles(TINY)
    rows, block = sample_blocks(tiles, q.shape[1], None, torch.Generator())
    pooled = block_mean(q[0, rows, 0].double(), block, 3) * 64 ** -0.5
    keep = block_keep("tiles-topk", pooled @ k[0, :, 0].double().T, 0.2)
    ref = vector_selection_reference(q, k, None, max_density=0.2, query_tiles=tiles).to_mask()[0, 0]
    assert torch.equal(keep, ref)


def test_structured_proxy_is_seeded_and_has_global_columns():
    a = structured_qkv(SyntheticConfig(seed=1))
    b = structured_qkv(SyntheticConfig(seed=1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    q, k, _ = a
    probs = probabilities(q[0, :, 0], k[0, :, 0])
    # a few columns collect far more than a uniform share of the attention
    assert float(probs.mean(0).max()) > 5 / probs.shape[1]


def test_calibration_hits_target_density_and_loads_into_config():
    layers = [structured_qkv(SyntheticConfig(heads=3, head_dim=64, seed=s)) for s in (0, 1)]
    result = calibrate(layers, target_density=0.3, query_tiles=QueryTiles(TINY))  # in tile order
    assert abs(result["density"] - 0.3) <= 0.02
    assert result["threshold"].shape == (2, 3) and result["query_tiles"] == [4, 4, 4]
    config = VecAttnConfig(threshold=result["threshold"])
    assert config.threshold_for(1, 3).shape == (3,)
    assert 0 < result["recall"] <= 1 and not math.isnan(result["recall"])


def test_sampled_blocks_give_the_same_metrics_as_full_rows_for_those_blocks():
    q, k, v = structured_qkv(SyntheticConfig(heads=1, head_dim=64, seed=2))
    patterns = ("tiles-topk", "tiles-oracle", "oracle")
    full = compare_patterns(q, k, v, TINY, densities=(0.25,), patterns=patterns)
    sampled = compare_patterns(q, k, v, TINY, densities=(0.25,), patterns=patterns, blocks=3)
    assert [r["recall"] for r in full] == pytest.approx([r["recall"] for r in sampled])  # 3 blocks = all rows here


def test_benchmark_structured_inputs_are_the_lab_proxy(monkeypatch):
    # `python -m vecdit.bench attention --inputs structured` times the kernels on the proxy's grid
    from vecdit.bench import attention as bench

    monkeypatch.setitem(bench.SHAPES, "tiny-test", dict(heads=2, video=192, text=8))
    monkeypatch.setitem(bench.STRUCTURED_GEOMETRY, "tiny-test", "tiny")
    q, k, v = bench.make_inputs("tiny-test", device="cpu", inputs="structured")
    assert q.shape == k.shape == v.shape == (1, 200, 2, 128) and q.dtype == torch.bfloat16
    pq, pk, _ = structured_qkv(SyntheticConfig(geometry="tiny", heads=2, head_dim=128, seed=0))
    assert torch.equal(q[:, :192], pq.to(torch.bfloat16)) and torch.equal(k[:, :192], pk.to(torch.bfloat16))
    assert torch.isfinite(v.float()).all()
    with pytest.raises(ValueError, match="inputs"):
        bench.make_inputs("tiny-test", device="cpu", inputs="zeros")


def test_peer_benchmark_recall_is_paired_and_bounded(monkeypatch):
    # `python -m vecdit.bench peers` scores every method on the same query tokens; its vecdit row on a tiny grid
    from vecdit.bench import peers
    from vecdit.lab.match import matched_density, selection_recall, token_recall

    monkeypatch.setattr(peers, "do_bench_ms", lambda fn: (fn(), 0.0)[1])
    q, k, v = (x.to(torch.bfloat16) for x in structured_qkv(SyntheticConfig(geometry="tiny", heads=2, head_dim=128)))
    blocks = QueryTiles(TINY).token_blocks(q.shape[1], "cpu")
    everything = token_recall(q, k, blocks, lambda h, b: torch.ones(k.shape[1], dtype=torch.bool), heads=2)
    assert everything["recall"] == pytest.approx(1.0) and everything["key_density"] == 1.0
    row = peers._vecdit(q, k, v, TINY, 0.25, (4, 4, 4), heads_sampled=2)
    assert row["key_density"] == pytest.approx(0.25, abs=0.01) and 0.25 < row["recall"] < 1.0
    half = token_recall(q, k, blocks, lambda h, b: torch.arange(k.shape[1]) % 2 == 0, heads=2)
    assert half["key_density"] == 0.5 and 0 < half["recall"] < 1
    # equal quality: the density where vecdit keeps a (lower) peer's recall lies below the peer's density
    target = row["recall"] - 0.05
    matched = matched_density(q, k, TINY, (4, 4, 4), target, 0.25, heads=2)
    tiles = QueryTiles(TINY, (4, 4, 4))
    assert matched < 0.25 and selection_recall(q, k, tiles, matched, 2)[1]["recall"] >= target
    assert selection_recall(q, k, tiles, matched * 0.8, 2)[1]["recall"] < target + 0.02


def test_lab_match_finds_the_density_of_equal_recall_for_another_tile():
    # heads selected one at a time (what a CPU's memory allows) keep the same keys as all heads at once
    from vecdit.lab.match import match_tiles, selection_recall

    q, k, _ = (x.to(torch.bfloat16) for x in structured_qkv(SyntheticConfig(geometry="tiny", heads=3, head_dim=128)))
    tiles = QueryTiles(TINY, (4, 4, 4))
    together = selection_recall(q, k, tiles, 0.25, heads=2)[1]
    alone = selection_recall(q, k, tiles, 0.25, heads=2, sampled_heads_only=True)[1]
    assert together == alone
    (row,) = match_tiles(q, k, TINY, (4, 4, 4), (4, 4, 8), [0.25], heads=2, sampled_heads_only=True)
    assert row["reference_recall"] == pytest.approx(together["recall"])
    assert row["matched_recall"] >= row["reference_recall"]
    # the smallest such density, to the search's step
    below = selection_recall(q, k, QueryTiles(TINY, (4, 4, 8)), row["matched_density"] * 0.95, heads=2)[1]
    assert below["recall"] < row["reference_recall"] + 0.01


def test_lab_match_by_output_error_with_compensation():
    # `lab match --by error`: the error is |out - dense| / |dense| on the sampled tokens, computed here directly
    from vecdit.lab.match import match_by_error, sampled_tokens, selection_error, token_error

    q, k, v = (x.to(torch.bfloat16) for x in structured_qkv(SyntheticConfig(geometry="tiny", heads=2, head_dim=128)))
    tiles = QueryTiles(TINY, (4, 4, 4))
    blocks = tiles.token_blocks(q.shape[1], "cpu")
    half = lambda h, b: (torch.arange(k.shape[1]) + b) % 2 == 0  # noqa: E731 - a different half per block
    expected = []
    for h, toks in sampled_tokens(2, q.shape[1], 2):
        qh, kh, vh = (x[0, :, h].double() for x in (q, k, v))
        p = torch.softmax(qh[toks] @ kh.T * 128 ** -0.5, -1)
        dense = p @ vh
        mask = torch.stack([half(h, b) for b in blocks[toks].tolist()])
        sparse = (p * mask) @ vh / (p * mask).sum(-1, keepdim=True)
        expected += ((sparse - dense).norm(dim=-1) / dense.norm(dim=-1)).tolist()
    assert token_error(q, k, v, tiles, half, 2, None)["error"] == pytest.approx(sum(expected) / len(expected))
    everything = lambda h, b: torch.ones(k.shape[1], dtype=torch.bool)  # noqa: E731
    for mode in (None, "pooled", "query"):
        assert token_error(q, k, v, tiles, everything, 2, mode)["error"] < 1e-12
    assert selection_error(q, k, v, tiles, 0.25, 2, "pooled") < selection_error(q, k, v, tiles, 0.25, 2, None)
    # compensated, the same tiles reach the uncompensated error at a lower density
    (row,) = match_by_error(q, k, v, TINY, (4, 4, 4), (4, 4, 4), [0.25], heads=2, compensate="pooled", steps=3)
    assert row["reference_error"] == pytest.approx(selection_error(q, k, v, tiles, 0.25, 2, None))
    assert row["matched_error"] <= row["reference_error"] and row["matched_density"] < 0.25


def test_tile_pairs_union_contains_own_lists_and_matches_compute():
    from vecdit.lab.pairs import pair_rows, summarize_pairs
    from vecdit.lab.synthetic import GEOMETRIES, SyntheticConfig, structured_qkv

    q, k, _ = structured_qkv(SyntheticConfig(geometry="cpu-small", heads=2, head_dim=128))
    rows = pair_rows(q, k, GEOMETRIES["cpu-small"][0], [0.1, 0.25], pairs=2)
    assert len(rows) == 2 * 2 * 2
    for r in rows:
        budget = int(r["density"] * q.shape[1])
        assert 1.0 <= r["union_factor"] <= 2.0
        assert r["union"] >= r["own"] - 1e-12  # the union holds each tile's own list
        assert r["matched_keys_per_tile"] <= budget
    assert {s["density"] for s in summarize_pairs(rows)} == {0.1, 0.25}
