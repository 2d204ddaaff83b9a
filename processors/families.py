# Copyright 2026 The vecdit authors. Apache-2.0.
"""Model families: everything vecdit knows about one kind of transformer, in one `ModelFamily`.

Each family is defined next to its adapter (`wan.py`, `hunyuan_video.py`) and registered in
`vecdit.processors` (`register_family`). The core (`vecdit.schedule`, `vecdit.parallel`,
`vecdit.config`) receives a family and names no model. A new family is one adapter file, one
`register_family` line and its preset.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from vecdit.config import PRESETS, VecAttnConfig

# the forward's local names of the post-patchify grid, read when a processor set with plain
# `set_attn_processor` attaches the step hook in the middle of a forward (Wan and HunyuanVideo)
POST_PATCH_LOCALS = ("post_patch_num_frames", "post_patch_height", "post_patch_width")


@dataclass(frozen=True, eq=False)
class ModelFamily:
    """One model family's facts.

    Args:
        name (`str`): the family's name (`ModelPreset.family` of `vecdit generate`'s models).
        transformers (`tuple[type]`): the transformer classes (subclasses match too).
        attention (`tuple[type]`): the attention module classes the adapter takes (how a module
            called on its own, outside a transformer forward, finds its family).
        adapter (`type`): the processor (a `SparseAttention`) that runs this family's attention.
        sparse_layers (`re.Pattern`): module names (full match) of the sparse-capable attention,
            in model order: the layers of `dense_layers` and of a `[layers, heads]` threshold table.
        latent_grid (`(transformer, hidden_states) -> (frames, height, width) | None`): the
            post-patchify grid from the transformer's input.
        preset (`VecAttnConfig`): vecdit's settings for this family's checkpoints.
        checkpoints (`tuple[str]`): the preset names (`VecAttnConfig.for_model`, `vecdit generate`).
        forward_probe (`(transformer, args, kwargs) -> object`, *optional*): what the adapter needs
            from a forward's inputs as Python values, read once at the root (not in compiled blocks).
        cp_plan (`dict`, *optional*): a context-parallel plan where diffusers has none
            (`vecdit.parallel.enable_context_parallel`); None uses the model's own `_cp_plan`.
        grid_locals (`tuple[str, str, str]`): the forward's local names of the post-patchify grid.
    """

    name: str
    transformers: tuple[type, ...]
    attention: tuple[type, ...]
    adapter: type
    sparse_layers: re.Pattern
    latent_grid: Callable
    preset: VecAttnConfig
    checkpoints: tuple[str, ...] = ()
    forward_probe: Callable | None = None
    cp_plan: dict | None = None
    grid_locals: tuple[str, str, str] = POST_PATCH_LOCALS


# transformer class -> its family
FAMILIES: dict[type, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Add `family` (its transformer classes and its preset names); a class or preset name that
    another family holds raises."""
    for cls in family.transformers:
        other = FAMILIES.get(cls)
        if other is not None and other is not family:
            raise ValueError(f"{cls.__name__} already belongs to the model family {other.name!r}; "
                             "unregister_family it first")
    for name in family.checkpoints:
        if name in PRESETS and PRESETS[name] is not family.preset:
            raise ValueError(f"preset {name!r} is already registered by another model family")
    for cls in family.transformers:
        FAMILIES[cls] = family
    for name in family.checkpoints:
        PRESETS[name] = family.preset
    return family


def unregister_family(family: ModelFamily) -> None:
    """Remove `family`: its transformers are unknown to vecdit again, its preset names gone."""
    for cls in family.transformers:
        if FAMILIES.get(cls) is family:
            del FAMILIES[cls]
    for name in family.checkpoints:
        if PRESETS.get(name) is family.preset:
            del PRESETS[name]


def registered() -> list[ModelFamily]:
    """The registered families, in registration order."""
    return list(dict.fromkeys(FAMILIES.values()))


def family_named(name: str) -> ModelFamily:
    for family in registered():
        if family.name == name:
            return family
    raise ValueError(f"unknown model family {name!r}; registered: {[f.name for f in registered()]}")


def family_of(transformer) -> ModelFamily | None:
    """The family of a transformer (or of its class), None where none is registered."""
    cls = transformer if isinstance(transformer, type) else type(transformer)
    for base in cls.__mro__:
        if base in FAMILIES:
            return FAMILIES[base]
    return None


def require_family(transformer) -> ModelFamily:
    family = family_of(transformer)
    if family is None:
        raise ValueError(f"vecdit has no model family for {type(transformer).__name__}; registered: "
                         f"{[f.name for f in registered()]}. Describe it with a ModelFamily and "
                         "vecdit.processors.register_family")
    return family


def family_of_module(attn) -> ModelFamily | None:
    """The family whose adapter takes this attention module's class (a module called on its own)."""
    for family in registered():
        if isinstance(attn, family.attention):
            return family
    return None
