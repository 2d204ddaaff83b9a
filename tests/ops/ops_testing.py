# Copyright 2026 The vecdit authors. Apache-2.0.
"""Shared inputs and comparisons of the kernel tests."""
import math

import torch

from vecdit.ops import VectorSelection
from vecdit.ops.selection.op import RUNNING_TILE


# (batch, Sq, Sk, heads, head_dim): awkward lengths (tails), Sq != Sk both ways, both head dims
SHAPES = [
    (1, 64, 64, 1, 64),
    (2, 100, 150, 2, 64),
    (1, 130, 70, 2, 128),
    (1, 37, 200, 1, 128),
]
IDS = ["B{}-Sq{}-Sk{}-H{}-D{}".format(*s) for s in SHAPES]
DTYPES = [torch.bfloat16, torch.float16]


def rel_err(a, b):
    a, b = a.float(), b.float()
    assert not torch.isnan(a).any(), "NaN in output"
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def make_qkv(shape, dtype, device, spread=1.0, seed=None):
    batch, sq, sk, heads, dim = shape
    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**31)
    q = (torch.randn(batch, sq, heads, dim, generator=g) * spread).to(dtype).to(device)
    k = (torch.randn(batch, sk, heads, dim, generator=g) * spread).to(dtype).to(device)
    v = torch.randn(batch, sk, heads, dim, generator=g).to(dtype).to(device)
    return q, k, v


def random_selection(batch, heads, sq, sk, density, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    nqb = math.ceil(sq / 64)
    return VectorSelection.from_mask((torch.rand(batch, heads, nqb, sk, generator=g) < density).to(device))


def rule_cutoffs(scores, threshold, mode):
    """Per-key cutoff of the selection rule (fp64): row max, or the running tile-prefix max, minus the gap."""
    heads = scores.shape[1]
    gap = -torch.log(torch.as_tensor(threshold, dtype=torch.float64)).expand(heads).view(1, heads, 1, 1)
    if mode == "exact":
        return scores.amax(-1, keepdim=True) - gap
    tiles = math.ceil(scores.shape[-1] / RUNNING_TILE)
    padded = torch.nn.functional.pad(scores, (0, tiles * RUNNING_TILE - scores.shape[-1]), value=-math.inf)
    prefix = padded.unflatten(-1, (tiles, RUNNING_TILE)).amax(-1).cummax(-1).values
    return prefix.repeat_interleave(RUNNING_TILE, -1)[..., : scores.shape[-1]] - gap


def assert_same_selection(got: VectorSelection, want: VectorSelection, scores, cutoffs, tol=5e-4):
    """Identical key sets, except near-ties: keys whose fp64 score lies within `tol` of the rule's
    cutoff or of the weakest kept score (density cap / floor), where bf16 tensor-core scoring may
    round either way."""
    g, w, scores = got.to_mask().cpu(), want.to_mask().cpu(), scores.cpu()
    diff = g ^ w
    if diff.any():
        weakest = torch.where(w, scores, math.inf).amin(-1, keepdim=True)
        near = ((scores - cutoffs.cpu()).abs() <= tol) | ((scores - weakest).abs() <= tol)
        assert bool(near[diff].all()), f"{int((diff & ~near).sum())} keys differ beyond near-ties"
    assert int(diff.sum()) <= max(2, g.numel() // 2000)
