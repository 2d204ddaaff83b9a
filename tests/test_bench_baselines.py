# Copyright 2026 The vecdit authors. Apache-2.0.
"""The benchmarks' dense baselines, on the CPU: the pipeline variants' names, the sampled dense error,
and the route of diffusers' "sage" backend (SageAttention2 itself only builds on the GPU host, so a
stand-in `sageattention.sageattn` computes plain attention here)."""
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from vecdit.bench import sage
from vecdit.bench.common import sampled_dense_error
from vecdit.bench.pipeline import ALL_VARIANTS, variant_flags


def _sdpa_nhd(q, k, v, mask=None, scale=None):
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                         scale=scale)
    return out.transpose(1, 2)


@pytest.fixture
def fake_sage(monkeypatch):
    """A stand-in `sageattention` (plain fp32 attention) that records what it was given."""
    calls = []

    def sageattn(q, k, v, tensor_layout, is_causal, sm_scale):
        assert tensor_layout == "NHD" and not is_causal
        calls.append(k.shape[1])
        return _sdpa_nhd(q, k, v, scale=sm_scale)

    import diffusers.models.attention_dispatch  # noqa: F401 - imported before the stand-in exists (it probes for sage)

    module = types.ModuleType("sageattention")
    module.sageattn = sageattn
    monkeypatch.setitem(sys.modules, "sageattention", module)
    return calls


def test_pipeline_variants_parse_and_reject_unknown_orders():
    assert variant_flags("stock") == ("stock", set())
    assert variant_flags("vecdit-sage-compile-fp8") == ("vecdit", {"sage", "compile", "fp8"})
    assert variant_flags("stock-sage") == ("stock", {"sage"})
    assert all(variant_flags(v) for v in ALL_VARIANTS)
    for bad in ("vecdit-fp8-compile", "dense", "stock-flash"):
        with pytest.raises(ValueError, match="unknown variant"):
            variant_flags(bad)


def test_sampled_dense_error_is_relative_to_fp32_attention():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 96, 3, 16, generator=g) for _ in range(3))
    exact = _sdpa_nhd(q.double(), k.double(), v.double()).float()
    assert sampled_dense_error(exact, q, k, v, rows=64) < 1e-5
    noisy = exact + 0.1 * exact.std() * torch.randn(exact.shape, generator=g)
    assert 0.02 < sampled_dense_error(noisy, q, k, v, rows=64) < 0.5


def test_sage_backend_drops_padded_keys_and_falls_back_on_other_masks(fake_sage, monkeypatch):
    from diffusers.models import attention_dispatch as dispatch

    registry, name = dispatch._AttentionBackendRegistry, dispatch.AttentionBackendName.SAGE
    for table in (registry._backends, registry._supported_arg_names, registry._constraints):
        monkeypatch.setitem(table, name, table[name])  # restored after the test
    monkeypatch.setattr(sage, "available", lambda: True)
    monkeypatch.setitem(sage.FALLBACKS, "sdpa_calls", 0)
    sage.use_in_diffusers()

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 40, 2, 16, generator=g) for _ in range(3))
    key_mask = torch.ones(1, 1, 1, 40, dtype=torch.bool)
    key_mask[..., 33:] = False  # HunyuanVideo's form: padded text keys at the end, [B, 1, 1, N]
    out = dispatch.dispatch_attention_fn(q, k, v, attn_mask=key_mask, backend=name)
    torch.testing.assert_close(out, _sdpa_nhd(q, k, v, mask=key_mask), rtol=1e-5, atol=1e-5)
    assert fake_sage == [33]  # sage saw only the kept keys

    full = dispatch.dispatch_attention_fn(q, k, v, backend=name)
    torch.testing.assert_close(full, _sdpa_nhd(q, k, v), rtol=1e-5, atol=1e-5)

    square = torch.rand(1, 1, 40, 40, generator=g) > 0.3  # not a key-padding mask: PyTorch's SDPA, counted
    square[..., 0] = True
    out = dispatch.dispatch_attention_fn(q, k, v, attn_mask=square, backend=name)
    torch.testing.assert_close(out, _sdpa_nhd(q, k, v, mask=square), rtol=1e-5, atol=1e-5)
    assert sage.FALLBACKS["sdpa_calls"] == 1 and fake_sage == [33, 40]


def test_sage_backend_without_sageattention_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sage, "available", lambda: False)
    with pytest.raises(RuntimeError, match="build_peers.py sage"):
        sage.use_in_diffusers()


def test_sage_backend_takes_hunyuanvideo15s_square_padding_mask(fake_sage, monkeypatch):
    # HunyuanVideo-1.5's processor passes the outer product of its key-padding mask, [B, 1, S, S], valid tokens first
    from diffusers.models import attention_dispatch as dispatch

    registry, name = dispatch._AttentionBackendRegistry, dispatch.AttentionBackendName.SAGE
    for table in (registry._backends, registry._supported_arg_names, registry._constraints):
        monkeypatch.setitem(table, name, table[name])
    monkeypatch.setattr(sage, "available", lambda: True)
    monkeypatch.setitem(sage.FALLBACKS, "sdpa_calls", 0)
    sage.use_in_diffusers()

    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 40, 2, 16, generator=g) for _ in range(3))
    valid = torch.ones(40, dtype=torch.bool)
    valid[31:] = False
    square = (valid[None, :] & valid[:, None]).view(1, 1, 40, 40)
    out = dispatch.dispatch_attention_fn(q, k, v, attn_mask=square, backend=name)
    ref = _sdpa_nhd(q, k, v, mask=square)
    torch.testing.assert_close(out[:, :31], ref[:, :31], rtol=1e-5, atol=1e-5)  # the padded rows are never read
    assert fake_sage == [31] and sage.FALLBACKS["sdpa_calls"] == 0
    broken = square.clone()
    broken[0, 0, 5, 3] = False  # not an outer product: PyTorch's SDPA, counted
    out = dispatch.dispatch_attention_fn(q, k, v, attn_mask=broken, backend=name)
    torch.testing.assert_close(out, _sdpa_nhd(q, k, v, mask=broken), rtol=1e-5, atol=1e-5)
    assert fake_sage == [31] and sage.FALLBACKS["sdpa_calls"] == 1
