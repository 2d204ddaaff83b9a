# Copyright 2026 The vecdit authors. Apache-2.0.
"""Sparsity patterns at matched density, per head, and what they keep of full attention.

All masks are bool [Sq, Sk] for one head, computed from dense probabilities (small shapes: CPU
tests, or one head at a time on a GPU). Patterns:
  vertical-exact / vertical-running  the method: per 64-query block, keys within a gap of the
                                     pooled query's best score (threshold bisected to the density)
  vertical-sub32 / vertical-sub16    estimator variants: pooled over 32- or 16-row sub-blocks, a key
                                     is kept if any sub-block keeps it (2x / 4x the scoring work)
  vector-oracle                      per 64-query block, the keys with the largest mean probability
  horizontal                         per query, the 64-key segments with the largest mass
  block                              per 64-query block, the 64x64 blocks with the largest pooled score
  oracle                             per query, the keys with the largest probability
"""
from __future__ import annotations

import math

import torch

from vecdit.ops.reference import vector_selection_reference

BLOCK = 64
PATTERNS = ("vertical-exact", "vertical-running", "vertical-sub32", "vertical-sub16", "vector-oracle", "horizontal",
            "block", "oracle")


def probabilities(q: torch.Tensor, k: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """Dense softmax [Sq, Sk] in fp64 for one head; q, k: [S, D]."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax((q.double() @ k.double().T) * scale, -1)


def metrics(mask: torch.Tensor, probs: torch.Tensor, v: torch.Tensor, dense: torch.Tensor | None = None) -> dict:
    """recall = mean over queries of the kept probability mass; density = kept fraction;
    rel_l2 = |out_sparse - out_dense| / |out_dense|, out_sparse renormalized over the kept keys.
    `dense` (= probs @ v) can be passed in when one head is measured many times."""
    kept = probs * mask
    mass = kept.sum(-1, keepdim=True)
    dense = probs @ v.double() if dense is None else dense
    sparse = torch.where(mass > 0, kept / mass.clamp_min(1e-300), 0.0) @ v.double()
    return {"recall": float(mass.mean()), "density": float(mask.double().mean()),
            "rel_l2": float((sparse - dense).norm() / dense.norm())}


def _rows_top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask of the `count` largest entries of each row."""
    count = max(0, min(count, scores.shape[-1]))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if count:
        mask.scatter_(-1, scores.topk(count, -1).indices, True)
    return mask


def _expand_blocks(block_mask: torch.Tensor, seq_q: int) -> torch.Tensor:
    return block_mask.repeat_interleave(BLOCK, 0)[:seq_q]


def _vertical(q, k, threshold, mode, sub=BLOCK):
    if sub == BLOCK:
        sel = vector_selection_reference(q[None, :, None], k[None, :, None], threshold, mode=mode)
        return _expand_blocks(sel.to_mask()[0, 0], q.shape[0])
    # sub-block pooling: each 64-row block keeps the union of its 16-row sub-blocks' selections
    qs = q[: q.shape[0] // sub * sub] if q.shape[0] >= sub else q
    per_sub = vector_selection_reference(_regroup(qs, sub), k[None, :, None], threshold, mode=mode)
    m = per_sub.to_mask()[0, 0]  # [sub-blocks, Sk]
    per_block = BLOCK // sub
    nqb = math.ceil(q.shape[0] / BLOCK)
    m = torch.nn.functional.pad(m, (0, 0, 0, nqb * per_block - m.shape[0]))
    return _expand_blocks(m.view(nqb, per_block, -1).any(1), q.shape[0])


def _regroup(q, sub):
    """Lay sub-blocks out as 64-row blocks of one repeated row, so the 64-row pooling of the
    reference pools each sub-block: [S, D] -> [1, S/sub*64, 1, D]."""
    pooled = q.view(-1, sub, q.shape[-1]).mean(1)
    return pooled.repeat_interleave(BLOCK, 0)[None, :, None]


def _matched_threshold(make, density: float, steps: int = 20) -> torch.Tensor:
    lo, hi = -40.0, 0.0  # ln threshold
    best = None
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        mask = make(math.exp(mid))
        d = float(mask.double().mean())
        if d > density:
            lo = mid
        else:
            hi, best = mid, mask
    return best if best is not None else make(math.exp(hi))


def pattern_mask(name: str, q: torch.Tensor, k: torch.Tensor, probs: torch.Tensor, density: float) -> torch.Tensor:
    """Mask of pattern `name` for one head (q, k: [S, D]) keeping about `density` of the entries."""
    seq_q, seq_k = probs.shape
    nqb = math.ceil(seq_q / BLOCK)
    count = round(density * seq_k)
    if name.startswith("vertical-"):
        mode = "running" if name == "vertical-running" else "exact"
        sub = int(name[len("vertical-sub"):]) if name.startswith("vertical-sub") else BLOCK
        return _matched_threshold(lambda t: _vertical(q.to(torch.float32), k.to(torch.float32), t, mode, sub), density)
    if name == "vector-oracle":
        pad = nqb * BLOCK - seq_q
        block_mean = torch.nn.functional.pad(probs, (0, 0, 0, pad)).view(nqb, BLOCK, seq_k).sum(1)
        return _expand_blocks(_rows_top(block_mean, count), seq_q)
    if name == "oracle":
        return _rows_top(probs, count)
    nkb = math.ceil(seq_k / BLOCK)
    segments = max(1, round(density * nkb))
    if name == "horizontal":
        pad_k = nkb * BLOCK - seq_k
        seg_mass = torch.nn.functional.pad(probs, (0, pad_k)).view(seq_q, nkb, BLOCK).sum(-1)
        return _rows_top(seg_mass, segments).repeat_interleave(BLOCK, 1)[:, :seq_k]
    if name == "block":
        qp = torch.nn.functional.pad(q.double(), (0, 0, 0, nqb * BLOCK - seq_q)).view(nqb, BLOCK, -1).mean(1)
        kp = torch.nn.functional.pad(k.double(), (0, 0, 0, nkb * BLOCK - seq_k)).view(nkb, BLOCK, -1).mean(1)
        top = _rows_top(qp @ kp.T, segments)
        return _expand_blocks(top.repeat_interleave(BLOCK, 1)[:, :seq_k], seq_q)
    raise ValueError(f"unknown pattern {name!r}; choose one of {PATTERNS}")


def sample_blocks(seq_q: int, blocks: int | None, generator: torch.Generator) -> torch.Tensor:
    """Row indices of `blocks` random whole 64-query blocks (all rows if None): every pattern here
    decides per query block or per row, so sampled blocks are measured exactly, against all keys."""
    nqb = seq_q // BLOCK
    if blocks is None or blocks >= nqb:
        return torch.arange(seq_q)
    picks = torch.randperm(nqb, generator=generator)[:blocks].sort().values
    return (picks[:, None] * BLOCK + torch.arange(BLOCK)[None]).reshape(-1)


def compare_patterns(q, k, v, densities=(0.1, 0.25, 0.5), patterns=PATTERNS, blocks: int | None = None,
                     seed: int = 0) -> list[dict]:
    """Per head, pattern and density: recall, achieved density and output error. q, k, v: [1, S, H, D].

    `blocks` samples that many 64-query blocks per head (long sequences: dense probabilities of all
    rows would not fit); densities are then over the sampled rows.
    """
    g = torch.Generator().manual_seed(seed)
    rows = []
    for h in range(q.shape[2]):
        take = sample_blocks(q.shape[1], blocks, g).to(q.device)
        qh = q[0, take, h]
        probs = probabilities(qh, k[0, :, h])
        vh = v[0, :, h].double()
        dense = probs @ vh
        for d in densities:
            for name in patterns:
                mask = pattern_mask(name, qh, k[0, :, h], probs, d)
                rows.append({"head": h, "pattern": name, "target_density": d, **metrics(mask, probs, vh, dense)})
    return rows
