# Copyright 2026 The vecdit authors. Apache-2.0.
"""Input checks shared by the ops: every error names the parameter and what is allowed."""
import math
import os

import torch

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)
SUPPORTED_HEAD_DIMS = (64, 128)
# query rows of one attention program (a 64-query block, or half of a 128-query tile)
QUERY_BLOCK = 64


def interpret_mode() -> bool:
    """True when Triton kernels run on the CPU through its interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def debug_mode() -> bool:
    """`VECDIT_DEBUG=1` turns on checks that need a host sync (index ranges)."""
    return os.environ.get("VECDIT_DEBUG", "0") == "1"


def use_triton(t: torch.Tensor) -> bool:
    return t.is_cuda or interpret_mode()


def num_query_blocks(seq_len: int) -> int:
    return (seq_len + QUERY_BLOCK - 1) // QUERY_BLOCK


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor | None = None) -> None:
    named = [("q", q), ("k", k)] + ([("v", v)] if v is not None else [])
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"`{name}` must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(
                f"`{name}` must be 4-D [batch, seq, heads, head_dim] (the layout diffusers hands to "
                f"attention), got shape {tuple(t.shape)}"
            )
        if t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"`{name}` dtype must be one of torch.bfloat16, torch.float16; got {t.dtype}")
    for name, t in named[1:]:
        if t.device != q.device:
            raise ValueError(f"`{name}` is on {t.device} but `q` is on {q.device}; all inputs must share one device")
        if t.dtype != q.dtype:
            raise ValueError(f"`{name}` dtype {t.dtype} differs from `q` dtype {q.dtype}; use one dtype")
        if t.shape[0] != q.shape[0]:
            raise ValueError(f"`{name}` batch {t.shape[0]} differs from `q` batch {q.shape[0]}")
        if t.shape[2] != q.shape[2]:
            raise ValueError(f"`{name}` heads {t.shape[2]} differ from `q` heads {q.shape[2]} (no GQA)")
        if t.shape[3] != q.shape[3]:
            raise ValueError(f"`{name}` head_dim {t.shape[3]} differs from `q` head_dim {q.shape[3]}")
    if v is not None and v.shape[1] != k.shape[1]:
        raise ValueError(f"`v` has {v.shape[1]} keys but `k` has {k.shape[1]}; they must match")
    if q.shape[3] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {SUPPORTED_HEAD_DIMS}, got {q.shape[3]}")
    if q.shape[1] == 0 or k.shape[1] == 0:
        raise ValueError(f"sequence lengths must be positive, got Sq={q.shape[1]}, Sk={k.shape[1]}")


def check_threshold(threshold, heads: int, device) -> torch.Tensor:
    """Scalar or per-head threshold in (0, 1] -> per-head gap = -ln(threshold), fp32 [heads];
    None (no min-p rule) -> gap = inf."""
    if threshold is None:
        return torch.full((heads,), math.inf, dtype=torch.float32, device=device)
    if isinstance(threshold, (int, float)):  # checked in Python: no host sync, no graph break
        if not 0 < threshold <= 1:
            raise ValueError(f"`threshold` must lie in (0, 1], got {threshold}")
        return torch.full((heads,), -math.log(threshold), dtype=torch.float32, device=device)
    t = torch.as_tensor(threshold, dtype=torch.float64)
    if t.dim() > 1 or (t.dim() == 1 and t.numel() != heads):
        raise ValueError(f"`threshold` must be a scalar or have one value per head ({heads}), got shape {tuple(t.shape)}")
    # a data-dependent check: skipped inside a compiled graph (vecdit's processors pass tensors
    # only from a VecAttnConfig, which checked the values when it was made)
    if not torch.compiler.is_compiling() and not bool(torch.all((t > 0) & (t <= 1))):
        raise ValueError(f"`threshold` must lie in (0, 1], got {t.tolist()}")
    return (-torch.log(t)).to(torch.float32).expand(heads).contiguous().to(device)


def check_dense_range(dense_range, num_keys: int) -> tuple[int, int]:
    if dense_range is None:
        return 0, 0
    start, end = (int(x) for x in dense_range)
    if not 0 <= start <= end <= num_keys:
        raise ValueError(f"`dense_range` must satisfy 0 <= start <= end <= Sk={num_keys}, got ({start}, {end})")
    return start, end
