# Copyright 2026 The vecdit authors. Apache-2.0.
"""vecdit: vector-wise sparse attention for video diffusion transformers in diffusers."""
from .ops import VectorSelection, vector_selection, vector_sparse_attention

__version__ = "0.1.0"
__all__ = ["VectorSelection", "vector_selection", "vector_sparse_attention", "__version__"]
