# Copyright 2026 The vecdit authors. Apache-2.0.
"""SageAttention2, the dense baseline a diffusers user picks with one line (benchmark-only; never a
dependency of vecdit). Built on the GPU host from source by `bench/build_peers.py sage`.

`sage_attention` wraps `sageattention.sageattn` (INT8 QK, FP8 PV on Hopper) in a custom op, so that a
compiled block with `fullgraph=True` holds it (its quantisation kernels are plain pybind calls dynamo
cannot trace). `use_in_diffusers()` routes diffusers' `"sage"` backend through it: diffusers 0.42's own
sage backend rejects any `attn_mask`, and HunyuanVideo always passes its text-padding mask, so stock
HunyuanVideo cannot run on sage as shipped. A key-padding mask (one row, batch 1, as the pipeline
builds it) is applied by dropping the masked keys, which gives the same attention; any other mask
runs PyTorch's SDPA, counted in `FALLBACKS`.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

FALLBACKS = {"sdpa_calls": 0}


def available() -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        import sageattention  # noqa: F401
    except ImportError:
        return False
    return True


@torch.library.custom_op("vecdit_bench::sage_attention", mutates_args=())
def sage_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
                   scale: float) -> torch.Tensor:
    """Dense attention of `[B, S, H, D]` q/k/v through SageAttention2; `key_mask` (bool, one per key,
    batch 1) drops the masked keys."""
    from sageattention import sageattn

    if key_mask is not None:
        keep = key_mask.nonzero().squeeze(1)
        k, v = k[:, keep], v[:, keep]
    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False, sm_scale=scale)


@sage_attention.register_fake
def _(q, k, v, key_mask, scale):
    return torch.empty_like(q)


def _key_padding(attn_mask: torch.Tensor | None, key: torch.Tensor) -> tuple[bool, torch.Tensor | None]:
    """(handled, mask per key): a bool mask that is one row over the keys of one batch element."""
    if attn_mask is None:
        return True, None
    if attn_mask.dtype == torch.bool and key.shape[0] == 1 and attn_mask.numel() == key.shape[1]:
        return True, attn_mask.reshape(-1)
    return False, None


def _sage_backend(query, key, value, attn_mask=None, is_causal=False, scale=None, return_lse=False,
                  _parallel_config=None):
    if is_causal or return_lse or _parallel_config is not None:
        raise NotImplementedError("the benchmark's sage backend runs non-causal attention on one GPU, without lse")
    handled, key_mask = _key_padding(attn_mask, key)
    if not handled:
        FALLBACKS["sdpa_calls"] += 1
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                                             attn_mask=attn_mask, scale=scale)
        return out.transpose(1, 2)
    return sage_attention(query, key, value, key_mask, scale if scale is not None else query.shape[-1] ** -0.5)


def use_in_diffusers() -> None:
    """`set_attention_backend("sage")` runs `sage_attention` from now on (this process)."""
    from diffusers.models import attention_dispatch as dispatch

    if not available():
        raise RuntimeError("sageattention is not importable here: build it with `bench/build_peers.py sage` "
                           "and put its --dest on PYTHONPATH")
    registry, name = dispatch._AttentionBackendRegistry, dispatch.AttentionBackendName.SAGE
    registry._backends[name] = _sage_backend
    registry._supported_arg_names[name] = set(inspect.signature(_sage_backend).parameters)
    registry._constraints[name] = [dispatch._check_device_cuda, dispatch._check_qkv_dtype_bf16_or_fp16]
