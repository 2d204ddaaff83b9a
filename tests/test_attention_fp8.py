# Copyright 2026 The vecdit authors. Apache-2.0.
"""fp8 attention: the quantization, the CPU emulation against fp32, the Hopper kernel against both."""
import os

import pytest
import torch

from vecdit.ops import QueryTiles, vec_sparse_attention_reference, vector_sparse_attention
from vecdit.ops.attention_fp8 import (
    FP8_DTYPE,
    FP8_MAX,
    dequantize_attention_fp8,
    quantize_attention_fp8,
    quantize_per_head,
)

from test_ops import random_selection, rel_err

HOPPER = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


def _qkv(batch, sq, sk, heads, device, key_mean=0.0, seed=None):
    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**31)
    q = torch.randn(batch, sq, heads, 128, generator=g)
    # keys share a mean (as a DiT's normed keys do): what K smoothing is for
    k = torch.randn(batch, sk, heads, 128, generator=g) + key_mean * torch.randn(1, 1, heads, 128, generator=g)
    v = torch.randn(batch, sk, heads, 128, generator=g)
    return (t.to(torch.bfloat16).to(device) for t in (q, k, v))


def test_quantize_per_head_roundtrip_range_and_mean():
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 300, 3, 128, generator=g) * torch.tensor([1e-3, 1.0, 300.0])[None, None, :, None])
    x = (x + torch.tensor([0.0, 4.0, 0.0])[None, None, :, None]).bfloat16()
    for smooth in (False, True):
        x8, scale, mean = quantize_per_head(x, smooth=smooth)
        assert x8.dtype == FP8_DTYPE and x8.shape == x.shape and scale.shape == (2, 3)
        assert not torch.isnan(x8.float()).any() and float(x8.float().abs().max()) <= FP8_MAX
        back = x8.float() * scale[:, None, :, None] + (mean.float() if smooth else 0)
        # e4m3 keeps 3 mantissa bits at every magnitude: about 2-3% rms whatever the head's scale
        for h in range(3):
            assert rel_err(back[:, :, h], x[:, :, h].float()) < 0.04
        assert (mean is not None) == smooth
    # head 1's keys share a mean of 4: smoothing shrinks what is rounded
    _, _, mean = quantize_per_head(x, smooth=True)
    assert abs(float(mean[0, 0, 1].float().mean()) - 4.0) < 0.1


def test_fp8_attention_on_cpu_is_close_to_fp32_and_lse_keeps_the_key_mean():
    q, k, v = _qkv(1, 150, 200, 2, "cpu", key_mean=3.0, seed=1)
    sel = random_selection(1, 2, 150, 190, 0.4, "cpu", seed=2)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, (190, 200))
    for fp8 in (True, "qk"):
        out, lse = vector_sparse_attention(q, k, v, sel, dense_range=(190, 200), return_lse=True, fp8=fp8)
        assert out.dtype == torch.bfloat16 and out.shape == q.shape
        assert rel_err(out, ref) < 0.05
        assert float((lse - ref_lse).abs().max()) < 0.1  # the smoothed-away q . mean(k) is added back
    # the emulation computes with exactly the quantized values
    q8, k8, v8, scales, k_mean = quantize_attention_fp8(q, k, v)
    emulated, _ = vec_sparse_attention_reference(*dequantize_attention_fp8(q8, k8, v8, scales, k_mean), sel, (190, 200))
    out = vector_sparse_attention(q, k, v, sel, dense_range=(190, 200), fp8=True)
    assert rel_err(out, emulated) < 1e-2


def test_fp8_choice_is_validated():
    q, k, v = _qkv(1, 64, 64, 1, "cpu", seed=0)
    sel = random_selection(1, 1, 64, 64, 0.5, "cpu")
    for bad in ("v", "fp8", 1, "QKV"):
        with pytest.raises(ValueError, match="`fp8`"):
            vector_sparse_attention(q, k, v, sel, fp8=bad)
    with pytest.raises(ValueError, match="`parts`"):
        quantize_attention_fp8(q, k, v, "kv")


@pytest.mark.skipif(not HOPPER, reason="the fp8 kernel is the Gluon kernel's, on Hopper")
@pytest.mark.parametrize("tile", [None, (4, 4, 4), (4, 4, 8)], ids=["raster", "tiles64", "tiles128"])
def test_fp8_gluon_kernel_matches_its_emulation_and_fp32(tile):
    from vecdit.ops import VectorSelection, vector_selection
    from vecdit.ops.tiles import block_of_token

    # q, k, v as strided views of one fused buffer (keys sharing a mean); a dense text range
    grid, text = (3, 8, 16), 40
    video = grid[0] * grid[1] * grid[2]
    g = torch.Generator().manual_seed(3)
    qkv = (torch.randn(2, video + text, 3, 3, 128, generator=g)
           + 2.0 * torch.randn(1, 1, 3, 3, 128, generator=g)).bfloat16().cuda()
    k, v = qkv[:, :, 1], qkv[:, :, 2]
    if tile is None:  # raster blocks with a ragged last one
        q = qkv[:, :video - 5, 0]
        sel, token_block = random_selection(2, 3, video - 5, video, 0.3, "cuda"), None
    else:
        q = qkv[:, :video, 0]
        tiles = QueryTiles(grid, tile)
        sel = vector_selection(q, k[:, :video], None, max_density=0.3, query_tiles=tiles)
        token_block = block_of_token(tiles.query_index("cuda"), tiles.block_size, video, "cuda")
    dense_range = (video, video + text)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, dense_range, None, token_block)
    for fp8 in ("qk", "qkv"):
        out, lse = vector_sparse_attention(q, k, v, sel, dense_range=dense_range, return_lse=True, fp8=fp8)
        q8, k8, v8, scales, k_mean = quantize_attention_fp8(q, k, v, fp8)
        emulated, _ = vec_sparse_attention_reference(*dequantize_attention_fp8(q8, k8, v8, scales, k_mean), sel,
                                                     dense_range, None, token_block)
        assert rel_err(out, emulated) < (1e-2 if fp8 == "qk" else 3e-2), fp8  # "qkv": P rounded to e4m3 too
        assert rel_err(out, ref) < 6e-2, fp8
        # fp8 QK^T: scores off by up to about 0.2 in the worst row (H200: 0.18-0.21; the CPU emulation the same)
        assert float((lse - ref_lse).abs().max()) < 0.3, fp8
    # empty blocks: zeros and lse = -inf, never NaN
    empty = VectorSelection.from_mask(torch.zeros(2, 3, sel.num_query_blocks, video, dtype=torch.bool, device="cuda"),
                                      query_tiles=sel.query_tiles)
    out, lse = vector_sparse_attention(q, k, v, empty, return_lse=True, fp8=True)
    assert torch.all(out == 0) and torch.all(lse == float("-inf"))


@pytest.mark.skipif(not HOPPER and os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the CPU runs the kernels' path only under the Triton interpreter")
def test_config_fp8_attention_reaches_the_kernel_call(monkeypatch):
    # a Wan transformer with head_dim 128 in bf16 (the kernels' inputs), 192 video tokens
    from diffusers import WanTransformer3DModel

    import vecdit.processors._sparse as sparse_module
    from vecdit import VecAttnConfig
    from vecdit.processors import VecAttnProcessor

    calls = []
    kernel = sparse_module.vector_sparse_attention
    monkeypatch.setattr(sparse_module, "vector_sparse_attention",
                        lambda *a, **kw: calls.append(kw.get("fp8")) or kernel(*a, **kw))
    torch.manual_seed(0)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=1, attention_head_dim=128, in_channels=4,
                                  out_channels=4, text_dim=16, freq_dim=32, ffn_dim=64, num_layers=1,
                                  cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32)
    device = "cuda" if HOPPER else "cpu"
    model = model.to(device, torch.bfloat16).eval()
    g = torch.Generator().manual_seed(1)
    inputs = dict(hidden_states=torch.randn(1, 4, 3, 16, 16, generator=g).bfloat16().to(device),
                  timestep=torch.tensor([700.0], device=device),
                  encoder_hidden_states=torch.randn(1, 12, 16, generator=g).bfloat16().to(device), return_dict=False)
    outs = {}
    for fp8 in (False, True):
        model.set_attn_processor(VecAttnProcessor(VecAttnConfig(density=0.4, dense_steps=0, fp8_attention=fp8)))
        with torch.no_grad():
            outs[fp8] = model(**inputs)[0].float()
    assert calls == [False, True]
    assert torch.isfinite(outs[True]).all()
    assert 0 < rel_err(outs[True], outs[False]) < 0.05
    with pytest.raises(ValueError, match="fp8_attention"):
        VecAttnConfig(fp8_attention="yes")
