# Copyright 2026 The vecdit authors. Apache-2.0.
"""Kernels of vecdit: vector selection and vector-sparse attention (Triton), with references."""
from .attention import (
    attention_reference,
    masked_sparse_attention,
    vec_sparse_attention_reference,
    vector_sparse_attention,
)
from .rope import rms_norm_rotary_, rotary_pairs_
from .selection import (
    SELECTION_MODES,
    SelectionBitmask,
    VectorSelection,
    vector_selection,
    vector_selection_bitmask,
    vector_selection_reference,
)
from .tiles import QueryTiles
# last: dispatch imports the names above from this package
from .dispatch import kernel_applies, select_vectors, sparse_attention  # noqa: E402

__all__ = [
    "QueryTiles",
    "SELECTION_MODES",
    "SelectionBitmask",
    "VectorSelection",
    "attention_reference",
    "kernel_applies",
    "masked_sparse_attention",
    "rms_norm_rotary_",
    "rotary_pairs_",
    "select_vectors",
    "sparse_attention",
    "vec_sparse_attention_reference",
    "vector_selection",
    "vector_selection_bitmask",
    "vector_selection_reference",
    "vector_sparse_attention",
]
