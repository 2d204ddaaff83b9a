# Copyright 2026 The vecdit authors. Apache-2.0.
"""vecdit: vector-wise sparse attention for video diffusion transformers in diffusers."""
from .ops import VectorSelection, vector_selection, vector_sparse_attention
from .config import PRESETS, VecAttnConfig
from .api import apply_vec_sparse, disable, enable, is_enabled, remove_vec_sparse, stats
from .fp8 import quantize_fp8

__version__ = "0.1.0"


def __getattr__(name):
    # the processor imports diffusers' model code: load it on first use
    if name == "VecAttnProcessor":
        from vecdit.processors import VecAttnProcessor

        return VecAttnProcessor
    raise AttributeError(f"module 'vecdit' has no attribute {name!r}")


__all__ = [
    "PRESETS", "VecAttnConfig", "VecAttnProcessor", "VectorSelection", "apply_vec_sparse", "disable", "enable",
    "is_enabled", "quantize_fp8", "remove_vec_sparse", "stats", "vector_selection", "vector_sparse_attention", "__version__",
]
