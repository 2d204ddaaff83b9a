# Copyright 2026 The vecdit authors. Apache-2.0.
"""VecAttnProcessor on tiny random-weight Wan (T2V, I2V) and HunyuanVideo models, built offline."""
import copy

import pytest
import torch

import vecdit
from vecdit import VecAttnConfig
from vecdit.config import PRESET_DENSITY
from vecdit.pipelines.tiny import tiny_hunyuan_transformer, tiny_wan_pipeline, tiny_wan_transformer
from vecdit.processors import VecAttnProcessor
from vecdit.schedule import get_step_hook

KEEP_ALL = VecAttnConfig(threshold=1e-30, dense_steps=0)  # every key kept: must equal dense
SPARSE = VecAttnConfig(threshold=0.9, dense_steps=0)


def wan_inputs(image=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    kw = dict(hidden_states=torch.randn(1, 4, 3, 16, 16, generator=g), timestep=torch.tensor([700.0]),
              encoder_hidden_states=torch.randn(1, 512 if image else 12, 16, generator=g), return_dict=False)
    if image:
        kw["encoder_hidden_states_image"] = torch.randn(1, 20, 16, generator=g)
    return kw


def hunyuan_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, 10, dtype=torch.long)
    mask[:, :7] = 1  # 7 valid text tokens, 3 padding
    return dict(hidden_states=torch.randn(1, 4, 3, 8, 8, generator=g), timestep=torch.tensor([700]),
                encoder_hidden_states=torch.randn(1, 10, 16, generator=g), encoder_attention_mask=mask,
                pooled_projections=torch.randn(1, 8, generator=g), guidance=torch.tensor([3500.0]), return_dict=False)


def run(model, inputs):
    with torch.no_grad():
        return model(**inputs)[0]


def rel(a, b):
    assert torch.isfinite(a).all()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("image", [False, True], ids=["t2v", "i2v"])
def test_wan_keep_all_matches_stock_and_sparse_differs(image):
    model = tiny_wan_transformer(image=image)
    inputs = wan_inputs(image)
    stock = run(model, inputs)
    model.set_attn_processor(VecAttnProcessor(KEEP_ALL))
    assert rel(run(model, inputs), stock) < 1e-4
    model.set_attn_processor(VecAttnProcessor(SPARSE))
    sparse = run(model, inputs)
    assert 1e-4 < rel(sparse, stock) < 1.0


def test_wan_fused_qkv_projections():
    model = tiny_wan_transformer()
    inputs = wan_inputs()
    stock = run(model, inputs)
    model.fuse_qkv_projections()
    model.set_attn_processor(VecAttnProcessor(KEEP_ALL))
    assert rel(run(model, inputs), stock) < 1e-4


def test_hunyuan_keep_all_matches_stock_and_sparse_differs():
    model = tiny_hunyuan_transformer()
    inputs = hunyuan_inputs()
    stock = run(model, inputs)
    # one instance on every module, the token refiner's included (it must get one tensor back)
    model.set_attn_processor(VecAttnProcessor(KEEP_ALL))
    assert rel(run(model, inputs), stock) < 1e-4
    model.set_attn_processor(VecAttnProcessor(SPARSE))
    assert 1e-4 < rel(run(model, inputs), stock) < 1.0


def test_hunyuan_padded_text_is_never_attended():
    model = tiny_hunyuan_transformer()
    inputs = hunyuan_inputs()
    model.set_attn_processor(VecAttnProcessor(SPARSE))
    base = run(model, inputs)
    changed = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"].clone())
    changed["encoder_hidden_states"][:, 7:] += 100.0  # only the padded tokens change
    assert torch.allclose(run(model, changed), base, atol=1e-5)


def test_bf16_tiny_models_run_the_triton_kernel(monkeypatch):
    if not (torch.cuda.is_available() or __import__("os").environ.get("TRITON_INTERPRET") == "1"):
        pytest.skip("needs a GPU or TRITON_INTERPRET=1")
    calls = []
    import vecdit.ops.attention.op as attention

    import vecdit.processors.hunyuan_video as hunyuan_video
    import vecdit.processors.wan as wan

    real = attention._attn_triton
    # the kernel runs in tile order: query rows read through the tiles' index
    monkeypatch.setattr(attention, "_attn_triton", lambda *a, **k: calls.append(a[9] is not None) or real(*a, **k))
    rope_calls = []  # fused RoPE (Wan) and fused qk-norm + RoPE (HunyuanVideo)
    for module in (wan, hunyuan_video):
        for name in ("rotary_pairs_", "rms_norm_rotary_"):
            real_op = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _op=real_op, **k: rope_calls.append(1) or _op(*a, **k))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for model, inputs in ((tiny_wan_transformer(), wan_inputs()), (tiny_hunyuan_transformer(), hunyuan_inputs())):
        model = model.to(device, torch.bfloat16)
        inputs = {k: (v.to(device, torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else
                      v.to(device) if torch.is_tensor(v) else v) for k, v in inputs.items()}
        stock = run(model, inputs).float()
        model.set_attn_processor(VecAttnProcessor(VecAttnConfig(threshold=1e-30, dense_steps=0, dense_fallback_density=1.0)))
        assert rel(run(model, inputs).float(), stock) < 2e-2
        n = len(calls)
        model.set_attn_processor(VecAttnProcessor(KEEP_ALL))  # default fallback: everything kept -> dense
        assert rel(run(model, inputs).float(), stock) < 2e-2 and len(calls) == n
    assert calls == [True] * (2 + 2)  # Wan: 2 self-attention layers; HunyuanVideo: 1 dual + 1 single
    assert len(rope_calls) == 2 * 2 * (2 + 2)  # q and k, in both runs of each layer


def test_enable_disable_restores_stock_exactly():
    model = tiny_wan_transformer()
    inputs = wan_inputs()
    before = dict(model.attn_processors)
    stock = run(model, inputs)
    vecdit.enable(model, SPARSE)
    assert vecdit.is_enabled(model)
    assert not torch.equal(run(model, inputs), stock)
    with pytest.raises(ValueError, match="already enabled"):
        vecdit.enable(model, SPARSE)
    vecdit.disable(model)
    assert all(model.attn_processors[k] is before[k] for k in before)
    assert torch.equal(run(model, inputs), stock)
    assert not vecdit.is_enabled(model)


def test_schedule_on_wan_pipeline_with_only_set_attn_processor():
    pipe = tiny_wan_pipeline()
    config = VecAttnConfig(threshold=0.5, dense_steps=2, reuse_interval=2)
    processor = VecAttnProcessor(config)
    pipe.transformer.set_attn_processor(processor)
    kw = dict(height=128, width=128, num_frames=9, max_sequence_length=16, output_type="np")
    pipe("a fox", num_inference_steps=6, guidance_scale=5.0, **kw)
    hook = get_step_hook(pipe.transformer)  # attached by the processor's first call
    assert hook is not None
    # reset after the generation (diffusers resets stateful hooks at the end of __call__)
    assert hook.t.history == [] and hook.selections() == {}


def _traced_generation(pipe, steps, guidance):
    hook = pipe.transformer._diffusers_hook.get_hook("vecdit_step")
    trace = []

    def on_step_end(p, i, t, kwargs):
        trace.append(list(hook.t.history))
        return {}

    kw = dict(height=128, width=128, num_frames=9, max_sequence_length=16, output_type="np")
    pipe("a fox", num_inference_steps=steps, guidance_scale=guidance, callback_on_step_end=on_step_end, **kw)
    return trace[-1], hook


@pytest.mark.parametrize("guidance", [5.0, 1.0], ids=["cfg", "no-cfg"])
def test_schedule_trace_dense_warmup_reuse_and_branches(guidance):
    pipe = tiny_wan_pipeline()
    vecdit.enable(pipe, VecAttnConfig(threshold=0.5, dense_steps=0.34, reuse_interval=2))  # 6 steps: 3 dense
    history, hook = _traced_generation(pipe, 6, guidance)
    branches = ["cond", "uncond"] if guidance > 1 else ["cond"]
    expected = []
    for step, phase in enumerate(["dense", "dense", "dense", "select", "reuse", "select"]):
        expected += [(b, step, phase) for b in branches]
    assert history == expected
    assert hook.t.history == []  # reset for the next generation
    history2, _ = _traced_generation(pipe, 6, guidance)
    assert history2 == expected


def test_cond_and_uncond_keep_separate_selections():
    pipe = tiny_wan_pipeline()
    vecdit.enable(pipe, VecAttnConfig(threshold=0.5, dense_steps=0, reuse_interval=3))
    seen = []

    def on_step_end(p, i, t, kwargs):
        hook = p.transformer._diffusers_hook.get_hook("vecdit_step")
        seen.append(sorted(hook.selections()))
        return {}

    pipe("a fox", num_inference_steps=2, guidance_scale=5.0, height=128, width=128, num_frames=9,
         max_sequence_length=16, output_type="np", callback_on_step_end=on_step_end)
    assert seen[0] == [("cond", 0), ("cond", 1), ("uncond", 0), ("uncond", 1)]


def test_reuse_budget_bounds_the_cache():
    model = tiny_wan_transformer()
    vecdit.enable(model, VecAttnConfig(threshold=0.5, dense_steps=0, reuse_interval=4, reuse_budget_gb=0.0))
    hook = model._diffusers_hook.get_hook("vecdit_step")
    run(model, wan_inputs())
    assert hook.selections() == {} and hook.cached_bytes() == 0
    model2 = tiny_wan_transformer()
    vecdit.enable(model2, VecAttnConfig(threshold=0.5, dense_steps=0, reuse_interval=4))
    hook2 = model2._diffusers_hook.get_hook("vecdit_step")
    run(model2, wan_inputs())
    assert len(hook2.selections()) == 2 and hook2.cached_bytes() > 0
    reused = run(model2, dict(wan_inputs(), timestep=torch.tensor([600.0])))  # step 1: reuse
    assert hook2.t.phase.value == "reuse" and torch.isfinite(reused).all()


def test_hunyuan_steps_counted_from_timesteps_and_stats():
    model = tiny_hunyuan_transformer()
    vecdit.enable(model, VecAttnConfig(threshold=0.5, dense_steps=1, collect_stats=True))
    for t in (900, 700, 500):
        with model.cache_context("cond"):
            run(model, dict(hunyuan_inputs(), timestep=torch.tensor([t])))
    hook = model._diffusers_hook.get_hook("vecdit_step")
    assert hook.t.history == [("cond", 0, "dense"), ("cond", 1, "select"), ("cond", 2, "select")]
    s = vecdit.stats(model)
    assert {(r["step"], r["layer"]) for r in s["records"]} == {(1, 0), (1, 1), (2, 0), (2, 1)}
    assert all(0 < r["density"] <= 1 and len(r["head_density"]) == 2 for r in s["records"])
    assert all(r["selection_ms"] >= 0 and r["attention_ms"] >= 0 for r in s["records"])


def test_dense_layers_and_threshold_table():
    model = tiny_wan_transformer()
    inputs = wan_inputs()
    stock = run(model, inputs)
    model.set_attn_processor(VecAttnProcessor(VecAttnConfig(threshold=0.9, dense_steps=0, dense_layers=(0, 1))))
    assert rel(run(model, inputs), stock) < 1e-6
    table = torch.tensor([[1e-30, 1e-30], [0.9, 0.9]])  # layer 0 keeps everything, layer 1 is sparse
    model.set_attn_processor(VecAttnProcessor(VecAttnConfig(threshold=table, dense_steps=0)))
    assert rel(run(model, inputs), stock) > 1e-4
    # a table's rows reach their layers: a uniform table is the scalar, exactly
    model.set_attn_processor(VecAttnProcessor(VecAttnConfig(threshold=0.9, dense_steps=0)))
    scalar = run(model, inputs)
    model.set_attn_processor(VecAttnProcessor(VecAttnConfig(threshold=torch.full((2, 2), 0.9), dense_steps=0)))
    assert torch.equal(run(model, inputs), scalar)
    model.set_attn_processor(VecAttnProcessor(VecAttnConfig(threshold=torch.full((1, 2), 0.9), dense_steps=0)))
    with pytest.raises(ValueError, match="table has 1 layers but the model has 2"):
        run(model, inputs)


def test_config_validation_presets_and_round_trip():
    for bad in (dict(threshold=0.0), dict(threshold=2.0), dict(max_density=0.0), dict(dense_steps=1.5),
                dict(dense_steps=-1), dict(reuse_interval=0), dict(selection_mode="fast"), dict(text_handling="x")):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=field):
            VecAttnConfig(**bad)
    for bad in (dict(dense_last_steps=1.5), dict(dense_last_steps=True)):
        with pytest.raises(ValueError, match="dense_last_steps"):
            VecAttnConfig(**bad)
    from vecdit.config import PRESETS
    from vecdit.pipelines.models import PRESETS as MODELS

    assert set(MODELS) - {"tiny", "tiny-random"} == set(PRESETS)  # every CLI model has a preset
    for name in PRESETS:
        cfg = VecAttnConfig.for_model(name, reuse_interval=2)
        assert cfg.reuse_interval == 2 and VecAttnConfig.from_dict(copy.deepcopy(cfg.to_dict())) == cfg
        assert cfg.rule == "topk" and cfg.budget() == PRESET_DENSITY and cfg.compensate is True
    assert VecAttnConfig.for_model("wan2.2-t2v-a14b") is not PRESETS["wan2.2-t2v-a14b"]
    with pytest.raises(ValueError, match="wan2.1-t2v-1.3b"):
        VecAttnConfig.for_model("wan3")
    assert VecAttnConfig().num_dense_steps(50) == 3  # the method's first 6% of 50 steps
    assert VecAttnConfig(dense_last_steps=0.1).num_dense_last_steps(50) == 5


def test_torch_compile_of_the_whole_transformer_matches_eager():
    # users compile the transformer; vecdit's host-side decisions (the step, the dense fallback on
    # the selected count) become graph breaks, never errors or different results
    model = tiny_wan_transformer().to(torch.bfloat16)  # bf16: the Triton ops (custom ops) run
    inputs = {k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v
              for k, v in wan_inputs().items()}
    model.set_attn_processor(VecAttnProcessor(SPARSE))
    eager = run(model, inputs)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        out = compiled(**inputs)[0]
    assert torch.equal(out, eager)
    torch._dynamo.reset()


@pytest.mark.parametrize("family", ["wan-t2v", "wan-i2v", "hunyuan"])
def test_default_config_runs_tiles_of_the_model_grid_at_its_density(family, monkeypatch):
    # out of the box: 4x4x4 query tiles on the post-patchify grid the transformer's forward sees, top-k rule
    import vecdit.ops.dispatch as dispatch

    model, inputs = ((tiny_hunyuan_transformer(), hunyuan_inputs()) if family == "hunyuan"
                     else (tiny_wan_transformer(image=family == "wan-i2v"), wan_inputs(image=family == "wan-i2v")))
    stock = run(model, inputs)
    seen = []
    real = dispatch.vector_selection_reference
    monkeypatch.setattr(dispatch, "vector_selection_reference", lambda *a, **k: seen.append(k["query_tiles"]) or real(*a, **k))
    vecdit.enable(model, VecAttnConfig(density=1.0, dense_steps=0, dense_fallback_density=1.0))
    assert rel(run(model, inputs), stock) < 1e-4  # every key kept through the tile path: the stock output
    vecdit.disable(model)
    vecdit.enable(model, VecAttnConfig(dense_steps=0, collect_stats=True))
    sparse_out = run(model, inputs)
    hook = model._diffusers_hook.get_hook("vecdit_step")
    assert hook.t.grid == (3, 8, 8)  # Wan: 3 x 16 x 16 latent, patch (1, 2, 2); HunyuanVideo: 3 x 8 x 8, patch 1
    assert all(t is not None and t.grid == (3, 8, 8) for t in seen) and len(seen) == 2 * 2
    records = vecdit.stats(model)["records"]
    assert all(r["density"] == pytest.approx(0.25, abs=0.01) for r in records) and records
    assert 1e-4 < rel(sparse_out, stock) < 1.0
    vecdit.disable(model)
    vecdit.enable(model, VecAttnConfig(query_tiles="raster", dense_steps=0))
    raster = run(model, inputs)
    assert not torch.equal(raster, sparse_out)  # the paper's blocks select other keys
    vecdit.disable(model)
    assert torch.equal(run(model, inputs), stock)


def test_config_rules_and_tiles_validation():
    assert VecAttnConfig().rule == "topk" and VecAttnConfig().budget() == 0.25
    assert VecAttnConfig(threshold=0.05).rule == "minp" and VecAttnConfig(threshold=0.05).budget() is None
    assert VecAttnConfig(threshold=0.05, max_density=0.2).budget() == 0.2  # min-p inside a budget
    for bad, field in ((dict(query_tiles=(4, 4, 2)), "query_tiles"), (dict(query_tiles="tiles"), "query_tiles"),
                       (dict(threshold=0.05, density=0.1), "density"), (dict(max_density=0.2), "max_density"),
                       (dict(density=0.0), "density")):
        with pytest.raises(ValueError, match=field):
            VecAttnConfig(**bad)
    cfg = VecAttnConfig(query_tiles=[4, 4, 8], density=0.1)
    assert VecAttnConfig.from_dict(copy.deepcopy(cfg.to_dict())) == cfg and cfg.query_tiles == (4, 4, 8)
