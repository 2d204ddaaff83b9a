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
    "hunyuanvideo": dict(height=720, width=1280, frames=129),
    "tiny": dict(height=128, width=128, frames=9),  # CPU smoke runs of the whole path
    "tiny-hunyuan": dict(height=64, width=64, frames=5),
}
VARIANTS = ("stock", "vecdit", "vecdit-compile")
# fp8 converts the weights for good (vecdit.fp8): these variants run after all the others
FP8_VARIANTS = ("vecdit-fp8", "vecdit-compile-fp8")
# dense attention through SageAttention2 (vecdit.bench.sage; diffusers' `set_attention_backend("sage")`):
# stock, and vecdit's dense warm-up steps, dense layers and HunyuanVideo's text path
SAGE_VARIANTS = ("stock-sage", "stock-sage-compile-fp8", "vecdit-sage", "vecdit-sage-compile-fp8")
ALL_VARIANTS = VARIANTS + FP8_VARIANTS + SAGE_VARIANTS
FLAGS = ("sage", "compile", "fp8")


def variant_flags(variant: str) -> tuple[str, set]:
    """`stock|vecdit` and its options (`sage`, `compile`, `fp8`, in that order), e.g. `vecdit-sage-compile-fp8`."""
    base, *flags = variant.split("-")
    if base not in ("stock", "vecdit") or flags != [f for f in FLAGS if f in flags]:
        raise ValueError(f"unknown variant {variant!r}: `stock` or `vecdit`, then any of -sage, -compile, -fp8 in "
                         f"that order (e.g. {', '.join(ALL_VARIANTS)})")
    return base, set(flags)


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


class Rig:
    """What the benchmark needs of one model: its transformer, a timed text encoding, one
    denoising step (every CFG pass, as its pipeline runs them), the latents and the VAE."""

    def __init__(self, transformer, encode, passes, latents, vae, preset: str):
        self.transformer, self.encode, self.passes, self.latents, self.vae = transformer, encode, passes, latents, vae
        self.preset = preset  # the VecAttnConfig preset

    def _call(self, kwargs) -> torch.Tensor:
        with torch.inference_mode():
            return self.transformer(hidden_states=self.latents, timestep=torch.tensor([500.0], device=self.latents.device),
                                    return_dict=False, **kwargs)[0]

    def forward(self) -> torch.Tensor:
        """The first CFG pass's output (fp32), outside any step: what fp8's error is measured on."""
        return self._call(self.passes[0][1]).float()

    def step(self, index: int, steps: int):
        for branch, kwargs in self.passes:
            with self.transformer.cache_context(branch, step_index=index, num_inference_steps=steps):
                self._call(kwargs)


def _latents(channels, size, scale_t, scale_s, device, dtype):
    g = torch.Generator(device=device).manual_seed(0)
    return torch.randn(1, channels, (size["frames"] - 1) // scale_t + 1, size["height"] // scale_s,
                       size["width"] // scale_s, generator=g, device=device, dtype=dtype)


def wan_rig(name: str, device: str) -> Rig:
    if name == "tiny":
        from vecdit.pipelines.tiny import tiny_wan_pipeline

        pipe = tiny_wan_pipeline().to(device)
    else:
        from vecdit.pipelines.models import PRESETS
        from vecdit.pipelines.random_weights import random_pipeline

        pipe = random_pipeline(name, PRESETS[name], device, torch.bfloat16)
    prompt = ("a red fox running through snow", "")

    def encode():
        with torch.inference_mode():
            return pipe.encode_prompt(*prompt, True, max_sequence_length=512, device=device)

    embeds, negative = encode()
    latents = _latents(pipe.transformer.config.in_channels, MODELS[name], pipe.vae_scale_factor_temporal,
                       pipe.vae_scale_factor_spatial, device, pipe.transformer.dtype)
    passes = [("cond", dict(encoder_hidden_states=embeds)), ("uncond", dict(encoder_hidden_states=negative))]
    return Rig(pipe.transformer, encode, passes, latents, pipe.vae, "wan2.1-t2v-1.3b" if name == "tiny" else name)


def hunyuan_clip_config():
    """CLIP ViT-L/14's text tower, HunyuanVideo's pooled prompt (768 wide: the transformer's
    `pooled_projection_dim`; `CLIPTextConfig()` alone is the 512-wide base model)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          projection_dim=768)


def hunyuan_rig(name: str, device: str) -> Rig:
    """HunyuanVideo T2V with random weights: the 13B transformer, its VAE, and text encoders of the
    real sizes (LLaVA-LLaMA-3-8B's language model on 256 + 95 template tokens, CLIP-L on 77); one
    pass per step (guidance-distilled, as the pipeline runs it by default)."""
    from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    full = name == "hunyuanvideo"
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            if full:
                transformer = HunyuanVideoTransformer3DModel()
                text = LlamaModel(LlamaConfig(vocab_size=128320, hidden_size=4096, intermediate_size=14336,
                                              num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8))
                clip = CLIPTextModel(hunyuan_clip_config())
                vae = AutoencoderKLHunyuanVideo()
            else:
                from vecdit.pipelines.tiny import tiny_hunyuan_transformer

                transformer = tiny_hunyuan_transformer()
                text = LlamaModel(LlamaConfig(vocab_size=256, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                              num_attention_heads=2, num_key_value_heads=2))
                clip = CLIPTextModel(CLIPTextConfig(vocab_size=256, hidden_size=8, intermediate_size=16,
                                                    num_hidden_layers=1, num_attention_heads=2, projection_dim=8))
                vae = AutoencoderKLHunyuanVideo(latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                                norm_num_groups=4, mid_block_add_attention=False)
    finally:
        torch.set_default_dtype(previous)
    for m in (transformer, text, clip, vae):
        m.eval().requires_grad_(False)
    vae = vae.to(device, torch.float32) if not full else vae
    n_text, valid = (256, 64) if full else (10, 7)
    ids = torch.randint(0, text.config.vocab_size, (1, n_text + (95 if full else 0)), device=device)
    clip_ids = torch.randint(0, clip.config.vocab_size, (1, 77 if full else 8), device=device)

    def encode():
        with torch.inference_mode():
            return text(input_ids=ids).last_hidden_state[:, -n_text:], clip(input_ids=clip_ids).pooler_output

    hidden, pooled = encode()
    mask = torch.zeros(1, n_text, dtype=torch.long, device=device)
    mask[:, :valid] = 1  # a prompt of `valid` tokens, the rest padding
    if not full:
        hidden = torch.randn(1, n_text, transformer.config.text_embed_dim, device=device, dtype=dtype)
        pooled = torch.randn(1, transformer.config.pooled_projection_dim, device=device, dtype=dtype)
    guidance = torch.tensor([6000.0], device=device, dtype=dtype)
    passes = [("cond", dict(encoder_hidden_states=hidden, encoder_attention_mask=mask, pooled_projections=pooled,
                            guidance=guidance))]
    latents = _latents(transformer.config.in_channels, MODELS[name], 4, 8, device, dtype)
    return Rig(transformer, encode, passes, latents, vae, "hunyuanvideo")


def run_pipeline(name: str, variants=VARIANTS, steps: int = 50, repeats: int = 2, device: str = "cuda",
                 config: VecAttnConfig | None = None, overrides: dict | None = None) -> dict:
    """Stock and vecdit `variants` of one model's generation; vecdit runs `config`, else the model's
    preset with `overrides` (e.g. `density`, `query_tiles`)."""
    size = MODELS[name]
    rig = (hunyuan_rig if "hunyuan" in name else wan_rig)(name, device)
    transformer = rig.transformer
    text_s = timed(rig.encode, device, repeats)
    print(f"[{name}] built; text encoding {text_s:.2f} s", flush=True)

    def step(index: int):
        rig.step(index, steps)

    config = config or VecAttnConfig.for_model(rig.preset, **(overrides or {}))
    n_dense = config.num_dense_steps(steps) + config.num_dense_last_steps(steps)
    sparse_steps = steps - n_dense
    n_select = -(-sparse_steps // config.reuse_interval)
    n_reuse = sparse_steps - n_select
    flags = {v: variant_flags(v) for v in variants}
    if any("sage" in f for _, f in flags.values()):
        from .sage import use_in_diffusers

        use_in_diffusers()
    variants = sorted(variants, key=lambda v: "fp8" in flags[v][1])  # stable: fp8 last
    runs, fp8_error = {}, None
    for variant in variants:
        base, opts = flags[variant]
        if "fp8" in opts and fp8_error is None:
            from vecdit.fp8 import quantize_fp8

            t0 = time.perf_counter()
            reference = rig.forward()
            _sync(device)
            t1 = time.perf_counter()
            quantize_fp8(transformer)
            _sync(device)
            t2 = time.perf_counter()
            fp8_out = rig.forward()
            _sync(device)
            t3 = time.perf_counter()
            fp8_error = float((fp8_out - reference).norm() / reference.norm())
            # first calls, untimed by the step medians: a slow eager fp8 path shows here before any compile
            print(f"[{name}] fp8 Linear layers: one forward's relative error vs bf16 {fp8_error:.4f}; first forward "
                  f"bf16 {t1 - t0:.1f} s, conversion {t2 - t1:.1f} s, fp8 (eager, stock processors) {t3 - t2:.1f} s",
                  flush=True)
        if base == "vecdit":
            vecdit.enable(transformer, config)
        if "sage" in opts:  # after vecdit: its processors keep the backend for their dense paths
            transformer.set_attention_backend("sage")
        if "compile" in opts:
            torch._dynamo.reset()
            transformer.compile_repeated_blocks(fullgraph=True)
        first = config.num_dense_steps(steps)
        kinds = {"stock": 0} if base == "stock" else {"dense": 0, "select": first}
        if base == "vecdit" and config.reuse_interval > 1:
            kinds["reuse"] = first + 1
        if variant == "vecdit" and "stock" in runs:
            del kinds["dense"]  # eager warm-up steps run the stock processors: the stock step's time
        seconds = {}
        for kind, i in kinds.items():
            seconds[kind] = timed(lambda i=i: step(i), device, repeats)
            # progress as it comes: a run cut short by its time limit still says what it measured
            print(f"[{name}] {variant}: {kind} step {seconds[kind]:.2f} s", flush=True)
        if "dense" not in seconds and variant != "stock":
            seconds["dense"] = runs["stock"]["step_s"]["stock"]
        if base == "stock":
            denoise = steps * seconds["stock"]
        else:
            denoise = n_dense * seconds["dense"] + n_select * seconds["select"] + n_reuse * seconds.get("reuse", 0.0)
        runs[variant] = {"step_s": seconds, "denoise_s": denoise}
        if base == "vecdit":
            vecdit.disable(transformer)
        if "sage" in opts:
            transformer.reset_attention_backend()
        if "compile" in opts:  # back to the eager blocks for the next variant
            torch._dynamo.reset()
            for module in transformer.modules():
                if getattr(module, "_compiled_call_impl", None) is not None:
                    module._compiled_call_impl = None
    vae = rig.vae
    if hasattr(vae, "enable_tiling") and not name.startswith("tiny"):
        vae.enable_tiling()
    channels = vae.config.get("z_dim", vae.config.get("latent_channels"))
    z = rig.latents[:, :channels].to(vae.dtype)
    with torch.inference_mode():
        decode_s = timed(lambda: vae.decode(z, return_dict=False), device, 1)
    for run in runs.values():
        run["total_s"] = text_s + run["denoise_s"] + decode_s
    stock_total = runs["stock"]["total_s"] if "stock" in runs else None
    for run in runs.values():
        run["speedup_vs_stock"] = stock_total / run["total_s"] if stock_total else None
        run["denoise_speedup_vs_stock"] = (runs["stock"]["denoise_s"] / run["denoise_s"]) if stock_total else None
        # end to end against every stock baseline of the run (e.g. stock-sage-compile-fp8)
        run["speedup_vs"] = {name: other["total_s"] / run["total_s"] for name, other in runs.items() if name.startswith("stock")}
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else None
    return {"model": name, **size, "steps": steps, "config": config.to_dict(), "cfg_passes": len(rig.passes),
            "schedule": {"dense": n_dense, "select": n_select, "reuse": n_reuse},
            "text_encoding_s": text_s, "vae_decode_s": decode_s, "runs": runs, "peak_memory_gb": peak,
            # relative error of one forward (stock processors) with fp8 Linear layers against bf16
            "fp8_forward_rel_err": fp8_error}


def pipeline_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# vecdit pipeline benchmark on {env['card']}", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['date']}. Full-size configs, random weights, bf16 "
             "(tiled decode), batch 1, each step as its pipeline runs it (Wan: CFG, 2 passes; HunyuanVideo: 1, "
             "guidance-distilled). One timed step of each kind, projected to the "
             "run's steps with the preset's schedule; text encoding and VAE decode are the same for every variant.", ""]
    for r in results:
        sch = r["schedule"]
        baselines = [name for name in r["runs"] if name.startswith("stock-")]  # beside plain stock's column
        lines += [f"## {r['model']}: {r['height']}x{r['width']}, {r['frames']} frames, {r['steps']} steps "
                  f"({sch['dense']} dense, {sch['select']} selecting, {sch['reuse']} reusing)", "",
                  f"text encoding {r['text_encoding_s']:.2f} s, VAE decode {r['vae_decode_s']:.2f} s, "
                  f"peak memory {r['peak_memory_gb'] or 0:.1f} GB"
                  + (f"; fp8 Linear layers: one forward's relative error vs bf16 {r['fp8_forward_rel_err']:.4f}"
                     if r.get("fp8_forward_rel_err") is not None else ""), "",
                  "| variant | step s (each kind) | denoising s | x stock (denoising) | total s | x stock (end to end) |"
                  + "".join(f" x {b} |" for b in baselines),
                  "| --- | --- | --- | --- | --- | --- |" + " --- |" * len(baselines)]
        for variant, run in r["runs"].items():
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in run["step_s"].items())
            lines.append(f"| {variant} | {kinds} | {run['denoise_s']:.1f} | {run['denoise_speedup_vs_stock'] or 0:.2f} | "
                         f"{run['total_s']:.1f} | {run['speedup_vs_stock'] or 0:.2f} |"
                         + "".join(f" {run['speedup_vs'][b]:.2f} |" for b in baselines))
        lines.append("")
    return "\n".join(lines) + "\n"


def main_pipeline(args) -> int:
    from .common import write_results

    env = environment()
    overrides = {}
    if getattr(args, "density", None) is not None:
        overrides["density"] = args.density
    if getattr(args, "query_tiles", None):
        overrides["query_tiles"] = tuple(int(x) for x in args.query_tiles.split("x"))
    results = []
    for name in args.models:
        results.append(run_pipeline(name, args.variants, args.steps, args.repeats, args.device, overrides=overrides))
        print(pipeline_markdown(env, results[-1:]), flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    stem = "pipeline-" + "-".join(args.models) + "".join(
        f"-{k.replace('_', '-')}-{'x'.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in overrides.items())
    paths = write_results(stem, {"environment": env, "results": results},
                          pipeline_markdown(env, results), args.out)
    print("wrote", *paths)
    return 0
