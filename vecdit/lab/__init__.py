# Copyright 2026 The vecdit authors. Apache-2.0.
"""Fidelity lab: structured synthetic attention, query groupings and rules at matched density, calibration."""
from .calibrate import calibrate, head_curve, solve_knapsack
from .patterns import PATTERNS, compare_head, compare_patterns, metrics, probabilities
from .synthetic import GEOMETRIES, SyntheticConfig, structured_qkv

__all__ = ["GEOMETRIES", "PATTERNS", "SyntheticConfig", "calibrate", "compare_head", "compare_patterns", "head_curve",
           "metrics", "probabilities", "solve_knapsack", "structured_qkv"]
