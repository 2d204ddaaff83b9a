# Copyright 2026 The vecdit authors. Apache-2.0.
"""Vector-sparse attention: each query block attends only its selected key rows.

`op.py` the wrapper and custom op, `_attn_kernel.py` / `_attn_gluon_kernel.py` the Triton and
Hopper Gluon kernels, `segments.py` key segments merged by lse, `compensation.py` the dropped
keys' share, `masked.py` the CPU path, `reference.py` the tests' oracle.
"""
from .masked import masked_sparse_attention
from .op import vector_sparse_attention
from .reference import attention_reference, vec_sparse_attention_reference

__all__ = [
    "attention_reference",
    "masked_sparse_attention",
    "vec_sparse_attention_reference",
    "vector_sparse_attention",
]
