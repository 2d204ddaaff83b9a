# Copyright 2026 The vecdit authors. Apache-2.0.
"""A third model family in one place: a tiny transformer of its own class, attention module and
adapter, registered with one `ModelFamily`, runs sparse through `vecdit.enable` and the one-line
`set_attn_processor(VecAttnProcessor())`; unregistered, vecdit knows it no more."""
import math
import re

import pytest
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import AttentionMixin, AttentionModuleMixin
from diffusers.models.attention_dispatch import dispatch_attention_fn

import vecdit
from test_processors import rel, run, wan_inputs
from vecdit import VecAttnConfig
from vecdit.config import PRESETS
from vecdit.pipelines.tiny import tiny_wan_transformer
from vecdit.processors import (ModelFamily, SparseAttention, VecAttnProcessor, family_of, register_family,
                               unregister_family)
from vecdit.processors.families import registered
from vecdit.schedule import Phase, get_step_hook, patchified_grid


class TinyAttnProcessor:
    """The family's stock processor: dense attention."""

    def __call__(self, attn, hidden_states):
        q, k, v = (proj(hidden_states).unflatten(2, (attn.heads, -1)) for proj in (attn.to_q, attn.to_k, attn.to_v))
        return attn.to_out(dispatch_attention_fn(q, k, v).flatten(2, 3))


class TinyAttention(torch.nn.Module, AttentionModuleMixin):
    _default_processor_cls = TinyAttnProcessor
    _available_processors = [TinyAttnProcessor]

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v, self.to_out = (torch.nn.Linear(dim, dim) for _ in range(4))
        self.set_processor(TinyAttnProcessor())

    def forward(self, hidden_states):
        return self.processor(self, hidden_states)


class TinyBlock(torch.nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(dim)
        self.attn = TinyAttention(dim, heads)

    def forward(self, x):
        return x + self.attn(self.norm(x))


class TinyVideoTransformer(ModelMixin, ConfigMixin, AttentionMixin):
    """Patchify, self-attention blocks, a linear head: `[B, C, F, H, W]` -> `[B, tokens, C x patch]`."""

    @register_to_config
    def __init__(self, channels: int = 4, dim: int = 128, heads: int = 2, num_layers: int = 2, patch=(1, 2, 2)):
        super().__init__()
        self.embed = torch.nn.Conv3d(channels, dim, kernel_size=tuple(patch), stride=tuple(patch))
        self.layers = torch.nn.ModuleList(TinyBlock(dim, heads) for _ in range(num_layers))
        self.proj_out = torch.nn.Linear(dim, channels * math.prod(patch))

    def forward(self, hidden_states, timestep):
        pt, ph, pw = self.config.patch
        # the post-patchify grid under the names the family's `grid_locals` gives
        frames, height, width = (n // p for n, p in zip(hidden_states.shape[2:], (pt, ph, pw)))  # noqa: F841
        x = self.embed(hidden_states).flatten(2).transpose(1, 2)
        for block in self.layers:
            x = block(x)
        return (self.proj_out(x),)


class TinyVecAttnProcessor(SparseAttention):
    """The family's adapter: projections, then the shared sparse path over all keys."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        eng = self.engine
        call = eng._begin(attn)
        q, k, v = (proj(hidden_states).unflatten(2, (attn.heads, -1)) for proj in (attn.to_q, attn.to_k, attn.to_v))
        out = eng._dense(q, k, v) if call.phase is Phase.DENSE else eng._sparse(q, k, v, call.keys(k.shape[1]))
        return attn.to_out(out.flatten(2, 3))


TINY_VIDEO = ModelFamily(
    name="tiny-video",
    transformers=(TinyVideoTransformer,),
    attention=(TinyAttention,),
    adapter=TinyVecAttnProcessor,
    sparse_layers=re.compile(r"layers\.\d+\.attn"),
    latent_grid=lambda model, hidden_states: patchified_grid(hidden_states, model.config.patch),
    preset=VecAttnConfig(density=0.25, dense_steps=0),
    checkpoints=("tiny-video",),
    grid_locals=("frames", "height", "width"),
)
BUILT_IN = {"wan", "hunyuan", "hunyuan15"}


@pytest.fixture
def tiny_video():
    register_family(TINY_VIDEO)  # the one place a family is added
    try:
        yield TINY_VIDEO
    finally:
        unregister_family(TINY_VIDEO)


def model_and_inputs():
    torch.manual_seed(0)
    model = TinyVideoTransformer().eval()
    g = torch.Generator().manual_seed(1)
    # a 4 x 16 x 16 latent: a 4 x 8 x 8 grid after the (1, 2, 2) patch, 256 tokens, head_dim 64
    return model, dict(hidden_states=torch.randn(1, 4, 4, 16, 16, generator=g), timestep=torch.tensor([700.0]))


def test_a_registered_family_runs_sparse_through_enable_and_the_one_liner(tiny_video, monkeypatch):
    import vecdit.ops.dispatch as dispatch

    model, inputs = model_and_inputs()
    assert family_of(model) is tiny_video
    stock = run(model, inputs)
    grids = []
    real = dispatch.vector_selection_reference
    monkeypatch.setattr(dispatch, "vector_selection_reference",
                        lambda *a, **k: grids.append(k["query_tiles"].grid) or real(*a, **k))

    # every key kept through the sparse path: the stock output
    vecdit.enable(model, VecAttnConfig(density=1.0, dense_steps=0, dense_fallback_density=1.0))
    assert rel(run(model, inputs), stock) < 1e-5
    vecdit.disable(model)

    config = VecAttnConfig.for_model("tiny-video", collect_stats=True)
    assert config.budget() == 0.25 and PRESETS["tiny-video"] is tiny_video.preset
    vecdit.enable(model, config)
    sparse = run(model, inputs)
    hook = get_step_hook(model)
    assert hook.family is tiny_video and hook.t.probe is None  # no other family's forward probe
    assert hook.t.grid == (4, 8, 8) and grids[-2:] == [(4, 8, 8)] * 2  # the family's grid, both layers
    records = vecdit.stats(model)["records"]
    assert sorted(r["layer"] for r in records) == [0, 1]
    assert all(r["phase"] == "select" and r["density"] == pytest.approx(0.25, abs=0.01) for r in records)
    assert 1e-3 < rel(sparse, stock) < 0.5  # sparse attention ran: close to dense, not equal
    vecdit.disable(model)
    assert torch.equal(run(model, inputs), stock)

    # the one-liner: the hook is attached on the first call (its grid read from the family's
    # `grid_locals`), the same output as `enable`
    model.set_attn_processor(VecAttnProcessor(config))
    assert torch.equal(run(model, inputs), sparse)
    assert get_step_hook(model).t.grid == (4, 8, 8)
    vecdit.disable(model)
    assert torch.equal(run(model, inputs), stock)


def test_one_processor_picks_each_modules_family_adapter(tiny_video):
    """One VecAttnProcessor instance on a Wan model and on the new family's: each call runs its
    own family's adapter (no adapter is inherited from another family)."""
    processor = VecAttnProcessor(VecAttnConfig(density=1.0, dense_steps=0, dense_fallback_density=1.0))
    for model, inputs in ((tiny_wan_transformer(), wan_inputs()), model_and_inputs()):
        stock = run(model, inputs)
        model.set_attn_processor(processor)
        assert rel(run(model, inputs), stock) < 1e-4
    assert type(processor._adapters["tiny-video"]) is TinyVecAttnProcessor


def test_unregistering_restores_the_default():
    model, inputs = model_and_inputs()
    register_family(TINY_VIDEO)
    with pytest.raises(ValueError, match="already belongs to the model family 'tiny-video'"):
        register_family(ModelFamily(**{**vars(TINY_VIDEO), "name": "other"}))
    unregister_family(TINY_VIDEO)
    assert family_of(model) is None and "tiny-video" not in PRESETS
    assert {f.name for f in registered()} == BUILT_IN
    with pytest.raises(ValueError, match="no model family for TinyVideoTransformer"):
        vecdit.enable(model, VecAttnConfig())
    assert get_step_hook(model) is None and not vecdit.is_enabled(model)
    model.set_attn_processor(VecAttnProcessor())
    with pytest.raises(ValueError, match="no model family for TinyVideoTransformer"):
        run(model, inputs)
    with pytest.raises(ValueError, match="unknown preset 'tiny-video'"):
        VecAttnConfig.for_model("tiny-video")
