# Copyright 2026 The vecdit authors. Apache-2.0.
"""FP8 Linear layers composed with vecdit (`vecdit.enable(pipe, config, fp8=True)`): `Float8Linear`
against an fp64 reference of the same quantized operands, which layers convert, the clear refusal off
a float8 GPU, a compiled block with no graph break, and on such a GPU the error of one forward."""
import os

import pytest
import torch
from torch._dynamo.utils import counters

import vecdit
from vecdit.fp8 import FP8_MAX, MIN_CAPABILITY, Float8Linear, fp8_layer_filter, fp8_linear_reference, quantize_rows

FP8_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= MIN_CAPABILITY


def _selected(model):
    return {n for n, m in model.named_modules() if fp8_layer_filter(m, n)}


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_quantize_rows_maps_each_rows_largest_magnitude_to_the_fp8_max():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(7, 48, generator=g) * torch.logspace(-3, 3, 7)[:, None]  # rows of very different scales
    x[3] = 0.0  # an all-zero row: scale stays finite, q is zero
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (7, 1) and torch.isfinite(scale).all()
    deq = q.float() * scale
    nonzero = [i for i in range(7) if i != 3]
    assert torch.allclose(q.float()[nonzero].abs().amax(1), torch.full((6,), FP8_MAX))
    assert torch.equal(deq[3], torch.zeros(48))
    # e4m3 keeps 3 mantissa bits: relative error per element at most 2^-4 (normal range)
    assert _rel(deq[nonzero], x[nonzero]) < 0.04


@pytest.mark.parametrize("bias, shape, dtype", [(True, (2, 37, 64), torch.float32), (False, (5, 64), torch.float32),
                                                (True, (3, 19, 64), torch.bfloat16)])
def test_float8_linear_matches_the_reference_and_stays_near_the_full_precision_layer(bias, shape, dtype, device):
    """On CUDA `torch._scaled_mm` (bf16 out, fast accumulation), elsewhere the same product from the fp8 operands."""
    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 96, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(96, 64, generator=g) / 8)
        if bias:
            linear.bias.copy_(torch.randn(96, generator=g))
    linear = linear.to(device, dtype)
    x = torch.randn(*shape, generator=g).to(device, dtype)
    layer = Float8Linear(linear)
    out = layer(x)
    assert out.shape == (*shape[:-1], 96) and out.dtype == dtype and torch.isfinite(out).all()
    reference = fp8_linear_reference(x, linear.weight, linear.bias)
    exact = dtype == torch.float32 and device == "cpu"
    assert _rel(out, reference) < (1e-6 if exact else 8e-3)  # bf16 output rounding
    assert _rel(out, linear(x)) < 0.06  # what fp8 costs against the layer it replaces
    with pytest.raises(ValueError, match="divisible by 16"):
        Float8Linear(torch.nn.Linear(24, 32))
    with pytest.raises(ValueError, match="expected 64"):
        layer(torch.randn(2, 32, device=device, dtype=dtype))


def test_fp8_takes_the_block_projections_and_ffn_not_embeddings_modulation_or_head():
    from vecdit.pipelines.tiny import tiny_hunyuan_pipeline, tiny_wan_pipeline

    wan = _selected(tiny_wan_pipeline().transformer)
    assert {"blocks.0.attn1.to_q", "blocks.0.attn1.to_out.0", "blocks.0.attn2.to_k", "blocks.0.ffn.net.0.proj",
            "blocks.0.ffn.net.2"} <= wan
    assert not any(n.startswith(("condition_embedder", "proj_out", "patch_embedding")) for n in wan)
    hunyuan = _selected(tiny_hunyuan_pipeline().transformer)
    assert {"transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.add_q_proj", "transformer_blocks.0.ff.net.2",
            "single_transformer_blocks.0.proj_mlp", "single_transformer_blocks.0.proj_out"} <= hunyuan
    assert not any(".norm" in n or n.startswith(("context_embedder", "time_text_embed", "norm_out")) for n in hunyuan)
    assert not fp8_layer_filter(torch.nn.Linear(24, 32), "blocks.0.ffn.net.2")  # 24: not a multiple of 16


@pytest.mark.skipif(FP8_GPU, reason="this machine can run fp8: the GPU test below covers it")
def test_fp8_refused_with_the_reason_and_nothing_changed():
    from vecdit.pipelines.tiny import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    weight = pipe.transformer.blocks[0].attn1.to_q.weight.clone()
    with pytest.raises(RuntimeError, match="CUDA GPU with float8"):
        vecdit.enable(pipe, vecdit.VecAttnConfig(density=0.25), fp8=True)
    assert not vecdit.is_enabled(pipe)
    assert type(pipe.transformer.blocks[0].attn1.to_q) is torch.nn.Linear
    assert torch.equal(pipe.transformer.blocks[0].attn1.to_q.weight, weight)


def _wan_forward(pipe, device, dtype):
    g = torch.Generator(device).manual_seed(0)
    latents = torch.randn(1, pipe.transformer.config.in_channels, 3, 32, 32, generator=g, device=device, dtype=dtype)
    text = torch.randn(1, 16, pipe.transformer.config.text_dim, generator=g, device=device, dtype=dtype)

    def forward():
        with torch.inference_mode():
            return pipe.transformer(hidden_states=latents, timestep=torch.tensor([500.0], device=device),
                                    encoder_hidden_states=text, return_dict=False)[0].float()
    return forward


def test_fp8_layers_in_a_tiny_wan_convert_once_and_stay_near_full_precision():
    """On the CPU through `check_device=False` (torch's CPU `_scaled_mm`): the conversion, not the speed."""
    from vecdit.pipelines.tiny import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    forward = _wan_forward(pipe, "cpu", torch.float32)
    reference = forward()
    n = vecdit.quantize_fp8(pipe, check_device=False)
    assert n == len([m for m in pipe.transformer.modules() if isinstance(m, Float8Linear)]) > 0
    assert vecdit.quantize_fp8(pipe, check_device=False) == n  # already converted: left as it is
    out = forward()
    assert torch.isfinite(out).all() and 0 < _rel(out, reference) < 0.1


@pytest.mark.skipif(not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
                    reason="vecdit's sparse path needs a GPU or TRITON_INTERPRET=1")
def test_fp8_blocks_compile_fullgraph_with_sparse_attention_like_eager():
    """Float8Linear inside `compile_repeated_blocks(fullgraph=True)` with vecdit's processor: no graph
    break, the eager output (CPU: aot_eager; the same ops, traced)."""
    from test_compile import build, denoise

    config = vecdit.VecAttnConfig(density=0.25, dense_steps=1)
    eager_model, inputs = build("wan", config, 2)
    vecdit.quantize_fp8(eager_model, check_device=False)
    eager = denoise(eager_model, inputs, steps=2)
    model, inputs = build("wan", config, 2)
    vecdit.quantize_fp8(model, check_device=False)
    torch._dynamo.reset()
    counters.clear()
    model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
    compiled = denoise(model, inputs, steps=2)
    assert sum(counters["graph_break"].values()) == 0
    assert all(torch.isfinite(c).all() and _rel(c, e) < 1e-2 for c, e in zip(compiled, eager))
    torch._dynamo.reset()


@pytest.mark.skipif(not FP8_GPU, reason="needs a GPU with float8 tensor cores (>= 8.9)")
def test_fp8_forward_close_to_bf16_and_composes_with_sparse_attention():
    from vecdit.pipelines.tiny import tiny_wan_pipeline

    pipe = tiny_wan_pipeline().to("cuda", torch.bfloat16)
    forward = _wan_forward(pipe, "cuda", torch.bfloat16)
    reference = forward()
    vecdit.enable(pipe, vecdit.VecAttnConfig(density=1.0), fp8=True)  # everything kept: only fp8 differs
    assert vecdit.quantize_fp8(pipe) == len([m for m in pipe.transformer.modules() if isinstance(m, Float8Linear)])
    out = forward()
    assert _rel(out, reference) < 0.1
    vecdit.disable(pipe)
    vecdit.enable(pipe, vecdit.VecAttnConfig(density=0.25))
    assert torch.isfinite(forward()).all()


@pytest.mark.skipif(FP8_GPU, reason="this machine can run fp8")
def test_pipeline_benchmark_fp8_variant_refused_with_the_reason():
    from vecdit.bench.pipeline import run_pipeline

    with pytest.raises(RuntimeError, match="fp8=True needs"):
        run_pipeline("tiny", ("vecdit-fp8", "stock"), steps=4, repeats=1, device="cpu")
    with pytest.raises(ValueError, match="unknown variant"):
        run_pipeline("tiny", ("stock", "fp8"), steps=4, repeats=1, device="cpu")


def test_fp8_benchmark_times_every_converted_layer_of_a_block_once_per_shape(monkeypatch):
    from vecdit.bench.fp8 import _config_model, block_layers

    # the full-size models are built on the meta device; conftest's poisoned torch.empty would fill
    # (and so allocate) their 13-14B parameters
    monkeypatch.setattr(torch, "empty", torch._C._VariableFunctions.empty)

    for name, prefixes in (("hunyuanvideo", ("transformer_blocks.0.", "single_transformer_blocks.0.")),
                           ("wan2.1-t2v-14b", ("blocks.0.",))):
        rows = block_layers(name)
        converted = [n for n, m in _config_model(name).named_modules() if fp8_layer_filter(m, n) and n.startswith(prefixes)]
        assert sum(r["per_block"] for r in rows) == len(converted)
        assert len({(r["in_features"], r["out_features"], r["tokens"], r["blocks"]) for r in rows}) == len(rows)
