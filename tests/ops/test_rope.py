# Copyright 2026 The vecdit authors. Apache-2.0.
"""The fused qk RMSNorm + rotary against diffusers' formulas and the references."""
import pytest
import torch

from ops_testing import rel_err


def test_rotary_pairs_in_place_matches_the_stock_formulas(device):
    from diffusers.models.embeddings import apply_rotary_emb

    from vecdit.ops import rotary_pairs_
    from vecdit.ops.rope.reference import rotary_pairs_reference

    g = torch.Generator().manual_seed(3)
    seq, heads, dim = 70, 3, 64  # 70 tokens: a ragged last block of 32
    qkv = torch.randn(2, seq + 5, 3, heads, dim, generator=g).to(torch.bfloat16).to(device)
    ang = torch.rand(seq, dim // 2, generator=g) * 6
    cos, sin = ang.cos().repeat_interleave(2, -1).to(device), ang.sin().repeat_interleave(2, -1).to(device)
    x = qkv[:, :seq, 0]  # a strided view, rotated in place
    before, untouched = x.clone(), (qkv[:, seq:].clone(), qkv[:, :seq, 1:].clone())
    hunyuan = apply_rotary_emb(before, (cos, sin), sequence_dim=1)
    x1, x2 = before.unflatten(-1, (-1, 2)).unbind(-1)  # Wan's processor formula
    wan = torch.empty_like(before)
    wan[..., 0::2], wan[..., 1::2] = x1 * cos[None, :, None, 0::2] - x2 * sin[None, :, None, 1::2], \
        x1 * sin[None, :, None, 1::2] + x2 * cos[None, :, None, 0::2]
    assert rotary_pairs_(x, cos[:, 0::2], sin[:, 0::2]) is x
    assert torch.equal(qkv[:, seq:], untouched[0]) and torch.equal(qkv[:, :seq, 1:], untouched[1])
    # fp32 math, rounded once: within one bf16 ulp of the stock formulas (Triton's CPU interpreter
    # truncates fp32 -> bf16 where the GPU rounds to nearest)
    for stock in (hunyuan, wan):
        assert float(((x.float() - stock.float()).abs() / stock.float().abs().clamp_min(1e-2)).max()) <= 2 ** -7
    assert torch.equal(rotary_pairs_reference(before, cos[:, 0::2], sin[:, 0::2]), hunyuan)
    with pytest.raises(ValueError, match="cos"):
        rotary_pairs_(x, cos, sin)


def test_rotary_pairs_kernel_matches_the_reference_in_fp32(device):
    import triton

    from vecdit.ops.rope._rope_kernel import norm_rotary_kernel
    from vecdit.ops.rope.reference import rotary_pairs_reference

    g = torch.Generator().manual_seed(4)
    x = torch.randn(1, 45, 2, 32, generator=g).to(device)
    cos, sin = torch.rand(2, 45, 16, generator=g).to(device).unbind(0)
    want = rotary_pairs_reference(x, cos, sin)
    norm_rotary_kernel[(triton.cdiv(45, 32), 2)](x, x, cos, cos, sin, *x.stride(), *cos.stride(), *sin.stride(), 2, 45,
                                                 45, 0.0, HALF_DIM=16, BLOCK_S=32, NORM=0)
    assert float((x - want).abs().max()) <= 1e-6  # the GPU may fuse a multiply-add: an fp32 ulp


def test_rms_norm_rotary_matches_diffusers_norm_then_rope(device):
    from diffusers.models.embeddings import apply_rotary_emb
    from diffusers.models.normalization import RMSNorm

    from vecdit.ops import rms_norm_rotary_

    g = torch.Generator().manual_seed(6)
    seq, rows, heads, dim = 75, 60, 2, 64  # rows [60, 75): text tokens, normalized but not rotated
    x = (torch.randn(1, seq, heads, dim, generator=g) * 3).to(torch.bfloat16).to(device)
    norm = RMSNorm(dim, eps=1e-6).to(device, torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(dim, generator=g) + 0.5)
    ang = torch.rand(rows, dim // 2, generator=g) * 6
    cos, sin = ang.cos().repeat_interleave(2, -1).to(device), ang.sin().repeat_interleave(2, -1).to(device)
    with torch.no_grad():
        normed = norm(x)
        stock = torch.cat([apply_rotary_emb(normed[:, :rows], (cos, sin), sequence_dim=1), normed[:, rows:]], 1)
    got = rms_norm_rotary_(x.clone(), norm.weight.detach(), norm.eps, cos[:, 0::2], sin[:, 0::2])
    # three roundings where diffusers rounds; the CPU interpreter truncates where the GPU rounds
    # (a bias of ~half an ulp per rounding), so single elements may differ by a couple of ulps
    only_norm = rms_norm_rotary_(x.clone(), norm.weight.detach(), norm.eps)
    tol = 5e-3 if x.is_cuda else 2e-2
    for a, b in ((got, stock), (only_norm, normed)):
        assert rel_err(a, b) < tol and float((a.float() - b.float()).abs().max()) <= 0.0625
    with pytest.raises(ValueError, match="weight"):
        rms_norm_rotary_(x, norm.weight.detach().float(), 1e-6)


def test_norm_rotary_kernel_math_in_fp32(device):
    # fp32 end to end, so no rounding step can hide a wrong formula
    import triton

    from vecdit.ops.rope._rope_kernel import norm_rotary_kernel
    from vecdit.ops.rope.reference import rms_norm_reference, rotary_pairs_reference

    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 50, 2, 32, generator=g).to(device)
    w = (torch.rand(32, generator=g) + 0.5).to(device)
    cos, sin = torch.rand(2, 40, 16, generator=g).to(device).unbind(0)
    normed = rms_norm_reference(x, w, 1e-6)
    want = torch.cat([rotary_pairs_reference(normed[:, :40], cos, sin), normed[:, 40:]], 1)
    norm_rotary_kernel[(triton.cdiv(50, 32), 2)](x, w, cos, cos, sin, *x.stride(), *cos.stride(), *sin.stride(), 2, 50,
                                                 40, 1e-6, HALF_DIM=16, BLOCK_S=32, NORM=1)
    assert float((x - want).abs().max()) <= 1e-5


def test_rms_norm_across_heads_rotary_matches_torch_rmsnorm_then_wan_rope(device):
    from vecdit.ops import rms_norm_rotary_

    g = torch.Generator().manual_seed(8)
    seq, heads, dim = 45, 3, 64
    x = (torch.randn(2, seq, heads * dim, generator=g) * 3).to(torch.bfloat16).to(device)
    norm = torch.nn.RMSNorm(heads * dim, eps=1e-6).to(device, torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(heads * dim, generator=g) + 0.5)
    ang = torch.rand(seq, dim // 2, generator=g) * 6
    cos, sin = ang.cos().repeat_interleave(2, -1).to(device), ang.sin().repeat_interleave(2, -1).to(device)
    with torch.no_grad():  # WanAttnProcessor: norm over all heads, unflatten, then its rotary
        normed = norm(x).unflatten(2, (heads, -1))
    x1, x2 = normed.unflatten(-1, (-1, 2)).unbind(-1)
    stock = torch.empty_like(normed)
    stock[..., 0::2], stock[..., 1::2] = x1 * cos[None, :, None, 0::2] - x2 * sin[None, :, None, 1::2], \
        x1 * sin[None, :, None, 1::2] + x2 * cos[None, :, None, 0::2]
    fused_qkv = torch.cat([x, x, x], -1)  # the query as a strided chunk of a fused projection, as Wan hands it
    got = rms_norm_rotary_(fused_qkv[..., :heads * dim].unflatten(2, (heads, -1)), norm.weight.detach(), norm.eps,
                           cos[:, 0::2], sin[:, 1::2], across_heads=True)
    assert torch.equal(fused_qkv[..., heads * dim:], torch.cat([x, x], -1))  # the other chunks untouched
    tol = 5e-3 if x.is_cuda else 2e-2  # two roundings; the CPU interpreter truncates
    assert rel_err(got, stock) < tol and float((got.float() - stock.float()).abs().max()) <= 0.0625
    with pytest.raises(ValueError, match="weight"):
        rms_norm_rotary_(x.clone().unflatten(2, (heads, -1)), norm.weight.detach()[:dim], 1e-6, across_heads=True)
