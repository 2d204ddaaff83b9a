# Copyright 2026 The vecdit authors. Apache-2.0.
"""Videos on disk: `.mp4` (h264 via imageio-ffmpeg) or `.npz` (uint8 frames), written through a
temporary name. The generator writes them, `vecdit compare` reads them back."""
from __future__ import annotations

import os

import numpy as np


def write_video(frames: np.ndarray, path: str, fps: int) -> None:
    """[F, H, W, 3] floats in [0, 1] to .mp4 (h264 via imageio-ffmpeg) or .npz, via a temporary name."""
    root, ext = os.path.splitext(path)
    tmp = f"{root}.partial{ext}"
    if ext == ".npz":
        with open(tmp, "wb") as f:
            np.savez_compressed(f, frames=(np.clip(frames, 0, 1) * 255).round().astype(np.uint8), fps=fps)
    else:
        from diffusers.utils import export_to_video

        export_to_video(list(frames), tmp, fps=fps)
    os.replace(tmp, path)  # a killed run leaves at most a .partial file, never a truncated video


def read_video(path: str) -> np.ndarray:
    """uint8 [F, H, W, 3] from .mp4 or .npz."""
    if path.endswith(".npz"):
        return np.load(path)["frames"]
    import imageio.v2 as imageio

    with imageio.get_reader(path, format="FFMPEG") as reader:
        return np.stack([np.asarray(f) for f in reader])
