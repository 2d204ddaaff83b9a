# Copyright 2026 The vecdit authors. Apache-2.0.
"""diffusers attention processors of vecdit (import name: `vecdit.processors`): one adapter per
model family over one shared sparse path, and `VecAttnProcessor` for every family at once."""
from .hunyuan_video import HunyuanVideoVecAttnProcessor
from .vec_attn import VecAttnProcessor
from .wan import WanVecAttnProcessor

__all__ = ["HunyuanVideoVecAttnProcessor", "VecAttnProcessor", "WanVecAttnProcessor"]
