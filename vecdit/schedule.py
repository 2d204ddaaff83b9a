# Copyright 2026 The vecdit authors. Apache-2.0.
"""Step scheduler: a stateful diffusers hook on the transformer root.

It runs once per transformer forward (attention processors can be skipped by diffusers' caches,
so counting processor calls would drift), works out the denoising step and the CFG branch from
the pipeline's `cache_context`, and tells the processors whether this forward is a dense warm-up
step (DENSE), a step that selects (SELECT) or one that reuses the last selection (REUSE).
Selections are kept per branch ("cond" / "uncond") and per layer, within a memory budget.
"""
from __future__ import annotations

import enum
import re
import sys
import time
from dataclasses import dataclass, field

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .config import VecAttnConfig
from .utils import warn_once

VEC_STEP_HOOK = "vecdit_step"
# set on the sparse-capable attention modules (the same value on all: compiled blocks share one graph)
SPARSE_LAYER_FLAG = "_vecdit_sparse_layer"
# per sparse module: its selections kept for reuse ({branch: SelectionBitmask}), and whether this
# forward's selection is to be kept. State on the module, decided here at the root before the
# forward: a compiled block reads and writes it without reading the layer index or byte counts
REUSE_SLOT = "_vecdit_reuse"
KEEP_FLAG = "_vecdit_keep"
DENSE_FLAG = "_vecdit_dense_layer"  # a layer of `dense_layers`
# a per-layer threshold table's row, as a tensor on its module: compiled blocks read it as an input,
# not as a Python layer index they would be specialized (recompiled) on
THRESHOLD_ROW = "_vecdit_threshold_row"
# `collect_stats`: what this forward's call of a module measured ({"density": [heads] tensor, and,
# eager only, "events"}), written by the processor, turned into a record with the module's layer
# index after the forward by the hook: compiled blocks never read the layer index
STATS_SLOT = "_vecdit_stats"
# sparse-capable attention modules: Wan self-attention, HunyuanVideo dual- and single-stream blocks
_SPARSE_LAYER_PATTERN = re.compile(r"^(blocks\.\d+\.attn1|transformer_blocks\.\d+\.attn|single_transformer_blocks\.\d+\.attn)$")


class Phase(enum.Enum):
    DENSE = "dense"
    SELECT = "select"
    REUSE = "reuse"


class _ContextSink(BaseState):
    """Unused state: the StateManager is only how `cache_context` reaches this hook."""

    def reset(self):
        pass


@dataclass
class LayerStats:
    """One record per (forward, layer), kept on the device until read."""

    step: int
    branch: str
    layer: int
    phase: str
    head_density: torch.Tensor | None = None  # [heads]
    events: tuple | None = None  # (start, selected, end) CUDA events or perf_counter floats


@dataclass
class _Tracker:
    step: int = -1
    last_timestep: float | None = None
    branch: str = "default"
    last_step: int | None = None
    passes: int = 0  # forwards so far in this step, where no cache context names the branch
    phase: Phase = Phase.DENSE
    num_inference_steps: int | None = None
    last_select: dict = field(default_factory=dict)  # branch -> its last selecting step
    history: list = field(default_factory=list)  # (branch, step, phase) per forward
    stats: list = field(default_factory=list)
    grid: tuple[int, int, int] | None = None  # post-patchify (frames, height, width) of this forward
    probe: object = None  # the forward probe's result for this forward


class VecStepHook(ModelHook):
    """Stateful root hook: one step/branch decision per transformer forward, reset per generation."""

    _is_stateful = True

    def __init__(self, config: VecAttnConfig, scheduler=None):
        super().__init__()
        self.config = config
        self.scheduler = scheduler  # where the number of inference steps is read, if known
        self.state_manager = StateManager(_ContextSink)
        self.parallel_config = None  # the model's diffusers context-parallel config, read every forward
        self.layer_of: dict[int, int] = {}  # id(attention module) -> sparse layer index
        self.modules: list = []  # the sparse-capable attention modules, in layer order
        self.t = _Tracker()
        self.last = _Tracker()  # the finished generation, for `vecdit.stats` after the pipeline returns
        self._tiles: dict = {}  # grid -> QueryTiles (their index is built once per resolution)
        self.experts: list[VecStepHook] = [self]  # the hooks of one pipeline's transformers (Wan2.2 A14B)
        self.forward_probe = None  # (model, args, kwargs) -> Python values for the processors, per forward

    def initialize_hook(self, module):
        index = 0
        for name, sub in module.named_modules():
            if _SPARSE_LAYER_PATTERN.match(name):
                self.layer_of[id(sub)] = index
                self.modules.append(sub)
                setattr(sub, SPARSE_LAYER_FLAG, True)
                setattr(sub, REUSE_SLOT, {})
                setattr(sub, STATS_SLOT, {})
                setattr(sub, KEEP_FLAG, False)
                index += 1
        self._mark_layers()
        return module

    def _mark_layers(self):
        """Per-layer settings as attributes of the attention modules: `dense_layers`, and the rows of
        a per-layer threshold table."""
        table = self.config.threshold_table()
        if table is not None and table.shape[0] < len(self.modules):
            raise ValueError(f"`threshold` table has {table.shape[0]} layers but the model has {len(self.modules)} "
                             "sparse attention layers")
        for i, m in enumerate(self.modules):
            setattr(m, DENSE_FLAG, i in self.config.dense_layers)
            if table is not None:
                setattr(m, THRESHOLD_ROW, table[i].clone())
            elif hasattr(m, THRESHOLD_ROW):
                delattr(m, THRESHOLD_ROW)

    def deinitalize_hook(self, module):  # (diffusers' spelling) on removal: leave the modules as they were
        for sub in self.modules:
            for name in (SPARSE_LAYER_FLAG, REUSE_SLOT, KEEP_FLAG, DENSE_FLAG, THRESHOLD_ROW, STATS_SLOT):
                if hasattr(sub, name):
                    delattr(sub, name)
        self.modules = []
        return module

    # -- selections kept for reuse (on the modules) ------------------------------------------------
    def selections(self) -> dict:
        """{(branch, layer): SelectionBitmask} kept for reuse."""
        return {(branch, i): bits for i, m in enumerate(self.modules) for branch, bits in getattr(m, REUSE_SLOT, {}).items()}

    def cached_bytes(self) -> int:
        return sum(bits.nbytes() for bits in self.selections().values())

    def clear_selections(self, branch: str | None = None) -> None:
        for m in self.modules:
            slot = getattr(m, REUSE_SLOT, None)
            if slot is not None:
                if branch is None:
                    slot.clear()
                else:
                    slot.pop(branch, None)

    def _plan_reuse(self, hidden_states) -> None:
        """Before a forward: which modules keep this forward's selection (selecting steps, within
        `reuse_budget_gb`, in layer order, estimated from the shapes), and, on a selecting step, the
        branch's old selections dropped, so that a module whose attention a cache skips now holds
        none at the next reuse step (it selects again there)."""
        t, cfg = self.t, self.config
        keep = [False] * len(self.modules)
        if t.phase is Phase.SELECT and cfg.reuse_interval > 1:
            self.clear_selections(t.branch)
            used = self.cached_bytes()  # the other branches' selections
            per_module = self._estimate_bytes(hidden_states)
            for i, m in enumerate(self.modules):
                size = per_module(m)
                if used + size <= cfg.reuse_budget_gb * 2**30:
                    keep[i], used = True, used + size
        for m, k in zip(self.modules, keep):
            setattr(m, KEEP_FLAG, k)

    def _estimate_bytes(self, hidden_states):
        """Bytes of one module's SelectionBitmask on this forward's video (9/64 per block and key)."""
        grid = self.t.grid
        if grid is None or not isinstance(hidden_states, torch.Tensor):
            return lambda m: 0
        tokens = grid[0] * grid[1] * grid[2]
        block = self._grid_tiles(grid).block_size if not self.config.raster else 64
        blocks, words = -(-tokens // block), -(-tokens // 64)
        return lambda m: hidden_states.shape[0] * getattr(m, "heads", 1) * blocks * words * 9

    def _num_steps(self, ctx) -> int | None:
        if ctx is not None and ctx.num_inference_steps:
            return int(ctx.num_inference_steps)
        timesteps = getattr(self.scheduler, "timesteps", None)
        return len(timesteps) if timesteps is not None and len(timesteps) else None

    def begin_forward(self, timestep, ctx=None) -> None:
        t = self.t
        t.step = self._step(timestep, ctx)
        if ctx is not None:
            t.branch = ctx.name
        else:  # no cache context (HunyuanVideo I2V's true CFG): the n-th pass of a step is its own branch
            t.passes = t.passes + 1 if t.step == t.last_step else 0
            t.branch = "default" if t.passes == 0 else f"default-{t.passes + 1}"
        t.last_step = t.step
        t.num_inference_steps = self._num_steps(ctx)
        for other in self.experts:  # Wan2.2: the other expert's selections are never read again
            if other is not self:
                other.clear_selections()
        t.phase = self._decide_phase()
        if t.phase is Phase.SELECT:
            t.last_select[t.branch] = t.step
        t.history.append((t.branch, t.step, t.phase.value))

    def _step(self, timestep, ctx) -> int:
        """The denoising step: the pipeline's cache context, else its scheduler's step index (shared
        by Wan2.2's two experts), else counted from timestep changes (a bare transformer call)."""
        t = self.t
        if ctx is not None and ctx.step_index is not None:
            return int(ctx.step_index)
        if self.scheduler is not None and hasattr(self.scheduler, "step_index"):
            return int(self.scheduler.step_index or 0)  # None until the scheduler's first step
        # cond and uncond passes of one step share the timestep; a new value is a new step. The max:
        # Wan2.2 TI2V's per-token timestep is 0 on the conditioning frame
        value = float(timestep.max()) if isinstance(timestep, torch.Tensor) else float(timestep)
        if value != t.last_timestep:
            t.last_timestep = value
            return t.step + 1
        return t.step

    def _decide_phase(self) -> Phase:
        t, cfg = self.t, self.config
        num_steps = t.num_inference_steps
        if isinstance(cfg.dense_steps, float) and num_steps is None:
            # a fraction without a known step count (a bare transformer call): assume 50 steps
            warn_once("dense_steps is a fraction but the step count is unknown; assuming 50 steps")
            num_steps = 50
        sparse_step = t.step - cfg.num_dense_steps(num_steps)
        if sparse_step < 0:
            return Phase.DENSE
        if cfg.dense_last_steps:
            if t.num_inference_steps is None:
                warn_once("dense_last_steps needs the pipeline's step count; it is unknown here, so no last step runs dense")
            elif t.step >= t.num_inference_steps - cfg.num_dense_last_steps(t.num_inference_steps):
                return Phase.DENSE
        if sparse_step % cfg.reuse_interval:
            # nothing to reuse in this branch (first sparse step of an expert, budget full): select
            if any(t.branch in getattr(m, REUSE_SLOT, {}) for m in self.modules):
                return Phase.REUSE
        return Phase.SELECT

    def pre_forward(self, module, *args, **kwargs):
        # a forward that ran without `post_forward`: the one in flight when `find_or_attach_hook` attached us
        self.record_stats()
        self.parallel_config = getattr(module, "_parallel_config", None)
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.begin_forward(timestep, self.state_manager._context)
        hidden_states = kwargs.get("hidden_states", args[0] if args else None)
        self.t.grid = latent_grid(module, hidden_states)
        if self.t.grid is not None and not self.config.raster:
            self._grid_tiles(self.t.grid, hidden_states.device)
        self._plan_reuse(hidden_states)
        # what the processors need from the forward's inputs as Python values, read here, eagerly,
        # so that compiled blocks hold no data-dependent read (HunyuanVideo's valid text lengths)
        self.t.probe = self.forward_probe(module, args, kwargs) if self.forward_probe is not None else None
        return args, kwargs

    def post_forward(self, module, output):
        self.record_stats()
        return output

    def record_stats(self) -> None:
        """`collect_stats`: one record per module that measured something in the last forward (a
        layer a cache skipped has none), with its layer index, read here, eagerly. Run after every
        forward, and also before the next one, at the reset and by `vecdit.stats`: a processor set
        with plain `set_attn_processor` attaches this hook during its first forward, which then
        ends without `post_forward`."""
        if self.config.collect_stats:
            t = self.t
            for layer, m in enumerate(self.modules):
                measured = getattr(m, STATS_SLOT, {})
                if "density" in measured:
                    t.stats.append(LayerStats(t.step, t.branch, layer, t.phase.value, measured["density"],
                                              measured.get("events")))
                measured.clear()

    def reconfigure(self, config: VecAttnConfig) -> None:
        """Switch to `config` (the forward in flight too); selections made under the old one are dropped."""
        self.config, self._tiles = config, {}
        self.clear_selections()
        self._mark_layers()
        if self.t.history:
            self.t.phase = self._decide_phase()
            if self.t.phase is Phase.SELECT:
                self.t.last_select[self.t.branch] = self.t.step
            self.t.history[-1] = (self.t.branch, self.t.step, self.t.phase.value)

    def reset_state(self, module):
        self.record_stats()
        if self.t.history:
            self.clear_selections()
            self.last = self.t
        self.t = _Tracker()
        self.state_manager.reset()
        return module

    # -- what processors ask -------------------------------------------------------------------
    def layer(self, attn) -> int | None:
        return self.layer_of.get(id(attn))

    def query_tiles(self, seq_q: int):
        """QueryTiles of this forward's grid for `seq_q` video queries (None: raster order, or the
        grid does not hold them)."""
        grid = self.t.grid
        if grid is None or self.config.raster or grid[0] * grid[1] * grid[2] != seq_q:
            return None
        return self._grid_tiles(grid)

    def _grid_tiles(self, grid, device=None):
        """QueryTiles of `grid`, built once per resolution (and its index on `device`, eagerly:
        a compiled block then finds it ready, and is not recompiled for the cache filling)."""
        tiles = self._tiles.get(grid)
        if tiles is None:
            tiles = self._tiles[grid] = self.config.tiles_for(grid)
        if device is not None:
            tiles.query_index(device)
        return tiles


def latent_grid(transformer, hidden_states) -> tuple[int, int, int] | None:
    """Post-patchify (frames, height, width) of a Wan / HunyuanVideo latent `[B, C, F, H, W]`."""
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 5:
        return None
    cfg = transformer.config
    patch = cfg.get("patch_size")
    if isinstance(patch, (tuple, list)) and len(patch) == 3:  # Wan: (t, h, w)
        pt, ph, pw = patch
    elif isinstance(patch, int):  # HunyuanVideo: spatial patch and patch_size_t
        pt, ph, pw = cfg.get("patch_size_t", 1), patch, patch
    else:
        return None
    f, h, w = hidden_states.shape[2:]
    return f // pt, h // ph, w // pw


def get_step_hook(transformer) -> VecStepHook | None:
    registry = getattr(transformer, "_diffusers_hook", None)
    return registry.get_hook(VEC_STEP_HOOK) if registry is not None else None


def apply_step_hook(transformer, config: VecAttnConfig, scheduler=None, forward_probe=None) -> VecStepHook:
    hook = VecStepHook(config, scheduler)
    hook.forward_probe = forward_probe  # the adapters know what their models need
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, VEC_STEP_HOOK)
    return hook


@torch.compiler.disable
def find_or_attach_hook(attn, config: VecAttnConfig, forward_probe=None) -> VecStepHook | None:
    """For a processor installed with plain `set_attn_processor`: find the transformer that is
    running (the caller's stack holds its forward) and attach the step hook to it once.

    The forward in flight started before the hook existed, so it is counted here from the
    forward's own `timestep` argument; the pipeline (if any) gives the step count.
    """
    from diffusers import DiffusionPipeline
    from diffusers.models.modeling_utils import ModelMixin

    frame = sys._getframe(1)
    transformer, timestep, pipeline, grid = None, None, None, None
    while frame is not None:
        owner = frame.f_locals.get("self")
        if transformer is None and isinstance(owner, ModelMixin) and any(m is attn for m in owner.modules()):
            transformer, timestep = owner, frame.f_locals.get("timestep")
            # both models' forwards name the post-patchify grid so
            names = ("post_patch_num_frames", "post_patch_height", "post_patch_width")
            if all(isinstance(frame.f_locals.get(n), int) for n in names):
                grid = tuple(frame.f_locals[n] for n in names)
        elif isinstance(owner, DiffusionPipeline):
            pipeline = owner
            break
        frame = frame.f_back
    if transformer is None:
        return None
    hook = get_step_hook(transformer)
    if hook is None:
        hook = apply_step_hook(transformer, config, getattr(pipeline, "scheduler", None), forward_probe)
        hook.parallel_config = getattr(transformer, "_parallel_config", None)
        hook.begin_forward(timestep if timestep is not None else 0.0)
        hook.t.grid = grid
    elif hook.config is not config:  # a new processor on a model that already has the hook: its config rules
        hook.reconfigure(config)
    return hook


class Timer:
    """CUDA events (no sync until read) or perf_counter on CPU."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    @staticmethod
    def elapsed_ms(a, b) -> float | None:
        if a is None:  # not timed (a compiled block)
            return None
        if isinstance(a, float):
            return (b - a) * 1e3
        b.synchronize()
        return a.elapsed_time(b)
