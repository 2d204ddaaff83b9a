# Copyright 2026 The vecdit authors. Apache-2.0.
"""FP8 linear layers in the transformer blocks, composed with vector-sparse attention.

    vecdit.enable(pipe, config, fp8=True)      # or: vecdit.quantize_fp8(pipe)

What vecdit does not touch (projections, FFN) is most of a sparse step; on Hopper those GEMMs run
on the float8 tensor cores at twice the bf16 rate. `Float8Linear` keeps the weight in e4m3 with
one scale per output row (set once) and quantizes the activation per token at each call (one
scale per row), then calls `torch._scaled_mm` with both scale vectors (on CUDA; elsewhere the same
product from the same fp8 operands, for tests). It is a plain module over
plain tensors: `torch.compile(fullgraph=True)` traces it as two ops (the activation's amax and
cast, which inductor fuses, and the scaled GEMM), where torchao's tensor subclasses made the
compile of HunyuanVideo's blocks run past 6 minutes (bench/DESIGN.md#fp8-linear).

Only the Linear layers inside the repeated blocks are converted: embeddings, the time / text
projections, the output head and the per-block modulation layers (one token each: nothing to gain,
and they scale every activation) stay in bf16. One-way: `vecdit.disable` restores the attention
processors, not the bf16 weights (load the model again for those).
"""
from __future__ import annotations

import torch

from .utils import logger, transformers_of

# the repeated blocks of Wan (`blocks`), HunyuanVideo (`transformer_blocks`, `single_transformer_blocks`)
# and HunyuanVideo-1.5 (`transformer_blocks`)
BLOCK_PREFIXES = ("blocks.", "transformer_blocks.", "single_transformer_blocks.")
# float8 tensor cores: Ada (8.9) and Hopper (9.0) or newer
MIN_CAPABILITY = (8, 9)
FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
_QUANTIZED = "_vecdit_fp8_layers"


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, K] -> (e4m3 [M, K], fp32 scale [M, 1]) with x ~ q * scale; each row's largest magnitude maps
    to 448. An all-zero row gets scale 1 / 448 of the smallest normal (its q is 0)."""
    amax = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=torch.finfo(torch.float32).tiny)
    scale = amax / FP8_MAX
    q = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)  # clamp: x / scale may round past 448
    return q, scale


def fp8_linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """What `Float8Linear` computes, in fp64 from the same quantized operands (the tests' reference)."""
    qx, sx = quantize_rows(x.reshape(-1, x.shape[-1]))
    qw, sw = quantize_rows(weight)
    y = (qx.double() * sx.double()) @ (qw.double() * sw.double()).t()
    if bias is not None:
        y = y + bias.double()
    return y.reshape(*x.shape[:-1], weight.shape[0])


class Float8Linear(torch.nn.Module):
    """A `Linear` whose GEMM runs in float8 e4m3: weight [N, K] quantized once per output row,
    input [..., K] per token at each call, output in the input's dtype."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        if self.in_features % 16 or self.out_features % 16:
            raise ValueError(f"Float8Linear needs in_features and out_features divisible by 16 (the float8 GEMM's "
                             f"alignment); got {self.in_features} x {self.out_features}")
        weight_fp8, weight_scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", weight_fp8)                     # [N, K] row-major: its .t() is column-major
        self.register_buffer("weight_scale", weight_scale.t().contiguous())  # [1, N] fp32
        self.bias = linear.bias  # the layer's own bias, dtype kept

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Float8Linear: input's last dimension is {x.shape[-1]}, expected {self.in_features}")
        q, scale = quantize_rows(x.reshape(-1, self.in_features))
        if x.is_cuda:
            # per-row scales give bf16 out (and take a bf16 bias); fast accumulation (Hopper's fp8 MMA
            # keeps fewer accumulator bits) is what inference stacks use: its error is in the fp8 bench
            bias = self.bias.to(torch.bfloat16) if self.bias is not None else None
            y = torch._scaled_mm(q, self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale, bias=bias,
                                 out_dtype=torch.bfloat16, use_fast_accum=True).to(x.dtype)
        else:
            bias = self.bias.to(x.dtype) if self.bias is not None else None
            # off the GPU, the same product from the same fp8 operands in x's dtype (torch's CPU
            # `_scaled_mm` takes per-row scales only from 2.13 on): for tests, not for speed
            y = torch.nn.functional.linear((q.to(x.dtype) * scale.to(x.dtype)),
                                           self.weight_fp8.to(x.dtype) * self.weight_scale.t().to(x.dtype), bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, e4m3 per-row"


def fp8_layer_filter(module: torch.nn.Module, fqn: str) -> bool:
    """The Linear layers FP8 applies to: inside a repeated block, not a modulation (`norm*`) layer,
    both sizes multiples of 16 (the FP8 GEMM's alignment)."""
    if not isinstance(module, torch.nn.Linear) or not fqn.startswith(BLOCK_PREFIXES):
        return False
    if any(part.startswith("norm") for part in fqn.split(".")):
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def check_fp8_supported(device: torch.device | str | None = None) -> None:
    """Raise a clear error where FP8 cannot run fast: no CUDA, or a GPU without float8 tensor cores."""
    device = torch.device(device if device is not None else "cuda")
    if device.type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(f"fp8=True needs a CUDA GPU with float8 tensor cores (compute capability >= "
                           f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}); the transformer is on {device}")
    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        raise RuntimeError(f"fp8=True needs compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} (Ada, Hopper); "
                           f"{torch.cuda.get_device_name(device)} is {capability[0]}.{capability[1]}")


def quantize_fp8(pipe_or_model, check_device: bool = True) -> int:
    """Replace the block Linear layers of every transformer of `pipe_or_model` (Wan2.2's two experts
    included) with `Float8Linear`; returns how many. Call it before `torch.compile`; a model already
    converted is left as it is. `check_device=False` converts off a float8 GPU too (the CPU computes
    the same product from the fp8 operands without fp8 arithmetic: for tests)."""
    models = transformers_of(pipe_or_model)
    if check_device:
        for model in models:  # every refusal before anything changes
            if not getattr(model, _QUANTIZED, 0):
                check_fp8_supported(next(model.parameters()).device)
    total = 0
    for model in models:
        if not getattr(model, _QUANTIZED, 0):
            names = [n for n, m in model.named_modules() if fp8_layer_filter(m, n)]
            for name in names:
                parent, _, child = name.rpartition(".")
                owner = model.get_submodule(parent)
                setattr(owner, child, Float8Linear(getattr(owner, child)))
            setattr(model, _QUANTIZED, len(names))
            logger.info("vecdit: %d Linear layers of %s in float8", len(names), type(model).__name__)
        total += getattr(model, _QUANTIZED)
    return total
