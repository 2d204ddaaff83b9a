# Copyright 2026 The vecdit authors. Apache-2.0.
"""Plain PyTorch references of the selection: what the tests compare the kernels against.

Dense fp64 scores of every (query block, key): memory O(NQB * Sk) per (batch, head), meant for
small shapes. The rule itself lives in `rule.py`; this applies it to the full score matrix.
"""
from __future__ import annotations

import math

from .._checks import check_threshold
from ..tiles import QueryTiles
from .rule import row_capacity, rule_scores, rule_select
from .sparse_format import VectorSelection


def selection_scores(q, k, scale=None, query_tiles: QueryTiles | None = None):
    """fp64 `[B, H, NQB, Sk]` scores of the pooled queries against every key."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    tiles = query_tiles if query_tiles is not None else QueryTiles.raster()
    return rule_scores(q, k, scale, tiles.query_index(q.device), tiles.block_size)


def vector_selection_reference(
    q, k, threshold=0.05, *, mode="exact", max_columns=0, min_columns=0, max_density=None, scale=None,
    query_tiles: QueryTiles | None = None,
) -> VectorSelection:
    """The selection formula on dense fp64 scores (`rule_keep`); same arguments as `vector_selection`,
    plus `max_columns` (a count instead of `max_density`)."""
    if max_density is not None:
        max_columns = max(1, math.floor(max_density * k.shape[1]))
    gap = check_threshold(threshold, q.shape[2], "cpu")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    tiles = query_tiles if query_tiles is not None else QueryTiles.raster()
    keep = rule_select(q, k, gap, mode == "running", max_columns, min(min_columns, k.shape[1]), scale,
                       tiles.query_index(q.device), tiles.block_size)
    return VectorSelection.from_mask(keep, query_tiles, row_capacity(k.shape[1], max_columns))
