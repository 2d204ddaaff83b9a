# Copyright 2026 The vecdit authors. Apache-2.0.
"""One verb on, one verb off: `vecdit.enable(pipe, config)` / `vecdit.disable(pipe)`, and `vecdit.stats`."""
from __future__ import annotations

from collections import defaultdict

from .config import VecAttnConfig
from .schedule import VEC_STEP_HOOK, Timer, apply_step_hook, get_step_hook
from .utils import logger, transformers_of

_SAVED = "_vecdit_saved_processors"


def _check_not_enabled(transformer) -> None:
    if getattr(transformer, _SAVED, None) is not None:
        raise ValueError(f"vecdit is already enabled on {type(transformer).__name__}; call vecdit.disable first")


def apply_vec_sparse(transformer, config: VecAttnConfig | None = None, scheduler=None) -> None:
    """Install `VecAttnProcessor` and the step hook on one transformer (reversible, see `remove_vec_sparse`)."""
    from vecdit.processors import VecAttnProcessor

    _check_not_enabled(transformer)
    if getattr(transformer, "_compiled_call_impl", None) is not None or type(transformer).__name__ == "OptimizedModule":
        raise ValueError("enable vecdit before torch.compile: the compiled graph would keep the old processors")
    config = config if config is not None else VecAttnConfig()
    saved = dict(transformer.attn_processors)
    processor = VecAttnProcessor(config)
    first = next(iter(saved.values()))
    # keep what diffusers set on the processors it replaces (attention backend, context parallelism)
    processor._attention_backend = getattr(first, "_attention_backend", None)
    processor._parallel_config = getattr(first, "_parallel_config", None)
    processor.step_hook = apply_step_hook(transformer, config, scheduler, processor.forward_probe)
    transformer.set_attn_processor(processor)
    setattr(transformer, _SAVED, saved)
    logger.info("vecdit enabled on %s (%d attention modules)", type(transformer).__name__, len(saved))


def remove_vec_sparse(transformer) -> bool:
    saved = getattr(transformer, _SAVED, None)
    if saved is None:
        return False
    registry = getattr(transformer, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(VEC_STEP_HOOK) is not None:
        registry.remove_hook(VEC_STEP_HOOK, recurse=False)
    transformer.set_attn_processor(dict(saved))  # set_attn_processor pops from the dict it gets
    setattr(transformer, _SAVED, None)
    return True


def enable(pipe, config: VecAttnConfig | None = None, fp8: bool = False) -> None:
    """Switch every transformer of `pipe` to vector-sparse attention; with `fp8=True` also run
    the Linear layers of its blocks in float8 (`vecdit.fp8.Float8Linear`; Hopper or Ada; one-way, see
    `vecdit.fp8`).

    >>> vecdit.enable(pipe, vecdit.VecAttnConfig.for_model("wan2.1-t2v-1.3b"))  # doctest: +SKIP
    """
    scheduler = getattr(pipe, "scheduler", None)
    models = transformers_of(pipe)
    if fp8:
        from .fp8 import quantize_fp8

        for model in models:  # checked before anything changes: a refused fp8 leaves the model as it was
            _check_not_enabled(model)
        quantize_fp8(pipe)
    for model in models:
        apply_vec_sparse(model, config, scheduler)
    hooks = [get_step_hook(m) for m in models]
    for hook in hooks:  # Wan2.2 A14B: one schedule over both experts, selections dropped at the switch
        hook.experts = hooks


def disable(pipe) -> None:
    """Restore the processors that were there before `enable`, exactly (the same objects)."""
    if not any([remove_vec_sparse(m) for m in transformers_of(pipe)]):
        logger.warning("vecdit.disable: vecdit is not enabled on %s", type(pipe).__name__)


def is_enabled(pipe) -> bool:
    return any(getattr(m, _SAVED, None) is not None for m in transformers_of(pipe))


def stats(pipe) -> dict:
    """Density and time per step, layer and head of the running generation, or of the last one.

    Needs `VecAttnConfig(collect_stats=True)`; reads the recorded device values (one sync here,
    none during generation). Returns
    `{"records": [...], "by_step": {step: mean density}, "by_layer": [...], "history": [...]}`:
    each record and each `by_layer` row names its `model` (0, or 1 for Wan2.2's `transformer_2`),
    `layer`, the `target` density (the top-k rule's; None under min-p) and the achieved one.
    """
    records, history = [], []
    for index, model in enumerate(transformers_of(pipe)):
        hook = get_step_hook(model)
        if hook is None:
            continue
        target = hook.config.budget() if hook.config.rule == "topk" else None
        tracker = hook.t if hook.t.history else hook.last
        history += tracker.history
        for r in tracker.stats:
            events = r.events or (None,) * 3  # compiled blocks record no times
            records.append({
                "model": index, "step": r.step, "branch": r.branch, "layer": r.layer, "phase": r.phase,
                "target": target, "head_density": r.head_density.tolist(), "density": float(r.head_density.mean()),
                "selection_ms": Timer.elapsed_ms(*events[:2]), "attention_ms": Timer.elapsed_ms(*events[1:]),
            })
    by_step, by_layer = defaultdict(list), defaultdict(list)
    for r in records:
        by_step[r["step"]].append(r["density"])
        by_layer[(r["model"], r["layer"], r["target"])].append(r["density"])
    layers = [{"model": m, "layer": layer, "target": target, "achieved": sum(v) / len(v)}
              for (m, layer, target), v in sorted(by_layer.items(), key=lambda kv: kv[0][:2])]
    return {"records": records, "by_step": {s: sum(v) / len(v) for s, v in sorted(by_step.items())},
            "by_layer": layers, "history": history}
