# Copyright 2026 The vecdit authors. Apache-2.0.
"""`VecAttnProcessor`: one diffusers attention processor for Wan2.1/2.2 and HunyuanVideo.

`pipe.transformer.set_attn_processor(VecAttnProcessor())` puts the same instance on every attention
module, so `__call__` tells the call sites apart:
  Wan self-attention (`attn1`)            -> sparse (dense on warm-up steps: the stock code path)
  Wan cross-attention (`attn2`, text/I2V) -> the stock `WanAttnProcessor`, exactly
  HunyuanVideo dual/single-stream joint   -> video queries sparse over video keys + valid text keys,
                                             text queries dense; padded text keys are never attended
  HunyuanVideo token refiner              -> the stock `AttnProcessor2_0` (returns one tensor)
Layouts: q/k/v are [B, S, H, D] as diffusers builds them.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, _get_qkv_projections

from vecdit.config import VecAttnConfig
from vecdit.ops import (
    SelectionBitmask,
    rms_norm_rotary_,
    rotary_pairs_,
    vec_sparse_attention_reference,
    vector_selection,
    vector_selection_bitmask,
    vector_selection_reference,
    vector_sparse_attention,
)
from vecdit.ops._checks import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, use_triton
from vecdit.parallel import gather_heads, heads_to_seq, seq_to_heads
from vecdit.schedule import LayerStats, Phase, Timer, find_or_attach_hook
from vecdit.utils import warn_once


class VecAttnProcessor:
    """Vector-wise sparse attention processor (Wan2.1/2.2 T2V and I2V, HunyuanVideo).

    Args:
        config (`VecAttnConfig`, *optional*): thresholds and schedule; defaults to `VecAttnConfig()`.

    >>> pipe.transformer.set_attn_processor(VecAttnProcessor())  # doctest: +SKIP
    """

    # diffusers writes these onto processors (set_attention_backend, enable_parallelism)
    _attention_backend = None
    _parallel_config = None

    def __init__(self, config: VecAttnConfig | None = None):
        self.config = config if config is not None else VecAttnConfig()
        self.step_hook = None  # set by vecdit.enable; otherwise found on the first call
        self._stock_wan = WanAttnProcessor()
        self._stock_plain = AttnProcessor2_0()
        self._valid_text_cache = (None, None)

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
            if encoder_hidden_states is None:
                return self._stock_plain(attn, hidden_states, None, attention_mask)
            if attention_mask is not None and attention_mask.dim() == 2:
                raise ValueError(
                    "VecAttnProcessor does not support HunyuanVideo-1.5 yet (its joint attention gets a "
                    "[batch, text] mask expanded to [batch, 1, S, S]); keep HunyuanVideo15AttnProcessor2_0 there"
                )
            return self._hunyuan_joint(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        if not hasattr(attn, "is_cross_attention"):
            raise ValueError(f"VecAttnProcessor supports Wan and HunyuanVideo attention modules, got {type(attn).__name__}")
        phase, hook, layer = self._phase(attn)
        if encoder_hidden_states is not None or phase is Phase.DENSE:
            return self._stock(self._stock_wan)(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        return self._wan_self(attn, hidden_states, rotary_emb, phase, hook, layer)

    # -- schedule ---------------------------------------------------------------------------------
    def _phase(self, attn):
        hook = self.step_hook
        if hook is None:
            hook = self.step_hook = find_or_attach_hook(attn, self.config)
        if hook is None:  # an attention module called on its own: no steps, select every call
            return Phase.SELECT, None, None
        layer = hook.layer(attn)
        if layer is None or layer in self.config.dense_layers:
            return Phase.DENSE, hook, layer
        return hook.t.phase, hook, layer

    def _parallel(self):
        """diffusers' parallel config: set on this processor, or on the model after we were installed."""
        if self._parallel_config is not None:
            return self._parallel_config
        return getattr(self.step_hook, "parallel_config", None)

    def _stock(self, processor):
        processor._attention_backend = self._attention_backend
        processor._parallel_config = self._parallel()
        return processor

    # -- Wan --------------------------------------------------------------------------------------
    def _wan_self(self, attn, hidden_states, rotary_emb, phase, hook, layer):
        query, key, value = _get_qkv_projections(attn, hidden_states, None)
        # qk-norm over all heads, then RoPE
        query = _wan_norm_rope(query.unflatten(2, (attn.heads, -1)), attn.norm_q, rotary_emb)
        key = _wan_norm_rope(key.unflatten(2, (attn.heads, -1)), attn.norm_k, rotary_emb)
        value = value.unflatten(2, (attn.heads, -1))
        parallel = self._parallel()
        if parallel is None:
            out = self._sparse(query, key, value, key.shape[1], None, phase, hook, layer)
        else:
            out = self._sparse_ulysses(query, key, value, parallel, phase, hook, layer)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    def _sparse_ulysses(self, query, key, value, parallel, phase, hook, layer):
        """Inside diffusers' Ulysses all-to-all: each rank sees the whole sequence for H/N heads,
        so selection and kernel run unchanged on the local heads."""
        from diffusers.models.attention_dispatch import _templated_context_parallel_attention

        cp = parallel.context_parallel_config
        if cp is None:
            raise ValueError("VecAttnProcessor supports context parallelism only (ContextParallelConfig), not tensor parallelism")
        if cp.ring_degree > 1:
            raise ValueError(
                "VecAttnProcessor does not support ring attention (ring_degree > 1): its selection needs every key of "
                "a head at once. Use ContextParallelConfig(ulysses_degree=N) instead"
            )
        heads_local = query.shape[2] // cp.ulysses_degree
        first_head = cp._ulysses_local_rank * heads_local

        def forward_op(ctx, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
                       return_lse=False, _save_ctx=True, _parallel_config=None):
            return self._sparse(q, k, v, k.shape[1], None, phase, hook, layer, heads=(first_head, query.shape[2]))

        return _templated_context_parallel_attention(query, key, value, None, 0.0, False, None, False, False,
                                                     forward_op=forward_op, backward_op=None, _parallel_config=parallel)

    # -- HunyuanVideo -----------------------------------------------------------------------------
    def _hunyuan_joint(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb):
        n_video, n_text = hidden_states.shape[1], encoder_hidden_states.shape[1]
        dual = attn.add_q_proj is not None
        x = hidden_states if dual else torch.cat([hidden_states, encoder_hidden_states], dim=1)
        query, key, value = _heads_qkv(attn, x, attn.to_q, attn.to_k, attn.to_v, None, None)
        # qk-norm, then RoPE on the video rows only
        query = _hunyuan_norm_rope(query, attn.norm_q, n_video, image_rotary_emb)
        key = _hunyuan_norm_rope(key, attn.norm_k, n_video, image_rotary_emb)
        if dual:
            eq, ek, ev = _heads_qkv(attn, encoder_hidden_states, attn.add_q_proj, attn.add_k_proj, attn.add_v_proj,
                                    attn.norm_added_q, attn.norm_added_k)
            query, key, value = torch.cat([query, eq], 1), torch.cat([key, ek], 1), torch.cat([value, ev], 1)

        phase, hook, layer = self._phase(attn)
        exchange = self._hunyuan_ulysses(query.shape[2]) if self._parallel() is not None else None
        if exchange is not None:  # video: sequence shards -> all tokens of this rank's heads
            world, group, first, _ = exchange
            heads = slice(first, first + query.shape[2] // world)
            query, key, value = (torch.cat([seq_to_heads(x[:, :n_video], world, group), x[:, n_video:, heads]], 1)
                                 for x in (query, key, value))
            n_video *= world
        outs = []
        # samples with different valid text lengths are attended separately (no padding mask)
        for rows, n_valid in self._valid_text_groups(attention_mask, n_video, n_text, query.shape[0]):
            q, k, v = query[rows], key[rows], value[rows]
            n_keys = n_video + n_valid
            k, v = k[:, :n_keys], v[:, :n_keys]
            if phase is Phase.DENSE:
                outs.append(self._dense(q, k, v))
                continue
            heads = (exchange[2], exchange[3]) if exchange is not None else None
            if self.config.text_handling == "always":
                video = self._sparse(q[:, :n_video], k, v, n_video, (n_video, n_keys), phase, hook, layer, heads)
            else:
                video = self._sparse(q[:, :n_video], k, v, n_keys, None, phase, hook, layer, heads)
            outs.append(torch.cat([video, self._dense(q[:, n_video:], k, v)], 1))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, 0)  # groups are contiguous row ranges
        if exchange is not None:  # back: video to sequence shards, text to all heads
            world, group, _, _ = exchange
            out = torch.cat([heads_to_seq(out[:, :n_video], world, group), gather_heads(out[:, n_video:], world, group)], 1)
            n_video //= world
        out = out.flatten(2, 3).to(query.dtype)
        video_out, text_out = out[:, :n_video], out[:, n_video:]
        if getattr(attn, "to_out", None) is not None:
            video_out = attn.to_out[1](attn.to_out[0](video_out))
        if getattr(attn, "to_add_out", None) is not None:
            text_out = attn.to_add_out(text_out)
        return video_out, text_out

    def _hunyuan_ulysses(self, heads):
        """(world, group, first local head, heads) under vecdit's HunyuanVideo context-parallel plan."""
        cp = self._parallel().context_parallel_config
        if cp is None or cp.ring_degree > 1:
            raise ValueError("VecAttnProcessor runs HunyuanVideo with Ulysses context parallelism only: "
                             "ContextParallelConfig(ulysses_degree=N) and vecdit.parallel.enable_context_parallel")
        world = cp.ulysses_degree
        if heads % world:
            raise ValueError(f"Ulysses degree {world} must divide the number of heads ({heads})")
        return world, cp._ulysses_mesh.get_group(), cp._ulysses_local_rank * (heads // world), heads

    def _valid_text_groups(self, attention_mask, n_video, n_text, batch):
        """[(row slice, valid text tokens)]: valid tokens must be a prefix of the text (padding at the end).

        One host sync per forward: the same mask object reaches every layer, so it is read once.
        """
        if attention_mask is None:
            return [(slice(0, batch), n_text)]
        cached_mask, groups = self._valid_text_cache
        if cached_mask is attention_mask:
            return groups
        valid = attention_mask.reshape(batch, -1)[:, -(n_video + n_text):].bool()
        counts = valid.sum(1)
        prefix = valid.int().cumprod(1).sum(1)
        counts, prefix = counts.tolist(), prefix.tolist()
        if any(c != p for c, p in zip(counts, prefix)) or any(c < n_video for c in counts):
            raise ValueError("VecAttnProcessor expects `attention_mask` to keep all video tokens and a prefix of the text tokens")
        groups, start = [], 0
        for i in range(1, batch + 1):
            if i == batch or counts[i] != counts[start]:
                groups.append((slice(start, i), counts[start] - n_video))
                start = i
        self._valid_text_cache = (attention_mask, groups)
        return groups

    # -- attention --------------------------------------------------------------------------------
    def _dense(self, q, k, v):
        return dispatch_attention_fn(q, k, v, backend=self._attention_backend)

    def _sparse(self, q, k, v, n_select, dense_range, phase, hook, layer, heads=None):
        """`heads` = (first head, heads of the model) when q holds a slice of the heads (Ulysses)."""
        cfg = self.config
        collect = cfg.collect_stats and hook is not None
        timer = Timer(q.device) if collect else None
        t0 = timer.mark() if collect else None
        first, total = heads if heads is not None else (0, q.shape[2])
        threshold = cfg.threshold_for(layer or 0, total)
        if isinstance(threshold, torch.Tensor):
            threshold = threshold[first:first + q.shape[2]]
        # reuse keeps the bitmask form (9/64 bytes per block and key), expanded again on reuse steps
        cached = hook.cached(layer) if (phase is Phase.REUSE and hook is not None) else None
        if cached is not None and (cached.num_keys != n_select or cached.batch != q.shape[0]):
            cached = None  # a different shape (resolution change mid-run): select again
        kernel = q.dtype in SUPPORTED_DTYPES and q.shape[-1] in SUPPORTED_HEAD_DIMS and use_triton(q)
        if not kernel:
            warn_once(f"no Triton kernel for {q.device.type} {q.dtype} head_dim {q.shape[-1]}; "
                      "running the PyTorch reference (slow, for tests and CPU)")
        keep_for_reuse = hook is not None and cfg.reuse_interval > 1
        if cached is not None:
            selection = cached.expand()
        else:
            kwargs = dict(mode=cfg.selection_mode, max_density=cfg.max_density, min_columns=cfg.min_columns)
            if kernel and keep_for_reuse:
                bits = vector_selection_bitmask(q, k[:, :n_select], threshold, **kwargs)
                selection = bits.expand()
            elif kernel:
                selection = vector_selection(q, k[:, :n_select], threshold, **kwargs)
            else:
                selection = vector_selection_reference(q, k[:, :n_select], threshold, **kwargs)
                bits = SelectionBitmask.from_selection(selection) if keep_for_reuse else None
            if keep_for_reuse:
                hook.store(layer, bits)
        t1 = timer.mark() if collect else None
        # the index buffer's size is known on the host (count, then fill): no extra sync to decide
        capacity = selection.column_index.numel() / max(1, selection.column_count.numel() * n_select)
        if kernel and capacity > cfg.dense_fallback_density:
            out = self._dense(q, k, v)  # nearly everything kept: cuDNN/flash dense is faster
        elif kernel:
            out = vector_sparse_attention(q, k, v, selection, dense_range=dense_range)
        else:
            out = vec_sparse_attention_reference(q, k, v, selection, dense_range or (0, 0))[0]
        if collect:
            per_head = selection.column_count.sum((0, 2)).float() / (selection.batch * selection.num_query_blocks * max(n_select, 1))
            hook.t.stats.append(LayerStats(hook.t.step, hook.t.branch, layer, phase.value, per_head, (t0, t1, timer.mark())))
        return out


def _heads_qkv(attn, x, to_q, to_k, to_v, norm_q, norm_k):
    """Projections split into heads [B, S, H, D], with HunyuanVideo's per-head qk-norm."""
    q, k, v = (proj(x).unflatten(2, (attn.heads, -1)) for proj in (to_q, to_k, to_v))
    return (norm_q(q) if norm_q is not None else q), (norm_k(k) if norm_k is not None else k), v


def _fused_rope(x) -> bool:
    # in place on a fresh projection output, inference only (the op has no backward)
    return use_triton(x) and x.dtype in SUPPORTED_DTYPES and x.shape[-1] in SUPPORTED_HEAD_DIMS and not x.requires_grad


def _hunyuan_norm_rope(x, norm, n_video, image_rotary_emb):
    """HunyuanVideo's per-head qk-norm, then RoPE on the first `n_video` rows: one in-place pass
    where the kernel applies (a fresh projection output, diffusers' RMSNorm in x's dtype)."""
    fused = (_fused_rope(x) and type(norm) is RMSNorm and norm.weight is not None and norm.bias is None
             and norm.weight.dtype == x.dtype and norm.weight.shape == (x.shape[-1],))
    if fused and image_rotary_emb is None:
        return rms_norm_rotary_(x, norm.weight, norm.eps)
    if fused and image_rotary_emb[0].shape == (n_video, x.shape[-1]):
        cos, sin = image_rotary_emb
        return rms_norm_rotary_(x, norm.weight, norm.eps, cos[:, 0::2].float(), sin[:, 0::2].float())
    x = norm(x) if norm is not None else x
    return _hunyuan_rope(x, n_video, image_rotary_emb) if image_rotary_emb is not None else x


def _hunyuan_rope(x, n_video, image_rotary_emb):
    """diffusers' HunyuanVideo RoPE on the first `n_video` rows; one in-place pass where the
    kernel applies (its pairs share an angle: cos/sin are repeat-interleaved)."""
    cos, sin = image_rotary_emb
    if _fused_rope(x) and cos.shape == (n_video, x.shape[-1]):
        rotary_pairs_(x[:, :n_video], cos[:, 0::2].float(), sin[:, 0::2].float())
        return x
    return torch.cat([apply_rotary_emb(x[:, :n_video], image_rotary_emb, sequence_dim=1), x[:, n_video:]], 1)


def _wan_norm_rope(x, norm, rotary_emb):
    """Wan's `rms_norm_across_heads` qk-norm (torch.nn.RMSNorm over heads x head_dim), then its
    RoPE: one in-place pass where the kernel applies (x: `[B, S, H, D]` view of a fresh projection)."""
    width = x.shape[2] * x.shape[3]
    fused = (_fused_rope(x) and type(norm) is torch.nn.RMSNorm and norm.weight is not None
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
    if _fused_rope(x) and freqs_cos.shape == (1, x.shape[1], 1, x.shape[-1]):
        return rotary_pairs_(x, freqs_cos[0, :, 0, 0::2].float(), freqs_sin[0, :, 0, 1::2].float())
    return _wan_rotary(x, freqs_cos, freqs_sin)


def _wan_rotary(x, freqs_cos, freqs_sin):
    # Wan's interleaved-pair rotary embedding, as WanAttnProcessor applies it
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)
