# Copyright 2026 The vecdit authors. Apache-2.0.
"""Kernels against their PyTorch references (Triton interpreter on CPU, or the GPU)."""
import math

import pytest
import torch

from vecdit.ops import (
    VectorSelection,
    attention_reference,
    vec_sparse_attention_reference,
    vector_selection,
    vector_selection_reference,
    vector_sparse_attention,
)
from vecdit.ops.reference import selection_scores
from vecdit.ops.selection import RUNNING_TILE, SelectionBitmask, vector_selection_bitmask

# (batch, Sq, Sk, heads, head_dim): awkward lengths (tails), Sq != Sk both ways, both head dims
SHAPES = [
    (1, 64, 64, 1, 64),
    (2, 100, 150, 2, 64),
    (1, 130, 70, 2, 128),
    (1, 37, 200, 1, 128),
]
IDS = ["B{}-Sq{}-Sk{}-H{}-D{}".format(*s) for s in SHAPES]
DTYPES = [torch.bfloat16, torch.float16]


def rel_err(a, b):
    a, b = a.float(), b.float()
    assert not torch.isnan(a).any(), "NaN in output"
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def make_qkv(shape, dtype, device, spread=1.0, seed=None):
    batch, sq, sk, heads, dim = shape
    g = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % 2**31)
    q = (torch.randn(batch, sq, heads, dim, generator=g) * spread).to(dtype).to(device)
    k = (torch.randn(batch, sk, heads, dim, generator=g) * spread).to(dtype).to(device)
    v = torch.randn(batch, sk, heads, dim, generator=g).to(dtype).to(device)
    return q, k, v


def random_selection(batch, heads, sq, sk, density, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    nqb = math.ceil(sq / 64)
    return VectorSelection.from_mask((torch.rand(batch, heads, nqb, sk, generator=g) < density).to(device))


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_attention_matches_reference(shape, dtype, device):
    batch, sq, sk, heads, dim = shape
    q, k, v = make_qkv(shape, dtype, device)
    sel = random_selection(batch, heads, sq, sk, 0.4, device)
    out, lse = vector_sparse_attention(q, k, v, sel, return_lse=True)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel)
    assert rel_err(out, ref) <= 1e-2
    assert torch.allclose(lse, ref_lse, atol=2e-2, rtol=0)
    assert out.dtype == dtype and out.shape == q.shape


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=IDS[1:3])
def test_attention_dense_range_is_always_attended(shape, device):
    batch, sq, sk, heads, dim = shape
    q, k, v = make_qkv(shape, torch.bfloat16, device)
    text = 11  # like HunyuanVideo's valid text tokens at the end of the joint sequence
    sel = random_selection(batch, heads, sq, sk - text, 0.3, device, seed=1)
    out = vector_sparse_attention(q, k, v, sel, dense_range=(sk - text, sk))
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, (sk - text, sk))
    assert rel_err(out, ref) <= 1e-2
    only_text = vector_sparse_attention(q, k, v, None, dense_range=(sk - text, sk))
    ref_text, _ = attention_reference(q, k[:, sk - text:], v[:, sk - text:])
    assert rel_err(only_text, ref_text) <= 1e-2


def test_attention_empty_selection_gives_zeros_not_nan(device):
    shape = (1, 130, 90, 2, 64)
    q, k, v = make_qkv(shape, torch.bfloat16, device)
    mask = torch.rand(1, 2, 3, 90) < 0.5
    mask[0, 1, 1] = False  # one block with nothing selected
    mask[0, 0] = False  # a whole head with nothing selected
    sel = VectorSelection.from_mask(mask.to(device))
    out, lse = vector_sparse_attention(q, k, v, sel, return_lse=True, compensate=False)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert torch.all(out[:, :, 0] == 0) and torch.all(out[:, 64:128, 1] == 0)
    assert torch.all(torch.isneginf(lse[0, 0])) and torch.all(torch.isneginf(lse[0, 1, 64:128]))
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, compensate=False)
    assert rel_err(out, ref) <= 1e-2
    # compensated, an empty block attends its dropped keys' group means: finite, as the reference
    out, lse = vector_sparse_attention(q, k, v, sel, return_lse=True)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel)
    assert torch.isfinite(out).all() and torch.isfinite(lse).all()
    assert rel_err(out, ref) <= 1e-2 and torch.allclose(lse, ref_lse, atol=2e-2, rtol=0)


@pytest.mark.parametrize("shape", SHAPES[1:3], ids=IDS[1:3])
def test_full_selection_equals_dense(shape, device):
    batch, sq, sk, heads, dim = shape
    q, k, v = make_qkv(shape, torch.float16, device)
    sel = VectorSelection.from_mask(torch.ones(batch, heads, math.ceil(sq / 64), sk, dtype=torch.bool, device=device))
    out = vector_sparse_attention(q, k, v, sel)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float().transpose(1, 2), k.float().transpose(1, 2), v.float().transpose(1, 2)).transpose(1, 2)
    assert rel_err(out, ref) <= 1e-2


def test_attention_takes_strided_views_without_copies(device):
    qkv = torch.randn(1, 150, 3, 2, 64).to(torch.bfloat16).to(device)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    assert not q.is_contiguous()
    sel = random_selection(1, 2, 150, 150, 0.5, device)
    out = vector_sparse_attention(q, k, v, sel)
    ref = vector_sparse_attention(q.contiguous(), k.contiguous(), v.contiguous(), sel)
    assert rel_err(out, ref) <= 1e-3


def rule_cutoffs(scores, threshold, mode):
    """Per-key cutoff of the selection rule (fp64): row max, or the running tile-prefix max, minus the gap."""
    heads = scores.shape[1]
    gap = -torch.log(torch.as_tensor(threshold, dtype=torch.float64)).expand(heads).view(1, heads, 1, 1)
    if mode == "exact":
        return scores.amax(-1, keepdim=True) - gap
    tiles = math.ceil(scores.shape[-1] / RUNNING_TILE)
    padded = torch.nn.functional.pad(scores, (0, tiles * RUNNING_TILE - scores.shape[-1]), value=-math.inf)
    prefix = padded.unflatten(-1, (tiles, RUNNING_TILE)).amax(-1).cummax(-1).values
    return prefix.repeat_interleave(RUNNING_TILE, -1)[..., : scores.shape[-1]] - gap


def assert_same_selection(got: VectorSelection, want: VectorSelection, scores, cutoffs, tol=5e-4):
    """Identical key sets, except near-ties: keys whose fp64 score lies within `tol` of the rule's
    cutoff or of the weakest kept score (density cap / floor), where bf16 tensor-core scoring may
    round either way."""
    g, w, scores = got.to_mask().cpu(), want.to_mask().cpu(), scores.cpu()
    diff = g ^ w
    if diff.any():
        weakest = torch.where(w, scores, math.inf).amin(-1, keepdim=True)
        near = ((scores - cutoffs.cpu()).abs() <= tol) | ((scores - weakest).abs() <= tol)
        assert bool(near[diff].all()), f"{int((diff & ~near).sum())} keys differ beyond near-ties"
    assert int(diff.sum()) <= max(2, g.numel() // 2000)


@pytest.mark.parametrize("mode", ["exact", "running"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_selection_matches_reference(shape, mode, device):
    batch, sq, sk, heads, dim = shape
    q, k, _ = make_qkv(shape, torch.bfloat16, device, spread=3.0)
    for threshold in (0.2, torch.linspace(0.05, 0.6, heads)):
        sel = vector_selection(q, k, threshold, mode=mode)
        ref = vector_selection_reference(q.cpu(), k.cpu(), threshold, mode=mode)
        scores = selection_scores(q, k).cpu()
        assert_same_selection(sel, ref, scores, rule_cutoffs(scores, threshold, mode))
        assert int(sel.column_count.min()) >= 1  # the max itself is always kept


def test_running_keeps_a_superset_of_exact(device):
    q, k, _ = make_qkv((1, 100, 300, 2, 64), torch.bfloat16, device, spread=3.0)
    exact = vector_selection(q, k, 0.1, mode="exact").to_mask()
    running = vector_selection(q, k, 0.1, mode="running").to_mask()
    assert torch.all(running | ~exact) and running.sum() >= exact.sum()


@pytest.mark.parametrize("mode", ["exact", "running"])
def test_selection_density_cap_and_floor(mode, device):
    shape = (1, 130, 300, 2, 64)
    # fixed inputs: in running mode a near-tie at a row's running cutoff can flip whether the row is
    # capped/floored at all, and then the two rules keep sets that differ far from any cutoff
    q, k, _ = make_qkv(shape, torch.bfloat16, device, spread=3.0, seed=11)
    scores = selection_scores(q, k).cpu()
    capped = vector_selection(q, k, 1e-6, mode=mode, max_density=0.1)
    assert int(capped.column_count.max()) <= 30
    assert_same_selection(capped, vector_selection_reference(q.cpu(), k.cpu(), 1e-6, mode=mode, max_density=0.1),
                          scores, rule_cutoffs(scores, 1e-6, mode))
    floored = vector_selection(q, k, 0.9, mode=mode, min_columns=17)
    assert int(floored.column_count.min()) >= 17
    assert_same_selection(floored, vector_selection_reference(q.cpu(), k.cpu(), 0.9, mode=mode, min_columns=17),
                          scores, rule_cutoffs(scores, 0.9, mode))


def test_selection_extremes_keep_everything_or_the_best(device):
    q, k, _ = make_qkv((1, 70, 90, 1, 64), torch.bfloat16, device, spread=3.0)
    everything = vector_selection(q, k, 1e-30)
    assert torch.all(everything.column_count == 90)
    best = vector_selection(q, k, 1.0)
    assert torch.equal(best.to_mask(), vector_selection_reference(q.cpu(), k.cpu(), 1.0).to_mask().to(device))


def test_selection_memory_is_proportional_to_kept(device):
    q, k, _ = make_qkv((1, 128, 400, 2, 64), torch.bfloat16, device, spread=3.0)
    sel = vector_selection(q, k, 0.5)
    kept = int(sel.column_count.sum())
    # counted (as a bitmask) before the index buffer is allocated: exactly the kept size
    assert sel.column_index.numel() == kept < 2 * 2 * 400
    assert int(sel.column_offset[-1]) == kept
    assert 0 < float(sel.density()) < 0.5


def test_selection_lists_are_ascending_over_many_mask_words(device):
    # 1,137 keys = 18 bitmask words: the expansion crosses its 16-word steps and a ragged last word
    q, k, _ = make_qkv((1, 70, 1137, 2, 64), torch.bfloat16, device, spread=3.0)
    sel = vector_selection(q, k, 0.3)
    ref = vector_selection_reference(q.cpu(), k.cpu(), 0.3)
    scores = selection_scores(q, k).cpu()
    assert_same_selection(sel, ref, scores, rule_cutoffs(scores, 0.3, "exact"))
    off, count = sel.column_offset.cpu(), sel.column_count.reshape(-1).cpu()
    assert torch.equal(off[1:] - off[:-1], count.long())
    for r in range(count.numel()):
        row = sel.column_index[off[r]:off[r] + count[r]].cpu()
        assert bool((row[1:] > row[:-1]).all()) and int(row.min()) >= 0 and int(row.max()) < 1137


@pytest.mark.parametrize("mode", ["exact", "running"])
def test_selection_bitmask_expands_to_the_same_lists(mode, device):
    # the compact form kept for reuse: same keys as vector_selection, 9/64 bytes per (block, key)
    q, k, _ = make_qkv((2, 150, 1137, 2, 64), torch.bfloat16, device, spread=3.0)
    threshold = torch.tensor([0.2, 0.5])
    sel = vector_selection(q, k, threshold, mode=mode)
    bits = vector_selection_bitmask(q, k, threshold, mode=mode)
    again = bits.expand()
    assert torch.equal(again.column_index, sel.column_index) and torch.equal(again.column_offset, sel.column_offset)
    assert torch.equal(again.column_count, sel.column_count)
    assert bits.nbytes() == 2 * 2 * 3 * 18 * 9  # rows x words x (8 + 1) bytes
    ref = vector_selection_reference(q.cpu(), k.cpu(), threshold, mode=mode)
    packed = SelectionBitmask.from_selection(ref)  # round trip of the reference: exact
    assert torch.equal(packed.expand().to_mask(), ref.to_mask())
    assert bits.word_count.dtype == torch.uint8
    assert torch.equal(bits.word_count.sum(1).cpu().int(), sel.column_count.reshape(-1).cpu())
    scores = selection_scores(q, k).cpu()
    assert_same_selection(again, ref, scores, rule_cutoffs(scores, threshold, mode))


@pytest.mark.parametrize("capacity", [None, 40])
def test_expansion_kernel_writes_each_rows_keys_in_order(capacity, device):
    # words of every kind (empty, full, bit 63 alone, random at several densities) and a word count
    # that leaves the last program partly past the row's end; every listed key compared
    from vecdit.ops.sparse_format import _expand_triton

    g = torch.Generator().manual_seed(torch.seed() % 2**31)
    rows, num_words = 5, 37
    bits = torch.rand(rows, num_words, 64, generator=g) < torch.tensor([0.02, 0.1, 0.5, 0.9, 1.0]).view(rows, 1, 1)
    bits[0, 3], bits[1, 4], bits[2, 5] = False, True, False
    bits[2, 5, 63] = True
    weights = torch.ones(64, dtype=torch.int64) << torch.arange(64)  # bit 63's weight wraps to -2^63
    mask = (bits.long() * weights).sum(-1)
    word_end = bits.sum(-1).cumsum(1).int()
    count = bits.sum((1, 2)).int()
    index, offset, got_count = _expand_triton(mask.to(device), word_end.to(device), count.to(device), capacity)
    keep = capacity if capacity is not None else int(count.max())
    for r in range(rows):
        want = bits[r].flatten().nonzero().flatten().int()[:keep]
        assert int(got_count[r]) == want.numel()
        assert torch.equal(index[int(offset[r]):int(offset[r]) + want.numel()].cpu(), want), r


def test_selection_then_attention_end_to_end(device):
    shape = (1, 200, 260, 2, 128)
    q, k, v = make_qkv(shape, torch.bfloat16, device, spread=2.0)
    sel = vector_selection(q, k[:, :250], 0.1)
    out = vector_sparse_attention(q, k, v, sel, dense_range=(250, 260))
    ref, _ = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, (250, 260))
    assert rel_err(out, ref) <= 1e-2


def test_rotary_pairs_in_place_matches_the_stock_formulas(device):
    from diffusers.models.embeddings import apply_rotary_emb

    from vecdit.ops import rotary_pairs_
    from vecdit.ops.rope import rotary_pairs_reference

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

    from vecdit.ops._rope_kernel import norm_rotary_kernel
    from vecdit.ops.rope import rotary_pairs_reference

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

    from vecdit.ops._rope_kernel import norm_rotary_kernel
    from vecdit.ops.rope import rms_norm_reference, rotary_pairs_reference

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


@pytest.mark.parametrize("segments", [1, 2, 3, 5])
def test_segment_bounds_split_each_list_by_key(segments, device):
    from vecdit.ops.reference import segment_bounds_reference
    from vecdit.ops.segments import segment_bounds

    sel = random_selection(2, 3, 300, 333, 0.3, device, seed=segments)
    mask = sel.to_mask()
    mask[0, 1, 2] = False  # an empty row
    sel = VectorSelection.from_mask(mask)
    count = sel.column_count.reshape(-1)
    got = segment_bounds(sel.column_index, sel.column_offset, sel.column_count, 333, segments)
    want = segment_bounds_reference(sel.column_index, sel.column_offset, count, -(-333 // segments), segments)
    assert torch.equal(got, want)
    # sorted lists: segment z holds exactly the keys in [z * width, (z + 1) * width)
    width = -(-333 // segments)
    for r in (0, 5, 17):
        keys = sel.column_index[got[r, 0]:got[r, -1]].long()
        for z in range(segments):
            part = sel.column_index[got[r, z]:got[r, z + 1]].long()
            assert torch.equal(part, keys[(keys >= z * width) & (keys < (z + 1) * width)])


def test_segment_bounds_partition_unsorted_lists(device):
    # lists out of order lose the locality, never an entry: bounds stay inside the row, non-decreasing
    from vecdit.ops.segments import segment_bounds

    sel = random_selection(1, 2, 200, 256, 0.5, device)
    shuffled = sel.column_index[torch.randperm(sel.column_index.numel(), generator=torch.Generator().manual_seed(0))]
    got = segment_bounds(shuffled.to(device), sel.column_offset, sel.column_count, 256, 4)
    count = sel.column_count.reshape(-1)
    assert torch.equal(got[:, 0], sel.column_offset[:-1]) and torch.equal(got[:, -1], sel.column_offset[:-1] + count)
    assert bool((got[:, 1:] >= got[:, :-1]).all())
    with pytest.raises(ValueError, match="segments"):
        segment_bounds(sel.column_index, sel.column_offset, sel.column_count, 256, 0)


def test_merge_segments_matches_reference(device):
    from vecdit.ops.reference import merge_segments_reference
    from vecdit.ops.segments import merge_segments

    g = torch.Generator().manual_seed(0)
    part = torch.randn(3, 2, 70, 2, 64, generator=g).to(device, torch.bfloat16)
    part_lse = torch.randn(3, 2, 2, 70, generator=g).to(device)
    part_lse[1, 0, 0, :5] = float("-inf")  # a segment with nothing for some rows
    part_lse[:, 1, 1, 7] = float("-inf")  # a row with nothing anywhere
    out, lse = merge_segments(part, part_lse, torch.bfloat16)
    ref, ref_lse = merge_segments_reference(part, part_lse)
    assert out.dtype == torch.bfloat16 and rel_err(out, ref) < 1e-2
    finite = torch.isfinite(ref_lse)
    assert torch.allclose(lse[finite], ref_lse[finite], atol=1e-5) and bool(torch.isinf(lse[~finite]).all())
    assert torch.all(out[1, 7, 1] == 0) and not torch.isnan(out).any()
    # merging the segments of one attention gives the attention over all their keys
    q, k, v = make_qkv((1, 130, 400, 2, 64), torch.float32, device)
    sel = random_selection(1, 2, 130, 400, 0.3, device)
    from vecdit.ops.segments import segment_bounds

    bounds = segment_bounds(sel.column_index, sel.column_offset, sel.column_count, 400, 3)
    parts = []
    for z in range(3):
        count = (bounds[:, z + 1] - bounds[:, z]).to(torch.int32)
        offset = torch.cat([bounds[:, z], bounds[-1:, z + 1]])
        piece = VectorSelection(sel.column_index, offset, count.view(1, 2, -1), 1, 2, sel.num_query_blocks, 400)
        parts.append(vec_sparse_attention_reference(q, k, v, piece, compensate=False))
    out, lse = merge_segments(torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts]), torch.float32)
    whole, whole_lse = vec_sparse_attention_reference(q, k, v, sel, compensate=False)
    assert rel_err(out, whole) < 1e-5 and torch.allclose(lse, whole_lse, atol=1e-4)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9),
                    reason="the Gluon kernel is Hopper-only")
def test_gluon_backend_matches_the_triton_kernel(monkeypatch):
    # the Hopper default (VECDIT_ATTN_KERNEL=auto) is the warp-specialized Gluon kernel: same
    # arguments and results as the Triton kernel, both checked against the fp32 reference
    import vecdit.ops._attn_gluon_kernel as gluon_kernel

    calls = []
    launch = gluon_kernel.gluon_sparse_attention
    monkeypatch.setattr(gluon_kernel, "gluon_sparse_attention", lambda *a, **kw: calls.append(1) or launch(*a, **kw))
    # q, k, v as strided views of one fused buffer; 300 queries: a ragged last block
    qkv = torch.randn(2, 2000, 3, 3, 128, dtype=torch.bfloat16, device="cuda")
    q, k, v = qkv[:, :300, 0], qkv[:, :, 1], qkv[:, :, 2]
    sel = random_selection(2, 3, 300, 1900, 0.3, "cuda")
    dense_range = (1900, 2000)
    ref, ref_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, dense_range)
    got, got_lse = vector_sparse_attention(q, k, v, sel, dense_range=dense_range, return_lse=True)
    assert calls, "auto did not take the Gluon kernel on Hopper"
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "triton")
    want, want_lse = vector_sparse_attention(q, k, v, sel, dense_range=dense_range, return_lse=True)
    assert len(calls) == 1
    for out, lse in ((got, got_lse), (want, want_lse)):
        assert rel_err(out, ref) < 1e-2 and float((lse - ref_lse).abs().max()) < 1e-2
    assert rel_err(got, want) < 1e-2
    # key segments (the default where one head's K/V exceed L2): same result, lse included (the
    # kernel alone: the compensation is merged after it)
    plain, plain_lse = vec_sparse_attention_reference(q.float(), k.float(), v.float(), sel, dense_range, compensate=False)
    for segments in (2, 3):
        seg_out, seg_lse = launch(q, k, v, sel.column_index, sel.column_offset, sel.column_count.reshape(-1),
                                  *dense_range, 128 ** -0.5, segments=segments)
        assert rel_err(seg_out, plain) < 1e-2 and float((seg_lse - plain_lse).abs().max()) < 1e-2
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "gluon")
    empty = VectorSelection.from_mask(torch.zeros(2, 3, 5, 2000, dtype=torch.bool, device="cuda"))
    out, lse = vector_sparse_attention(q, k, v, empty, return_lse=True, compensate=False)
    assert torch.all(out == 0) and torch.all(lse == float("-inf"))
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "cuda-graphs")
    with pytest.raises(ValueError, match="VECDIT_ATTN_KERNEL"):
        vector_sparse_attention(q, k, v, sel)


def test_gluon_tile128_layout_choice_is_validated(monkeypatch):
    gluon_kernel = pytest.importorskip("vecdit.ops._attn_gluon_kernel")
    assert gluon_kernel.tile128_config(128)["CONSUMERS"] == 2  # default: one program, two consumers per tile
    monkeypatch.setenv("VECDIT_GLUON_TILE128", "programs")
    assert gluon_kernel.tile128_config(128) == {}
    monkeypatch.setenv("VECDIT_GLUON_TILE128", "split,BLOCK_N=64,STAGES=4,segments=2")
    cfg = gluon_kernel.tile128_config(128)
    assert cfg["BLOCK_N"] == 64 and cfg["STAGES"] == 4 and cfg["CONSUMERS"] == 2 and cfg["segments"] == 2
    assert gluon_kernel.tile128_config(64) == {}  # 64-query tiles keep one program per tile
    for bad in ("two", "split,STAGES=x", "split,WARPS=8"):
        monkeypatch.setenv("VECDIT_GLUON_TILE128", bad)
        with pytest.raises(ValueError, match="VECDIT_GLUON_TILE128"):
            gluon_kernel.tile128_config(128)


def test_attention_kernel_choice_is_validated(device, monkeypatch):
    q, k, v = make_qkv((1, 64, 64, 1, 64), torch.bfloat16, device)
    sel = random_selection(1, 1, 64, 64, 0.5, device)
    monkeypatch.setenv("VECDIT_ATTN_KERNEL", "fastest")
    with pytest.raises(ValueError, match="VECDIT_ATTN_KERNEL"):
        vector_sparse_attention(q, k, v, sel)
