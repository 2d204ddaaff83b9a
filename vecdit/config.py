# Copyright 2026 The vecdit authors. Apache-2.0.
"""`VecAttnConfig`: every knob of vecdit's sparse attention, validated, serializable, with presets."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from .ops.attention.compensation import COMPENSATION_MODES
from .ops.selection import SELECTION_MODES
from .ops.tiles import BLOCK_SIZES, DEFAULT_TILE, QueryTiles

TEXT_HANDLING = ("always", "select")
CONFIG_VERSION = 2
# the top-k rule's keys per query tile when neither `density` nor `threshold` is given
DEFAULT_DENSITY = 0.25


@dataclass
class VecAttnConfig:
    """Configuration of vector-wise sparse attention in a diffusers transformer.

    Two selection rules, per query block:
      - top-k (the default, `threshold=None`): each block keeps its `density` best keys. It keeps
        the most attention mass at a given density (bench/DESIGN.md#query-tiles) and makes the
        density, and so the speed, what you ask for.
      - min-p (the method as published, `threshold=...`): keep key j if p_j >= threshold * p_max;
        `max_density` caps it per block (min-p inside a budget).

    Args:
        query_tiles (`tuple[int, int, int]` or `"raster"`, defaults to `(4, 4, 4)`): query blocks are
            compact (frames, height, width) tiles of the latent grid (64 or 128 queries; the grid is
            read from the transformer's input). `"raster"` keeps the paper's 64 consecutive tokens.
        density (`float`, *optional*): top-k rule: the fraction of keys each query block keeps
            (defaults to 0.25 when `threshold` is not given). Lower is faster.
        threshold (`float`, `[heads]` or `[layers, heads]`, *optional*): min-p rule: keep key j of a
            block if p_j >= threshold * p_max. Lower keeps more keys (slower, closer to dense). A
            `[layers, heads]` table indexes the sparse-capable attention layers in model order
            (Wan: `blocks.i.attn1`; HunyuanVideo: dual-stream then single-stream blocks).
        max_density (`float`, *optional*): min-p rule: at most this fraction of keys per block.
        min_columns (`int`, defaults to 0): at least this many keys per block.
        dense_steps (`int` or `float`, defaults to 0.06): denoising steps run dense at the start;
            a float in [0, 1) is a fraction of the pipeline's steps (the method's first 6%), rounded up.
        dense_last_steps (`int` or `float`, defaults to 0): denoising steps run dense at the end (a
            count, or a fraction of the pipeline's steps); the last steps set fine detail.
        dense_layers (`tuple[int]`, defaults to ()): sparse-capable layers kept dense.
        layer_density (`tuple[float]`, *optional*): top-k rule: one density per sparse-capable layer,
            in model order (as the `threshold` table indexes them), in place of `density`; 1.0 keeps
            the layer dense. `vecdit calibrate` writes one, allocated by each layer's measured share of
            the model's one-step error. Each distinct value is a compiled graph of its own.
        reuse_interval (`int`, defaults to 1): select every r-th sparse step and reuse the selection
            in between (r = 1 selects every step). Larger is faster and drifts more.
        selection_mode (`str`, defaults to `"exact"`): `"exact"` or the original `"running"` max.
        text_handling (`str`, defaults to `"always"`): HunyuanVideo text keys for video queries:
            `"always"` attends every valid text key; `"select"` scores them with the video keys.
        dense_fallback_density (`float`, defaults to 0.5): a layer whose selection keeps more than
            this fraction of the keys (top-k: whose `density` is above it) runs dense attention
            instead (faster there: bench/DESIGN.md#presets); 1.0 never falls back. `vecdit.stats`
            reports such a layer at density 1.0.
        reuse_budget_gb (`float`, defaults to 8.0): GPU memory for selections kept for reuse, per
            transformer; layers past the budget recompute their selection (see README, "Bounded reuse").
        compensate (`bool` or `str`, defaults to True): the keys a query block drops still weigh in
            the softmax, each group of 64 keys by its dropped count, mean key and mean value
            (`vecdit.ops.attention.compensation`); True is the default mode, `"query"` / `"pooled"` /
            `"dropped"` choose (scores per query row / per query tile / per query tile with the dropped
            keys' own values). False attends the selected keys alone.
        collect_stats (`bool`, defaults to False): record density and selection/attention time per
            step, layer and head (CUDA events, read only by `vecdit.stats`; no host sync per call).
            Compiled blocks record the density only (no times), in one graph for all layers.

    >>> import vecdit
    >>> vecdit.enable(pipe, vecdit.VecAttnConfig(density=0.15, reuse_interval=2))  # doctest: +SKIP
    """

    query_tiles: tuple[int, int, int] | str = DEFAULT_TILE
    density: float | None = None
    threshold: float | list | torch.Tensor | None = None
    max_density: float | None = None
    min_columns: int = 0
    dense_steps: int | float = 0.06
    dense_last_steps: int | float = 0
    dense_layers: tuple[int, ...] = ()
    layer_density: tuple[float, ...] | None = None
    reuse_interval: int = 1
    selection_mode: str = "exact"
    text_handling: str = "always"
    dense_fallback_density: float = 0.5
    reuse_budget_gb: float = 8.0
    compensate: bool | str = True
    collect_stats: bool = False
    version: int = field(default=CONFIG_VERSION)

    def __post_init__(self):
        tiles = self.query_tiles
        if isinstance(tiles, list):
            tiles = self.query_tiles = tuple(tiles)
        if tiles != "raster":
            if (not isinstance(tiles, tuple) or len(tiles) != 3 or any(not isinstance(x, int) or x < 1 for x in tiles)
                    or math.prod(tiles) not in BLOCK_SIZES):
                raise ValueError(f"`query_tiles` must be 'raster' or (frames, height, width) sizes with "
                                 f"{' or '.join(map(str, BLOCK_SIZES))} members, got {tiles!r}")
        if self.threshold is not None:
            t = torch.as_tensor(self.threshold, dtype=torch.float64)
            if t.dim() > 2:
                raise ValueError(f"`threshold` must be a scalar, [heads] or [layers, heads], got shape {tuple(t.shape)}")
            if not bool(torch.all((t > 0) & (t <= 1))):
                raise ValueError("`threshold` values must lie in (0, 1]")
            if self.density is not None:
                raise ValueError("`density` sets the top-k rule and `threshold` the min-p rule: give one of them "
                                 "(min-p inside a budget: `threshold` with `max_density`)")
        elif self.max_density is not None:
            raise ValueError("`max_density` caps the min-p rule; with the top-k rule (no `threshold`) use `density`")
        if self.density is not None and not 0 < self.density <= 1:
            raise ValueError(f"`density` must lie in (0, 1] or be None, got {self.density}")
        if self.max_density is not None and not 0 < self.max_density <= 1:
            raise ValueError(f"`max_density` must lie in (0, 1] or be None, got {self.max_density}")
        if int(self.min_columns) < 0:
            raise ValueError(f"`min_columns` must be >= 0, got {self.min_columns}")
        for name in ("dense_steps", "dense_last_steps"):
            ds = getattr(self, name)
            if isinstance(ds, bool) or not isinstance(ds, (int, float)) or ds < 0 or (isinstance(ds, float) and ds >= 1):
                raise ValueError(f"`{name}` must be an int >= 0 (a count) or a float in [0, 1) (a fraction), got {ds!r}")
        if int(self.reuse_interval) < 1:
            raise ValueError(f"`reuse_interval` must be >= 1, got {self.reuse_interval}")
        if self.selection_mode not in SELECTION_MODES:
            raise ValueError(f"`selection_mode` must be one of {SELECTION_MODES}, got {self.selection_mode!r}")
        if self.text_handling not in TEXT_HANDLING:
            raise ValueError(f"`text_handling` must be one of {TEXT_HANDLING}, got {self.text_handling!r}")
        if not 0 < self.dense_fallback_density <= 1:
            raise ValueError(f"`dense_fallback_density` must lie in (0, 1], got {self.dense_fallback_density}")
        if self.reuse_budget_gb < 0:
            raise ValueError(f"`reuse_budget_gb` must be >= 0, got {self.reuse_budget_gb}")
        if not isinstance(self.compensate, bool) and self.compensate not in COMPENSATION_MODES:
            raise ValueError(f"`compensate` must be True, False or one of {COMPENSATION_MODES}, got {self.compensate!r}")
        self.dense_layers = tuple(int(i) for i in self.dense_layers)
        if self.layer_density is not None:
            if self.threshold is not None:
                raise ValueError("`layer_density` sets the top-k rule per layer and `threshold` the min-p rule: give one "
                                 "of them")
            values = tuple(float(d) for d in self.layer_density)
            if not values or any(not 0 < d <= 1 for d in values):
                raise ValueError(f"`layer_density` must be a non-empty list of densities in (0, 1], got {self.layer_density!r}")
            self.layer_density = values

    def density_of(self, layer: int) -> float | None:
        """The top-k density of sparse-capable layer `layer`: its `layer_density` entry, else `budget()`."""
        if self.layer_density is not None:
            if layer >= len(self.layer_density):
                raise ValueError(f"`layer_density` has {len(self.layer_density)} layers but layer {layer} was asked for")
            return self.layer_density[layer]
        return self.budget()

    def mean_density(self) -> float | None:
        """The top-k density averaged over the layers (`layer_density`'s mean, else `density`)."""
        if self.layer_density is not None:
            return sum(self.layer_density) / len(self.layer_density)
        return self.budget() if self.threshold is None else None

    def num_dense_steps(self, num_inference_steps: int | None) -> int:
        """Dense warm-up steps for a run of `num_inference_steps` (a fraction needs the count)."""
        return _steps(self.dense_steps, num_inference_steps, "dense_steps")

    def num_dense_last_steps(self, num_inference_steps: int | None) -> int:
        """Dense steps at the end of a run of `num_inference_steps`."""
        return _steps(self.dense_last_steps, num_inference_steps, "dense_last_steps")

    @property
    def rule(self) -> str:
        """`"topk"` (no threshold) or `"minp"`."""
        return "topk" if self.threshold is None else "minp"

    def threshold_table(self) -> torch.Tensor | None:
        """The per-layer threshold table (`[layers, heads]` fp32), or None for a scalar / per-head threshold."""
        if self.threshold is None or isinstance(self.threshold, (int, float)):
            return None
        t = torch.as_tensor(self.threshold, dtype=torch.float32)
        return t if t.dim() == 2 else None

    @property
    def raster(self) -> bool:
        return self.query_tiles == "raster"

    def budget(self) -> float | None:
        """Per-block key budget as a fraction (`max_density` of the selection ops)."""
        if self.threshold is None:
            return self.density if self.density is not None else DEFAULT_DENSITY
        return self.max_density

    def tiles_for(self, grid) -> QueryTiles | None:
        """The query grouping on a (frames, height, width) grid (None: raster)."""
        return None if self.raster or grid is None else QueryTiles(tuple(grid), self.query_tiles)

    def threshold_for(self, layer: int, heads: int) -> float | torch.Tensor | None:
        if self.threshold is None:
            return None
        if isinstance(self.threshold, (int, float)):
            return float(self.threshold)  # plain Python: nothing for torch.compile to break on
        t = torch.as_tensor(self.threshold, dtype=torch.float32)
        if t.dim() == 2:
            if layer >= t.shape[0]:
                raise ValueError(f"`threshold` table has {t.shape[0]} layers but layer {layer} was asked for")
            t = t[layer]
        if t.dim() == 1 and t.numel() != heads:
            raise ValueError(f"`threshold` has {t.numel()} heads but the layer has {heads}")
        return float(t) if t.dim() == 0 else t

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if isinstance(self.threshold, torch.Tensor):
            d["threshold"] = self.threshold.tolist()
        d["dense_layers"] = list(self.dense_layers)
        if self.layer_density is not None:
            d["layer_density"] = list(self.layer_density)
        if self.query_tiles != "raster":
            d["query_tiles"] = list(self.query_tiles)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VecAttnConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown VecAttnConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_calibration(cls, path: str, **overrides) -> "VecAttnConfig":
        """The config `vecdit calibrate` wrote to `path` (its `"config"`: per-layer densities with the
        query tiles and compensation it was measured with), `overrides` on top; the file also holds
        the one-step error and mean density it measured."""
        import json

        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read the calibration file {path!r}: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
            raise ValueError(f"{path!r} is not a calibration file written by `vecdit calibrate` (no \"config\" object)")
        return dataclasses.replace(cls.from_dict(data["config"]), **overrides)

    @classmethod
    def for_model(cls, name: str, **overrides) -> "VecAttnConfig":
        """Preset for `name` in `PRESETS` (flags in `overrides` win); the model families register
        their presets when `vecdit.processors` is imported (`vecdit.VecAttnConfig` does it)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} (the model families of "
                             "vecdit.processors register them)")
        return dataclasses.replace(PRESETS[name], **overrides)


def _steps(value: int | float, num_inference_steps: int | None, name: str) -> int:
    if isinstance(value, int):
        return value
    if num_inference_steps is None:
        raise ValueError(f"`{name}` is a fraction but the number of inference steps is unknown; use "
                         f"vecdit.enable(pipe, config) or an integer `{name}`")
    return math.ceil(value * num_inference_steps)


# Starting points, not calibrated tables: no model weights reach our machines. Every preset is a
# density (the top-k rule keeps it exactly, whatever the model), the method's warm-up (first 6% of
# the steps dense), 4x4x8 query tiles and the dropped keys' compensation (`compensate`, on by
# default). At 10%, compensated, the output error is below that of the presets before compensation
# (4x4x4, 25%, uncompensated) at every real geometry of the lab's proxy (0.15-0.17 against
# 0.34-0.39) and, on 1x8x8 tiles, on the trained tiny model's own attention (0.196 against 0.216);
# 4x4x8 tiles halve the selection's work and attend faster at equal density
# (bench/results/compensation/). Set `dense_last_steps` (e.g. 0.1) where fine detail suffers, or a
# higher `density` for a closer match to dense. The model families (`vecdit.processors`) start
# from it; Wan2.2 A14B: one config serves both experts, and the low-noise expert starts with a
# fresh selection at the switch.
PRESET_DENSITY = 0.10
PRESET_TILES = (4, 4, 8)
PRESET = VecAttnConfig(density=PRESET_DENSITY, query_tiles=PRESET_TILES, dense_steps=0.06)
# preset name -> config: the one preset table, filled by the model families as they register
# (`vecdit.processors.register_family`), so this file names no model
PRESETS: dict[str, VecAttnConfig] = {}
