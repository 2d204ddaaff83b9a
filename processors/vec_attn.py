# Copyright 2026 The vecdit authors. Apache-2.0.
"""`VecAttnProcessor`: one processor for every registered model family, for the one-line install.

`pipe.transformer.set_attn_processor(VecAttnProcessor())` puts the same instance on every
attention module; `__call__` hands each call to the adapter of the module's family (its
`ModelFamily.adapter`, built once per family), which runs on this processor's config, attention
backend, parallel config and sparse path.
"""
from __future__ import annotations

import torch

from ._sparse import SparseAttention
from .families import family_of_module, registered


class VecAttnProcessor(SparseAttention):
    """Vector-wise sparse attention processor (Wan2.1/2.2 T2V and I2V, HunyuanVideo, and every
    family registered with `vecdit.processors.register_family`).

    Args:
        config (`VecAttnConfig`, *optional*): selection rule, query tiles and schedule; defaults to
            `VecAttnConfig()` (4x4x4 query tiles, the top 25% of keys per tile).

    >>> pipe.transformer.set_attn_processor(VecAttnProcessor())  # doctest: +SKIP
    """

    def __init__(self, config=None):
        super().__init__(config)
        # family name -> its adapter, built here: a compiled block finds them ready
        self._adapters: dict[str, SparseAttention] = {f.name: f.adapter(engine=self) for f in registered()}

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        state = self._layer_state(attn)
        family = state.hook.family if state is not None else family_of_module(attn)
        if family is None:
            raise ValueError(f"VecAttnProcessor has no model family for {type(attn).__name__} modules; "
                             "register one with vecdit.processors.register_family")
        adapter = self._adapters.get(family.name)
        if adapter is None:  # a family registered after this processor was made
            adapter = self._add_adapter(family)
        rope = rotary_emb if rotary_emb is not None else image_rotary_emb  # Wan's name, HunyuanVideo's
        return adapter(attn, hidden_states, encoder_hidden_states, attention_mask, rope)

    @torch.compiler.disable
    def _add_adapter(self, family):
        adapter = self._adapters[family.name] = family.adapter(engine=self)
        return adapter
