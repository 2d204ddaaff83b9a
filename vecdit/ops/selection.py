# Copyright 2026 The vecdit authors. Apache-2.0.
"""Vector selection: for each 64-query block, the key columns ("vertical vectors") to attend."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ._checks import QUERY_BLOCK, interpret_mode, check_qkv, check_threshold, num_query_blocks, use_triton

SELECTION_MODES = ("exact", "running")
# key tile of the `running` max: each tile is tested against the max of all tiles up to it
RUNNING_TILE = 64
# bisection steps of the density cap / column floor: the cutoff interval shrinks by 2**-24
_BISECT_STEPS = 24
# launch settings of the selection kernel; BLOCK_N is fixed by RUNNING_TILE (it defines `running`)
SELECT_CONFIG = dict(BLOCK_M=64, num_warps=4, num_stages=3)
# launch settings of the bitmask expansion into index lists
EXPAND_CONFIG = dict(BLOCK_W=16, num_warps=2)


@dataclass(frozen=True)
class VectorSelection:
    """Selected key columns per (batch, head, 64-query block), stored ragged.

    Attributes:
        column_index (`torch.Tensor`, int32, `[capacity]`): key positions, ascending within a row.
        column_offset (`torch.Tensor`, int64, `[batch * heads * num_query_blocks + 1]`): row r owns
            `column_index[column_offset[r] : column_offset[r] + column_count[r]]`; rows are in
            (batch, head, query block) order. Capacity may exceed the kept count (see `vector_selection`).
        column_count (`torch.Tensor`, int32, `[batch, heads, num_query_blocks]`): kept keys per row.
        batch, heads, num_query_blocks, num_keys (`int`): the geometry it was selected for.
    """

    column_index: torch.Tensor
    column_offset: torch.Tensor
    column_count: torch.Tensor
    batch: int
    heads: int
    num_query_blocks: int
    num_keys: int

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

    def to_mask(self) -> torch.Tensor:
        """Dense bool `[batch, heads, num_query_blocks, num_keys]` (tests and references only)."""
        row_of, pos = self.kept_positions()
        mask = torch.zeros(self.column_count.numel(), self.num_keys, dtype=torch.bool, device=self.column_index.device)
        mask[row_of, self.column_index[pos].long()] = True
        return mask.view(self.batch, self.heads, self.num_query_blocks, self.num_keys)

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> "VectorSelection":
        """From a bool `[batch, heads, num_query_blocks, num_keys]` mask (count, then fill)."""
        if mask.dim() != 4 or mask.dtype != torch.bool:
            raise ValueError(f"`mask` must be bool [batch, heads, num_query_blocks, num_keys], got {mask.dtype} {tuple(mask.shape)}")
        batch, heads, nqb, num_keys = mask.shape
        flat = mask.reshape(-1, num_keys)
        count = flat.sum(1)
        offset = torch.zeros(flat.shape[0] + 1, dtype=torch.int64, device=mask.device)
        offset[1:] = count.cumsum(0)
        index = flat.nonzero()[:, 1].to(torch.int32)  # row-major: ascending within each row
        return cls(index, offset, count.to(torch.int32).view(batch, heads, nqb), batch, heads, nqb, num_keys)


@dataclass(frozen=True)
class SelectionBitmask:
    """The kept keys of every (batch, head, 64-query block) as bits: the compact form of a selection.

    9/64 bytes per (query block, key), whatever the density (the bits, plus a uint8 count per
    64-key word); at HunyuanVideo-720p one layer takes 0.75 GB, against 4.9 GB of int32 indices at
    25% density. Reuse across denoising steps keeps this form; `expand()` gives the index lists the
    attention kernel reads (one Triton pass over the bits, no scoring).

    Attributes:
        mask (`torch.Tensor`, int64, `[rows, words]`): bit j of word w stands for key `64 * w + j`;
            rows in (batch, head, query block) order, `words = ceil(num_keys / 64)`.
        word_count (`torch.Tensor`, uint8, `[rows, words]`): kept keys per word.
        batch, heads, num_query_blocks, num_keys (`int`): the geometry it was selected for.
    """

    mask: torch.Tensor
    word_count: torch.Tensor
    batch: int
    heads: int
    num_query_blocks: int
    num_keys: int

    def nbytes(self) -> int:
        return self.mask.numel() * 8 + self.word_count.numel()

    def expand(self) -> VectorSelection:
        count = self.word_count.sum(1, dtype=torch.int32)
        shape = (self.batch, self.heads, self.num_query_blocks)
        if use_triton(self.mask):
            index, offset = _expand_triton(self.mask, self.word_count.cumsum(1, dtype=torch.int32), count)
            return VectorSelection(index, offset, count.view(shape), *shape, self.num_keys)
        bits = (self.mask.unsqueeze(-1) >> torch.arange(RUNNING_TILE, device=self.mask.device)) & 1
        keep = bits.flatten(1)[:, : self.num_keys].bool()
        return VectorSelection.from_mask(keep.view(*shape, self.num_keys))

    @classmethod
    def from_selection(cls, selection: VectorSelection) -> "SelectionBitmask":
        keep = selection.to_mask().flatten(0, 2)
        words = math.ceil(selection.num_keys / RUNNING_TILE)
        keep = torch.nn.functional.pad(keep, (0, words * RUNNING_TILE - selection.num_keys)).view(-1, words, RUNNING_TILE)
        weights = torch.ones(RUNNING_TILE, dtype=torch.int64, device=keep.device) << torch.arange(RUNNING_TILE, device=keep.device)
        mask = (keep.long() * weights).sum(-1)  # distinct powers of two (bit 63 wraps to the sign): an or
        return cls(mask, keep.sum(-1).to(torch.uint8), selection.batch, selection.heads,
                   selection.num_query_blocks, selection.num_keys)


def pool_queries(q: torch.Tensor, scale: float) -> torch.Tensor:
    """Mean of each 64-query block in fp32, times `scale`: `[B, S, H, D]` -> `[B, H, NQB, D]`."""
    batch, seq, heads, dim = q.shape
    full = seq // QUERY_BLOCK
    parts = []
    if full:
        parts.append(q[:, : full * QUERY_BLOCK].unflatten(1, (full, QUERY_BLOCK)).sum(2, dtype=torch.float32) / QUERY_BLOCK)
    if seq % QUERY_BLOCK:
        tail = q[:, full * QUERY_BLOCK:]
        parts.append(tail.sum(1, keepdim=True, dtype=torch.float32) / tail.shape[1])
    pooled = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    return (pooled * scale).permute(0, 2, 1, 3)


def _check_budget(max_density, min_columns, num_keys) -> tuple[int, int]:
    """(max_columns, min_columns) per row; 0 max_columns means no cap."""
    max_columns = 0
    if max_density is not None:
        if not 0 < float(max_density) <= 1:
            raise ValueError(f"`max_density` must lie in (0, 1] or be None, got {max_density}")
        max_columns = max(1, math.floor(float(max_density) * num_keys))
    if int(min_columns) < 0:
        raise ValueError(f"`min_columns` must be >= 0, got {min_columns}")
    min_columns = min(int(min_columns), num_keys)
    if max_columns and min_columns > max_columns:
        raise ValueError(
            f"`min_columns`={min_columns} exceeds the cap floor(max_density * Sk)={max_columns}; lower one of them"
        )
    return max_columns, min_columns


def _selection_args(q, k, threshold, mode, max_density, min_columns, scale):
    """Checked arguments of a selection: (per-head gap, max_columns, min_columns, scale)."""
    check_qkv(q, k)
    if mode not in SELECTION_MODES:
        raise ValueError(f"`mode` must be one of {SELECTION_MODES}, got {mode!r}")
    gap = check_threshold(threshold, q.shape[2], q.device)
    max_columns, min_columns = _check_budget(max_density, min_columns, k.shape[1])
    return gap, max_columns, min_columns, q.shape[3] ** -0.5 if scale is None else float(scale)


def vector_selection(
    q: torch.Tensor,
    k: torch.Tensor,
    threshold: float | torch.Tensor = 0.05,
    *,
    mode: Literal["exact", "running"] = "exact",
    max_density: float | None = None,
    min_columns: int = 0,
    scale: float | None = None,
) -> VectorSelection:
    """Select key columns per 64-query block with the min-p rule of vector-wise sparse attention.

    Each block's queries are mean-pooled in fp32; key j gets the score s_j = (q̄ · k_j) * scale, and
    is kept if s_j >= m - gap with gap = -ln(threshold), i.e. p_j >= threshold * p_max.

    Args:
        q (`torch.Tensor`): `[B, Sq, H, D]`, bf16 or fp16, any strides.
        k (`torch.Tensor`): `[B, Sk, H, D]`; slice it to the keys that should be scored (e.g. the
            video part of a joint sequence; always-attended keys go to the attention's `dense_range`).
        threshold (`float` or `[H]` tensor, defaults to 0.05): in (0, 1]; lower keeps more keys.
        mode (`str`, defaults to `"exact"`): `"exact"` uses the true row max (one extra pass over K);
            `"running"` is the original single-pass rule, with m the max over key tiles of 64 up to
            and including the key's tile, which keeps a superset biased toward early keys.
        max_density (`float`, *optional*): keep at most `floor(max_density * Sk)` keys per block,
            highest scores first (a guaranteed speed budget; costs a bisection of the cutoff).
        min_columns (`int`, defaults to 0): keep at least this many keys per block.
        scale (`float`, *optional*): score scale, defaults to 1/sqrt(D).

    Returns:
        `VectorSelection`, ragged, count then fill: no score matrix is stored. The kept keys are
        first written as a bitmask (Sk/8 bytes per query block, with per-word counts: Sk/16 bytes),
        then expanded into an index buffer of exactly the kept size; peak memory is the kept
        indices plus those Sk * 3/16 bytes per query block, at any sequence length.
    """
    gap, max_columns, min_columns, scale = _selection_args(q, k, threshold, mode, max_density, min_columns, scale)
    batch, seq_q, heads, _ = q.shape
    num_keys = k.shape[1]
    index, offset, count = torch.ops.vecdit.vec_select(q, k, gap, mode == "running", max_columns, min_columns, scale)
    nqb = num_query_blocks(seq_q)
    return VectorSelection(index, offset, count.view(batch, heads, nqb), batch, heads, nqb, num_keys)


def _bisect_cutoff(count_fn, cutoff, count, row_max, row_min, max_columns, min_columns):
    """Move each row's cutoff until max_columns >= count >= min_columns (fixed steps, no host sync).

    Rows over the cap search (cutoff, max]; rows under the floor search [min, cutoff). The bound kept
    at the end is the one on the allowed side, so the cap is never exceeded.
    """
    over = count > max_columns if max_columns else torch.zeros_like(count, dtype=torch.bool)
    under = count < min_columns
    lo = torch.where(over, cutoff, torch.where(under, row_min, cutoff))
    hi = torch.where(over, torch.nextafter(row_max, torch.full_like(row_max, math.inf)), cutoff)
    active = (over | under).to(torch.int8)
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) * 0.5
        c = count_fn(mid, active)
        too_many = (c > max_columns) if max_columns else torch.zeros_like(over)
        enough = c >= min_columns
        # over-cap rows: too many -> raise lo, else lower hi; under-floor rows: enough -> raise lo
        go_up = torch.where(over, too_many, enough)
        lo = torch.where(go_up, mid, lo)
        hi = torch.where(go_up, hi, mid)
    return torch.where(over, hi, torch.where(under, lo, cutoff)), over | under


def _select_bitmask_triton(q, k, gap, running, max_columns, min_columns, scale, config=None):
    """Scoring passes: (bitmask int64 [rows, words], kept count per word int32, kept count per row)."""
    import triton

    from ._select_kernel import PASS_COUNT, PASS_MASK, PASS_STATS, vec_select_kernel

    batch, seq_q, heads, dim = q.shape
    num_keys = k.shape[1]
    nqb = num_query_blocks(seq_q)
    rows = batch * heads * nqb
    num_words = triton.cdiv(num_keys, RUNNING_TILE)  # one 64-bit word per key tile
    pooled = pool_queries(q, scale).reshape(batch * heads, nqb, dim).contiguous()
    # hi + lo in the input dtype carry ~16 mantissa bits of the fp32 pooled query into bf16 dots
    q_hi = pooled.to(q.dtype)
    q_lo = (pooled - q_hi.float()).to(q.dtype)
    f32 = dict(dtype=torch.float32, device=q.device)
    row_max = torch.empty(rows, **f32)
    row_min = torch.empty(rows, **f32)
    count = torch.empty(rows, dtype=torch.int32, device=q.device)
    fixed = torch.zeros(rows, dtype=torch.int8, device=q.device)
    # the bitmask is Sk/8 bytes per row: 1/8 of what int32 indices of all keys would take
    mask = torch.empty(rows, num_words, dtype=torch.int64, device=q.device)
    word_count = torch.empty(rows, num_words, dtype=torch.int32, device=q.device)
    cfg = dict(HEAD_DIM=dim, BLOCK_N=RUNNING_TILE, UPCAST=interpret_mode(), **(config or SELECT_CONFIG))
    grid = (triton.cdiv(nqb, cfg["BLOCK_M"]), batch * heads)

    def launch(pass_, cutoff, active, running_=running):
        vec_select_kernel[grid](
            q_hi, q_lo, k, gap, cutoff, fixed, active if active is not None else fixed,
            row_max, row_min, count, mask, word_count,
            k.stride(0), k.stride(1), k.stride(2), k.stride(3),
            heads, num_keys, nqb, num_words,
            PASS=pass_, RUNNING=running_, USE_ACTIVE=active is not None, **cfg,
        )

    budget = bool(max_columns or min_columns)
    if running and not budget:
        # the original single pass: each key is tested against the running max (`fixed` is all 0)
        launch(PASS_MASK, row_max, None)
        return mask, word_count, count
    # pass 1: row max and min (the `exact` cutoff; the bisection's bounds)
    launch(PASS_STATS, row_max, None)
    cutoff = row_max - gap.view(1, heads, 1).expand(batch, heads, nqb).reshape(-1)
    if budget:
        launch(PASS_COUNT, cutoff, None)

        def count_fn(mid, active):
            launch(PASS_COUNT, mid, active, running_=False)
            return count.clone()

        cutoff, moved = _bisect_cutoff(count_fn, cutoff, count.clone(), row_max, row_min, max_columns, min_columns)
        fixed.copy_(moved.to(torch.int8))
    launch(PASS_MASK, cutoff, None)  # the kept keys as bits, and their count per word and row
    return mask, word_count, count


def _expand_triton(mask, word_end, count):
    """Index lists from a bitmask; `word_end` = inclusive prefix of the per-word counts (int32)."""
    import triton

    from ._expand_kernel import expand_bitmask_kernel

    rows, num_words = mask.shape
    offset = torch.zeros(rows + 1, dtype=torch.int64, device=mask.device)
    torch.cumsum(count, 0, out=offset[1:])
    total = int(offset[-1])  # the one host sync: the index buffer is sized by what was kept
    column_index = torch.empty(total, dtype=torch.int32, device=mask.device)
    expand_bitmask_kernel[(rows, triton.cdiv(num_words, EXPAND_CONFIG["BLOCK_W"]))](
        mask, word_end, offset, column_index, num_words, **EXPAND_CONFIG)
    return column_index, offset


def _select_triton(q, k, gap, running, max_columns, min_columns, scale, config=None):
    mask, word_count, count = _select_bitmask_triton(q, k, gap, running, max_columns, min_columns, scale, config)
    word_count.cumsum_(1)  # in place: where each word's keys end within its row
    column_index, offset = _expand_triton(mask, word_count, count)
    return column_index, offset, count


def vector_selection_bitmask(
    q: torch.Tensor,
    k: torch.Tensor,
    threshold: float | torch.Tensor = 0.05,
    *,
    mode: Literal["exact", "running"] = "exact",
    max_density: float | None = None,
    min_columns: int = 0,
    scale: float | None = None,
) -> SelectionBitmask:
    """`vector_selection`, stopped before the index lists: the compact form kept for reuse.

    Same arguments and the same kept keys; `.expand()` gives what `vector_selection` returns.
    """
    gap, max_columns, min_columns, scale = _selection_args(q, k, threshold, mode, max_density, min_columns, scale)
    batch, seq_q, heads, _ = q.shape
    num_keys = k.shape[1]
    nqb = num_query_blocks(seq_q)
    if not use_triton(q):
        from .reference import vector_selection_reference

        return SelectionBitmask.from_selection(vector_selection_reference(
            q, k, gap=gap, running=mode == "running", max_columns=max_columns, min_columns=min_columns, scale=scale))
    mask, word_count, _ = _select_bitmask_triton(q, k, gap, mode == "running", max_columns, min_columns, scale)
    return SelectionBitmask(mask, word_count.to(torch.uint8), batch, heads, nqb, num_keys)


@torch.library.custom_op("vecdit::vec_select", mutates_args=())
def _vec_select_op(
    q: torch.Tensor, k: torch.Tensor, gap: torch.Tensor, running: bool, max_columns: int, min_columns: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if use_triton(q):
        return _select_triton(q, k, gap, running, max_columns, min_columns, scale)
    from .reference import vector_selection_reference

    sel = vector_selection_reference(q, k, gap=gap, running=running, max_columns=max_columns,
                                     min_columns=min_columns, scale=scale)
    return sel.column_index, sel.column_offset, sel.column_count.reshape(-1)


@_vec_select_op.register_fake
def _(q, k, gap, running, max_columns, min_columns, scale):
    ctx = torch.library.get_ctx()
    total = ctx.new_dynamic_size()
    rows = q.shape[0] * q.shape[2] * num_query_blocks(q.shape[1])
    return (q.new_empty((total,), dtype=torch.int32), q.new_empty((rows + 1,), dtype=torch.int64),
            q.new_empty((rows,), dtype=torch.int32))
