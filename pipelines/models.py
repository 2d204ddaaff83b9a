# Copyright 2026 The vecdit authors. Apache-2.0.
"""Model presets of `vecdit generate`: hub ids, recommended settings, loading and size rules."""
from __future__ import annotations

import os
from dataclasses import dataclass



@dataclass(frozen=True)
class ModelPreset:
    family: str  # "wan" or "hunyuan"
    hub_id: str | None
    height: int
    width: int
    frames: int
    steps: int
    guidance: float
    fps: int
    flow_shift: float | None = None
    full_size: bool = True  # needs CUDA


PRESETS = {
    "tiny": ModelPreset("wan", None, 128, 128, 9, 4, 5.0, 8, 3.0, full_size=False),
    "wan2.1-t2v-1.3b": ModelPreset("wan", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 480, 832, 81, 50, 5.0, 16, 3.0),
    "wan2.1-t2v-14b": ModelPreset("wan", "Wan-AI/Wan2.1-T2V-14B-Diffusers", 720, 1280, 81, 50, 5.0, 16, 5.0),
    "hunyuanvideo": ModelPreset("hunyuan", "hunyuanvideo-community/HunyuanVideo", 720, 1280, 129, 50, 6.0, 24),
}
# the latent grid: VAE 8x spatial and 4x temporal compression, then 2x2 patches
SPATIAL_MULTIPLE, TEMPORAL_MULTIPLE = 16, 4


class GenerateError(ValueError):
    """A user error of `vecdit generate`, with the fix in its message."""


def resolve_model(model: str) -> tuple[str, ModelPreset]:
    """(name, preset) for a preset name, a hub id (`org/name`) or a local folder."""
    if model in PRESETS:
        return model, PRESETS[model]
    if os.path.isdir(model) or (model.count("/") == 1 and not model.startswith((".", "/"))):
        family = "hunyuan" if "hunyuan" in model.lower() else "wan"
        base = PRESETS["hunyuanvideo" if family == "hunyuan" else "wan2.1-t2v-1.3b"]
        # size unknown: no CUDA requirement (a small checkpoint can run on the CPU)
        return model, ModelPreset(family, model, base.height, base.width, base.frames, base.steps, base.guidance,
                                  base.fps, base.flow_shift, full_size=False)
    raise GenerateError(f"unknown --model {model!r}; choose one of {', '.join(PRESETS)}, a hub id (org/name) or a local folder")


def check_sizes(height: int, width: int, frames: int) -> None:
    def nearest(x, m):
        lo = max(m, x // m * m)
        return f"{lo} or {lo + m}" if x % m else str(x)

    if frames < 1 or (frames - 1) % TEMPORAL_MULTIPLE:
        k = max(0, (frames - 1) // TEMPORAL_MULTIPLE)
        raise GenerateError(f"--frames must be 4k+1; got {frames}, nearest valid: {4 * k + 1} or {4 * k + 5}")
    for name, value in (("--height", height), ("--width", width)):
        if value < SPATIAL_MULTIPLE or value % SPATIAL_MULTIPLE:
            raise GenerateError(f"{name} must be a multiple of {SPATIAL_MULTIPLE}; got {value}, nearest valid: "
                                f"{nearest(max(value, SPATIAL_MULTIPLE), SPATIAL_MULTIPLE)}")


def check_output(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".vecdit-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise GenerateError(f"cannot write --output {path!r} ({e.strerror}); choose a writable folder") from None
    if not path.endswith((".mp4", ".npz")):
        raise GenerateError(f"--output must end in .mp4 (video) or .npz (raw frames), got {path!r}")
