# Copyright 2026 The vecdit authors. Apache-2.0.
"""vecdit on every supported diffusers pipeline class, built tiny and offline (random weights):
Wan2.1 T2V/I2V, Wan2.2 A14B T2V/I2V (two experts), Wan2.2 TI2V-5B (T2V and I2V), HunyuanVideo T2V
and I2V (latent-concat and token-replace), HunyuanVideo-1.5 T2V/I2V.

Per pipeline: everything kept equals the stock processors; sparse output is finite and different;
the step trace (dense warm-up, reuse, CFG branches, the Wan2.2 expert switch, reset between calls)
is right; the achieved density meets the target per layer.
"""
import numpy as np
import PIL.Image
import pytest
import torch

import vecdit
from vecdit import VecAttnConfig
from vecdit.pipelines.tiny import (
    tiny_hunyuan15_pipeline,
    tiny_hunyuan_pipeline,
    tiny_hunyuan_prompt_embeds,
    tiny_wan_i2v_pipeline,
    tiny_wan_pipeline,
)
from vecdit.schedule import get_step_hook

IMAGE = PIL.Image.fromarray((np.random.default_rng(0).random((128, 128, 3)) * 255).astype("uint8"))
WAN = dict(prompt="a fox", height=128, width=128, num_frames=9, max_sequence_length=16, guidance_scale=5.0)
HUNYUAN = dict(height=64, width=64, num_frames=9, **tiny_hunyuan_prompt_embeds())
HUNYUAN_I2V = dict(HUNYUAN, image=IMAGE.resize((64, 64)))

# name -> (builder, call kwargs, CFG branch names the pipeline's cache contexts use)
PIPELINES = {
    "wan2.1-t2v": (lambda: tiny_wan_pipeline(), WAN, ["cond", "uncond"]),
    "wan2.1-i2v": (lambda: tiny_wan_i2v_pipeline(), dict(WAN, image=IMAGE), ["cond", "uncond"]),
    "wan2.2-t2v-a14b": (lambda: tiny_wan_pipeline(variant="wan2.2-a14b"), WAN, ["cond", "uncond"]),
    "wan2.2-i2v-a14b": (lambda: tiny_wan_i2v_pipeline(variant="wan2.2-a14b"), dict(WAN, image=IMAGE), ["cond", "uncond"]),
    # 16x VAE: 256 pixels make an 8 x 8 token grid
    "wan2.2-ti2v-5b": (lambda: tiny_wan_pipeline(variant="wan2.2-ti2v-5b"), dict(WAN, height=256, width=256),
                       ["cond", "uncond"]),
    "wan2.2-ti2v-5b-i2v": (lambda: tiny_wan_i2v_pipeline(variant="wan2.2-ti2v-5b"),
                           dict(WAN, height=256, width=256, image=IMAGE.resize((256, 256))), ["cond", "uncond"]),
    "hunyuanvideo-t2v": (lambda: tiny_hunyuan_pipeline(), HUNYUAN, ["cond"]),
    # no cache context: passes of a step are told apart by their order
    "hunyuanvideo-i2v": (lambda: tiny_hunyuan_pipeline(image_condition_type="latent_concat"), HUNYUAN_I2V, ["default"]),
    "hunyuanvideo-i2v-true-cfg": (lambda: tiny_hunyuan_pipeline(image_condition_type="latent_concat"), dict(
        HUNYUAN_I2V, true_cfg_scale=4.0, guidance_scale=1.0,
        **{f"negative_{k}": v for k, v in tiny_hunyuan_prompt_embeds(seed=5).items()}), ["default", "default-2"]),
    "hunyuanvideo-i2v-token-replace": (lambda: tiny_hunyuan_pipeline(image_condition_type="token_replace"),
                                       HUNYUAN_I2V, ["default"]),
    "hunyuanvideo-1.5-t2v": (lambda: tiny_hunyuan15_pipeline(), dict(prompt="a fox", height=128, width=128, num_frames=9),
                             ["pred_cond", "pred_uncond"]),
    "hunyuanvideo-1.5-i2v": (lambda: tiny_hunyuan15_pipeline(image=True), dict(prompt="a fox", image=IMAGE, num_frames=9),
                             ["pred_cond", "pred_uncond"]),
}


def generate(pipe, kwargs, steps=3):
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        out = pipe(**kwargs, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="latent")
    return out.frames


def rel(a, b):
    assert torch.isfinite(a).all()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", list(PIPELINES))
def test_keep_all_equals_stock_and_sparse_differs(name):
    build, kwargs, _ = PIPELINES[name]
    pipe = build()
    stock = generate(pipe, kwargs)
    vecdit.enable(pipe, VecAttnConfig(density=1.0, dense_steps=0, dense_fallback_density=1.0))
    assert rel(generate(pipe, kwargs), stock) < 1e-4
    vecdit.disable(pipe)
    vecdit.enable(pipe, VecAttnConfig(density=0.25, dense_steps=0))
    sparse = generate(pipe, kwargs)
    assert 1e-4 < rel(sparse, stock) < 1.0
    vecdit.disable(pipe)
    assert torch.equal(generate(pipe, kwargs), stock)  # disable restores stock exactly


def expected_trace(owners, dense_steps, reuse_interval, branches):
    """(branch, step, phase) per model: a model selects on its first sparse step (nothing to
    reuse yet, e.g. Wan2.2's low-noise expert after the switch), then every `reuse_interval`."""
    traces, selected = {}, set()
    for step, model in enumerate(owners):
        sparse = step - dense_steps
        if sparse < 0:
            phase = "dense"
        elif sparse % reuse_interval == 0 or model not in selected:
            phase = "select"
        else:
            phase = "reuse"
        if phase == "select":
            selected.add(model)
        traces.setdefault(model, []).extend((b, step, phase) for b in branches)
    return traces


def expert_of_each_step(pipe) -> list[int]:
    boundary = pipe.config.get("boundary_ratio")
    if getattr(pipe, "transformer_2", None) is None or boundary is None:
        return [0] * len(pipe.scheduler.timesteps)
    cut = boundary * pipe.scheduler.config.num_train_timesteps
    return [0 if t >= cut else 1 for t in pipe.scheduler.timesteps]


@pytest.mark.parametrize("name", list(PIPELINES))
def test_step_trace_warmup_reuse_branches_expert_switch_and_reset(name):
    build, kwargs, branches = PIPELINES[name]
    pipe = build()
    vecdit.enable(pipe, VecAttnConfig(density=0.25, dense_steps=1, reuse_interval=2))
    models = [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]
    hooks = [get_step_hook(m) for m in models]
    left_behind = []
    if len(models) == 2:  # at every low-noise forward the high-noise expert holds no selection
        models[1].register_forward_hook(lambda *a: left_behind.append(len(hooks[0].selections())))
    traces = []
    for _ in range(2):  # the second call must start from a reset schedule
        generate(pipe, kwargs, steps=5)
        assert all(h.t.history == [] and h.selections() == {} for h in hooks)
        traces.append({i: h.last.history for i, h in enumerate(hooks) if h.last.history})
    expected = expected_trace(expert_of_each_step(pipe), 1, 2, branches)
    assert traces[0] == expected and traces[1] == expected
    if len(models) == 2:
        assert set(expected) == {0, 1}, "the tiny schedule must reach both experts"
        assert left_behind and set(left_behind) == {0}


@pytest.mark.parametrize("name", ["wan2.1-t2v", "wan2.2-t2v-a14b", "hunyuanvideo-t2v", "hunyuanvideo-1.5-t2v"])
@pytest.mark.parametrize("target", [0.1, 0.25, 0.5])
def test_achieved_density_per_layer_meets_the_target(name, target):
    """The top-k rule keeps `density` of the keys per query tile. Host-side: the budget is a Python
    number, the buffers are sized from it and `vecdit.stats` reads the counts once, after the call."""
    build, kwargs, _ = PIPELINES[name]
    pipe = build()
    vecdit.enable(pipe, VecAttnConfig(density=target, dense_steps=0, collect_stats=True))
    generate(pipe, kwargs, steps=2)
    layers = vecdit.stats(pipe)["by_layer"]
    assert len(layers) >= 2
    for row in layers:
        assert row["target"] == target
        assert abs(row["achieved"] - target) <= 0.02, row


def test_dense_last_steps_and_a_new_processor_on_a_hooked_model():
    pipe = tiny_wan_pipeline()
    vecdit.enable(pipe, VecAttnConfig(density=0.25, dense_steps=1, dense_last_steps=2))
    generate(pipe, dict(WAN, guidance_scale=1.0), steps=5)
    phases = [p for _, _, p in get_step_hook(pipe.transformer).last.history]
    assert phases == ["dense", "select", "select", "dense", "dense"]
    vecdit.disable(pipe)
    # set_attn_processor onto a model whose hook was left by another processor: the new config rules
    from vecdit.processors import VecAttnProcessor

    pipe.transformer.set_attn_processor(VecAttnProcessor(VecAttnConfig(density=0.25, dense_steps=0)))
    generate(pipe, dict(WAN, guidance_scale=1.0), steps=2)
    first = VecAttnProcessor(VecAttnConfig(density=0.25, dense_steps=5))
    pipe.transformer.set_attn_processor(first)
    generate(pipe, dict(WAN, guidance_scale=1.0), steps=2)
    hook = get_step_hook(pipe.transformer)
    assert hook.config is first.config and [p for _, _, p in hook.last.history] == ["dense", "dense"]


def _spy_sparse_calls(monkeypatch):
    """(step, branch, layer, phase, reused) of every sparse attention call."""
    import vecdit.processors._sparse as sparse

    calls, real = [], sparse.SparseAttention._sparse

    def spy(self, q, k, v, call):
        hook = call.hook
        reused = call.phase.value == "reuse" and hook.t.branch in call.state.reuse
        calls.append((hook.t.step, hook.t.branch, call.state.layer, call.phase.value, reused))
        return real(self, q, k, v, call)

    monkeypatch.setattr(sparse.SparseAttention, "_sparse", spy)
    return calls


@pytest.mark.parametrize("order", ["vecdit-first", "cache-first"])
@pytest.mark.parametrize("cache", ["first-block", "mag", "taylorseer"])
def test_diffusers_caches_compose_with_the_step_schedule(cache, order, monkeypatch):
    """Block caches skip attention calls, never the transformer's forward: the step hook counts
    steps at the root, so the schedule is the same whatever is skipped and in either enabling order."""
    from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig

    calls = _spy_sparse_calls(monkeypatch)
    pipe = tiny_wan_pipeline()
    config = {"first-block": FirstBlockCacheConfig(threshold=1e9),  # every block after the first skipped
              "mag": MagCacheConfig(threshold=1e9, num_inference_steps=6, mag_ratios=[1.0] * 6),
              "taylorseer": TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1)}[cache]
    enable = [lambda: vecdit.enable(pipe, VecAttnConfig(density=0.25, dense_steps=1, reuse_interval=2)),
              lambda: pipe.transformer.enable_cache(config)]
    for step in (enable if order == "vecdit-first" else enable[::-1]):
        step()
    out = generate(pipe, WAN, steps=6)
    assert torch.isfinite(out).all()
    history = get_step_hook(pipe.transformer).last.history
    assert [s for _, s, _ in history] == [s for s in range(6) for _ in range(2)]  # 6 steps x cond/uncond
    assert [p for _, _, p in history][:2] == ["dense", "dense"]
    if cache == "first-block":  # only the first block's attention runs after the warm-up
        assert {layer for _, _, layer, _, _ in calls} == {0}
    # a reuse step reuses only a selection made at the branch's last selecting step
    for step, branch, layer, phase, reused in calls:
        if reused:
            assert any(c[:3] == (step - 1, branch, layer) and c[3] == "select" for c in calls)


def test_attention_skipped_at_a_selecting_step_selects_again_at_reuse(monkeypatch):
    """Pyramid Attention Broadcast computes attention every other call: here exactly at the reuse
    steps (2, 4), never at the selecting ones (1, 3, 5). A reuse step must not take the selection
    of two steps before: it selects afresh."""
    from diffusers import PyramidAttentionBroadcastConfig

    calls = _spy_sparse_calls(monkeypatch)
    pipe = tiny_wan_pipeline()
    vecdit.enable(pipe, VecAttnConfig(density=0.25, dense_steps=1, reuse_interval=2))
    pipe.transformer.enable_cache(PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 2000),
        current_timestep_callback=lambda: pipe.current_timestep))
    out = generate(pipe, dict(WAN, guidance_scale=1.0), steps=6)
    assert torch.isfinite(out).all()
    assert sorted({step for step, *_ in calls}) == [2, 4]  # attention ran at the reuse steps only
    assert all(not reused for *_, reused in calls)
