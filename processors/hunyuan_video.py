# Copyright 2026 The vecdit authors. Apache-2.0.
"""`HunyuanVideoVecAttnProcessor`: vecdit on HunyuanVideo (T2V, I2V) and HunyuanVideo-1.5 (T2V, I2V).

  dual/single-stream joint attention -> video queries sparse over video keys + valid text keys,
                                        text queries dense; padded text keys are never attended
  token refiner                      -> the stock `AttnProcessor2_0` (returns one tensor)
Valid text tokens are sliced, no boolean mask (that alone makes a dense 720p forward 1.4x faster
than stock; HunyuanVideo-1.5's stock processor even builds a [B, 1, S, S] mask per layer). The two
versions differ in the mask they pass: HunyuanVideo a key mask over all tokens (padded text queries
still attend), HunyuanVideo-1.5 a [B, text] mask applied to queries and keys (padded text queries
get zeros, as its stock processor gives them). HunyuanVideo has no diffusers context-parallel plan: under
`vecdit.parallel.enable_context_parallel` with its family's `cp_plan` this processor does the Ulysses
exchange of the video part.
"""
from __future__ import annotations

import dataclasses
import inspect
import re

import torch
from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.normalization import RMSNorm
from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoTransformer3DModel
from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15Transformer3DModel

from vecdit.config import PRESET
from vecdit.ops import rms_norm_rotary_, rotary_pairs_
from vecdit.parallel import gather_heads, heads_to_seq, seq_to_heads
from vecdit.schedule import Phase, patchified_grid

from ._sparse import SparseAttention, fused_rope_applies
from .families import ModelFamily


class HunyuanVideoVecAttnProcessor(SparseAttention):
    """Vector-wise sparse joint attention for HunyuanVideo's `Attention` modules.

    Args:
        config (`VecAttnConfig`, *optional*): selection rule, query tiles and schedule.

    >>> pipe.transformer.set_attn_processor(HunyuanVideoVecAttnProcessor())  # doctest: +SKIP
    """

    def __init__(self, config=None, engine=None):
        super().__init__(config, engine)
        self._stock_plain = AttnProcessor2_0()
        self._valid_text_cache = (None, None)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        if not isinstance(attn, Attention):
            raise ValueError(f"HunyuanVideoVecAttnProcessor supports HunyuanVideo attention modules, got {type(attn).__name__}")
        if encoder_hidden_states is None:  # the token refiner
            return self._stock_plain(attn, hidden_states, None, attention_mask)
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

        eng = self.engine
        call = eng._begin(attn)
        parallel = eng._parallel(call.hook)
        exchange = _hunyuan_ulysses(parallel, query.shape[2]) if parallel is not None else None
        if exchange is not None:  # video: sequence shards -> all tokens of this rank's heads
            world, group, first, _ = exchange
            heads = slice(first, first + query.shape[2] // world)
            query, key, value = (torch.cat([seq_to_heads(x[:, :n_video], world, group), x[:, n_video:, heads]], 1)
                                 for x in (query, key, value))
            n_video *= world
        outs = []
        # HunyuanVideo-1.5's [batch, text] mask also masks the padded text queries
        queries_masked = attention_mask is not None and attention_mask.dim() == 2
        # samples with different valid text lengths are attended separately (no padding mask)
        for rows, n_valid in self._valid_text_groups(attention_mask, n_video, n_text, query.shape[0], call.hook):
            q, k, v = query[rows], key[rows], value[rows]
            n_keys = n_video + n_valid
            k, v = k[:, :n_keys], v[:, :n_keys]
            n_queries = n_keys if queries_masked else q.shape[1]  # rows past it stay zero
            if call.phase is Phase.DENSE:
                out = eng._dense(q[:, :n_queries], k, v)
            else:
                heads = (exchange[2], exchange[3]) if exchange is not None else None
                if eng.config.text_handling == "always":
                    keys = call.keys(n_video, (n_video, n_keys), heads)
                else:
                    keys = call.keys(n_keys, None, heads)
                out = torch.cat([eng._sparse(q[:, :n_video], k, v, keys), eng._dense(q[:, n_video:n_queries], k, v)], 1)
            if n_queries < q.shape[1]:
                out = torch.cat([out, out.new_zeros(out.shape[0], q.shape[1] - n_queries, *out.shape[2:])], 1)
            outs.append(out)
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

    def _valid_text_groups(self, attention_mask, n_video, n_text, batch, hook):
        """[(row slice, valid text tokens)]: valid tokens must be a prefix of the text (padding at the end).

        `attention_mask` covers all tokens (HunyuanVideo, `[B, 1, 1, S]`) or only the text
        (HunyuanVideo-1.5, `[B, text]`). One host sync per forward: the same mask object reaches
        every layer, so it is read once.
        """
        if attention_mask is None:
            return [(slice(0, batch), n_text)]
        lengths = hook.t.probe if hook is not None else None
        if isinstance(lengths, list) and len(lengths) == batch and all(0 <= n <= n_text for n in lengths):
            return _groups(lengths)  # read at the transformer's input: Python ints, no read here
        cached_mask, groups = self._valid_text_cache
        if cached_mask is attention_mask:
            return groups
        valid = attention_mask.reshape(batch, -1)[:, -(n_video + n_text):].bool()
        if valid.shape[1] == n_text:  # text only: the video tokens are all valid
            valid = torch.cat([valid.new_ones(batch, n_video), valid], 1)
        counts = valid.sum(1)
        prefix = valid.int().cumprod(1).sum(1)
        counts, prefix = counts.tolist(), prefix.tolist()
        if any(c != p for c, p in zip(counts, prefix)) or any(c < n_video for c in counts):
            raise ValueError("vecdit expects `attention_mask` to keep all video tokens and a prefix of the text tokens")
        groups = _groups([c - n_video for c in counts])
        self._valid_text_cache = (attention_mask, groups)
        return groups


def _hunyuan_ulysses(parallel, heads):
    """(world, group, first local head, heads) under vecdit's HunyuanVideo context-parallel plan."""
    cp = parallel.context_parallel_config
    if cp is None or cp.ring_degree > 1:
        raise ValueError("vecdit runs HunyuanVideo with Ulysses context parallelism only: "
                         "ContextParallelConfig(ulysses_degree=N) and vecdit.parallel.enable_context_parallel")
    world = cp.ulysses_degree
    if heads % world:
        raise ValueError(f"Ulysses degree {world} must divide the number of heads ({heads})")
    return world, cp._ulysses_mesh.get_group(), cp._ulysses_local_rank * (heads // world), heads


def _groups(lengths: list[int]) -> list[tuple[slice, int]]:
    """Runs of equal valid text length: [(row slice, length)]."""
    groups, start = [], 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths) or lengths[i] != lengths[start]:
            groups.append((slice(start, i), lengths[start]))
            start = i
    return groups


def _forward_args(model, args, kwargs) -> dict | None:
    try:
        return inspect.signature(model.forward).bind_partial(*args, **kwargs).arguments
    except TypeError:
        return None


def valid_text_lengths(model, args, kwargs) -> list[int] | None:
    """Valid text tokens per sample of a HunyuanVideo forward, from its inputs (one host read per
    forward, at the root): the `encoder_attention_mask` prefix."""
    bound = _forward_args(model, args, kwargs)
    mask = bound.get("encoder_attention_mask") if bound is not None else None
    return mask.bool().sum(1).tolist() if mask is not None else None


def valid_context_lengths_15(model, args, kwargs) -> list[int] | None:
    """HunyuanVideo-1.5's valid context tokens per sample: it puts the valid image, ByT5 and Qwen
    tokens first (image tokens count only in I2V, where `image_embeds` is not all zeros, as its
    forward decides)."""
    bound = _forward_args(model, args, kwargs)
    mask = bound.get("encoder_attention_mask") if bound is not None else None
    if mask is None:
        return None
    counts = mask.bool().sum(1)
    mask_2, image = bound.get("encoder_attention_mask_2"), bound.get("image_embeds")
    if mask_2 is not None:
        counts = counts + mask_2.bool().sum(1)
    if image is not None and not bool(torch.all(image == 0)):
        counts = counts + image.shape[1]
    return counts.tolist()


def _heads_qkv(attn, x, to_q, to_k, to_v, norm_q, norm_k):
    """Projections split into heads [B, S, H, D], with HunyuanVideo's per-head qk-norm."""
    q, k, v = (proj(x).unflatten(2, (attn.heads, -1)) for proj in (to_q, to_k, to_v))
    return (norm_q(q) if norm_q is not None else q), (norm_k(k) if norm_k is not None else k), v


def _hunyuan_norm_rope(x, norm, n_video, image_rotary_emb):
    """HunyuanVideo's per-head qk-norm, then RoPE on the first `n_video` rows: one in-place pass
    where the kernel applies (a fresh projection output, diffusers' RMSNorm in x's dtype)."""
    fused = (fused_rope_applies(x) and type(norm) is RMSNorm and norm.weight is not None and norm.bias is None
             and norm.weight.dtype == x.dtype and norm.weight.shape == (x.shape[-1],))
    if fused and image_rotary_emb is None:
        return rms_norm_rotary_(x, norm.weight, norm.eps)
    if fused and image_rotary_emb[0].shape == (n_video, x.shape[-1]):
        cos, sin = image_rotary_emb
        return rms_norm_rotary_(x, norm.weight, norm.eps, cos[:, 0::2].float(), sin[:, 0::2].float())
    x = norm(x) if norm is not None else x
    if image_rotary_emb is None:
        return x
    cos, sin = image_rotary_emb
    if fused_rope_applies(x) and cos.shape == (n_video, x.shape[-1]):
        # one in-place pass (the pairs share an angle: cos/sin are repeat-interleaved)
        rotary_pairs_(x[:, :n_video], cos[:, 0::2].float(), sin[:, 0::2].float())
        return x
    return torch.cat([apply_rotary_emb(x[:, :n_video], image_rotary_emb, sequence_dim=1), x[:, n_video:]], 1)


def _hunyuan_grid(model, hidden_states):
    """Spatial `patch_size`, temporal `patch_size_t` (HunyuanVideo and HunyuanVideo-1.5)."""
    patch = model.config.patch_size
    return patchified_grid(hidden_states, (model.config.get("patch_size_t", 1), patch, patch))


# vecdit's context-parallel plan for HunyuanVideo (see `vecdit.parallel`): the video tokens and
# their RoPE split across ranks, the text whole on every rank
HUNYUAN_VIDEO_CP_PLAN = {
    "rope": {
        0: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
        1: ContextParallelInput(split_dim=0, expected_dims=2, split_output=True),
    },
    "transformer_blocks.0": {
        "hidden_states": ContextParallelInput(split_dim=1, expected_dims=3, split_output=False),
    },
    "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
}
HUNYUAN_VIDEO = ModelFamily(
    name="hunyuan",
    transformers=(HunyuanVideoTransformer3DModel,),
    attention=(Attention,),
    adapter=HunyuanVideoVecAttnProcessor,
    # joint attention of the dual- and single-stream blocks (the token refiner stays stock)
    sparse_layers=re.compile(r"transformer_blocks\.\d+\.attn|single_transformer_blocks\.\d+\.attn"),
    latent_grid=_hunyuan_grid,
    preset=PRESET,
    checkpoints=("hunyuanvideo", "hunyuanvideo-i2v"),
    # valid text lengths read at the transformer's input (no data-dependent read in compiled blocks)
    forward_probe=valid_text_lengths,
    cp_plan=HUNYUAN_VIDEO_CP_PLAN,
)
# HunyuanVideo's adapter, layers and grid; its own valid-context probe, and no context-parallel plan
HUNYUAN_VIDEO_15 = dataclasses.replace(
    HUNYUAN_VIDEO, name="hunyuan15", transformers=(HunyuanVideo15Transformer3DModel,),
    checkpoints=("hunyuanvideo-1.5-t2v", "hunyuanvideo-1.5-i2v"), forward_probe=valid_context_lengths_15, cp_plan=None,
)
