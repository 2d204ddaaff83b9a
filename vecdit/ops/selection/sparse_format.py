# Copyright 2026 The vecdit authors. Apache-2.0.
"""The two forms of a selection: ragged index lists (`VectorSelection`, what the attention kernels
read) and bitmasks (`SelectionBitmask`, the compact form kept for reuse), and the expansion between them."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .._checks import interpret_mode, use_triton
from ..tiles import QueryTiles

# keys per bitmask word (and per key tile of the selection kernel)
WORD_KEYS = 64
# launch settings of the bitmask expansion into index lists
EXPAND_CONFIG = dict(BLOCK_W=32, num_warps=1)  # H200, HV-720p: 2.2-2.5 ms (16 x 2 warps: 2.6-2.8)


@dataclass(frozen=True)
class VectorSelection:
    """Selected key columns per (batch, head, query block), stored ragged.

    Attributes:
        column_index (`torch.Tensor`, int32, `[capacity]`): key positions, ascending within a row.
        column_offset (`torch.Tensor`, int64, `[batch * heads * num_query_blocks + 1]`): row r owns
            `column_index[column_offset[r] : column_offset[r] + column_count[r]]`; rows are in
            (batch, head, query block) order. Capacity may exceed the kept count (see `vector_selection`).
        column_count (`torch.Tensor`, int32, `[batch, heads, num_query_blocks]`): kept keys per row.
        batch, heads, num_query_blocks, num_keys (`int`): the geometry it was selected for.
        query_tiles (`QueryTiles`, *optional*): how queries were grouped into blocks (None: raster,
            64 consecutive queries); the attention kernel reads query rows through it.
        word_count (`torch.Tensor`, uint8, `[rows, ceil(num_keys / 64)]`, *optional*): kept keys per
            64-key word of each row, as the selection counted them (the compensation's dropped
            counts); None: `kept_per_word()` counts them from the lists.
    """

    column_index: torch.Tensor
    column_offset: torch.Tensor
    column_count: torch.Tensor
    batch: int
    heads: int
    num_query_blocks: int
    num_keys: int
    query_tiles: QueryTiles | None = None
    word_count: torch.Tensor | None = None

    def density(self) -> torch.Tensor:
        """Kept fraction of the scored keys, a 0-d tensor (no host sync)."""
        return self.column_count.sum().float() / self.column_count.numel() / max(self.num_keys, 1)

    def nbytes(self) -> int:
        return self.column_index.numel() * 4 + self.column_offset.numel() * 8 + self.column_count.numel() * 4

    def kept_positions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, position in column_index) of every kept entry, in order."""
        counts = self.column_count.reshape(-1).long()
        rows = torch.arange(counts.numel(), device=counts.device)
        row_of = torch.repeat_interleave(rows, counts)
        first = torch.cumsum(counts, 0) - counts  # exclusive prefix: entry number of each row's first key
        pos = self.column_offset[:-1][row_of] + torch.arange(row_of.numel(), device=counts.device) - first[row_of]
        return row_of, pos

    def kept_per_word(self) -> torch.Tensor:
        """uint8 `[rows, ceil(num_keys / 64)]`: kept keys per 64-key word of each row (`word_count`,
        or counted from the lists)."""
        if self.word_count is not None:
            return self.word_count
        words = -(-self.num_keys // WORD_KEYS)
        row_of, pos = self.kept_positions()
        cell = row_of * words + self.column_index[pos].long() // WORD_KEYS
        rows = self.column_count.numel()
        # index_add, not bincount: a size known without reading the data (torch.compile traces it)
        counts = torch.zeros(rows * words, dtype=torch.int32, device=cell.device)
        return counts.index_add_(0, cell, torch.ones_like(cell, dtype=torch.int32)).to(torch.uint8).view(rows, words)

    def to_mask(self) -> torch.Tensor:
        """Dense bool `[batch, heads, num_query_blocks, num_keys]` (tests and references only)."""
        row_of, pos = self.kept_positions()
        mask = torch.zeros(self.column_count.numel(), self.num_keys, dtype=torch.bool, device=self.column_index.device)
        mask[row_of, self.column_index[pos].long()] = True
        return mask.view(self.batch, self.heads, self.num_query_blocks, self.num_keys)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, query_tiles: QueryTiles | None = None,
                  row_capacity: int | None = None) -> "VectorSelection":
        """From a bool `[batch, heads, num_query_blocks, num_keys]` mask: count, then fill; or with
        `row_capacity`, `row_capacity` slots per row (row r at `r * row_capacity`, its first
        `row_capacity` keys), the layout the ops use under a budget."""
        if mask.dim() != 4 or mask.dtype != torch.bool:
            raise ValueError(f"`mask` must be bool [batch, heads, num_query_blocks, num_keys], got {mask.dtype} {tuple(mask.shape)}")
        batch, heads, nqb, num_keys = mask.shape
        flat = mask.reshape(-1, num_keys)
        rows = flat.shape[0]
        if row_capacity is not None:
            rank = flat.cumsum(1, dtype=torch.int32)  # 1-based rank of each kept key in its row
            fits = flat & (rank <= row_capacity)
            row, col = fits.nonzero(as_tuple=True)
            index = torch.zeros(rows * row_capacity, dtype=torch.int32, device=mask.device)
            index[row * row_capacity + rank[row, col].long() - 1] = col.to(torch.int32)
            offset = torch.arange(rows + 1, dtype=torch.int64, device=mask.device) * row_capacity
            count = fits.sum(1)
            flat = fits
        else:
            count = flat.sum(1)
            offset = torch.zeros(rows + 1, dtype=torch.int64, device=mask.device)
            offset[1:] = count.cumsum(0)
            index = flat.nonzero()[:, 1].to(torch.int32)  # row-major: ascending within each row
        return cls(index, offset, count.to(torch.int32).view(batch, heads, nqb), batch, heads, nqb, num_keys, query_tiles,
                   _word_count(flat))


@dataclass(frozen=True)
class SelectionBitmask:
    """The kept keys of every (batch, head, query block) as bits: the compact form of a selection.

    9/64 bytes per (query block, key), whatever the density (the bits, plus a uint8 count per
    64-key word); at HunyuanVideo-720p one layer takes 0.75 GB, against 4.9 GB of int32 indices at
    25% density. Reuse across denoising steps keeps this form; `expand()` gives the index lists the
    attention kernel reads (one Triton pass over the bits, no scoring).

    Attributes:
        mask (`torch.Tensor`, int64, `[rows, words]`): bit j of word w stands for key `64 * w + j`;
            rows in (batch, head, query block) order, `words = ceil(num_keys / 64)`.
        word_count (`torch.Tensor`, uint8, `[rows, words]`): kept keys per word.
        batch, heads, num_query_blocks, num_keys (`int`): the geometry it was selected for.
        query_tiles (`QueryTiles`, *optional*): the query grouping (None: raster).
        row_capacity (`int`, *optional*): index slots per row of `expand()` (a budget's bound:
            no host sync); None: count, then fill.
    """

    mask: torch.Tensor
    word_count: torch.Tensor
    batch: int
    heads: int
    num_query_blocks: int
    num_keys: int
    query_tiles: QueryTiles | None = None
    row_capacity: int | None = None

    def nbytes(self) -> int:
        return self.mask.numel() * 8 + self.word_count.numel()

    def expand(self) -> VectorSelection:
        shape = (self.batch, self.heads, self.num_query_blocks)
        index, offset, count = torch.ops.vecdit.vec_expand(self.mask, self.word_count, self.num_keys,
                                                           self.row_capacity or 0)
        return VectorSelection(index, offset, count.view(shape), *shape, self.num_keys, self.query_tiles,
                               self.word_count)

    @classmethod
    def from_selection(cls, selection: VectorSelection, row_capacity: int | None = None) -> "SelectionBitmask":
        keep = selection.to_mask().flatten(0, 2)
        words = math.ceil(selection.num_keys / WORD_KEYS)
        keep = torch.nn.functional.pad(keep, (0, words * WORD_KEYS - selection.num_keys)).view(-1, words, WORD_KEYS)
        weights = torch.ones(WORD_KEYS, dtype=torch.int64, device=keep.device) << torch.arange(WORD_KEYS, device=keep.device)
        mask = (keep.long() * weights).sum(-1)  # distinct powers of two (bit 63 wraps to the sign): an or
        return cls(mask, keep.sum(-1).to(torch.uint8), selection.batch, selection.heads,
                   selection.num_query_blocks, selection.num_keys, selection.query_tiles, row_capacity)


def _word_count(keep: torch.Tensor) -> torch.Tensor:
    """uint8 `[rows, words]`: kept keys per 64-key word of a bool `[rows, num_keys]` mask."""
    words = -(-keep.shape[1] // WORD_KEYS)
    padded = torch.nn.functional.pad(keep, (0, words * WORD_KEYS - keep.shape[1]))
    return padded.view(-1, words, WORD_KEYS).sum(-1, dtype=torch.int32).to(torch.uint8)


def _expand_triton(mask, word_end, count, row_capacity: int | None = None, config: dict | None = None):
    """Index lists from a bitmask; `word_end` = inclusive prefix of the per-word counts (int32).
    Returns (column_index, column_offset, column_count): with `row_capacity`, fixed slots per row
    (no host sync; a longer row keeps its first `row_capacity` keys, its count clipped)."""
    import triton

    from ._expand_kernel import expand_bitmask_kernel

    rows, num_words = mask.shape
    if row_capacity is not None:
        offset = torch.arange(rows + 1, dtype=torch.int64, device=mask.device) * row_capacity
        column_index = torch.empty(rows * row_capacity, dtype=torch.int32, device=mask.device)
        count = torch.clamp(count, max=row_capacity)
    else:
        offset = torch.zeros(rows + 1, dtype=torch.int64, device=mask.device)
        torch.cumsum(count, 0, out=offset[1:])
        total = int(offset[-1])  # the one host sync: the index buffer is sized by what was kept
        column_index = torch.empty(total, dtype=torch.int32, device=mask.device)
    expand_bitmask_kernel[(rows, triton.cdiv(num_words, (config or EXPAND_CONFIG)["BLOCK_W"]))](
        mask, word_end, offset, column_index, num_words, row_capacity or 0,
        CAPPED=row_capacity is not None, INTERPRET=interpret_mode(), **(config or EXPAND_CONFIG))
    return column_index, offset, count


@torch.library.custom_op("vecdit::vec_expand", mutates_args=())
def _vec_expand_op(mask: torch.Tensor, word_count: torch.Tensor, num_keys: int,
                   row_capacity: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bitmask -> (column_index, column_offset, column_count); `row_capacity` 0: count, then fill."""
    count = word_count.sum(1, dtype=torch.int32)
    if use_triton(mask):
        return _expand_triton(mask, word_count.cumsum(1, dtype=torch.int32), count, row_capacity or None)
    bits = (mask.unsqueeze(-1) >> torch.arange(WORD_KEYS, device=mask.device)) & 1
    keep = bits.flatten(1)[:, :num_keys].bool()
    sel = VectorSelection.from_mask(keep.view(1, 1, *keep.shape), None, row_capacity or None)
    return sel.column_index, sel.column_offset, sel.column_count.reshape(-1)


@_vec_expand_op.register_fake
def _(mask, word_count, num_keys, row_capacity):
    rows = mask.shape[0]
    total = rows * row_capacity if row_capacity else torch.library.get_ctx().new_dynamic_size()
    return (mask.new_empty((total,), dtype=torch.int32), mask.new_empty((rows + 1,), dtype=torch.int64),
            mask.new_empty((rows,), dtype=torch.int32))
