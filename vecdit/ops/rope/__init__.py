# Copyright 2026 The vecdit authors. Apache-2.0.
"""Fused qk RMSNorm + rotary embedding of interleaved pairs, in place (`op.py`, `_rope_kernel.py`,
`reference.py`)."""
from .op import rms_norm_rotary_, rotary_pairs_

__all__ = ["rms_norm_rotary_", "rotary_pairs_"]
