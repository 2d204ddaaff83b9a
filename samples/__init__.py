# Copyright 2026 The vecdit authors. Apache-2.0.
"""Prompt suites, VBench-style sample export and dense-vs-sparse comparison (`vecdit.samples`)."""
from .compare import compare_dirs, psnr, ssim
from .suite import VBENCH_DIMENSIONS, load_vbench, sample_name

__all__ = ["VBENCH_DIMENSIONS", "compare_dirs", "load_vbench", "psnr", "sample_name", "ssim"]
