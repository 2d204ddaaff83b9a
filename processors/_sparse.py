# Copyright 2026 The vecdit authors. Apache-2.0.
"""The sparse path every model adapter shares: schedule phase, query tiles, selection (and its
reuse), the dense fallback, stats. The model files (`wan.py`, `hunyuan_video.py`) hold only what
differs: projections, qk-norm and RoPE, which keys are scored, and how the output goes back.

Layouts: q/k/v are `[B, S, H, D]` as diffusers builds them, video tokens in raster order.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from vecdit.config import VecAttnConfig
from vecdit.ops import kernel_applies, select_vectors, sparse_attention
from vecdit.schedule import LAYER_STATE, LayerState, Phase, Timer, VecStepHook, apply_step_hook, get_step_hook
from vecdit.utils import warn_once

from .families import family_of, require_family


@dataclass
class SparseCall:
    """One attention call on the sparse path: where it stands in the schedule, and its keys."""

    phase: Phase
    hook: VecStepHook | None = None  # None: a module called on its own (no steps: every call selects)
    state: LayerState | None = None  # the module's, from the hook
    n_select: int = 0  # `k[:, :n_select]` are scored and selected from
    dense_range: tuple[int, int] | None = None  # keys every query attends (HunyuanVideo's text)
    heads: tuple[int, int] | None = None  # (first head, heads of the model) where q holds a slice (Ulysses)

    def keys(self, n_select: int, dense_range=None, heads=None) -> "SparseCall":
        return SparseCall(self.phase, self.hook, self.state, n_select, dense_range, heads)


class SparseAttention:
    """Config, schedule and sparse attention shared by vecdit's processors.

    Args:
        config (`VecAttnConfig`, *optional*): defaults to `VecAttnConfig()`.
        engine (`SparseAttention`, *optional*): the processor whose config, attention backend,
            parallel config and sparse path this adapter uses (`VecAttnProcessor` for its adapters);
            defaults to this processor.
    """

    # diffusers writes these onto processors (set_attention_backend, enable_parallelism)
    _attention_backend = None
    _parallel_config = None

    def __init__(self, config: VecAttnConfig | None = None, engine: SparseAttention | None = None):
        self.engine = engine if engine is not None else self
        self.config = engine.config if engine is not None else (config if config is not None else VecAttnConfig())

    # -- schedule ---------------------------------------------------------------------------------
    def _begin(self, attn) -> SparseCall:
        """This call's phase, from the module's layer state (the one way to the step hook)."""
        state = self._layer_state(attn)
        if state is None:  # an attention module called on its own: no steps, select every call
            return SparseCall(Phase.SELECT)
        if not state.capable or state.dense:  # not a sparse-capable layer, or one of `dense_layers`
            return SparseCall(Phase.DENSE, state.hook, state)
        return SparseCall(state.hook.t.phase, state.hook, state)

    def _layer_state(self, attn) -> LayerState | None:
        state = getattr(attn, LAYER_STATE, None)
        if state is None:  # set with plain `set_attn_processor`: no hook yet
            return _attach_on_first_call(attn, self.config)
        if state.hook.config is not self.config:  # a new processor on a model that has the hook: its config rules
            _reconfigure(state.hook, self.config)
        return state

    def _parallel(self, hook):
        """diffusers' parallel config: set on this processor, or on the model after we were installed."""
        if self._parallel_config is not None:
            return self._parallel_config
        return getattr(hook, "parallel_config", None)

    def _stock(self, processor, hook=None):
        processor._attention_backend = self._attention_backend
        processor._parallel_config = self._parallel(hook)
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

    def _sparse(self, q, k, v, call: SparseCall):
        """Sparse attention of the video queries `q` over `k[:, :call.n_select]` (selected) and
        `call.dense_range` (always attended): select (or reuse), then attend."""
        cfg = self.config
        collect = cfg.collect_stats and call.state is not None
        # CUDA events are host objects a compiled graph cannot hold: compiled blocks record density only
        timer = Timer(q.device) if collect and not torch.compiler.is_compiling() else None
        t0 = timer.mark() if timer else None
        # the dense fallback exists where the kernel runs: there cuDNN/flash dense is faster
        kernel = kernel_applies(q)
        if kernel and cfg.rule == "topk" and self._budget(call) > cfg.dense_fallback_density:
            # the budget keeps nearly everything, and nothing is selected
            out = self._dense(q, k, v)
            if collect:
                self._measured(call.state, torch.ones(q.shape[2], device=q.device), timer and (t0, t0, timer.mark()))
            return out
        selection = self._select(q, k, call)
        t1 = timer.mark() if timer else None
        # min-p: decided by the index buffer's size, known on the host without a sync (the top-k
        # budget was decided above, so a rounding or sampled-cut excess never falls back)
        kept = selection.column_index.numel() / max(1, selection.column_count.numel() * call.n_select)
        fallback = kernel and cfg.rule == "minp" and kept > cfg.dense_fallback_density
        if fallback:
            out = self._dense(q, k, v)
        else:
            out = sparse_attention(q, k, v, selection, dense_range=call.dense_range, compensate=cfg.compensate)
        if collect:
            per_head = (selection.column_count.sum((0, 2)).float()
                        / (selection.batch * selection.num_query_blocks * max(call.n_select, 1)))
            if fallback:  # dense ran: every key was attended
                per_head = torch.ones_like(per_head)
            self._measured(call.state, per_head, timer and (t0, t1, timer.mark()))
        return out

    def _select(self, q, k, call: SparseCall):
        """The selection over `k[:, :n_select]`: the branch's kept one on a reuse step (same shapes),
        else a new one, kept for reuse where the step hook planned it (as a bitmask)."""
        cfg, hook, state, n_select = self.config, call.hook, call.state, call.n_select
        tiles = self._query_tiles(hook, q.shape[1])
        kept = state.reuse if (hook is not None and state is not None) else None
        cached = kept.get(hook.t.branch) if (call.phase is Phase.REUSE and kept is not None) else None
        if cached is not None and (cached.num_keys != n_select or cached.batch != q.shape[0]
                                   or cached.query_tiles != tiles):
            cached = None  # a different shape (resolution change mid-run): select again
        if cached is not None:
            return cached.expand()
        keep = kept is not None and state.keep
        selection, bits = select_vectors(q, k[:, :n_select], self._threshold(q, call), keep_bitmask=keep,
                                         mode=cfg.selection_mode, max_density=self._budget(call),
                                         min_columns=cfg.min_columns, query_tiles=tiles)
        if keep:
            kept[hook.t.branch] = bits
        return selection

    def _budget(self, call: SparseCall) -> float | None:
        """The top-k density (or min-p cap) of this call's layer: its `layer_density` entry, else the config's."""
        density = call.state.density if call.state is not None else None
        return density if density is not None else self.config.budget()

    def _threshold(self, q, call: SparseCall):
        """The min-p threshold of q's heads: the layer's row of a per-layer table (a tensor on its
        state: no layer index read), else the config's scalar or per-head value."""
        first, total = call.heads if call.heads is not None else (0, q.shape[2])
        row = call.state.threshold if call.state is not None else None
        if row is not None:
            if row.numel() != total:
                raise ValueError(f"`threshold` table has {row.numel()} heads but the layer has {total}")
            threshold = row
        else:
            threshold = self.config.threshold_for(0, total)
        if isinstance(threshold, torch.Tensor):
            threshold = threshold[first:first + q.shape[2]]
        return threshold

    @staticmethod
    def _measured(state: LayerState, density, events):
        """`collect_stats`: this call's per-head density (and, eager, its events) on the layer state;
        the step hook turns it into a record after the forward."""
        state.measured["density"] = density
        if events:
            state.measured["events"] = events


@torch.compiler.disable
def _reconfigure(hook: VecStepHook, config: VecAttnConfig) -> None:
    hook.reconfigure(config)


@torch.compiler.disable
def _attach_on_first_call(attn, config: VecAttnConfig) -> LayerState | None:
    """A processor set with plain `set_attn_processor`: find the transformer that is running (the
    caller's stack holds its forward) and attach the step hook to it, once.

    The forward in flight started before the hook existed, so it is counted here from the
    forward's own `timestep`, its grid from the family's `grid_locals`; the pipeline (if any)
    gives the step count.
    """
    from diffusers import DiffusionPipeline
    from diffusers.models.modeling_utils import ModelMixin

    frame = sys._getframe(1)
    transformer, timestep, grid, pipeline = None, None, None, None
    while frame is not None:
        owner = frame.f_locals.get("self")
        if transformer is None and isinstance(owner, ModelMixin) and any(m is attn for m in owner.modules()):
            transformer, timestep = owner, frame.f_locals.get("timestep")
            family = family_of(owner)
            names = family.grid_locals if family is not None else ()
            if names and all(isinstance(frame.f_locals.get(n), int) for n in names):
                grid = tuple(frame.f_locals[n] for n in names)
        elif isinstance(owner, DiffusionPipeline):
            pipeline = owner
            break
        frame = frame.f_back
    if transformer is None:
        return None
    if get_step_hook(transformer) is None:
        hook = apply_step_hook(transformer, config, require_family(transformer), getattr(pipeline, "scheduler", None))
        hook.begin_forward(timestep if timestep is not None else 0.0)
        hook.t.grid = grid
    return getattr(attn, LAYER_STATE, None)


def fused_rope_applies(x) -> bool:
    """The in-place norm/RoPE kernels apply: a fresh projection output, inference only (no backward)."""
    return kernel_applies(x) and not x.requires_grad
