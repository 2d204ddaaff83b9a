# Copyright 2026 The vecdit authors. Apache-2.0.
"""FP8 Linear layers composed with vecdit (`vecdit.enable(pipe, config, fp8=True)`): which layers
convert, the clear refusal where torchao or a float8 GPU is missing, and on such a GPU the error
of one forward against bf16."""
import importlib.util

import pytest
import torch

import vecdit
from vecdit.fp8 import MIN_CAPABILITY, fp8_layer_filter

HAS_TORCHAO = importlib.util.find_spec("torchao") is not None
FP8_GPU = torch.cuda.is_available() and torch.cuda.get_device_capability() >= MIN_CAPABILITY


def _selected(model):
    return {n for n, m in model.named_modules() if fp8_layer_filter(m, n)}


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


@pytest.mark.skipif(FP8_GPU and HAS_TORCHAO, reason="this machine can run fp8: the GPU test below covers it")
def test_fp8_refused_with_the_reason_and_nothing_changed():
    from vecdit.pipelines.tiny import tiny_wan_pipeline

    pipe = tiny_wan_pipeline()
    weight = pipe.transformer.blocks[0].attn1.to_q.weight.clone()
    expected = (RuntimeError, "CUDA GPU with float8") if HAS_TORCHAO else (ImportError, "pip install torchao")
    with pytest.raises(expected[0], match=expected[1]):
        vecdit.enable(pipe, vecdit.VecAttnConfig(density=0.25), fp8=True)
    assert not vecdit.is_enabled(pipe)
    assert type(pipe.transformer.blocks[0].attn1.to_q.weight) is torch.nn.Parameter
    assert torch.equal(pipe.transformer.blocks[0].attn1.to_q.weight, weight)


@pytest.mark.skipif(not (FP8_GPU and HAS_TORCHAO), reason="needs torchao and a GPU with float8 tensor cores (>= 8.9)")
def test_fp8_forward_close_to_bf16_and_composes_with_sparse_attention():
    from vecdit.pipelines.tiny import tiny_wan_pipeline

    pipe = tiny_wan_pipeline().to("cuda", torch.bfloat16)
    g = torch.Generator("cuda").manual_seed(0)
    latents = torch.randn(1, pipe.transformer.config.in_channels, 3, 32, 32, generator=g, device="cuda",
                          dtype=torch.bfloat16)
    text = torch.randn(1, 16, pipe.transformer.config.text_dim, generator=g, device="cuda", dtype=torch.bfloat16)

    def forward():
        with torch.inference_mode():
            return pipe.transformer(hidden_states=latents, timestep=torch.tensor([500.0], device="cuda"),
                                    encoder_hidden_states=text, return_dict=False)[0].float()

    reference = forward()
    vecdit.enable(pipe, vecdit.VecAttnConfig(density=1.0), fp8=True)  # everything kept: only fp8 differs
    assert vecdit.quantize_fp8(pipe) == len(_selected(pipe.transformer))  # already converted: left as it is
    out = forward()
    assert ((out - reference).norm() / reference.norm()).item() < 0.1
    vecdit.disable(pipe)
    vecdit.enable(pipe, vecdit.VecAttnConfig(density=0.25))
    assert torch.isfinite(forward()).all()


@pytest.mark.skipif(FP8_GPU and HAS_TORCHAO, reason="this machine can run fp8")
def test_pipeline_benchmark_fp8_variant_refused_with_the_reason():
    from vecdit.bench.pipeline import run_pipeline

    with pytest.raises((RuntimeError, ImportError), match="fp8=True needs"):
        run_pipeline("tiny", ("vecdit-fp8", "stock"), steps=4, repeats=1, device="cpu")
    with pytest.raises(ValueError, match="unknown variants"):
        run_pipeline("tiny", ("stock", "fp8"), steps=4, repeats=1, device="cpu")
