# Copyright 2026 The vecdit authors. Apache-2.0.
"""Model presets of `vecdit generate`: hub ids, recommended settings, loading and size rules."""
from __future__ import annotations

import os
from dataclasses import dataclass, replace



@dataclass(frozen=True)
class ModelPreset:
    family: str  # its vecdit model family (`vecdit.processors` registers "wan", "hunyuan", "hunyuan15")
    hub_id: str | None
    height: int
    width: int
    frames: int
    steps: int
    guidance: float | None  # None: the pipeline's guider decides (HunyuanVideo-1.5)
    fps: int
    flow_shift: float | None = None  # None: the checkpoint's scheduler as it is
    full_size: bool = True  # needs CUDA
    task: str = "t2v"  # "t2v" or "i2v" (needs --image)
    spatial_multiple: int = 16  # pixels per latent token side: VAE compression x patch size
    density: float | None = None  # vecdit's top-k density where this model needs its own (None: vecdit's preset)
    query_tiles: tuple[int, int, int] | None = None  # vecdit's query tiles where this model needs its own


PRESETS = {
    # `tiny`: the trained tiny model where its weights ship (`tiny_model_folder`), else `tiny-random`
    "tiny": ModelPreset("wan", None, 128, 128, 9, 4, 5.0, 8, 3.0, full_size=False),
    "tiny-random": ModelPreset("wan", None, 128, 128, 9, 4, 5.0, 8, 3.0, full_size=False),
    "wan2.1-t2v-1.3b": ModelPreset("wan", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 480, 832, 81, 50, 5.0, 16, 3.0),
    "wan2.1-t2v-14b": ModelPreset("wan", "Wan-AI/Wan2.1-T2V-14B-Diffusers", 720, 1280, 81, 50, 5.0, 16, 5.0),
    "wan2.1-i2v-14b-480p": ModelPreset("wan", "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", 480, 832, 81, 50, 5.0, 16, 3.0,
                                       task="i2v"),
    "wan2.1-i2v-14b-720p": ModelPreset("wan", "Wan-AI/Wan2.1-I2V-14B-720P-Diffusers", 720, 1280, 81, 50, 5.0, 16, 5.0,
                                       task="i2v"),
    # Wan2.2 A14B: two experts (high noise, then low noise) in one pipeline; vecdit goes on both
    "wan2.2-t2v-a14b": ModelPreset("wan", "Wan-AI/Wan2.2-T2V-A14B-Diffusers", 720, 1280, 81, 40, 4.0, 16),
    "wan2.2-i2v-a14b": ModelPreset("wan", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", 720, 1280, 81, 40, 3.5, 16, task="i2v"),
    "wan2.2-ti2v-5b": ModelPreset("wan", "Wan-AI/Wan2.2-TI2V-5B-Diffusers", 704, 1280, 121, 50, 5.0, 24,
                                  spatial_multiple=32),
    "hunyuanvideo": ModelPreset("hunyuan", "hunyuanvideo-community/HunyuanVideo", 720, 1280, 129, 50, 6.0, 24),
    "hunyuanvideo-i2v": ModelPreset("hunyuan", "hunyuanvideo-community/HunyuanVideo-I2V", 720, 1280, 129, 50, 6.0, 24,
                                    task="i2v"),
    "hunyuanvideo-1.5-t2v": ModelPreset("hunyuan15", "hunyuanvideo-community/HunyuanVideo-1.5-480p_t2v", 480, 848,
                                        121, 50, None, 24),
    # I2V: the pipeline sizes the video from the image (height/width are not its arguments)
    "hunyuanvideo-1.5-i2v": ModelPreset("hunyuan15", "hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v", 480, 848,
                                        121, 50, None, 24, task="i2v"),
}
# the temporal latent grid: 4x VAE compression, 4k+1 frames
TEMPORAL_MULTIPLE = 4


class GenerateError(ValueError):
    """A user error of `vecdit generate`, with the fix in its message."""


def tiny_model_folder() -> str | None:
    """The packaged trained tiny model (`pipelines/tiny_model/`, written by `tiny_train`), if it ships."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_model")
    return folder if os.path.isfile(os.path.join(folder, "model_index.json")) else None


def _tiny_export(folder: str) -> dict:
    import json

    with open(os.path.join(folder, "vecdit_tiny.json")) as f:
        return json.load(f)


def _generation(export: dict) -> dict:
    chosen = export.get("generation", {})
    tiles = chosen.get("query_tiles")
    return {"guidance": chosen.get("guidance", PRESETS["tiny"].guidance), "density": chosen.get("density"),
            "query_tiles": tuple(tiles) if tiles else None}


def tiny_generation(folder: str) -> dict:
    """How a `tiny_train` export is meant to be sampled (its vecdit_tiny.json's "generation": CFG
    scale, vecdit's density and query tiles), chosen per model from dense and sparse checks, not
    trained; the tiny preset's CFG and the wan presets' density and tiles where the file names none."""
    return _generation(_tiny_export(folder))


def trained_tiny_preset(folder: str) -> ModelPreset:
    """The tiny preset at the clip size a `tiny_train` export was trained on and with its own
    sampling settings (its vecdit_tiny.json, read once)."""
    export = _tiny_export(folder)
    size = export["model_config"]
    return replace(PRESETS["tiny"], height=size["size"], width=size["size"], frames=size["frames"], steps=20,
                   **_generation(export))


def looks_like_path(model: str) -> bool:
    """A --model value meant as a local folder (`./foo`, `/x/y`, `~/m`, `a/b/c`), not a hub id (`org/name`)."""
    return (model.startswith((".", "/", "~")) or os.path.isabs(model) or "\\" in model or model.endswith("/")
            or model.count("/") > 1)


def resolve_model(model: str) -> tuple[str, ModelPreset]:
    """(name, preset) for a preset name, a hub id (`org/name`) or a local folder."""
    if model == "tiny" and tiny_model_folder() is not None:
        return model, trained_tiny_preset(tiny_model_folder())
    if model in PRESETS:
        return model, PRESETS[model]
    if looks_like_path(model):
        model = os.path.expanduser(model)
        if not os.path.isdir(model):
            what = "is a file, not a folder" if os.path.exists(model) else "does not exist"
            raise GenerateError(f"--model {model!r}: the folder {what}; give a local diffusers folder (the one "
                                f"`save_pretrained` writes), a hub id (org/name) or a preset ({', '.join(PRESETS)})")
    if os.path.isfile(os.path.join(model, "vecdit_tiny.json")):  # another tiny_train export: its sizes, not Wan's
        return model, replace(trained_tiny_preset(model), hub_id=model, flow_shift=None)  # its own scheduler
    if os.path.isdir(model) or (model.count("/") == 1 and not model.startswith((".", "/"))):
        lower = model.lower()
        family = "wan" if "hunyuan" not in lower else "hunyuan15" if "1.5" in lower else "hunyuan"
        base = PRESETS[{"hunyuan": "hunyuanvideo", "hunyuan15": "hunyuanvideo-1.5-t2v", "wan": "wan2.1-t2v-1.3b"}[family]]
        # size unknown: no CUDA requirement (a small checkpoint can run on the CPU); I2V is told by --image
        return model, replace(base, hub_id=model, flow_shift=None, full_size=False, task="any")
    raise GenerateError(f"unknown --model {model!r}; choose one of {', '.join(PRESETS)}, a hub id (org/name) or a local folder")


def check_positive(flag: str, value) -> None:
    """A count the user gave (steps, prompts, samples) is a whole number >= 1."""
    if value is not None and value < 1:
        raise GenerateError(f"{flag} must be a whole number >= 1, got {value}")


def check_sizes(height: int, width: int, frames: int, spatial_multiple: int = 16) -> None:
    def nearest(x, m):
        lo = max(m, x // m * m)
        return f"{lo} or {lo + m}" if x % m else str(x)

    if frames < 1 or (frames - 1) % TEMPORAL_MULTIPLE:
        k = max(0, (frames - 1) // TEMPORAL_MULTIPLE)
        raise GenerateError(f"--frames must be 4k+1; got {frames}, nearest valid: {4 * k + 1} or {4 * k + 5}")
    for name, value in (("--height", height), ("--width", width)):
        if value < spatial_multiple or value % spatial_multiple:
            raise GenerateError(f"{name} must be a multiple of {spatial_multiple} for this model; got {value}, "
                                f"nearest valid: {nearest(max(value, spatial_multiple), spatial_multiple)}")


def check_writable_folder(folder: str, what: str) -> None:
    """`folder` exists (made if missing) and takes a new file; `what` names it in the error."""
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".vecdit-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise GenerateError(f"cannot write {what} ({e.strerror or type(e).__name__}); choose a writable folder") from None


def check_output(path: str) -> None:
    """Checked before any weights load: a bad --output fails at once, not after the model."""
    if not path.endswith((".mp4", ".npz")):
        raise GenerateError(f"--output must end in .mp4 (video) or .npz (raw frames), got {path!r}")
    check_writable_folder(os.path.dirname(os.path.abspath(path)), f"--output {path!r}")
