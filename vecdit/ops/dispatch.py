# Copyright 2026 The vecdit authors. Apache-2.0.
"""Kernel or PyTorch path, decided here once: the Triton kernels where they apply (a CUDA tensor, or
TRITON_INTERPRET=1; bf16/fp16; head_dim 64 or 128), else the references (the selection as an SDPA
mask). Callers ask `kernel_applies` only for what else depends on it (the dense fallback, fused RoPE).
"""
from __future__ import annotations

import logging

import torch

from vecdit.ops import (
    SelectionBitmask,
    VectorSelection,
    masked_sparse_attention,
    vector_selection,
    vector_selection_bitmask,
    vector_selection_reference,
    vector_sparse_attention,
)

from ._checks import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, use_triton

_logger = logging.getLogger("vecdit")
_warned: set[str] = set()


def kernel_applies(x: torch.Tensor) -> bool:
    """The Triton kernels run on `x` (`[B, S, H, D]`): its device, dtype and head_dim."""
    return x.dtype in SUPPORTED_DTYPES and x.shape[-1] in SUPPORTED_HEAD_DIMS and use_triton(x)


def _warn_reference(x: torch.Tensor) -> None:
    message = (f"no Triton kernel for {x.device.type} {x.dtype} head_dim {x.shape[-1]}; "
               "running the PyTorch path (the selection as an SDPA mask)")
    if message not in _warned:  # once per process: a 50-step run must not flood the log
        _warned.add(message)
        _logger.warning(message)


def select_vectors(
    q: torch.Tensor, k: torch.Tensor, threshold, *, keep_bitmask: bool = False, **selection_kwargs
) -> tuple[VectorSelection, SelectionBitmask | None]:
    """`vector_selection` (kernel) or `vector_selection_reference`, with the same arguments.

    Args:
        keep_bitmask (`bool`, defaults to False): also return the selection as a `SelectionBitmask`
            (9/64 bytes per query block and key), the form a selection is kept in for reuse.

    Returns:
        `(selection, bitmask or None)`.
    """
    if kernel_applies(q):
        if keep_bitmask:
            bits = vector_selection_bitmask(q, k, threshold, **selection_kwargs)
            return bits.expand(), bits
        return vector_selection(q, k, threshold, **selection_kwargs), None
    _warn_reference(q)
    selection = vector_selection_reference(q, k, threshold, **selection_kwargs)
    return selection, (SelectionBitmask.from_selection(selection) if keep_bitmask else None)


def sparse_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, selection: VectorSelection, *,
    dense_range: tuple[int, int] | None = None, compensate: bool | str = True,
) -> torch.Tensor:
    """`vector_sparse_attention` (kernel) or `masked_sparse_attention`: `[B, Sq, H, D]` in q's dtype."""
    if kernel_applies(q):
        return vector_sparse_attention(q, k, v, selection, dense_range=dense_range, compensate=compensate)
    _warn_reference(q)
    return masked_sparse_attention(q, k, v, selection, dense_range or (0, 0), compensate=compensate)
