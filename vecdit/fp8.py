# Copyright 2026 The vecdit authors. Apache-2.0.
"""FP8 linear layers in the transformer blocks (torchao), composed with vector-sparse attention.

    vecdit.enable(pipe, config, fp8=True)      # or: vecdit.quantize_fp8(pipe)

What vecdit does not touch (projections, FFN) is most of a sparse step; on Hopper, torchao's
float8 dynamic quantization (e4m3 activations and weights, one scale per row) runs those GEMMs on
the FP8 tensor cores. Only the Linear layers inside the repeated blocks are converted: embeddings,
the time / text projections, the output head and the per-block modulation layers (one token each:
nothing to gain, and they scale every activation) stay in bf16. One-way: `vecdit.disable` restores
the attention processors, not the bf16 weights (load the model again for those).
"""
from __future__ import annotations

import torch

from .utils import logger, transformers_of

# the repeated blocks of Wan (`blocks`), HunyuanVideo (`transformer_blocks`, `single_transformer_blocks`)
# and HunyuanVideo-1.5 (`transformer_blocks`)
BLOCK_PREFIXES = ("blocks.", "transformer_blocks.", "single_transformer_blocks.")
# float8 tensor cores: Ada (8.9) and Hopper (9.0) or newer
MIN_CAPABILITY = (8, 9)
_QUANTIZED = "_vecdit_fp8_layers"


def fp8_layer_filter(module: torch.nn.Module, fqn: str) -> bool:
    """The Linear layers FP8 applies to: inside a repeated block, not a modulation (`norm*`) layer,
    both sizes multiples of 16 (the FP8 GEMM's alignment)."""
    if not isinstance(module, torch.nn.Linear) or not fqn.startswith(BLOCK_PREFIXES):
        return False
    if any(part.startswith("norm") for part in fqn.split(".")):
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def check_fp8_supported(device: torch.device | str | None = None) -> None:
    """Raise a clear error where FP8 cannot run: torchao missing, no CUDA, or a GPU without float8 tensor cores."""
    try:
        import torchao  # noqa: F401
    except ImportError as err:
        raise ImportError("fp8=True needs torchao: pip install torchao (or pip install 'vecdit[fp8]')") from err
    device = torch.device(device if device is not None else "cuda")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(f"fp8=True needs a CUDA GPU with float8 tensor cores (compute capability >= "
                           f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}); the transformer is on {device}")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise RuntimeError(f"fp8=True needs compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} (Ada, Hopper); "
                           f"{torch.cuda.get_device_name(device)} is {capability[0]}.{capability[1]}")


def quantize_fp8(pipe_or_model) -> int:
    """Convert the block Linear layers of every transformer of `pipe_or_model` (Wan2.2's two
    experts included) to torchao float8 (dynamic activations, per-row scales); returns how many.
    Call it before `torch.compile`; a model already converted is left as it is."""
    models = transformers_of(pipe_or_model)
    for model in models:  # every refusal before anything changes
        if not getattr(model, _QUANTIZED, 0):
            check_fp8_supported(next(model.parameters()).device)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    total = 0
    for model in models:
        if getattr(model, _QUANTIZED, 0):
            total += getattr(model, _QUANTIZED)
            continue
        names = [n for n, m in model.named_modules() if fp8_layer_filter(m, n)]
        quantize_(model, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()), filter_fn=fp8_layer_filter)
        setattr(model, _QUANTIZED, len(names))
        logger.info("vecdit: %d Linear layers of %s in float8", len(names), type(model).__name__)
        total += len(names)
    return total
