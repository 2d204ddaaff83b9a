# Copyright 2026 The vecdit authors. Apache-2.0.
"""Vector selection: for each query block, the key columns ("vertical vectors") to attend.

`op.py` the wrapper and custom ops, `_*_kernel.py` the Triton kernels, `rule.py` the rule they
compute, `sparse_format.py` the selection's two forms, `reference.py` the tests' oracle.
"""
from .op import SELECTION_MODES, vector_selection, vector_selection_bitmask
from .reference import vector_selection_reference
from .sparse_format import SelectionBitmask, VectorSelection

__all__ = [
    "SELECTION_MODES",
    "SelectionBitmask",
    "VectorSelection",
    "vector_selection",
    "vector_selection_bitmask",
    "vector_selection_reference",
]
