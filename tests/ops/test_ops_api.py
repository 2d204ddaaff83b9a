# Copyright 2026 The vecdit authors. Apache-2.0.
"""Input validation, torch.library registration and torch.compile of the ops."""
import pytest
import torch

from vecdit.ops import QueryTiles, VectorSelection, vector_selection, vector_sparse_attention


def _qkv(device, dtype=torch.bfloat16, sq=70, sk=80, heads=2, dim=64):
    return (torch.randn(1, sq, heads, dim).to(dtype).to(device),
            torch.randn(1, sk, heads, dim).to(dtype).to(device),
            torch.randn(1, sk, heads, dim).to(dtype).to(device))


def _sel(device, heads=2, nqb=2, sk=80):
    return VectorSelection.from_mask((torch.rand(1, heads, nqb, sk) < 0.5).to(device))


@pytest.mark.parametrize(
    "change, param",
    [
        (lambda q, k, v: (q[0], k, v), "q"),
        (lambda q, k, v: (q.float(), k, v), "q"),
        (lambda q, k, v: (q, k.half(), v), "k"),
        (lambda q, k, v: (q, k.to("meta"), v), "k"),
        (lambda q, k, v: (q, torch.cat([k, k]), v), "k"),
        (lambda q, k, v: (q, k[:, :, :1], v[:, :, :1]), "heads"),
        (lambda q, k, v: (q[..., :48], k[..., :48], v[..., :48]), "head_dim"),
    ],
    ids=["rank", "dtype", "dtype-mismatch", "device", "batch", "heads", "head_dim"],
)
def test_bad_inputs_raise_value_error_naming_the_parameter(change, param, device):
    q, k, v = change(*_qkv(device))
    with pytest.raises(ValueError, match=param):
        vector_sparse_attention(q, k, v, None, dense_range=(0, 8))
    with pytest.raises(ValueError, match=param):
        vector_selection(q, k, 0.1)


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5, float("nan"), [0.1, 0.2, 0.3]])
def test_threshold_outside_unit_interval_raises(threshold, device):
    q, k, _ = _qkv(device)
    with pytest.raises(ValueError, match="threshold"):
        vector_selection(q, k, threshold)


def test_other_parameters_raise(device):
    q, k, v = _qkv(device)
    with pytest.raises(ValueError, match="mode"):
        vector_selection(q, k, 0.1, mode="fast")
    with pytest.raises(ValueError, match="max_density"):
        vector_selection(q, k, 0.1, max_density=1.5)
    with pytest.raises(ValueError, match="min_columns"):
        vector_selection(q, k, 0.1, max_density=0.1, min_columns=20)
    with pytest.raises(ValueError, match="dense_range"):
        vector_sparse_attention(q, k, v, None, dense_range=(10, 200))
    with pytest.raises(ValueError, match="selection"):
        vector_sparse_attention(q, k, v, _sel(device, heads=1))


@pytest.mark.parametrize("grid, tile, match", [
    ((2, 5, 7), (4, 4, 4), "grid"),  # 70 tokens, q has 72
    ((0, 5, 14), (4, 4, 4), "grid"),
    ((2, 5), (4, 4, 4), "grid"),
    ((2, 5, 7), (4, 4, 2), "tile"),
    ((2, 5, 7), (4, 0, 16), "tile"),
    (None, (4, 4, 4), "grid"),
])
def test_bad_query_tiles_raise_value_error_naming_them(grid, tile, match, device):
    q, k, _ = _qkv(device, sq=72)
    with pytest.raises(ValueError, match=match):
        vector_selection(q, k, 0.2, query_tiles=QueryTiles(grid, tile))
    with pytest.raises(ValueError, match="query_tiles"):
        vector_selection(q, k, 0.2, query_tiles=(4, 4, 4))
    with pytest.raises(ValueError, match="max_density"):
        vector_selection(q, k, None)


def test_index_out_of_range_raises_in_debug_mode(device, monkeypatch):
    q, k, v = _qkv(device)
    sel = _sel(device)
    bad = VectorSelection(sel.column_index.clone(), sel.column_offset, sel.column_count, 1, 2, 2, 80)
    bad.column_index[0] = 80
    monkeypatch.setenv("VECDIT_DEBUG", "1")
    with pytest.raises(ValueError, match="column_index"):
        vector_sparse_attention(q, k, v, bad)


def test_ops_registered_with_torch_library(device):
    q, k, v = _qkv(device)
    sel = _sel(device)
    index = torch.randperm(q.shape[1]).to(device, torch.int32)  # a query order (tiles) read through its index
    for query_index in (None, index):
        for compensation in ((None, 0, ""), (sel.kept_per_word(), sel.num_keys, "query"), (sel.kept_per_word(), sel.num_keys, "pooled")):
            torch.library.opcheck(
                torch.ops.vecdit.vec_sparse_attn.default,
                (q, k, v, sel.column_index, sel.column_offset, sel.column_count.reshape(-1), 0, 0, 0.125, query_index, 64,
                 *compensation),
                test_utils=("test_schema", "test_faketensor"),
            )
        gap = torch.full((2,), 2.0, device=device)
        torch.library.opcheck(torch.ops.vecdit.vec_select.default, (q, k, gap, True, False, 0, 0, 0.125, query_index, 64),
                              test_utils=("test_schema",))


def test_torch_compile_fullgraph_does_not_break(device):
    q, k, v = _qkv(device, sq=96)

    tiles = QueryTiles((2, 4, 12), (2, 4, 8))  # 96 queries in two 64-query tiles, read through an index
    tiles.query_index(device)  # built once outside the graph, as the processors do per forward

    def block(q, k, v):
        sel = vector_selection(q, k, 0.2)
        top = vector_selection(q, k, None, max_density=0.25, query_tiles=tiles)
        return (vector_sparse_attention(q * 1.0, k, v, sel, dense_range=None)
                + vector_sparse_attention(q, k, v, top) + 1.0)

    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    eager = block(q, k, v)
    assert torch.allclose(compiled(q, k, v).float(), eager.float(), atol=1e-2)


def test_torch_compile_fullgraph_with_the_in_place_rotary(device):
    from vecdit.ops import rotary_pairs_

    def block(x, cos, sin):
        y = x * 1.0
        rotary_pairs_(y, cos, sin)  # a mutating custom op: functionalized, not a graph break
        return y + 1.0

    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 40, 2, 64, generator=g).to(device, torch.bfloat16)
    cos, sin = torch.rand(2, 40, 32, generator=g).to(device).unbind(0)
    torch._dynamo.reset()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, cos, sin), block(x, cos, sin))
