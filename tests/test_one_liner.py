# Copyright 2026 The vecdit authors. Apache-2.0.
"""The one-liner `set_attn_processor(VecAttnProcessor())`: stats and `vecdit.disable` as with
`vecdit.enable`, and the README's snippet run as written (tiny random-weight models, offline)."""
import logging
import os
import re

import pytest
import torch

import vecdit
from vecdit import VecAttnConfig
from vecdit.pipelines.tiny import tiny_hunyuan_transformer, tiny_wan_pipeline
from vecdit.processors import VecAttnProcessor
from vecdit.schedule import get_step_hook

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
WAN = dict(height=128, width=128, num_frames=9, max_sequence_length=16, guidance_scale=5.0, output_type="latent")


def generate(pipe, steps=2):
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe("a fox", num_inference_steps=steps, generator=torch.Generator().manual_seed(0), **WAN).frames


def processor_types(model):
    return {name: type(p).__name__ for name, p in model.attn_processors.items()}


def records(pipe):
    return sorted((r["step"], r["layer"]) for r in vecdit.stats(pipe)["records"])


def test_one_liner_records_stats_like_enable_and_disable_restores_the_defaults():
    config = VecAttnConfig(density=0.25, dense_steps=0, collect_stats=True)
    pipe = tiny_wan_pipeline()
    stock_types = processor_types(pipe.transformer)
    stock = generate(pipe)
    vecdit.enable(pipe, config)
    generate(pipe)
    by_enable = records(pipe)
    vecdit.disable(pipe)

    processor = VecAttnProcessor(config)
    pipe.transformer.set_attn_processor(processor)
    assert vecdit.is_enabled(pipe)
    sparse = generate(pipe)
    # every forward recorded, the first one too (its hook was attached while it ran): 2 steps x CFG x 2 layers
    assert records(pipe) == by_enable and len(by_enable) == 8
    assert vecdit.stats(pipe)["by_step"] == pytest.approx({0: 0.25, 1: 0.25}, abs=0.02)
    with pytest.raises(ValueError, match="already set on WanTransformer3DModel .*vecdit.disable first"):
        vecdit.enable(pipe, config)

    vecdit.disable(pipe)  # not a no-op: diffusers' default processors, no step hook
    assert processor_types(pipe.transformer) == stock_types
    assert get_step_hook(pipe.transformer) is None
    assert not vecdit.is_enabled(pipe)
    assert torch.equal(generate(pipe), stock) and not torch.equal(sparse, stock)
    # the same instance installed again attaches a fresh hook
    pipe.transformer.set_attn_processor(processor)
    generate(pipe)
    hook = get_step_hook(pipe.transformer)
    assert len(records(pipe)) == 8 and hook is not None and hook.config is processor.config


def test_one_liner_on_hunyuan_restores_each_modules_own_default():
    """HunyuanVideo's joint attention gets HunyuanVideoAttnProcessor2_0 back and its token refiner
    AttnProcessor2_0 (one VecAttnProcessor sat on both); a bare transformer call records too."""
    model = tiny_hunyuan_transformer()
    stock_types = processor_types(model)
    assert set(stock_types.values()) == {"HunyuanVideoAttnProcessor2_0", "AttnProcessor2_0"}
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(1, 10, dtype=torch.long)
    inputs = dict(hidden_states=torch.randn(1, 4, 3, 8, 8, generator=g), timestep=torch.tensor([700]),
                  encoder_hidden_states=torch.randn(1, 10, 16, generator=g), encoder_attention_mask=mask,
                  pooled_projections=torch.randn(1, 8, generator=g), guidance=torch.tensor([3500.0]), return_dict=False)
    with torch.no_grad():
        stock = model(**inputs)[0]
        model.set_attn_processor(VecAttnProcessor(VecAttnConfig(threshold=0.9, dense_steps=0, collect_stats=True)))
        model(**inputs)
    # one call only: its records are read although no later forward or reset ran
    assert sorted(r["layer"] for r in vecdit.stats(model)["records"]) == [0, 1]
    vecdit.disable(model)
    assert processor_types(model) == stock_types
    with torch.no_grad():
        assert torch.equal(model(**inputs)[0], stock)


def test_stats_say_why_they_are_empty(caplog):
    pipe = tiny_wan_pipeline()
    with caplog.at_level(logging.WARNING, logger="vecdit"):
        assert vecdit.stats(pipe)["by_step"] == {}
    assert "vecdit is not on WanPipeline" in caplog.text
    pipe.transformer.set_attn_processor(VecAttnProcessor(VecAttnConfig(density=0.25, dense_steps=0)))
    generate(pipe, steps=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vecdit"):
        assert vecdit.stats(pipe)["by_step"] == {}
    assert "`collect_stats` is off; install vecdit with VecAttnConfig(collect_stats=True)" in caplog.text


def _readme_snippet(heading: str) -> str:
    text = open(README, encoding="utf-8").read()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_one_line_snippet_runs_as_written(capsys):
    code = _readme_snippet("## One line in diffusers")
    assert "set_attn_processor(VecAttnProcessor())" in code and "pipe = " in code
    namespace = {}
    exec(compile(code, README, "exec"), namespace)  # noqa: S102 - the README's own code
    pipe = namespace["pipe"]
    assert namespace["video"].shape == (9, 128, 128, 3)
    by_step = eval(capsys.readouterr().out.strip().splitlines()[-1])  # noqa: S307 - the printed dict
    assert set(by_step) == {1, 2, 3} and all(0 < d <= 0.2 for d in by_step.values())  # step 0: the dense warm-up
    assert set(processor_types(pipe.transformer).values()) == {"WanAttnProcessor"} and not vecdit.is_enabled(pipe)
