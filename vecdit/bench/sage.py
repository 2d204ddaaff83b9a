# Copyright 2026 The vecdit authors. Apache-2.0.
"""SageAttention2, the dense baseline a diffusers user picks with one line (benchmark-only; never a
dependency of vecdit). Built on the GPU host from source by `bench/build_peers.py sage`.

`sage_attention` wraps `sageattention.sageattn` (INT8 QK, FP8 PV on Hopper) in a custom op, so that a
compiled block with `fullgraph=True` holds it (its quantisation kernels are plain pybind calls dynamo
cannot trace). `use_in_diffusers()` routes diffusers' `"sage"` backend through it: diffusers 0.42's own
sage backend rejects any `attn_mask`, and HunyuanVideo always passes its text-padding mask, so stock
HunyuanVideo cannot run on sage as shipped. A key-padding mask (one row, batch 1, as the pipeline
builds it) is applied by dropping the masked keys, which gives the same attention. HunyuanVideo-1.5
passes the square outer product of its key-padding mask (`[1, 1, S, S]`, valid video tokens first):
its first row is the key mask (checked on sampled rows inside the op, where compiled blocks do not
trace it); the padded query rows then attend the valid keys instead of nothing (their outputs are
padding that later layers never attend). Any other mask runs PyTorch's SDPA, counted in `FALLBACKS`.
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
    """Dense attention of `[B, S, H, D]` q/k/v through SageAttention2; `key_mask` (bool, batch 1: one
    per key, or HunyuanVideo-1.5's square `[1, 1, S, S]` outer product of one) drops the masked keys."""
    from sageattention import sageattn

    if key_mask is not None and key_mask.dim() == 4:
        row = key_mask[0, 0, 0]
        if not _outer_product_of(key_mask[0, 0], row):
            FALLBACKS["sdpa_calls"] += 1
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 attn_mask=key_mask, scale=scale)
            return out.transpose(1, 2).contiguous()
        key_mask = row
    if key_mask is not None:
        keep = key_mask.nonzero().squeeze(1)
        k, v = k[:, keep], v[:, keep]
    return sageattn(q, k, v, tensor_layout="NHD", is_causal=False, sm_scale=scale)


def _outer_product_of(square: torch.Tensor, row: torch.Tensor, samples: int = 8) -> bool:
    """`square[i] == row if row[i] else all False`, on `samples` spread rows and the first padded one
    (reading all S x S entries would cost more than the attention's own mask)."""
    if not bool(row[0]):
        return False
    n = row.shape[0]
    picks = torch.linspace(0, n - 1, samples, device=row.device).long()
    padded = (~row).nonzero()
    if len(padded):
        picks = torch.cat([picks, padded[:1, 0]])
    got = square[picks]
    want = row[None, :] & row[picks][:, None]
    return bool(torch.equal(got, want))


@sage_attention.register_fake
def _(q, k, v, key_mask, scale):
    return torch.empty_like(q)


def _key_padding(attn_mask: torch.Tensor | None, key: torch.Tensor,
                 query: torch.Tensor | None = None) -> tuple[bool, torch.Tensor | None]:
    """(handled, mask for the op): a bool mask that is one row over the keys of one batch element,
    or (shapes only here; its values are checked in the op) a square `[1, 1, S, S]` one over a
    self-attention's S queries and keys."""
    if attn_mask is None:
        return True, None
    if attn_mask.dtype == torch.bool and key.shape[0] == 1 and attn_mask.numel() == key.shape[1]:
        return True, attn_mask.reshape(-1)
    seq = key.shape[1]
    if (attn_mask.dtype == torch.bool and key.shape[0] == 1 and tuple(attn_mask.shape) == (1, 1, seq, seq)
            and (query is None or query.shape[1] == seq)):
        return True, attn_mask
    return False, None


def _sage_backend(query, key, value, attn_mask=None, is_causal=False, scale=None, return_lse=False,
                  _parallel_config=None):
    if is_causal or return_lse or _parallel_config is not None:
        raise NotImplementedError("the benchmark's sage backend runs non-causal attention on one GPU, without lse")
    handled, key_mask = _key_padding(attn_mask, key, query)
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
