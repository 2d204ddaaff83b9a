# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.bench pipeline`: a whole generation, stock diffusers against vecdit, projected
from one timed step of each kind (full-size configs, random weights: the real shapes and kernels).

Per model: text encoding (prompt and negative prompt), one denoising step of each kind the
schedule has (stock; vecdit's selecting and reusing steps; its eager dense warm-up runs the stock
processors, so it takes the stock step's time; compiled, it is timed), each step both CFG passes, and the VAE decode
(tiled), then the projection to `steps` steps with the preset's
schedule. Variants: `stock`, `vecdit` (the model's preset), `vecdit-compile` (the preset plus
`compile_repeated_blocks(fullgraph=True)`). Steps are seconds long: medians of `repeats` timed
runs after one warm-up (which also compiles), with CUDA synchronisation, not do_bench.
"""
from __future__ import annotations

import statistics
import time

import torch

import vecdit
from vecdit.config import VecAttnConfig

from .common import environment

MODELS = {
    "wan2.1-t2v-1.3b": dict(height=480, width=832, frames=81),
    "wan2.1-t2v-14b": dict(height=720, width=1280, frames=81),
    "tiny": dict(height=128, width=128, frames=9),  # a CPU smoke run of the whole path
}
VARIANTS = ("stock", "vecdit", "vecdit-compile")


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> float:
    """Median seconds of `fn` over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build_pipeline(name: str, device: str):
    if name == "tiny":
        from vecdit.pipelines.tiny import tiny_wan_pipeline

        return tiny_wan_pipeline().to(device)
    from vecdit.pipelines.models import PRESETS
    from vecdit.pipelines.random_weights import random_pipeline

    return random_pipeline(name, PRESETS[name], device, torch.bfloat16)


def run_pipeline(name: str, variants=VARIANTS, steps: int = 50, repeats: int = 2, device: str = "cuda",
                 config: VecAttnConfig | None = None) -> dict:
    size = MODELS[name]
    pipe = build_pipeline(name, device)
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    dtype = transformer.dtype
    with torch.inference_mode():
        text_s = timed(lambda: pipe.encode_prompt("a red fox running through snow", "", True, max_sequence_length=512,
                                                  device=device), device, repeats)
        embeds, negative = pipe.encode_prompt("a red fox running through snow", "", True, max_sequence_length=512,
                                              device=device)
    scale_t, scale_s = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    g = torch.Generator(device=device).manual_seed(0)
    latents = torch.randn(1, transformer.config.in_channels, (size["frames"] - 1) // scale_t + 1,
                          size["height"] // scale_s, size["width"] // scale_s, generator=g, device=device, dtype=dtype)
    timestep = torch.tensor([500.0], device=device)

    def step(index: int):
        """One denoising step: both CFG passes, as WanPipeline runs them."""
        with torch.inference_mode():
            for branch, context in (("cond", embeds), ("uncond", negative)):
                with transformer.cache_context(branch, step_index=index, num_inference_steps=steps):
                    transformer(hidden_states=latents, timestep=timestep, encoder_hidden_states=context,
                                return_dict=False)

    config = config or VecAttnConfig.for_model(name if name != "tiny" else "wan2.1-t2v-1.3b")
    n_dense = config.num_dense_steps(steps) + config.num_dense_last_steps(steps)
    sparse_steps = steps - n_dense
    n_select = -(-sparse_steps // config.reuse_interval)
    n_reuse = sparse_steps - n_select
    runs = {}
    for variant in variants:
        if variant != "stock":
            vecdit.enable(pipe, config)
        if variant == "vecdit-compile":
            torch._dynamo.reset()
            transformer.compile_repeated_blocks(fullgraph=True)
        first = config.num_dense_steps(steps)
        kinds = {"stock": 0} if variant == "stock" else {"dense": 0, "select": first}
        if variant != "stock" and config.reuse_interval > 1:
            kinds["reuse"] = first + 1
        if variant == "vecdit" and "stock" in runs:
            del kinds["dense"]  # eager warm-up steps run the stock processors: the stock step's time
        seconds = {kind: timed(lambda i=i: step(i), device, repeats) for kind, i in kinds.items()}
        if "dense" not in seconds and variant != "stock":
            seconds["dense"] = runs["stock"]["step_s"]["stock"]
        if variant == "stock":
            denoise = steps * seconds["stock"]
        else:
            denoise = n_dense * seconds["dense"] + n_select * seconds["select"] + n_reuse * seconds.get("reuse", 0.0)
        runs[variant] = {"step_s": seconds, "denoise_s": denoise}
        if variant != "stock":
            vecdit.disable(pipe)
        if variant == "vecdit-compile":  # back to the eager blocks for the next variant
            torch._dynamo.reset()
            for module in transformer.modules():
                if getattr(module, "_compiled_call_impl", None) is not None:
                    module._compiled_call_impl = None
    vae = pipe.vae
    if hasattr(vae, "enable_tiling") and name != "tiny":
        vae.enable_tiling()
    z = latents[:, :vae.config.z_dim].to(vae.dtype)
    with torch.inference_mode():
        decode_s = timed(lambda: vae.decode(z, return_dict=False), device, 1)
    for run in runs.values():
        run["total_s"] = text_s + run["denoise_s"] + decode_s
    stock_total = runs["stock"]["total_s"] if "stock" in runs else None
    for run in runs.values():
        run["speedup_vs_stock"] = stock_total / run["total_s"] if stock_total else None
        run["denoise_speedup_vs_stock"] = (runs["stock"]["denoise_s"] / run["denoise_s"]) if stock_total else None
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else None
    return {"model": name, **size, "steps": steps, "config": config.to_dict(),
            "schedule": {"dense": n_dense, "select": n_select, "reuse": n_reuse},
            "text_encoding_s": text_s, "vae_decode_s": decode_s, "runs": runs, "peak_memory_gb": peak}


def pipeline_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# vecdit pipeline benchmark on {env['card']}", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['date']}. Full-size configs, random weights, bf16 "
             "(VAE fp32, tiled decode), batch 1, CFG (2 passes per step). One timed step of each kind, projected to the "
             "run's steps with the preset's schedule; text encoding and VAE decode are the same for every variant.", ""]
    for r in results:
        sch = r["schedule"]
        lines += [f"## {r['model']}: {r['height']}x{r['width']}, {r['frames']} frames, {r['steps']} steps "
                  f"({sch['dense']} dense, {sch['select']} selecting, {sch['reuse']} reusing)", "",
                  f"text encoding {r['text_encoding_s']:.2f} s, VAE decode {r['vae_decode_s']:.2f} s, "
                  f"peak memory {r['peak_memory_gb'] or 0:.1f} GB", "",
                  "| variant | step s (each kind) | denoising s | x stock (denoising) | total s | x stock (end to end) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for variant, run in r["runs"].items():
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in run["step_s"].items())
            lines.append(f"| {variant} | {kinds} | {run['denoise_s']:.1f} | {run['denoise_speedup_vs_stock'] or 0:.2f} | "
                         f"{run['total_s']:.1f} | {run['speedup_vs_stock'] or 0:.2f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main_pipeline(args) -> int:
    from .common import write_results

    env = environment()
    results = []
    for name in args.models:
        results.append(run_pipeline(name, args.variants, args.steps, args.repeats, args.device))
        print(pipeline_markdown(env, results[-1:]), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    paths = write_results("pipeline-" + "-".join(args.models), {"environment": env, "results": results},
                          pipeline_markdown(env, results), args.out)
    print("wrote", *paths)
    return 0
