# Copyright 2026 The vecdit authors. Apache-2.0.
"""The sparse path every model adapter shares: schedule phase, query tiles, selection (and its
reuse), the dense fallback, stats. The model files (`wan.py`, `hunyuan_video.py`) hold only what
differs: projections, qk-norm and RoPE, which keys are scored, and how the output goes back.

Layouts: q/k/v are `[B, S, H, D]` as diffusers builds them, video tokens in raster order.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from vecdit.config import VecAttnConfig
from vecdit.ops import (
    SelectionBitmask,
    masked_sparse_attention,
    vector_selection,
    vector_selection_bitmask,
    vector_selection_reference,
    vector_sparse_attention,
)
from vecdit.ops._checks import SUPPORTED_DTYPES, SUPPORTED_HEAD_DIMS, use_triton
from vecdit.schedule import (DENSE_FLAG, KEEP_FLAG, REUSE_SLOT, SPARSE_LAYER_FLAG, STATS_SLOT, THRESHOLD_ROW, Phase, Timer,
                             find_or_attach_hook)
from vecdit.utils import warn_once


class SparseAttention:
    """State and sparse attention shared by vecdit's processors (one instance per installed config)."""

    # diffusers writes these onto processors (set_attention_backend, enable_parallelism)
    _attention_backend = None
    _parallel_config = None

    # (model, args, kwargs) -> what this adapter needs from a forward's inputs, read by the step hook
    forward_probe = None
    # a subclass that always needs each call's layer index (the calibration capture)
    needs_layer_index = False

    def __init__(self, config: VecAttnConfig | None = None):
        self.config = config if config is not None else VecAttnConfig()
        self.step_hook = None  # set by vecdit.enable; otherwise found on the first call

    # -- schedule ---------------------------------------------------------------------------------
    def _phase(self, attn):
        hook = self.step_hook
        if hook is None:
            hook = self.step_hook = find_or_attach_hook(attn, self.config, self.forward_probe)
        if hook is None:  # an attention module called on its own: no steps, select every call
            return Phase.SELECT, None, None
        if not getattr(attn, SPARSE_LAYER_FLAG, False) or getattr(attn, DENSE_FLAG, False):
            return Phase.DENSE, hook, None  # not a sparse-capable layer, or one of `dense_layers`
        # the layer index only where a subclass needs it (the calibration capture): a compiled block
        # reading it would be specialized (recompiled) per layer; the flags above take two values at most
        layer = hook.layer(attn) if self.needs_layer_index else None
        return hook.t.phase, hook, layer

    def _parallel(self):
        """diffusers' parallel config: set on this processor, or on the model after we were installed."""
        if self._parallel_config is not None:
            return self._parallel_config
        return getattr(self.step_hook, "parallel_config", None)

    def _stock(self, processor):
        processor._attention_backend = self._attention_backend
        processor._parallel_config = self._parallel()
        return processor

    def _query_tiles(self, hook, seq_q: int):
        """The query grouping for this forward's video grid (raster where no grid is known)."""
        tiles = hook.query_tiles(seq_q) if hook is not None else None
        if tiles is None and not self.config.raster:
            warn_once("vecdit: the video grid of this attention call is unknown (no transformer forward around it); "
                      "query blocks fall back to raster order (64 consecutive tokens)")
        return tiles

    # -- attention --------------------------------------------------------------------------------
    def _dense(self, q, k, v):
        return dispatch_attention_fn(q, k, v, backend=self._attention_backend)

    def _sparse(self, q, k, v, n_select, dense_range, phase, hook, layer, heads=None, module=None):
        """Sparse attention of the video queries `q` over `k[:, :n_select]` (selected) and
        `dense_range` (always attended). `heads` = (first head, heads of the model) when q holds a
        slice of the heads (Ulysses); `module` is the attention module (its reuse state)."""
        cfg = self.config
        collect = cfg.collect_stats and hook is not None and module is not None
        # CUDA events are host objects a compiled graph cannot hold: compiled blocks record density only
        timer = Timer(q.device) if collect and not torch.compiler.is_compiling() else None
        t0 = timer.mark() if timer else None
        first, total = heads if heads is not None else (0, q.shape[2])
        row = getattr(module, THRESHOLD_ROW, None) if module is not None else None
        if row is not None:  # a per-layer table's row, on the module (no layer index read)
            if row.numel() != total:
                raise ValueError(f"`threshold` table has {row.numel()} heads but the layer has {total}")
            threshold = row
        else:
            threshold = cfg.threshold_for(layer or 0, total)
        if isinstance(threshold, torch.Tensor):
            threshold = threshold[first:first + q.shape[2]]
        tiles = self._query_tiles(hook, q.shape[1])
        # reuse keeps the bitmask form (9/64 bytes per block and key) on the module, expanded again
        # on reuse steps; the step hook decided before the forward which modules keep theirs
        slot = getattr(module, REUSE_SLOT, None) if hook is not None else None
        cached = slot.get(hook.t.branch) if (phase is Phase.REUSE and slot is not None) else None
        if cached is not None and (cached.num_keys != n_select or cached.batch != q.shape[0]
                                   or cached.query_tiles != tiles):
            cached = None  # a different shape (resolution change mid-run): select again
        kernel = q.dtype in SUPPORTED_DTYPES and q.shape[-1] in SUPPORTED_HEAD_DIMS and use_triton(q)
        if not kernel:
            warn_once(f"no Triton kernel for {q.device.type} {q.dtype} head_dim {q.shape[-1]}; "
                      "running the PyTorch path (the selection as an SDPA mask)")
        keep_for_reuse = slot is not None and getattr(module, KEEP_FLAG, False)
        if kernel and cfg.rule == "topk" and cfg.budget() > cfg.dense_fallback_density:
            # the budget keeps nearly everything: cuDNN/flash dense is faster, and nothing is selected
            out = self._dense(q, k, v)
            if collect:
                self._measured(module, torch.ones(q.shape[2], device=q.device), timer and (t0, t0, timer.mark()))
            return out
        if cached is not None:
            selection = cached.expand()
        else:
            kwargs = dict(mode=cfg.selection_mode, max_density=cfg.budget(), min_columns=cfg.min_columns,
                          query_tiles=tiles)
            if kernel and keep_for_reuse:
                bits = vector_selection_bitmask(q, k[:, :n_select], threshold, **kwargs)
                selection = bits.expand()
            elif kernel:
                selection = vector_selection(q, k[:, :n_select], threshold, **kwargs)
            else:
                selection = vector_selection_reference(q, k[:, :n_select], threshold, **kwargs)
                bits = SelectionBitmask.from_selection(selection) if keep_for_reuse else None
            if keep_for_reuse:
                slot[hook.t.branch] = bits
        t1 = timer.mark() if timer else None
        # min-p: decided by the index buffer's size, known on the host without a sync (the top-k
        # budget was decided above, so a rounding or sampled-cut excess never falls back)
        kept = selection.column_index.numel() / max(1, selection.column_count.numel() * n_select)
        fallback = kernel and cfg.rule == "minp" and kept > cfg.dense_fallback_density
        if fallback:
            out = self._dense(q, k, v)  # nearly everything kept: cuDNN/flash dense is faster
        elif kernel:
            out = vector_sparse_attention(q, k, v, selection, dense_range=dense_range, compensate=cfg.compensate)
        else:
            out = masked_sparse_attention(q, k, v, selection, dense_range or (0, 0), compensate=cfg.compensate)
        if collect:
            per_head = selection.column_count.sum((0, 2)).float() / (selection.batch * selection.num_query_blocks * max(n_select, 1))
            if fallback:  # dense ran: every key was attended
                per_head = torch.ones_like(per_head)
            self._measured(module, per_head, timer and (t0, t1, timer.mark()))
        return out

    @staticmethod
    def _measured(module, density, events):
        """`collect_stats`: this call's per-head density (and, eager, its events) on the module; the
        step hook turns it into a record after the forward."""
        slot = getattr(module, STATS_SLOT)
        slot["density"] = density
        if events:
            slot["events"] = events


def fused_rope_applies(x) -> bool:
    """The in-place norm/RoPE kernels apply: a fresh projection output, inference only (no backward)."""
    return use_triton(x) and x.dtype in SUPPORTED_DTYPES and x.shape[-1] in SUPPORTED_HEAD_DIMS and not x.requires_grad
