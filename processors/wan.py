# Copyright 2026 The vecdit authors. Apache-2.0.
"""`WanVecAttnProcessor`: vecdit on Wan2.1/2.2 (T2V, I2V, both Wan2.2 experts).

  self-attention (`attn1`)            -> sparse over the video keys (dense on warm-up steps: the stock code path)
  cross-attention (`attn2`, text/I2V) -> the stock `WanAttnProcessor`, exactly
Also under diffusers' Ulysses context parallelism: selection and kernel run inside its
all-to-all, on the full sequence of the local heads.
"""
from __future__ import annotations

import re

import torch
from diffusers.models.transformers.transformer_wan import (WanAttention, WanAttnProcessor, WanTransformer3DModel,
                                                           _get_qkv_projections)
from diffusers.models.transformers.transformer_wan_vace import WanVACETransformer3DModel

from vecdit.config import PRESET
from vecdit.ops import rms_norm_rotary_, rotary_pairs_
from vecdit.schedule import Phase, patchified_grid

from ._sparse import SparseAttention, fused_rope_applies
from .families import ModelFamily


class WanVecAttnProcessor(SparseAttention):
    """Vector-wise sparse self-attention for `WanAttention` modules.

    Args:
        config (`VecAttnConfig`, *optional*): selection rule, query tiles and schedule.

    >>> pipe.transformer.set_attn_processor(WanVecAttnProcessor())  # doctest: +SKIP
    """

    def __init__(self, config=None, engine=None):
        super().__init__(config, engine)
        self._stock_wan = WanAttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        if not hasattr(attn, "is_cross_attention"):
            raise ValueError(f"WanVecAttnProcessor supports Wan attention modules, got {type(attn).__name__}")
        eng = self.engine
        if encoder_hidden_states is not None:  # cross-attention (text, I2V image): stock
            return eng._stock(self._stock_wan)(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        call = eng._begin(attn)
        if call.phase is Phase.DENSE:
            return eng._stock(self._stock_wan, call.hook)(attn, hidden_states, None, attention_mask, rotary_emb)
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        # qk-norm over all heads, then RoPE
        query = _wan_norm_rope(query.unflatten(2, (attn.heads, -1)), attn.norm_q, rotary_emb)
        key = _wan_norm_rope(key.unflatten(2, (attn.heads, -1)), attn.norm_k, rotary_emb)
        value = value.unflatten(2, (attn.heads, -1))
        parallel = eng._parallel(call.hook)
        if parallel is None:
            out = eng._sparse(query, key, value, call.keys(key.shape[1]))
        else:
            out = self._sparse_ulysses(query, key, value, parallel, call)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def _sparse_ulysses(self, query, key, value, parallel, call):
        """Inside diffusers' Ulysses all-to-all: each rank sees the whole sequence for H/N heads,
        so selection and kernel run unchanged on the local heads."""
        from diffusers.models.attention_dispatch import _templated_context_parallel_attention

        cp = parallel.context_parallel_config
        if cp is None:
            raise ValueError("vecdit supports context parallelism only (ContextParallelConfig), not tensor parallelism")
        if cp.ring_degree > 1:
            raise ValueError(
                "vecdit does not support ring attention (ring_degree > 1): its selection needs every key of "
                "a head at once. Use ContextParallelConfig(ulysses_degree=N) instead"
            )
        heads_local = query.shape[2] // cp.ulysses_degree
        first_head = cp._ulysses_local_rank * heads_local

        def forward_op(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
                       return_lse=False, _save_ctx=True, _parallel_config=None):
            return self.engine._sparse(q, k, v, call.keys(k.shape[1], heads=(first_head, query.shape[2])))

        return _templated_context_parallel_attention(query, key, value, None, 0.0, False, None, False, False,
                                                     forward_op=forward_op, backward_op=None, _parallel_config=parallel)


def _wan_norm_rope(x, norm, rotary_emb):
    """Wan's `rms_norm_across_heads` qk-norm (torch.nn.RMSNorm over heads x head_dim), then its
    RoPE: one in-place pass where the kernel applies (x: `[B, S, H, D]` view of a fresh projection)."""
    width = x.shape[2] * x.shape[3]
    fused = (fused_rope_applies(x) and type(norm) is torch.nn.RMSNorm and norm.weight is not None
             and norm.weight.dtype == x.dtype and norm.weight.shape == (width,)
             and (rotary_emb is None or rotary_emb[0].shape == (1, x.shape[1], 1, x.shape[-1])))
    if fused:
        eps = norm.eps if norm.eps is not None else torch.finfo(x.dtype).eps
        cos, sin = (None, None) if rotary_emb is None else (rotary_emb[0][0, :, 0, 0::2].float(),
                                                             rotary_emb[1][0, :, 0, 1::2].float())
        return rms_norm_rotary_(x, norm.weight, eps, cos, sin, across_heads=True)
    x = norm(x.flatten(2)).unflatten(2, (x.shape[2], -1))
    return _wan_rope(x, *rotary_emb) if rotary_emb is not None else x


def _wan_rope(x, freqs_cos, freqs_sin):
    """Wan's processor RoPE (`freqs_*` `[1, S, 1, D]`); one in-place pass where the kernel applies."""
    if fused_rope_applies(x) and freqs_cos.shape == (1, x.shape[1], 1, x.shape[-1]):
        return rotary_pairs_(x, freqs_cos[0, :, 0, 0::2].float(), freqs_sin[0, :, 0, 1::2].float())
    # Wan's interleaved-pair rotary embedding, as WanAttnProcessor applies it
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


WAN = ModelFamily(
    name="wan",
    transformers=(WanTransformer3DModel, WanVACETransformer3DModel),
    attention=(WanAttention,),
    adapter=WanVecAttnProcessor,
    # self-attention of every block (cross-attention stays stock; VACE's own blocks stay dense)
    sparse_layers=re.compile(r"blocks\.\d+\.attn1"),
    latent_grid=lambda model, hidden_states: patchified_grid(hidden_states, model.config.patch_size),
    preset=PRESET,
    checkpoints=("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b-480p", "wan2.1-i2v-14b-720p",
                 "wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b"),
)
