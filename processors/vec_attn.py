# Copyright 2026 The vecdit authors. Apache-2.0.
"""`VecAttnProcessor`: one processor for every vecdit model family, for the one-line install.

`pipe.transformer.set_attn_processor(VecAttnProcessor())` puts the same instance on every
attention module; `__call__` sends each call to its family's adapter (`WanVecAttnProcessor`,
`HunyuanVideoVecAttnProcessor`), which share one config, step hook and sparse path.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention

from .hunyuan_video import HunyuanVideoVecAttnProcessor
from .wan import WanVecAttnProcessor


class VecAttnProcessor(WanVecAttnProcessor, HunyuanVideoVecAttnProcessor):
    """Vector-wise sparse attention processor (Wan2.1/2.2 T2V and I2V, HunyuanVideo).

    Args:
        config (`VecAttnConfig`, *optional*): selection rule, query tiles and schedule; defaults to
            `VecAttnConfig()` (4x4x4 query tiles, the top 25% of keys per tile).

    >>> pipe.transformer.set_attn_processor(VecAttnProcessor())  # doctest: +SKIP
    """

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        if isinstance(attn, Attention):  # HunyuanVideo's legacy module class
            return HunyuanVideoVecAttnProcessor.__call__(self, attn, hidden_states, encoder_hidden_states,
                                                         attention_mask, image_rotary_emb)
        if not hasattr(attn, "is_cross_attention"):
            raise ValueError(f"VecAttnProcessor supports Wan and HunyuanVideo attention modules, got {type(attn).__name__}")
        return WanVecAttnProcessor.__call__(self, attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
