# Copyright 2026 The vecdit authors. Apache-2.0.
"""vecdit: vector-wise sparse attention for video diffusion transformers in diffusers.

Names are loaded on first use (PEP 562): `import vecdit` alone imports neither torch nor
diffusers, so `vecdit --help` starts at once.
"""
import importlib

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS = {
    "VectorSelection": "ops", "vector_selection": "ops", "vector_sparse_attention": "ops",
    "PRESETS": "config", "VecAttnConfig": "config",
    "apply_vec_sparse": "api", "disable": "api", "enable": "api", "is_enabled": "api", "remove_vec_sparse": "api",
    "stats": "api",
    "quantize_fp8": "fp8",
    # the processors import diffusers' model code
    "VecAttnProcessor": "processors", "ModelFamily": "processors", "register_family": "processors",
    "unregister_family": "processors",
    # the model-level calibration runs pipelines
    "calibrate": "pipelines.calibrate",
}
# presets come from the model families, registered when `vecdit.processors` is imported
_NEED_FAMILIES = ("PRESETS", "VecAttnConfig")
_SUBMODULES = ("api", "bench", "config", "fp8", "lab", "ops", "parallel", "pipelines", "processors", "samples",
               "schedule", "utils")


def __getattr__(name):
    if name in _EXPORTS:
        if name in _NEED_FAMILIES:
            importlib.import_module("vecdit.processors")
        value = getattr(importlib.import_module(f"vecdit.{_EXPORTS[name]}"), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"vecdit.{name}")
    raise AttributeError(f"module 'vecdit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBMODULES))


__all__ = [
    "ModelFamily", "PRESETS", "VecAttnConfig", "VecAttnProcessor", "VectorSelection", "apply_vec_sparse", "calibrate",
    "disable",
    "enable", "is_enabled", "quantize_fp8", "register_family", "remove_vec_sparse", "stats", "unregister_family",
    "vector_selection", "vector_sparse_attention", "__version__",
]
