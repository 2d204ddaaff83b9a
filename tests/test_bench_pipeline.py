# Copyright 2026 The vecdit authors. Apache-2.0.
"""The pipeline benchmark on the CPU: every variant runs isolated (a sage variant leaves no backend
behind), any variant list works, and the 2026 models (Wan2.2 A14B and TI2V-5B, HunyuanVideo-1.5)
build at tiny size and at their full configs (on the meta device)."""
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from vecdit.bench import pipeline as bench
from vecdit.bench import sage


@pytest.fixture
def stub_sage(monkeypatch):
    """diffusers' "sage" backend on the CPU through vecdit.bench.sage, with a stand-in `sageattn`
    whose output is visibly not plain attention (0.5x), so a leaked backend shows in the output."""
    from diffusers.models import attention_dispatch as dispatch

    registry, name = dispatch._AttentionBackendRegistry, dispatch.AttentionBackendName.SAGE
    for table in (registry._backends, registry._supported_arg_names, registry._constraints):
        monkeypatch.setitem(table, name, table[name])  # restored after the test
    monkeypatch.setattr(registry, "_active_backend", registry._active_backend)
    monkeypatch.setattr(dispatch, "_CAN_USE_SAGE_ATTN", True)
    monkeypatch.setattr(dispatch, "_check_device_cuda", lambda **kwargs: None)
    monkeypatch.setattr(sage, "available", lambda: True)
    calls = []

    def sageattn(q, k, v, tensor_layout, is_causal, sm_scale):
        calls.append(k.shape[1])
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=sm_scale)
        return 0.5 * out.transpose(1, 2)

    module = types.ModuleType("sageattention")
    module.sageattn = sageattn
    monkeypatch.setitem(sys.modules, "sageattention", module)
    return calls


def _run(name, variants, steps=4):
    return bench.run_pipeline(name, variants, steps=steps, repeats=1, device="cpu")


def test_a_sage_variant_leaves_no_backend_behind(stub_sage):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    before = _AttentionBackendRegistry._active_backend
    alone = _run("tiny", ["stock"])["runs"]["stock"]
    result = _run("tiny", ["stock-sage", "vecdit-sage", "stock", "vecdit"])
    runs = result["runs"]
    assert list(runs) == ["stock-sage", "vecdit-sage", "stock", "vecdit"]
    assert stub_sage  # the sage variants ran through it
    # stock after the sage variants computes exactly what stock alone does; the sage run did not
    assert runs["stock"]["output_fingerprint"] == alone["output_fingerprint"]
    assert runs["stock-sage"]["output_fingerprint"] != alone["output_fingerprint"]
    # where each variant's processors dispatched, recorded in the results
    n = sum(alone["attention_backend"]["processors"].values())
    assert alone["attention_backend"] == {"active": "native", "processors": {"native": n}}
    assert runs["stock"]["attention_backend"] == alone["attention_backend"]
    assert runs["vecdit"]["attention_backend"] == alone["attention_backend"]
    assert runs["stock-sage"]["attention_backend"]["processors"] == {"sage": n}
    assert runs["vecdit-sage"]["attention_backend"]["processors"] == {"sage": n}
    assert runs["stock-sage"]["sage_sdpa_fallbacks"] == 0
    assert _AttentionBackendRegistry._active_backend == before
    assert "| stock-sage | sage x" in bench.pipeline_markdown({"card": "cpu", "torch": "", "triton": "", "date": ""},
                                                               [result])


def test_any_variant_list_works_and_ratios_need_their_baseline(stub_sage):
    result = _run("tiny", ["vecdit", "stock-sage"])  # no plain `stock`: once a KeyError
    runs = result["runs"]
    assert set(runs) == {"vecdit", "stock-sage"}
    assert runs["vecdit"]["speedup_vs_stock"] is None and runs["vecdit"]["denoise_speedup_vs_stock"] is None
    assert runs["vecdit"]["speedup_vs"]["stock-sage"] == pytest.approx(runs["stock-sage"]["total_s"]
                                                                       / runs["vecdit"]["total_s"])
    assert "dense" in runs["vecdit"]["step_s"]  # timed itself: no stock step to stand for it
    md = bench.pipeline_markdown({"card": "cpu", "torch": "", "triton": "", "date": ""}, [result])
    assert "| - |" in md and "x stock-sage" in md


def test_schedule_counts_follow_the_step_hook_across_an_expert_switch():
    from vecdit.config import VecAttnConfig

    config = VecAttnConfig(density=0.1, dense_steps=2, reuse_interval=2)
    assert bench.schedule_counts(config, 10) == {"dense": 2, "select": 4, "reuse": 4}
    # the low-noise expert has nothing to reuse at its first step: it selects
    assert bench.schedule_counts(config, 10, switch=5) == {"dense": 2, "select": 5, "reuse": 3}
    assert bench.schedule_counts(VecAttnConfig(density=0.1, dense_steps=1), 10, switch=4) == {
        "dense": 1, "select": 9, "reuse": 0}


@pytest.mark.parametrize("name, experts, passes", [("tiny-wan2.2-a14b", 2, 2), ("tiny-wan2.2-ti2v-5b", 1, 2),
                                                   ("tiny-hunyuan15", 1, 2)])
def test_the_2026_models_run_at_tiny_size(name, experts, passes):
    result = _run(name, ["stock", "vecdit"], steps=8)
    assert result["experts"] == experts and result["cfg_passes"] == passes
    assert sum(result["schedule"].values()) == 8
    assert all(r["total_s"] > 0 and all(v == v for v in r["output_fingerprint"]) for r in result["runs"].values())
    if experts == 2:  # WanPipeline's boundary: the high-noise expert first
        assert 0 < result["expert_switch_step"] < 8


def test_wan22_ti2v_rig_passes_a_timestep_per_token():
    rig = bench.make_rig("tiny-wan2.2-ti2v-5b", "cpu")
    f, h, w = rig.latents.shape[2:]
    assert rig.timestep.shape == (1, f * (h // 2) * (w // 2))
    a14b = bench.make_rig("tiny-wan2.2-a14b", "cpu")
    a14b.switch = a14b.switch_at(40)
    assert a14b.model_at(0) is a14b.transformers[0] and a14b.model_at(39) is a14b.transformers[1]


def test_the_2026_models_full_configs(monkeypatch):
    """The full-size transformers the benchmark builds have the published sizes (on the meta device:
    no memory), and their text encoders' widths are what the transformers take."""
    import inspect

    from accelerate import init_empty_weights
    from diffusers import AutoencoderKLWan, HunyuanVideo15Transformer3DModel, WanTransformer3DModel

    monkeypatch.setattr(torch, "empty", torch._C._VariableFunctions.empty)  # conftest's poison would allocate
    with init_empty_weights():
        a14b = WanTransformer3DModel(**bench.wan22_transformer_kwargs("wan2.2-t2v-a14b"))
        ti2v = WanTransformer3DModel(**bench.wan22_transformer_kwargs("wan2.2-ti2v-5b"))
        hv15 = HunyuanVideo15Transformer3DModel(task_type="t2v")
        vae = AutoencoderKLWan(**bench.WAN22_TI2V_5B_VAE)

    def billions(m):
        return sum(p.numel() for p in m.parameters()) / 1e9

    assert billions(a14b) == pytest.approx(14.3, abs=0.1)  # each of the two experts
    assert billions(ti2v) == pytest.approx(5.0, abs=0.1)
    assert billions(hv15) == pytest.approx(8.3, abs=0.1)
    assert ti2v.config.in_channels == vae.config.z_dim == 48 and vae.config.scale_factor_spatial == 16
    assert bench.hunyuan15_text_config().hidden_size == hv15.config.text_embed_dim == 3584
    defaults = inspect.signature(HunyuanVideo15Transformer3DModel.__init__).parameters
    assert defaults["in_channels"].default == 2 * 32 + 1  # latents, condition latents, mask: what the rig feeds
    for name in ("wan2.2-t2v-a14b", "wan2.2-ti2v-5b", "hunyuanvideo-1.5-720p"):
        assert name in bench.MODELS
    assert bench.MODELS["wan2.2-t2v-a14b"]["steps"] == 40
