# Copyright 2026 The vecdit authors. Apache-2.0.
"""One verb on, one verb off: `vecdit.enable(pipe, config)` / `vecdit.disable(pipe)`, and `vecdit.stats`.

`disable` and `stats` also serve the one-liner `pipe.transformer.set_attn_processor(VecAttnProcessor())`:
its step hook is attached on the first call, and `disable` puts back diffusers' default processors.
"""
from __future__ import annotations

from collections import defaultdict

from .config import VecAttnConfig
from .schedule import VEC_STEP_HOOK, Timer, apply_step_hook, get_step_hook
from .utils import logger, transformers_of

_SAVED = "_vecdit_saved_processors"


def _check_not_enabled(transformer) -> None:
    if getattr(transformer, _SAVED, None) is not None:
        raise ValueError(f"vecdit is already enabled on {type(transformer).__name__}; call vecdit.disable first")
    if _hand_installed(transformer):
        raise ValueError(f"vecdit processors are already set on {type(transformer).__name__} (set_attn_processor); "
                         "call vecdit.disable first")


def _vecdit_processor(processor) -> bool:
    from vecdit.processors import SparseAttention

    return isinstance(processor, SparseAttention)


def _hand_installed(transformer) -> list[str]:
    """Attention modules whose vecdit processor was set with `set_attn_processor`, not by `enable`."""
    if getattr(transformer, _SAVED, None) is not None:
        return []
    return [name for name, p in transformer.attn_processors.items() if _vecdit_processor(p)]


def default_processors(transformer) -> dict:
    """{name: processor}: the processors diffusers gives a freshly built `transformer` (a skeleton
    of the same class and config on the meta device: no memory, no weights), so every family's
    own defaults (`WanAttnProcessor`, `HunyuanVideoAttnProcessor2_0` and the refiner's
    `AttnProcessor2_0`, ...) without a table here. Where that cannot be built: each module's
    `_default_processor_cls`, else diffusers' `AttnProcessor2_0`."""
    import torch

    try:
        with torch.device("meta"):
            fresh = type(transformer).from_config(transformer.config)
        defaults = fresh.attn_processors
        if set(defaults) == set(transformer.attn_processors):
            return dict(defaults)
    except Exception as e:  # noqa: BLE001 - a model class that cannot be built on meta: the fallback below
        logger.info("vecdit: default processors of %s from its modules (%s)", type(transformer).__name__, e)
    from diffusers.models.attention_processor import AttnProcessor2_0

    modules = dict(transformer.named_modules())
    out = {}
    for name in transformer.attn_processors:
        cls = getattr(modules[name[: -len(".processor")]], "_default_processor_cls", None)
        out[name] = cls() if cls is not None else AttnProcessor2_0()
    return out


def _remove_step_hook(transformer) -> None:
    registry = getattr(transformer, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(VEC_STEP_HOOK) is not None:
        registry.remove_hook(VEC_STEP_HOOK, recurse=False)


def _remove_hand_installed(transformer) -> bool:
    """Undo `set_attn_processor(VecAttnProcessor())`: the step hook removed and, on each module that
    has a vecdit processor, diffusers' default processor (with the attention backend and parallel
    config the vecdit one carried); other processors stay."""
    names = _hand_installed(transformer)
    if not names:
        return False
    _remove_step_hook(transformer)
    current = transformer.attn_processors
    defaults = default_processors(transformer)
    processors = dict(current)
    for name in names:
        ours, stock = current[name], defaults[name]
        for attr in ("_attention_backend", "_parallel_config"):
            if getattr(ours, attr, None) is not None and hasattr(stock, attr):
                setattr(stock, attr, getattr(ours, attr))
        processors[name] = stock
    transformer.set_attn_processor(processors)
    logger.info("vecdit removed from %s: diffusers' default processors on %d attention modules",
                type(transformer).__name__, len(names))
    return True


def apply_vec_sparse(transformer, config: VecAttnConfig | None = None, scheduler=None) -> None:
    """Install `VecAttnProcessor` and the step hook on one transformer (reversible, see `remove_vec_sparse`)."""
    from vecdit.processors import VecAttnProcessor
    from vecdit.processors.families import require_family

    _check_not_enabled(transformer)
    if getattr(transformer, "_compiled_call_impl", None) is not None or type(transformer).__name__ == "OptimizedModule":
        raise ValueError("enable vecdit before torch.compile: the compiled graph would keep the old processors")
    family = require_family(transformer)
    config = config if config is not None else VecAttnConfig()
    saved = dict(transformer.attn_processors)
    processor = VecAttnProcessor(config)
    first = next(iter(saved.values()))
    # keep what diffusers set on the processors it replaces (attention backend, context parallelism)
    processor._attention_backend = getattr(first, "_attention_backend", None)
    processor._parallel_config = getattr(first, "_parallel_config", None)
    apply_step_hook(transformer, config, family, scheduler)
    transformer.set_attn_processor(processor)
    setattr(transformer, _SAVED, saved)
    logger.info("vecdit enabled on %s (%d attention modules)", type(transformer).__name__, len(saved))


def remove_vec_sparse(transformer) -> bool:
    saved = getattr(transformer, _SAVED, None)
    if saved is None:
        return False
    _remove_step_hook(transformer)
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
    """Restore the processors that were there before `enable`, exactly (the same objects). On a
    transformer whose vecdit processors were set by hand (`set_attn_processor(VecAttnProcessor())`),
    remove the step hook and put diffusers' default processors back on those modules."""
    if not any([remove_vec_sparse(m) or _remove_hand_installed(m) for m in transformers_of(pipe)]):
        logger.warning("vecdit.disable: vecdit is not enabled on %s", type(pipe).__name__)


def is_enabled(pipe) -> bool:
    """vecdit is on (by `enable`, or by `set_attn_processor` with a vecdit processor)."""
    return any(getattr(m, _SAVED, None) is not None or _hand_installed(m) for m in transformers_of(pipe))


def stats(pipe) -> dict:
    """Density and time per step, layer and head of the running generation, or of the last one.

    Needs `VecAttnConfig(collect_stats=True)`; reads the recorded device values (one sync here,
    none during generation). Returns
    `{"records": [...], "by_step": {step: mean density}, "by_layer": [...], "history": [...]}`:
    each record and each `by_layer` row names its `model` (0, or 1 for Wan2.2's `transformer_2`),
    `layer`, the `target` density (the top-k rule's; None under min-p) and the achieved one.
    """
    records, history, hooks = [], [], []
    for index, model in enumerate(transformers_of(pipe)):
        hook = get_step_hook(model)
        if hook is None:
            continue
        hooks.append(hook)
        hook.record_stats()  # a forward that has not been recorded yet (a one-liner's first)
        topk = hook.config.rule == "topk"
        tracker = hook.t if hook.t.history else hook.last
        history += tracker.history
        for r in tracker.stats:
            events = r.events or (None,) * 3  # compiled blocks record no times
            records.append({
                "model": index, "step": r.step, "branch": r.branch, "layer": r.layer, "phase": r.phase,
                "target": hook.config.density_of(r.layer) if topk and r.layer is not None else None, "head_density": r.head_density.tolist(), "density": float(r.head_density.mean()),
                "selection_ms": Timer.elapsed_ms(*events[:2]), "attention_ms": Timer.elapsed_ms(*events[1:]),
            })
    if not records:
        _explain_no_stats(pipe, hooks)
    by_step, by_layer = defaultdict(list), defaultdict(list)
    for r in records:
        by_step[r["step"]].append(r["density"])
        by_layer[(r["model"], r["layer"], r["target"])].append(r["density"])
    layers = [{"model": m, "layer": layer, "target": target, "achieved": sum(v) / len(v)}
              for (m, layer, target), v in sorted(by_layer.items(), key=lambda kv: kv[0][:2])]
    return {"records": records, "by_step": {s: sum(v) / len(v) for s, v in sorted(by_step.items())},
            "by_layer": layers, "history": history}


def _explain_no_stats(pipe, hooks) -> None:
    """One warning line on why `stats` is empty."""
    name = type(pipe).__name__
    if hooks and not any(h.config.collect_stats for h in hooks):
        logger.warning("vecdit.stats: nothing recorded on %s: `collect_stats` is off; install vecdit with "
                       "VecAttnConfig(collect_stats=True)", name)
    elif not hooks and is_enabled(pipe):
        logger.warning("vecdit.stats: nothing recorded on %s yet: vecdit has not run (generate first)", name)
    elif not hooks:
        logger.warning("vecdit.stats: vecdit is not on %s: vecdit.enable(pipe, config) or "
                       "set_attn_processor(VecAttnProcessor(config)) first", name)
