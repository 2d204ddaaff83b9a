# Copyright 2026 The vecdit authors. Apache-2.0.
import os

import torch

# without a GPU the Triton kernels run through Triton's CPU interpreter; set before any kernel is built
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

_torch_empty = torch.empty


def _poisoned_empty(*args, **kwargs):
    """torch.empty filled with NaN (floats) or a sentinel (ints), so unwritten outputs are caught."""
    t = _torch_empty(*args, **kwargs)
    if t.is_floating_point():
        t.fill_(float("nan"))
    elif t.dtype in (torch.int32, torch.int64):
        t.fill_(-123456789)
    return t


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    monkeypatch.setattr(torch, "empty", _poisoned_empty)
    yield


@pytest.fixture
def device():
    return "cuda" if torch.cuda.is_available() else "cpu"
