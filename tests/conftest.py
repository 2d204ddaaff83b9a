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


README_PROMPT = "a red circle moving right"


@pytest.fixture(scope="session")
def readme_video(tmp_path_factory):
    """The README's first command, run once as a user runs it (the installed `vecdit`, offline):
    (the mp4's path, the finished process). The CLI test checks the command, the tiny model's
    tests read the video back."""
    import shutil
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("readme") / "circle.mp4"
    launcher = [shutil.which("vecdit")] if shutil.which("vecdit") else [sys.executable, "-m", "vecdit.pipelines.cli"]
    cmd = launcher + ["generate", "--model", "tiny", "--prompt", README_PROMPT, "--output", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return out, done
