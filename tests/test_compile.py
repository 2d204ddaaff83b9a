# Copyright 2026 The vecdit authors. Apache-2.0.
"""torch.compile of the transformer blocks with vecdit inside: `compile_repeated_blocks(fullgraph=True)`
(diffusers' regional compilation) traces every sparse layer whole (no graph break), gives the eager
output at every kind of step, and shares one graph per phase across layers (no per-layer recompiles
with the default config). Needs the Triton ops (bf16 custom ops): a GPU or TRITON_INTERPRET=1."""
import os

import pytest
import torch
from torch._dynamo.utils import counters

import vecdit
from test_processors import hunyuan_inputs, run, wan_inputs
from vecdit import VecAttnConfig
from vecdit.pipelines.tiny import tiny_hunyuan_transformer, tiny_wan_transformer

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
                                reason="the Triton ops need a GPU or TRITON_INTERPRET=1")


def build(family: str, config: VecAttnConfig, layers: int = 2):
    torch.manual_seed(0)
    if family == "wan":
        from diffusers import WanTransformer3DModel

        model = WanTransformer3DModel.from_config({**tiny_wan_transformer().config, "num_layers": layers}).eval()
        inputs = wan_inputs()
    else:
        model, inputs = tiny_hunyuan_transformer(), hunyuan_inputs()  # padded text: the valid-length path
    model = model.to(torch.bfloat16)
    inputs = {k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
    vecdit.enable(model, config)
    return model, inputs


def denoise(model, inputs, steps=4):
    outs = []
    for t in (900.0, 800.0, 700.0, 600.0)[:steps]:
        with model.cache_context("cond"):
            outs.append(run(model, dict(inputs, timestep=torch.tensor([t]).to(inputs["timestep"].dtype))))
    return outs


# reuse keeps each layer's selection on its module, decided before the forward: the blocks still
# share one graph per phase (dense, select, reuse) whatever the number of layers. Without reuse
# (dense, select: two graphs for 3 layers) the tests below compile the same way (`compile_like_eager`).
@pytest.mark.parametrize("family, layers", [("wan", 3), ("hunyuan", None)], ids=["wan-3-reuse", "hunyuan-reuse"])
def test_repeated_blocks_fullgraph_equal_eager_without_graph_breaks(family, layers):
    config = VecAttnConfig(density=0.25, dense_steps=1, reuse_interval=2)  # steps: dense, select, reuse, select
    eager = denoise(*build(family, config, layers or 2))
    model, inputs = build(family, config, layers or 2)
    torch._dynamo.reset()
    counters.clear()
    model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")  # fullgraph: a break would raise
    compiled = denoise(model, inputs)
    phases = [p for _, _, p in model._diffusers_hook.get_hook("vecdit_step").t.history]
    assert phases == ["dense", "select", "reuse", "select"]
    assert all(torch.equal(a, b) for a, b in zip(compiled, eager))
    assert sum(counters["graph_break"].values()) == 0
    if family == "wan":
        # one graph per phase (dense, select, reuse), whatever the number of layers
        assert counters["stats"]["unique_graphs"] == 3
    torch._dynamo.reset()


def compile_like_eager(config: VecAttnConfig, layers: int = 3):
    """(eager model, compiled model) of a `layers`-layer tiny Wan after the same 4 steps: outputs
    equal, no graph break, two graphs (dense, select) shared by all layers."""
    eager_model, model = compiled_like_eager("wan", config, layers)
    assert counters["stats"]["unique_graphs"] == 2  # dense, select: not one per layer
    torch._dynamo.reset()
    return eager_model, model


def compiled_like_eager(family: str, config: VecAttnConfig, layers: int = 2):
    """(eager model, compiled model) of a tiny `family` model after the same steps: outputs equal, no
    graph break (dynamo's counters are left for the caller to read)."""
    eager_model, inputs = build(family, config, layers)
    eager = denoise(eager_model, inputs)
    model, inputs = build(family, config, layers)
    torch._dynamo.reset()
    counters.clear()
    model.compile_repeated_blocks(fullgraph=True, backend="aot_eager")
    compiled = denoise(model, inputs)
    assert all(torch.equal(a, b) for a, b in zip(compiled, eager))
    assert sum(counters["graph_break"].values()) == 0
    return eager_model, model


def test_threshold_table_compiles_to_one_graph_per_phase():
    """A per-layer min-p table (`vecdit calibrate`'s output) with a cap: each layer's row is a tensor on
    its module, so the blocks are not specialized per layer."""
    table = torch.linspace(0.5, 0.9, 3 * 2).view(3, 2)  # 3 layers x 2 heads, every row different
    compile_like_eager(VecAttnConfig(threshold=table, max_density=0.3, dense_steps=1))


def test_collect_stats_compiles_to_one_graph_per_phase():
    """`collect_stats`: the processors leave each call's density on its module and the step hook
    adds the layer index after the forward, so the blocks are not specialized per layer; the
    densities equal eager's (compiled blocks record no times)."""
    eager_model, model = compile_like_eager(VecAttnConfig(density=0.25, dense_steps=1, collect_stats=True))
    eager, records = vecdit.stats(eager_model)["records"], vecdit.stats(model)["records"]
    assert [(r["step"], r["layer"], r["phase"]) for r in records] == [(e["step"], e["layer"], e["phase"]) for e in eager]
    assert [(r["step"], r["layer"]) for r in records] == [(step, layer) for step in (1, 2, 3) for layer in range(3)]
    assert all(r["head_density"] == e["head_density"] for r, e in zip(records, eager))
    assert all(r["selection_ms"] is None for r in records) and all(e["selection_ms"] >= 0 for e in eager)


def test_dropped_compensation_compiles_like_eager():
    """compensate="dropped" on HunyuanVideo (text keys after the scored ones): the weight table, the
    kernel's correction and its epilogue merge inside the custom op, so the blocks still trace
    whole and give the eager output at every kind of step."""
    compiled_like_eager("hunyuan", VecAttnConfig(density=0.25, dense_steps=1, reuse_interval=2, compensate="dropped"))
    torch._dynamo.reset()
