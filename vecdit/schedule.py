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
import time
from dataclasses import dataclass, field

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from .config import VecAttnConfig
from .utils import warn_once

VEC_STEP_HOOK = "vecdit_step"
# the attribute of every attention module of a hooked transformer that holds its `LayerState`
LAYER_STATE = "vecdit_layer_state"


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


@dataclass(eq=False)
class LayerState:
    """What the step hook and the processors share about one attention module (on the module, as
    `LAYER_STATE`): the hook decides it before a forward, the processor reads it during the call.

    Compiled blocks read it without the layer index, so every layer shares one graph per phase:
    `capable`, `dense` and `keep` take the same values on all layers (with the default budget), the
    threshold row is a tensor (a graph input), `reuse` and `measured` are dicts.
    """

    hook: "VecStepHook"
    capable: bool  # a sparse-capable layer (the family's `sparse_layers`)
    # sparse layer index: read eagerly only (the hook's records, the calibration capture), never by
    # a compiled block, which would be specialized (recompiled) on it
    layer: int | None = None
    dense: bool = False  # one of `dense_layers`
    keep: bool = False  # this forward's selection is kept for reuse (within `reuse_budget_gb`)
    threshold: torch.Tensor | None = None  # `[heads]` row of a per-layer min-p table
    density: float | None = None  # the layer's top-k density (`layer_density`); None: the config's
    reuse: dict = field(default_factory=dict)  # branch -> SelectionBitmask kept for reuse
    measured: dict = field(default_factory=dict)  # `collect_stats`: {"density": [heads], "events": ...}


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

    def __init__(self, config: VecAttnConfig, family, scheduler=None):
        super().__init__()
        self.config = config
        # the transformer's model family (`vecdit.processors.ModelFamily`): its sparse layers,
        # latent grid and forward probe
        self.family = family
        self.scheduler = scheduler  # where the number of inference steps is read, if known
        self.state_manager = StateManager(_ContextSink)
        self.parallel_config = None  # the model's diffusers context-parallel config, read every forward
        self.modules: list = []  # the sparse-capable attention modules, in layer order
        self.states: list[LayerState] = []  # their states, in the same order
        self._attention: list = []  # every attention module given a state
        self.t = _Tracker()
        self.last = _Tracker()  # the finished generation, for `vecdit.stats` after the pipeline returns
        self._tiles: dict = {}  # grid -> QueryTiles (their index is built once per resolution)
        self.experts: list[VecStepHook] = [self]  # the hooks of one pipeline's transformers (Wan2.2 A14B)

    def initialize_hook(self, module):
        """A `LayerState` on every attention module (`set_processor`): processors find this hook
        through it; the family's `sparse_layers` are the sparse-capable ones, in model order."""
        for name, sub in module.named_modules():
            if not hasattr(sub, "set_processor"):
                continue
            capable = self.family.sparse_layers.fullmatch(name) is not None
            state = LayerState(self, capable, len(self.modules) if capable else None)
            setattr(sub, LAYER_STATE, state)
            self._attention.append(sub)
            if capable:
                self.modules.append(sub)
                self.states.append(state)
        self._mark_layers()
        return module

    def _mark_layers(self):
        """Per-layer settings on the layer states: `dense_layers`, the rows of a per-layer
        threshold table, the per-layer densities (a layer at 1.0 runs dense)."""
        table = self.config.threshold_table()
        if table is not None and table.shape[0] < len(self.states):
            raise ValueError(f"`threshold` table has {table.shape[0]} layers but the model has {len(self.states)} "
                             "sparse attention layers")
        densities = self.config.layer_density
        if densities is not None and len(densities) != len(self.states):
            raise ValueError(f"`layer_density` has {len(densities)} layers but the model has {len(self.states)} "
                             "sparse attention layers")
        for i, state in enumerate(self.states):
            state.density = densities[i] if densities is not None else None
            state.dense = i in self.config.dense_layers or state.density == 1.0
            state.threshold = table[i].clone() if table is not None else None

    def deinitalize_hook(self, module):  # (diffusers' spelling) on removal: leave the modules as they were
        for sub in self._attention:
            if hasattr(sub, LAYER_STATE):
                delattr(sub, LAYER_STATE)
        self.modules, self.states, self._attention = [], [], []
        return module

    # -- selections kept for reuse (on the layer states) -------------------------------------------
    def selections(self) -> dict:
        """{(branch, layer): SelectionBitmask} kept for reuse."""
        return {(branch, i): bits for i, state in enumerate(self.states) for branch, bits in state.reuse.items()}

    def cached_bytes(self) -> int:
        return sum(bits.nbytes() for bits in self.selections().values())

    def clear_selections(self, branch: str | None = None) -> None:
        for state in self.states:
            if branch is None:
                state.reuse.clear()
            else:
                state.reuse.pop(branch, None)

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
        for state, k in zip(self.states, keep):
            state.keep = k

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
            if any(t.branch in state.reuse for state in self.states):
                return Phase.REUSE
        return Phase.SELECT

    def pre_forward(self, module, *args, **kwargs):
        # a forward that ran without `post_forward`: the one in flight when a processor attached us
        self.record_stats()
        self.parallel_config = getattr(module, "_parallel_config", None)
        timestep = kwargs.get("timestep", args[1] if len(args) > 1 else None)
        self.begin_forward(timestep, self.state_manager._context)
        hidden_states = kwargs.get("hidden_states", args[0] if args else None)
        self.t.grid = self.family.latent_grid(module, hidden_states)
        if self.t.grid is not None and not self.config.raster:
            self._grid_tiles(self.t.grid, hidden_states.device)
        self._plan_reuse(hidden_states)
        # what the processors need from the forward's inputs as Python values, read here, eagerly,
        # so that compiled blocks hold no data-dependent read (HunyuanVideo's valid text lengths)
        probe = self.family.forward_probe
        self.t.probe = probe(module, args, kwargs) if probe is not None else None
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
            for layer, state in enumerate(self.states):
                measured = state.measured
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


def patchified_grid(hidden_states, patch) -> tuple[int, int, int] | None:
    """(frames, height, width) of a latent `[B, C, F, H, W]` after a (t, h, w) `patch`."""
    if not isinstance(hidden_states, torch.Tensor) or hidden_states.dim() != 5:
        return None
    f, h, w = hidden_states.shape[2:]
    return f // patch[0], h // patch[1], w // patch[2]


def get_step_hook(transformer) -> VecStepHook | None:
    registry = getattr(transformer, "_diffusers_hook", None)
    return registry.get_hook(VEC_STEP_HOOK) if registry is not None else None


def apply_step_hook(transformer, config: VecAttnConfig, family, scheduler=None) -> VecStepHook:
    """The step hook on `transformer`, whose model family is `family` (`vecdit.processors.ModelFamily`)."""
    hook = VecStepHook(config, family, scheduler)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, VEC_STEP_HOOK)
    hook.parallel_config = getattr(transformer, "_parallel_config", None)
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
