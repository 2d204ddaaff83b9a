# Copyright 2026 The vecdit authors. Apache-2.0.
"""The CPU path (the selection as an SDPA mask) against the plain reference."""
import math

import pytest
import torch

from vecdit.ops import QueryTiles, VectorSelection, vec_sparse_attention_reference, vector_selection_reference
from vecdit.ops import masked_sparse_attention



def video_with_text(grid, text, heads, batch, generator):
    """q `[B, S, H, 64]` over a `grid` of video tokens, k / v with `text` keys after them, and the grid's 4x4x4 tiles."""
    seq = math.prod(grid)
    q = torch.randn(batch, seq, heads, 64, generator=generator)
    k = torch.randn(batch, seq + text, heads, 64, generator=generator) * 2
    v = torch.randn(batch, seq + text, heads, 64, generator=generator)
    return q, k, v, QueryTiles(grid)

@pytest.mark.parametrize("compensate", [False, "query", "pooled", "dropped"])
def test_masked_path_matches_the_reference(compensate):
    # a ragged 3x7x9 grid in 4x4x4 tiles (edge tiles, a short last block), two videos, text keys after
    # the scored ones, a block that keeps nothing and one that keeps everything
    grid, text, heads = (3, 7, 9), 13, 3
    seq = math.prod(grid)
    g = torch.Generator().manual_seed(0)
    q, k, v, tiles = video_with_text(grid, text, heads, batch=2, generator=g)
    keep = torch.rand(2, heads, tiles.num_blocks(seq), seq, generator=g) < 0.25
    keep[0, 1, 0], keep[1, 2, 1] = False, True
    sel = VectorSelection.from_mask(keep, tiles)
    for dense_range in ((seq, seq + text), (0, 0)):
        ref, ref_lse = vec_sparse_attention_reference(q, k, v, sel, dense_range, compensate=compensate)
        got, lse = masked_sparse_attention(q, k, v, sel, dense_range, compensate=compensate, return_lse=True)
        assert float((got - ref).norm() / ref.norm()) < 1e-5 and torch.isfinite(got).all()
        finite = torch.isfinite(ref_lse)
        assert torch.allclose(lse[finite], ref_lse[finite], atol=1e-4) and torch.equal(finite, torch.isfinite(lse))


def test_masked_path_with_a_budgeted_selection_in_bf16():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 128, 2, 64, generator=g).to(torch.bfloat16) for _ in range(3))
    sel = vector_selection_reference(q, k, None, max_density=0.3, query_tiles=QueryTiles((2, 8, 8)))
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel)
    got = masked_sparse_attention(q, k, v, sel)
    assert got.dtype == torch.bfloat16 and float((got.float() - ref).norm() / ref.norm()) < 2e-2


@pytest.mark.parametrize("compensate", [False, "query", "pooled", "dropped"])
def test_sparse_attention_on_the_cpu_compiles_fullgraph_like_eager(compensate):
    # the CPU path (fp32 CPU tensors: no kernel) under torch.compile(fullgraph=True)
    # read the block length back from the data (a data-dependent guard); select and attend in one graph,
    # with text keys after the scored ones, as a processor does
    from torch._dynamo.utils import counters

    from vecdit.ops import sparse_attention

    grid, text, heads = (2, 6, 7), 9, 2
    seq = math.prod(grid)
    q, k, v, tiles = video_with_text(grid, text, heads, batch=1, generator=torch.Generator().manual_seed(3))

    def attend(q, k, v):
        sel = vector_selection_reference(q, k[:, :seq], None, max_density=0.25, query_tiles=tiles)
        return sparse_attention(q, k, v, sel, dense_range=(seq, seq + text), compensate=compensate)

    eager = attend(q, k, v)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(attend, fullgraph=True, backend="aot_eager")(q, k, v)
    assert sum(counters["graph_break"].values()) == 0
    assert torch.allclose(compiled, eager, atol=1e-6, rtol=1e-5)
    torch._dynamo.reset()
