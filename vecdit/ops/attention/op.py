# Copyright 2026 The vecdit authors. Apache-2.0.
"""Vector-sparse attention forward: each query block attends only its selected key rows."""
from __future__ import annotations

import functools
import os

import torch

from .._checks import QUERY_BLOCK, check_dense_range, check_qkv, debug_mode, interpret_mode, use_triton
from .compensation import check_compensation_range, compensate_triton, compensation_mode, dropped_prepare_triton
from .reference import vec_sparse_attention_reference
from ..selection.sparse_format import WORD_KEYS, VectorSelection
from ..tiles import QueryTiles, block_of_token

# launch settings per head_dim; `python -m vecdit.bench attention --sweep` times the alternatives
ATTN_CONFIGS = {
    64: dict(BLOCK_N=64, num_warps=4, num_stages=3, WARP_SPECIALIZE=False),
    128: dict(BLOCK_N=64, num_warps=4, num_stages=3, WARP_SPECIALIZE=False),
}


def vector_sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    selection: VectorSelection | None,
    *,
    dense_range: tuple[int, int] | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    compensate: bool | str = True,
):
    """Non-causal attention of each query block over its selected keys (and a dense range).

    Args:
        q (`torch.Tensor`): `[B, Sq, H, D]`, bf16 or fp16, D in {64, 128}, any strides, in token
            (raster) order; the selection's query tiles say which rows form a block.
        k, v (`torch.Tensor`): `[B, Sk, H, D]`, any strides (no copies are made).
        selection (`VectorSelection`, *optional*): from `vector_selection`, with indices into `k`.
            None attends only `dense_range`.
        dense_range (`tuple[int, int]`, *optional*): keys `[start, end)` attended by every query
            without being listed (HunyuanVideo's valid text tokens). Must not overlap the selection.
        scale (`float`, *optional*): softmax scale, defaults to 1/sqrt(D).
        return_lse (`bool`, defaults to False): also return the log-sum-exp `[B, H, Sq]` (fp32,
            natural log), to merge with other attention parts or for ring attention.
        compensate (`bool` or `str`, defaults to True): the dropped keys still weigh in: each group
            of 64 scored keys adds its dropped count times exp(q . mean key) times its mean value
            (`vecdit.ops.attention.compensation`). True is the default mode (`DEFAULT_COMPENSATION`),
            `"query"` scores per query row, `"pooled"` per query tile, `"dropped"` per query tile
            with the dropped keys' own mean value (not the whole group's); False attends the
            selected keys alone. Needs `dense_range` to lie after the selection's scored keys.

    Returns:
        `[B, Sq, H, D]` in q's dtype (and lse). A query block that attends no key at all gets zeros
        and lse = -inf: it contributes nothing when merged by lse, and never NaN.
    """
    check_qkv(q, k, v)
    batch, seq_q, heads, dim = q.shape
    num_keys = k.shape[1]
    start, end = check_dense_range(dense_range, num_keys)
    tiles = selection.query_tiles if selection is not None and selection.query_tiles is not None else QueryTiles.raster()
    if selection is None:
        rows = batch * heads * tiles.num_blocks(seq_q)
        column_index = torch.empty(0, dtype=torch.int32, device=q.device)
        column_offset = torch.zeros(rows + 1, dtype=torch.int64, device=q.device)
        column_count = torch.zeros(rows, dtype=torch.int32, device=q.device)
    else:
        tiles.check(seq_q)
        _check_selection(selection, q, num_keys, tiles)
        column_index, column_offset = selection.column_index, selection.column_offset
        column_count = selection.column_count.reshape(-1)
    mode = compensation_mode(compensate) if selection is not None else None
    if mode is not None:
        check_compensation_range(selection.num_keys, start, end)
        word_count = selection.kept_per_word()
        if word_count.shape != (column_count.numel(), -(-selection.num_keys // WORD_KEYS)) or word_count.dtype != torch.uint8:
            raise ValueError(f"`selection.word_count` must be uint8 [rows, ceil(num_keys / 64)], got {word_count.dtype} "
                             f"{tuple(word_count.shape)}")
    scale = dim ** -0.5 if scale is None else float(scale)
    out, lse = torch.ops.vecdit.vec_sparse_attn(q, k, v, column_index, column_offset, column_count, start, end, scale,
                                                tiles.query_index(q.device), tiles.block_size,
                                                word_count if mode else None, selection.num_keys if mode else 0,
                                                mode or "")
    return (out, lse) if return_lse else out


def _check_selection(selection: VectorSelection, q: torch.Tensor, num_keys: int, tiles: QueryTiles) -> None:
    batch, seq_q, heads, _ = q.shape
    expected = (batch, heads, tiles.num_blocks(seq_q))
    got = (selection.batch, selection.heads, selection.num_query_blocks)
    if got != expected:
        raise ValueError(f"`selection` is for (batch, heads, query blocks) = {got}, but q needs {expected}")
    if selection.num_keys > num_keys:
        raise ValueError(f"`selection` indexes {selection.num_keys} keys but k has only {num_keys}")
    for name, t, dtype in (("column_index", selection.column_index, torch.int32),
                           ("column_offset", selection.column_offset, torch.int64),
                           ("column_count", selection.column_count.reshape(-1), torch.int32)):
        if t.dtype != dtype or t.device != q.device or t.dim() != 1:
            raise ValueError(f"`selection.{name}` must be a 1-D {dtype} tensor on {q.device}, got {t.dtype} {tuple(t.shape)} on {t.device}")
    if selection.column_offset.numel() != expected[0] * expected[1] * expected[2] + 1:
        raise ValueError(f"`selection.column_offset` must have {expected[0] * expected[1] * expected[2] + 1} entries, got {selection.column_offset.numel()}")
    if debug_mode():
        off, count = selection.column_offset, selection.column_count.reshape(-1).long()
        if int(off[0]) != 0 or bool((off[:-1] + count > off[1:]).any()) or bool((count < 0).any()) or int(off[-1]) > selection.column_index.numel():
            raise ValueError("`selection.column_offset`/`column_count` must give non-overlapping rows inside column_index")
        idx = selection.column_index[selection.kept_positions()[1]]
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_keys):
            raise ValueError(f"`selection.column_index` must lie in [0, Sk={num_keys}), got [{int(idx.min())}, {int(idx.max())}]")


ATTN_KERNELS = ("auto", "triton", "gluon")


def _gluon_kernel_requested(q) -> bool:
    """`VECDIT_ATTN_KERNEL`: `auto` (default) takes the warp-specialized Gluon kernel where it
    applies (Hopper, bf16, head_dim 128; 5-8% faster than the Triton kernel on H100 and H200,
    bench/DESIGN.md#gluon-kernel), `triton` forces the portable Triton kernel, `gluon` is `auto` by another name."""
    choice = os.environ.get("VECDIT_ATTN_KERNEL", "auto")
    if choice not in ATTN_KERNELS:
        raise ValueError(f"`VECDIT_ATTN_KERNEL` must be one of {ATTN_KERNELS}, got {choice!r}")
    return (choice != "triton" and q.is_cuda and q.dtype == torch.bfloat16 and q.shape[-1] == 128
            and not interpret_mode() and torch.cuda.get_device_capability(q.device)[0] == 9
            and _gluon_available())


@functools.cache
def _gluon_available() -> bool:
    try:  # Gluon's Hopper API as the kernel uses it (Triton 3.6)
        from . import _attn_gluon_kernel  # noqa: F401
    except (ImportError, AttributeError):
        return False
    return True


def _attn_triton(q, k, v, column_index, column_offset, column_count, dense_start, dense_end, scale,
                 query_index=None, block_size=QUERY_BLOCK, config=None, dropped=None):
    """`dropped`: None, or the "dropped" compensation's (part out fp32 `[rows, D]`, part lse fp32
    `[rows]`, weights fp32 `[rows, G]`, lmax fp32 `[rows]`) of `compensation.dropped_part`: each kept
    key's probability less its group's pooled weight, the tile's part merged in the epilogue."""
    if config is None and _gluon_kernel_requested(q):
        from ._attn_gluon_kernel import gluon_sparse_attention

        return gluon_sparse_attention(q, k, v, column_index, column_offset, column_count, dense_start, dense_end, scale,
                                      query_index=query_index, block_size=block_size, dropped=dropped)
    from ._attn_kernel import vec_sparse_attn_fwd_kernel

    batch, seq_q, heads, dim = q.shape
    cfg = dict(config or ATTN_CONFIGS[dim])
    rows = cfg.pop("BLOCK_M", QUERY_BLOCK)
    if rows not in (QUERY_BLOCK, block_size):
        raise ValueError(f"rows per program must be {QUERY_BLOCK} or the block size {block_size}, got {rows}")
    programs = -(-seq_q // rows)
    out = torch.empty(batch, seq_q, heads, dim, dtype=q.dtype, device=q.device)
    lse = torch.empty(batch, heads, seq_q, dtype=torch.float32, device=q.device)
    part_out, part_lse, weights, lmax = dropped if dropped is not None else (column_offset,) * 4  # unread without
    vec_sparse_attn_fwd_kernel[(programs, batch * heads)](
        q, k, v, out, lse, column_index, column_offset, column_count,
        query_index if query_index is not None else column_offset, weights, lmax, part_out, part_lse,
        scale * 1.4426950408889634,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        heads, seq_q, -(-seq_q // block_size), dense_start, dense_end, weights.shape[-1] if dropped is not None else 0,
        HEAD_DIM=dim, BLOCK_M=rows, UPCAST=interpret_mode(), INDEXED=query_index is not None,
        PROGRAMS_PER_ROW=block_size // rows, COMPENSATED=dropped is not None, GROUP_KEYS=WORD_KEYS, **cfg,
    )
    return out, lse


@torch.library.custom_op("vecdit::vec_sparse_attn", mutates_args=())
def _vec_sparse_attn_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, column_index: torch.Tensor, column_offset: torch.Tensor,
    column_count: torch.Tensor, dense_start: int, dense_end: int, scale: float, query_index: torch.Tensor | None,
    block_size: int, word_count: torch.Tensor | None, num_scored: int, compensate: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`compensate`: "" (none) or a compensation mode over the first `num_scored` keys, with the
    kept keys per 64-key word `word_count`."""
    if use_triton(q):
        # "dropped": the per-tile part first; the attention kernel reads its weights and merges it
        dropped = (dropped_prepare_triton(q, k, v, word_count, num_scored, scale, query_index, block_size)
                   if compensate == "dropped" else None)
        out, lse = _attn_triton(q, k, v, column_index, column_offset, column_count, dense_start, dense_end, scale,
                                query_index, block_size, dropped=dropped)
        if compensate in ("query", "pooled"):
            compensate_triton(q, k, v, out, lse, word_count, num_scored, scale, query_index, block_size, compensate)
        return out, lse
    batch, seq_q, heads, _ = q.shape
    nqb = column_count.numel() // (batch * heads)
    sel = VectorSelection(column_index, column_offset, column_count.view(batch, heads, nqb), batch, heads, nqb,
                          num_scored or k.shape[1], word_count=word_count)
    token_block = block_of_token(query_index, block_size, seq_q, q.device)
    return vec_sparse_attention_reference(q, k, v, sel, (dense_start, dense_end), scale, token_block, compensate or False)


@_vec_sparse_attn_op.register_fake
def _(q, k, v, column_index, column_offset, column_count, dense_start, dense_end, scale, query_index, block_size,
      word_count, num_scored, compensate):
    batch, seq_q, heads, dim = q.shape
    return q.new_empty((batch, seq_q, heads, dim)), q.new_empty((batch, heads, seq_q), dtype=torch.float32)
