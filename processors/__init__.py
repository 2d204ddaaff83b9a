# Copyright 2026 The vecdit authors. Apache-2.0.
"""diffusers attention processors of vecdit (import name: `vecdit.processors`): one adapter per
model family over one shared sparse path, the model families' registry, and `VecAttnProcessor`
for every family at once."""
from ._sparse import SparseAttention, SparseCall
from .capture import CalibrationProcessor
from .families import FAMILIES, ModelFamily, family_of, register_family, unregister_family
from .hunyuan_video import HUNYUAN_VIDEO, HUNYUAN_VIDEO_15, HunyuanVideoVecAttnProcessor
from .vec_attn import VecAttnProcessor
from .wan import WAN, WanVecAttnProcessor

# the model families vecdit runs: one line each
register_family(WAN)
register_family(HUNYUAN_VIDEO)
register_family(HUNYUAN_VIDEO_15)

__all__ = ["FAMILIES", "HUNYUAN_VIDEO", "HUNYUAN_VIDEO_15", "WAN", "CalibrationProcessor",
           "HunyuanVideoVecAttnProcessor", "ModelFamily", "SparseAttention", "SparseCall", "VecAttnProcessor", "WanVecAttnProcessor", "family_of",
           "register_family", "unregister_family"]
