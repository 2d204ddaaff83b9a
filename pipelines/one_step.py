# Copyright 2026 The vecdit authors. Apache-2.0.
"""The one-step error: how far vecdit moves a model's prediction, measured on the whole model.

Dense generations hand over the inputs of every transformer forward at a few denoising steps
(both CFG branches, each expert); from each such input the transformer runs once more with vecdit,
sparse from that call, and the error is the rel-L2 of the two predictions,
|prediction_vecdit - prediction_dense| / |prediction_dense|, averaged over the captured forwards.
Unlike PSNR of whole videos (trajectories diverge) it is deterministic, and unlike a layer's
attention error it includes what the rest of the network makes of each layer's error
(bench/DESIGN.md#model-error). `vecdit calibrate` allocates densities with it.

    one = OneStep.capture(pipe, prompts, seeds=(0,), capture_steps=(4, 10, 16), call_kwargs=dict(...))
    one.error(VecAttnConfig(density=0.25))           # {"error": ..., "by_step": {...}, ...}
    one.layer_errors(VecAttnConfig(density=0.25))    # one layer sparse at a time (exact, a forward per layer)
    one.local_errors(VecAttnConfig(), (0.1, 0.25))   # every layer's attention error in one forward per capture
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from vecdit.api import apply_vec_sparse, remove_vec_sparse
from vecdit.config import VecAttnConfig
from vecdit.processors import VecAttnProcessor
from vecdit.processors._sparse import SparseCall
from vecdit.schedule import get_step_hook
from vecdit.utils import transformers_of


@dataclass
class ForwardInputs:
    """One transformer forward of a dense generation: its inputs and its (dense) prediction."""

    model: int  # index in `transformers_of(pipe)` (Wan2.2 A14B: 0 high noise, 1 low noise)
    prompt: int  # index of the prompt
    seed: int
    step: int  # 0-based denoising step
    branch: int  # n-th forward of the step (CFG: 0 cond, 1 uncond)
    args: tuple
    kwargs: dict
    dense: torch.Tensor  # the stock prediction, fp32 on the CPU


def _detach(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (list, tuple)):
        return type(x)(_detach(v) for v in x)
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


def _prediction(output) -> torch.Tensor:
    """The denoiser's prediction from a transformer's output (a tuple, or a `...Output` with `sample`)."""
    sample = output[0] if isinstance(output, (tuple, list)) else getattr(output, "sample", output)
    return sample.detach().float().cpu()


def one_step_config(config: VecAttnConfig) -> VecAttnConfig:
    """`config` sparse from the first call: no dense warm-up or tail, a fresh selection every call."""
    return dataclasses.replace(config, dense_steps=0, dense_last_steps=0, reuse_interval=1, collect_stats=False)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """|a - b| / |b| in fp64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


class OneStep:
    """Captured forwards of dense generations and the one-step error of any vecdit config on them.

    Build with `OneStep.capture`; the pipeline must have its stock attention processors.
    """

    def __init__(self, pipe, forwards: list[ForwardInputs], progress=None):
        self.pipe, self.forwards = pipe, forwards
        self.models = transformers_of(pipe)
        self.progress = progress  # called with (forwards done) after each replayed forward, if given
        self.forward_seconds: float | None = None  # a replayed sparse forward's wall time (the last measured)

    @classmethod
    def capture(cls, pipe, prompts, seeds=(0,), capture_steps=(4, 10, 16), call_kwargs=None, progress=None,
                runs=None):
        """Run a dense generation per (prompt, seed) up to the last of `capture_steps` and keep the
        inputs and prediction of every transformer forward at those steps. `call_kwargs`: the
        pipeline's own arguments (height, width, num_frames, num_inference_steps, guidance_scale, ...);
        `runs`: (prompt index, seed) pairs in place of every prompt at every seed;
        `progress(done, total)` is called after each generation."""
        call_kwargs = dict(call_kwargs or {})
        steps = call_kwargs.get("num_inference_steps")
        capture_steps = sorted(set(int(s) for s in capture_steps))
        if not capture_steps or capture_steps[0] < 0 or (steps is not None and capture_steps[-1] >= steps):
            raise ValueError(f"`capture_steps` must lie in [0, num_inference_steps={steps}), got {capture_steps}")
        models = transformers_of(pipe)
        forwards: list[ForwardInputs] = []
        where = {"step": 0, "branch": 0, "prompt": 0, "seed": 0, "last": -1}

        def hook_for(index):
            def hook(module, args, kwargs, output):
                step = where["step"]
                branch = where["branch"] if where["last"] == step else 0
                where["branch"], where["last"] = branch + 1, step
                if step in capture_steps:
                    forwards.append(ForwardInputs(index, where["prompt"], where["seed"], step, branch, _detach(args),
                                                  _detach(kwargs), _prediction(output)))
            return hook

        def step_end(pipeline, i, t, tensors):
            where["step"] = i + 1
            if i >= capture_steps[-1]:
                pipeline._interrupt = True  # the remaining steps are skipped (diffusers' `interrupt`)
            return {}

        handles = [m.register_forward_hook(hook_for(i), with_kwargs=True) for i, m in enumerate(models)]
        pipe.set_progress_bar_config(disable=True)
        runs = list(runs) if runs is not None else [(p, s) for p in range(len(prompts)) for s in seeds]
        try:
            for done, (p, seed) in enumerate(runs):
                where.update(step=0, branch=0, prompt=p, seed=seed, last=-1)
                device = getattr(pipe, "_execution_device", None) or next(models[0].parameters()).device
                generator = torch.Generator(torch.device(device).type).manual_seed(seed)
                with torch.no_grad():
                    pipe(prompts[p], output_type="latent", generator=generator, callback_on_step_end=step_end,
                         **call_kwargs)
                if progress:
                    progress(done + 1, len(runs))
        finally:
            for h in handles:
                h.remove()
        if not forwards:
            raise ValueError(f"no transformer forward was captured at steps {capture_steps}")
        return cls(pipe, forwards, progress)

    @property
    def layers(self) -> int:
        """Sparse-capable attention layers of the (first) transformer."""
        return len(self.sparse_layers(self.models[0]))

    @staticmethod
    def sparse_layers(model) -> list:
        from vecdit.processors.families import require_family

        family = require_family(model)
        return [n for n, m in model.named_modules() if hasattr(m, "set_processor") and family.sparse_layers.fullmatch(n)]

    # -- replay -------------------------------------------------------------------------------------
    def predictions(self, config: VecAttnConfig | None = None, processor_factory=None) -> list[torch.Tensor]:
        """Each captured forward again: stock attention (`config` None), or vecdit with `config`
        sparse from the call (`one_step_config`), or the processors `processor_factory(config)` makes."""
        outputs = []
        if config is not None:
            config = one_step_config(config)
            for m in self.models:
                apply_vec_sparse(m, config)
                if processor_factory is not None:
                    m.set_attn_processor(processor_factory(config))
        try:
            for f in self.forwards:
                model = self.models[f.model]
                hook = get_step_hook(model)
                if hook is not None:  # a fresh schedule per forward: nothing carries over between captures
                    hook.reset_state(model)
                t0 = time.perf_counter()
                with torch.no_grad():
                    outputs.append(_prediction(model(*f.args, **f.kwargs)))
                if config is not None:
                    self.forward_seconds = time.perf_counter() - t0
                if self.progress:
                    self.progress(1)
        finally:
            if config is not None:
                for m in self.models:
                    remove_vec_sparse(m)
        return outputs

    def error(self, config: VecAttnConfig, predictions=None) -> dict:
        """The one-step error of `config`: mean rel-L2 over the captured forwards, and by step."""
        preds = predictions if predictions is not None else self.predictions(config)
        errors = [rel_l2(p, f.dense) for p, f in zip(preds, self.forwards)]
        by_step = {}
        for e, f in zip(errors, self.forwards):
            by_step.setdefault(f.step, []).append(e)
        return {"error": sum(errors) / len(errors), "by_step": {s: sum(v) / len(v) for s, v in sorted(by_step.items())},
                "forwards": errors}

    def layer_errors(self, config: VecAttnConfig, layers=None) -> list[float]:
        """One layer sparse at a time, the others dense: the one-step error of each layer alone
        (exact; a replay of every capture per layer)."""
        count = self.layers
        out = []
        for layer in (range(count) if layers is None else layers):
            others = tuple(i for i in range(count) if i != layer)
            out.append(self.error(dataclasses.replace(config, dense_layers=others, layer_density=None))["error"])
        return out

    def local_errors(self, config: VecAttnConfig, densities) -> torch.Tensor:
        """fp64 `[layers, densities]`: each layer's attention output error (rel-L2 against its dense
        output, over all captures) at each top-k density, from one replay of the captures: every
        sparse layer runs dense attention, passes it on, and measures its sparse outputs beside it,
        so each layer sees the dense model's inputs (as when it alone is sparse)."""
        densities = tuple(float(d) for d in densities)
        sums = torch.zeros(self.layers, len(densities), 2, dtype=torch.float64)
        self.predictions(dataclasses.replace(config, layer_density=None),
                         processor_factory=lambda cfg: _LocalErrorProcessor(cfg, densities, sums))
        return (sums[..., 0] / sums[..., 1].clamp_min(1e-30)).sqrt()


class _LocalErrorProcessor(VecAttnProcessor):
    """Dense attention, and beside it the sparse outputs at each density: squared error and squared
    norm summed per (layer, density) into `sums` `[layers, densities, 2]`."""

    def __init__(self, config, densities, sums):
        super().__init__(config)
        self.densities, self.sums = densities, sums

    def _sparse(self, q, k, v, call: SparseCall):
        dense = self._dense(q, k, v)
        layer = call.state.layer if call.state is not None else None
        if layer is None:
            return dense
        reference = dense.double()
        norm = float(reference.square().sum())
        config = self.config
        try:
            for j, d in enumerate(self.densities):
                if d >= 1.0:
                    continue  # the layer kept dense: no error
                self.engine.config = dataclasses.replace(config, density=d, layer_density=None)
                out = super()._sparse(q, k, v, call).double()
                self.sums[layer, j, 0] += float((out - reference).square().sum())
                self.sums[layer, j, 1] += norm
        finally:
            self.engine.config = config
        return dense
