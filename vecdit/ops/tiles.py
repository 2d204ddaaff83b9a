# Copyright 2026 The vecdit authors. Apache-2.0.
"""Query blocks as compact 3D tiles of the latent video grid (`QueryTiles`).

A video DiT flattens its post-patchify (frames, height, width) grid in raster order, so 64
consecutive tokens are a 1 x 1 x 64 strip at 720p (a latent row is 80 wide): their RoPE phases
disagree and their mean query is blurred. A 4 x 4 x 4 tile keeps the mean close to every member's.

Tile order: the full tiles first (tile-raster order, members raster within a tile), then the edge
tiles that the grid cuts short (fewer members), in the same order. Query block b is positions
`[b * block_size, (b + 1) * block_size)` of that order: every full tile is exactly one block (or,
for tiles of 128, one block of 128 queries), edge tiles are packed side by side into blocks of
real members, so there are `ceil(S / block_size)` blocks as in raster order and no padded rows.
Only the last block can be short. The order is never materialised as a copy of Q or of the
output: `query_index` maps a position to its token, and pooling and the kernels read and write
rows through it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# query rows per block the kernels run: one 64-row program per block, or two for 128-query tiles
BLOCK_SIZES = (64, 128)
DEFAULT_TILE = (4, 4, 4)


@dataclass(frozen=True)
class QueryTiles:
    """How the video queries are grouped into query blocks.

    Args:
        grid (`tuple[int, int, int]`, *optional*): the (frames, height, width) token grid after
            patchify; its product must equal the number of video queries. None for raster order.
        tile (`tuple[int, int, int]` or `"raster"`, defaults to `(4, 4, 4)`): tile shape, 64 or 128
            members. `"raster"` keeps the method as published: 64 consecutive tokens per block.

    Where the grid is thinner than the tile along an axis (a single frame, T=1), the tile is reshaped
    to fit with the same number of members where possible (4x4x4 on T=1 becomes 1x8x8).

    >>> QueryTiles((21, 30, 52)).block_size
    64
    """

    grid: tuple[int, int, int] | None = None
    tile: tuple[int, int, int] | str = DEFAULT_TILE
    _index_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        if self.tile == "raster":
            if self.grid is not None:
                _check_grid(self.grid)
                object.__setattr__(self, "grid", tuple(int(x) for x in self.grid))
            return
        if isinstance(self.tile, str) or len(tuple(self.tile)) != 3 or any(int(x) < 1 for x in self.tile):
            raise ValueError(f"`tile` must be 'raster' or three sizes >= 1 (frames, height, width), got {self.tile!r}")
        tile = tuple(int(x) for x in self.tile)
        if math.prod(tile) not in BLOCK_SIZES:
            raise ValueError(f"`tile` must have one of {BLOCK_SIZES} members, got {tile} ({math.prod(tile)})")
        if self.grid is None:
            raise ValueError("`grid` (frames, height, width) is required for tiles; use tile='raster' without a grid")
        _check_grid(self.grid)
        object.__setattr__(self, "tile", tile)
        object.__setattr__(self, "grid", tuple(int(x) for x in self.grid))

    @classmethod
    def raster(cls) -> "QueryTiles":
        """The published method's grouping: 64 consecutive tokens per query block."""
        return cls(None, "raster")

    @property
    def is_raster(self) -> bool:
        return self.tile == "raster"

    @property
    def block_size(self) -> int:
        return 64 if self.is_raster else math.prod(self.tile)

    @property
    def effective_tile(self) -> tuple[int, int, int] | None:
        """The tile as laid on this grid (reshaped where the grid is thinner than the tile)."""
        return None if self.is_raster else fit_tile(self.tile, self.grid)

    def num_blocks(self, seq_q: int) -> int:
        return -(-seq_q // self.block_size)

    def check(self, seq_q: int, name: str = "q") -> None:
        """ValueError unless the grid holds exactly the `seq_q` queries."""
        if self.grid is not None and math.prod(self.grid) != seq_q:
            raise ValueError(f"`query_tiles.grid` {self.grid} holds {math.prod(self.grid)} tokens but `{name}` has "
                             f"{seq_q} queries; pass the post-patchify (frames, height, width) of the video tokens")

    def token_blocks(self, seq_q: int, device) -> torch.Tensor:
        """int64 `[S]`: query block of each token (references and the lab)."""
        return block_of_token(self.query_index(device), self.block_size, seq_q, device)

    def query_index(self, device) -> torch.Tensor | None:
        """int32 `[S]`: token (raster position) of each tile-order position; None for raster."""
        if self.is_raster:
            return None
        device = torch.device(device)
        index = self._index_cache.get(device)
        if index is None:
            index = self._index_cache[device] = tile_order(self.grid, self.effective_tile).to(device)
        return index


def _check_grid(grid) -> None:
    if len(tuple(grid)) != 3 or any(int(x) < 1 for x in grid):
        raise ValueError(f"`grid` must be three sizes >= 1 (frames, height, width), got {grid!r}")


def fit_tile(tile, grid) -> tuple[int, int, int]:
    """Shrink tile axes longer than the grid's (to a power of two that fits), then give the lost
    members back to the axes with the most room, so the volume stays where the grid allows."""
    tile, grid = list(tile), list(grid)
    volume = math.prod(tile)
    for i in range(3):
        while tile[i] > grid[i]:
            tile[i] //= 2
    while math.prod(tile) < volume:
        room = [(grid[i] / tile[i], -i) for i in range(3) if tile[i] * 2 <= grid[i]]
        if not room:
            break
        tile[-max(room)[1]] *= 2
    return tuple(max(1, t) for t in tile)


def tile_order(grid, tile) -> torch.Tensor:
    """int32 `[T*H*W]`: raster token of each position in tile order (full tiles, then edge tiles)."""
    t, h, w = grid
    tt, th, tw = tile
    pos = torch.arange(t * h * w, dtype=torch.int64)
    zt, zh, zw = pos // (h * w), pos // w % h, pos % w
    at, ah, aw = zt // tt, zh // th, zw // tw
    edge = (at >= t // tt) | (ah >= h // th) | (aw >= w // tw)
    nt, nh, nw = -(-t // tt), -(-h // th), -(-w // tw)
    key = (((edge.long() * nt + at) * nh + ah) * nw + aw) * (tt * th * tw) + ((zt % tt) * th + zh % th) * tw + zw % tw
    return torch.argsort(key, stable=True).to(torch.int32)


def block_of_token(query_index: torch.Tensor | None, block_size: int, seq_q: int, device) -> torch.Tensor:
    """int64 `[S]`: query block of each token (raster position), for references and the lab."""
    blocks = torch.arange(seq_q, device=device) // block_size
    if query_index is None:
        return blocks
    out = torch.empty(seq_q, dtype=torch.int64, device=device)
    out[query_index.to(device).long()] = blocks
    return out
