# Copyright 2026 The vecdit authors. Apache-2.0.
"""The VBench prompt suite (946 prompts, 16 dimensions; `vbench/NOTICE`) and VBench's file naming."""
from __future__ import annotations

import json
import os

_VBENCH_FILE = os.path.join(os.path.dirname(__file__), "vbench", "VBench_full_info.json")
VBENCH_DIMENSIONS = (
    "subject_consistency", "background_consistency", "temporal_flickering", "motion_smoothness", "dynamic_degree",
    "aesthetic_quality", "imaging_quality", "object_class", "multiple_objects", "human_action", "color",
    "spatial_relationship", "scene", "temporal_style", "appearance_style", "overall_consistency",
)


def load_vbench(dimensions=None) -> list[dict]:
    """[{"prompt_en": ..., "dimension": [...]}], in VBench's order; `dimensions` filters (any match)."""
    with open(_VBENCH_FILE) as f:
        entries = json.load(f)
    if dimensions:
        unknown = sorted(set(dimensions) - set(VBENCH_DIMENSIONS))
        if unknown:
            raise ValueError(f"unknown --dimension {unknown}; choose from {', '.join(VBENCH_DIMENSIONS)}")
        entries = [e for e in entries if set(e["dimension"]) & set(dimensions)]
    return entries


def sample_name(prompt: str, index: int, ext: str = ".mp4") -> str:
    """VBench's `{prompt}-{index}.mp4`; a '/' (not allowed in a file name) becomes a space."""
    return f"{prompt.replace('/', ' ')}-{index}{ext}"


def sample_seed(base_seed: int, index: int) -> int:
    """One seed per sample index, shared by every prompt (VBench: index i, seed base + i)."""
    return base_seed + index
