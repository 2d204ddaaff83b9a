# Copyright 2026 The vecdit authors. Apache-2.0.
"""Transformer benchmark: one full-size forward (random weights, bf16) with stock processors and vecdit.

vecdit runs its default rule (top-k keys per 4x4x4 query tile), which keeps the asked density on
any input, random weights included.
"""
from __future__ import annotations

import torch

from vecdit import VecAttnConfig, stats
from vecdit.api import apply_vec_sparse, remove_vec_sparse

MODELS = {
    "wan2.1-1.3b-480p": dict(family="wan", heads=12, layers=30, ffn=8960, latent=(21, 60, 104), text=512, cfg_passes=2),
    "wan2.1-14b-720p": dict(family="wan", heads=40, layers=40, ffn=13824, latent=(21, 90, 160), text=512, cfg_passes=2),
    "hunyuanvideo-720p": dict(family="hunyuan", heads=24, latent=(33, 90, 160), text=256, valid_text=64, cfg_passes=1),
}


def build(name: str):
    spec = MODELS[name]
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            if spec["family"] == "wan":
                from diffusers import WanTransformer3DModel

                model = WanTransformer3DModel(
                    patch_size=(1, 2, 2), num_attention_heads=spec["heads"], attention_head_dim=128, in_channels=16,
                    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=spec["ffn"], num_layers=spec["layers"],
                    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
            else:
                from diffusers import HunyuanVideoTransformer3DModel

                model = HunyuanVideoTransformer3DModel()
    finally:
        torch.set_default_dtype(torch.float32)
    model.eval().requires_grad_(False)
    g = torch.Generator(device="cuda").manual_seed(0)
    f, h, w = spec["latent"]
    bf = dict(device="cuda", dtype=torch.bfloat16, generator=g)
    inputs = dict(hidden_states=torch.randn(1, 16, f, h, w, **bf), timestep=torch.tensor([500.0], device="cuda"),
                  encoder_hidden_states=torch.randn(1, spec["text"], 4096, **bf), return_dict=False)
    if spec["family"] == "hunyuan":
        mask = torch.zeros(1, spec["text"], dtype=torch.long, device="cuda")
        mask[:, : spec["valid_text"]] = 1
        inputs.update(encoder_attention_mask=mask, pooled_projections=torch.randn(1, 768, **bf),
                      guidance=torch.tensor([6000.0], device="cuda", dtype=torch.bfloat16))
    return model, inputs


def timed_forward(model, inputs) -> tuple[float, torch.Tensor]:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.inference_mode():
        start.record()
        out = model(**inputs)[0]
        end.record()
    end.synchronize()
    return start.elapsed_time(end), out


def run_model(name: str, densities=(0.25, 0.1), steps: int = 50) -> dict:
    spec = MODELS[name]
    model, inputs = build(name)
    res = {"model": name, "spec": spec, "runs": {}}
    stock_ms, stock_out = timed_forward(model, inputs)  # first call: includes cuDNN set-up
    stock_ms, stock_out = timed_forward(model, inputs)
    res["runs"]["stock"] = {"forward_ms": stock_ms}
    num_layers = len([n for n in model.attn_processors if n.endswith("attn1.processor")]) if spec["family"] == "wan" else 60
    variants = [("vecdit-dense", VecAttnConfig(dense_steps=10**6))]
    # the default rule (top-k per 4x4x4 query tile) keeps exactly the asked density: no calibration
    variants += [(f"vecdit-{int(d * 100)}%", VecAttnConfig(density=d, dense_steps=0, collect_stats=True))
                 for d in densities]
    for label, cfg in variants:
        apply_vec_sparse(model, cfg)
        timed_forward(model, inputs)  # warm-up: Triton compile, allocator
        model._reset_stateful_cache()
        ms, out = timed_forward(model, inputs)
        st = stats(model)
        recs = [r for r in st["records"] if r["step"] == st["history"][-1][1]] if st["records"] else []
        entry = {"forward_ms": ms, "speedup_vs_stock": stock_ms / ms,
                 "rel_diff_vs_stock": float((out.float() - stock_out.float()).norm() / stock_out.float().norm())}
        if recs:
            entry.update(density=sum(r["density"] for r in recs) / len(recs),
                         selection_ms=sum(r["selection_ms"] for r in recs),
                         sparse_attention_ms=sum(r["attention_ms"] for r in recs))
            entry["attention_share"] = (entry["selection_ms"] + entry["sparse_attention_ms"]) / ms
        remove_vec_sparse(model)
        res["runs"][label] = entry
    # attention share of the stock forward: one layer's stock attention call, times the layers
    res["runs"]["stock"]["attention_share"] = _stock_attention_ms(model, spec) * num_layers / stock_ms
    dense_ms = res["runs"]["vecdit-dense"]["forward_ms"]
    n_dense = VecAttnConfig().num_dense_steps(steps)
    for label, entry in res["runs"].items():
        per_step = spec["cfg_passes"]
        if label.startswith("vecdit-") and label != "vecdit-dense":
            entry["projected_50_steps_s"] = per_step * (n_dense * dense_ms + (steps - n_dense) * entry["forward_ms"]) / 1e3
        else:
            entry["projected_50_steps_s"] = per_step * steps * entry["forward_ms"] / 1e3
    del model
    torch.cuda.empty_cache()
    return res


def _stock_attention_ms(model, spec) -> float:
    from .common import do_bench_ms

    f, h, w = spec["latent"]
    video = f * (h // 2) * (w // 2)
    q = torch.randn(1, video + (spec["text"] if spec["family"] == "hunyuan" else 0), spec["heads"], 128,
                    device="cuda", dtype=torch.bfloat16)
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    mask = None
    if spec["family"] == "hunyuan":  # what the stock processor passes: a boolean key-padding mask
        mask = torch.ones(1, 1, 1, q.shape[1], dtype=torch.bool, device="cuda")
        mask[..., video + spec["valid_text"]:] = False
    return do_bench_ms(lambda: dispatch_attention_fn(q, q, q, attn_mask=mask))
