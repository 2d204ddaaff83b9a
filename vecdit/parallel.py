# Copyright 2026 The vecdit authors. Apache-2.0.
"""Context parallelism with a model family's own plan, where diffusers has no `_cp_plan`.

A joint-attention family's plan (HunyuanVideo's `cp_plan`, in `processors/hunyuan_video.py`) splits
the video tokens (and their RoPE) across ranks and keeps the text whole on every rank. Joint
attention then cannot use diffusers' Ulysses template (it would all-to-all the replicated text as if
it were sequence shards), so `VecAttnProcessor` does the Ulysses exchange for the video part itself
and takes its heads' slice of the text locally:

    video [B, S/N, H, D] --all-to-all--> [B, S, H/N, D]    text [B, T, H, D] --slice--> [B, T, H/N, D]
    attention over [video, text] on H/N heads
    video out --all-to-all back--> [B, S/N, H, D]          text out --all-gather heads--> [B, T, H, D]
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def enable_context_parallel(transformer, config, family=None) -> None:
    """`transformer.enable_parallelism(config)` with `family`'s plan (its `cp_plan`, a
    `vecdit.processors.ModelFamily`), or the model's own where the family has none (or no family)."""
    plan = getattr(family, "cp_plan", None)
    transformer.enable_parallelism(config=config, cp_plan=plan)


def _all_to_all(x: torch.Tensor, group) -> torch.Tensor:
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def seq_to_heads(x: torch.Tensor, world: int, group) -> torch.Tensor:
    """[B, S/N, H, D] on each rank -> [B, S, H/N, D] (this rank's heads, every rank's tokens in order)."""
    b, s_local, h, d = x.shape
    x = x.reshape(b, s_local, world, h // world, d).permute(2, 1, 0, 3, 4).contiguous()
    x = _all_to_all(x, group)
    return x.flatten(0, 1).permute(1, 0, 2, 3)


def heads_to_seq(x: torch.Tensor, world: int, group) -> torch.Tensor:
    """Inverse of `seq_to_heads`: [B, S, H/N, D] -> [B, S/N, H, D]."""
    b, s, h_local, d = x.shape
    x = x.reshape(b, world, s // world, h_local, d).permute(1, 3, 0, 2, 4).contiguous()
    x = _all_to_all(x, group)
    return x.flatten(0, 1).permute(1, 2, 0, 3)


def gather_heads(x: torch.Tensor, world: int, group) -> torch.Tensor:
    """[B, T, H/N, D] on each rank -> [B, T, H, D] (heads in rank order)."""
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim=2)
