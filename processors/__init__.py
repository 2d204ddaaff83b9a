# Copyright 2026 The vecdit authors. Apache-2.0.
"""diffusers attention processors of vecdit (import name: `vecdit.processors`)."""
from .vec_attn import VecAttnProcessor

__all__ = ["VecAttnProcessor"]
