# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.bench pipeline`: a whole generation, stock diffusers against vecdit, projected
from one timed step of each kind (full-size configs, random weights: the real shapes and kernels).

Per model: text encoding (prompt and negative prompt), one denoising step of each kind the
schedule has (stock; vecdit's selecting and reusing steps; its eager dense warm-up runs the stock
processors, so it takes the stock step's time; compiled, it is timed), each step every CFG pass, and the VAE
decode (tiled), then the projection to `steps` steps with the preset's schedule. Variants: `stock`,
`vecdit` (the model's preset), `vecdit-compile` (the preset plus `compile_repeated_blocks(fullgraph=True)`),
and the `-sage` / `-fp8` options (`variant_flags`). Steps are seconds long: medians of `repeats`
timed runs after one warm-up (which also compiles), with CUDA synchronisation, not do_bench.

Every variant runs isolated (`isolated_variant`): diffusers' active attention backend (a global that
`set_attention_backend` sets and `reset_attention_backend` does not undo), each attention module's
processor and each processor's backend are put back as they were, vecdit is disabled and compiled
blocks dropped before the next variant; the backend each variant's processors dispatched to is
recorded (`attention_backend`). fp8 converts the weights for good: fp8 variants run last.

Models: Wan2.1 (1.3B 480p, 14B 720p), Wan2.2 T2V-A14B (two 14B experts, the high-noise one for the
first steps: its step times stand for both, same shapes), Wan2.2 TI2V-5B (704x1280, per-token
timesteps, 48-channel 16x VAE), HunyuanVideo (720p, guidance-distilled: one pass) and
HunyuanVideo-1.5 T2V at 720p (CFG, two passes); `tiny-*` builds each family's tiny random model (CPU).
"""
from __future__ import annotations

import contextlib
import statistics
import time
import types
from collections import Counter

import torch

import vecdit
from vecdit.config import VecAttnConfig

from .common import environment

MODELS = {
    "wan2.1-t2v-1.3b": dict(height=480, width=832, frames=81),
    "wan2.1-t2v-14b": dict(height=720, width=1280, frames=81),
    # Wan2.2: the checkpoints' own step counts (A14B 40, TI2V-5B 50) and sizes (TI2V-5B's 720p is 704x1280)
    "wan2.2-t2v-a14b": dict(height=720, width=1280, frames=81, steps=40),
    "wan2.2-ti2v-5b": dict(height=704, width=1280, frames=121),
    "hunyuanvideo": dict(height=720, width=1280, frames=129),
    "hunyuanvideo-1.5-720p": dict(height=720, width=1280, frames=121),
    "tiny": dict(height=128, width=128, frames=9),  # CPU smoke runs of the whole path
    "tiny-hunyuan": dict(height=64, width=64, frames=5),
    "tiny-wan2.2-a14b": dict(height=128, width=128, frames=9),
    "tiny-wan2.2-ti2v-5b": dict(height=128, width=128, frames=9),
    "tiny-hunyuan15": dict(height=64, width=64, frames=5),
}
# the VecAttnConfig preset of each model (its family's registered checkpoint name)
PRESET_OF = {"tiny": "wan2.1-t2v-1.3b", "tiny-hunyuan": "hunyuanvideo", "hunyuanvideo-1.5-720p": "hunyuanvideo-1.5-t2v",
             "tiny-wan2.2-a14b": "wan2.2-t2v-a14b", "tiny-wan2.2-ti2v-5b": "wan2.2-ti2v-5b",
             "tiny-hunyuan15": "hunyuanvideo-1.5-t2v"}
VARIANTS = ("stock", "vecdit", "vecdit-compile")
# fp8 converts the weights for good (vecdit.fp8): these variants run after all the others
FP8_VARIANTS = ("vecdit-fp8", "vecdit-compile-fp8")
# dense attention through SageAttention2 (vecdit.bench.sage; diffusers' `set_attention_backend("sage")`):
# stock, and vecdit's dense warm-up steps, dense layers and HunyuanVideo's text path
SAGE_VARIANTS = ("stock-sage", "stock-sage-compile-fp8", "vecdit-sage", "vecdit-sage-compile-fp8")
ALL_VARIANTS = VARIANTS + FP8_VARIANTS + SAGE_VARIANTS
FLAGS = ("sage", "compile", "fp8")
# what the README's speed table compares, each variant isolated
TABLE_VARIANTS = ("stock", "stock-sage-compile-fp8", "vecdit-sage-compile-fp8")


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
    """What the benchmark needs of one model: its transformer(s), a timed text encoding, one
    denoising step (every CFG pass, as its pipeline runs them), the latents and the VAE.

    `transformer_2` and `switch_at`: Wan2.2 A14B's low-noise expert and, for a run of n steps, the
    index of its first step (the pipeline switches where the timestep falls below its boundary).
    `timestep`: the transformer's timestep argument (Wan2.2 TI2V-5B's is one per token)."""

    def __init__(self, transformer, encode, passes, latents, vae, preset: str, transformer_2=None, switch_at=None,
                 timestep: torch.Tensor | None = None):
        self.transformers = [transformer] + ([transformer_2] if transformer_2 is not None else [])
        self.encode, self.passes, self.latents, self.vae = encode, passes, latents, vae
        self.preset = preset  # the VecAttnConfig preset
        self.switch_at = switch_at
        self.switch = None  # set for the run's step count (`run_pipeline`)
        self.timestep = timestep if timestep is not None else torch.tensor([500.0], device=latents.device)
        self.last_output = None  # the first pass's output of the latest step (the variant's fingerprint)

    @property
    def transformer(self):
        return self.transformers[0]

    def target(self):
        """What `vecdit.enable` and `quantize_fp8` take: the transformer, or both experts."""
        if len(self.transformers) == 1:
            return self.transformer
        return types.SimpleNamespace(transformer=self.transformers[0], transformer_2=self.transformers[1])

    def model_at(self, index: int):
        """The transformer that runs step `index` (Wan2.2 A14B: the low-noise expert from the switch on)."""
        if self.switch is not None and index >= self.switch:
            return self.transformers[1]
        return self.transformers[0]

    def _call(self, model, kwargs) -> torch.Tensor:
        with torch.inference_mode():
            return model(hidden_states=self.latents, timestep=self.timestep, return_dict=False, **kwargs)[0]

    def forward(self) -> torch.Tensor:
        """The first CFG pass's output (fp32), outside any step: what fp8's error is measured on."""
        return self._call(self.transformer, self.passes[0][1]).float()

    def step(self, index: int, steps: int):
        model = self.model_at(index)
        for n, (branch, kwargs) in enumerate(self.passes):
            with model.cache_context(branch, step_index=index, num_inference_steps=steps):
                out = self._call(model, kwargs)
            if n == 0:
                self.last_output = out


def _latents(channels, size, scale_t, scale_s, device, dtype):
    g = torch.Generator(device=device).manual_seed(0)
    return torch.randn(1, channels, (size["frames"] - 1) // scale_t + 1, size["height"] // scale_s,
                       size["width"] // scale_s, generator=g, device=device, dtype=dtype)


# Wan2.2's full-size parts beside pipelines/random_weights.py's Wan2.1 ones (the Wan-AI checkpoints' configs)
WAN22_TI2V_5B = dict(num_attention_heads=24, ffn_dim=14336, num_layers=30, in_channels=48, out_channels=48)
WAN22_TI2V_5B_VAE = dict(base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12,
                         out_channels=12, patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 48,
                         latents_std=[1.0] * 48)
WAN22_A14B_BOUNDARY = 0.875  # the high-noise expert runs while t >= 0.875 * 1000
WAN22_A14B_SHIFT = 12.0  # its scheduler's flow shift (where the switch falls)


def wan22_transformer_kwargs(name: str) -> dict:
    """The full-size `WanTransformer3DModel` arguments of a Wan2.2 model (A14B: each expert is Wan2.1-14B's shape)."""
    from vecdit.pipelines.random_weights import wan_transformer_kwargs

    base = wan_transformer_kwargs("wan2.1-t2v-14b")
    return base if name == "wan2.2-t2v-a14b" else {**base, **WAN22_TI2V_5B}


def random_wan22_pipeline(name: str, device: str, dtype: torch.dtype):
    """Wan2.2 T2V-A14B (two experts) or TI2V-5B as a `WanPipeline` of random full-size parts: the
    transformer(s), UMT5-XXL (as `random_pipeline` builds it) and the VAE."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from vecdit.pipelines.tiny import _tiny_t5_tokenizer

    a14b = name == "wan2.2-t2v-a14b"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            experts = [WanTransformer3DModel(**wan22_transformer_kwargs(name)) for _ in range(2 if a14b else 1)]
            text_encoder = UMT5EncoderModel(UMT5Config(
                vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1))
            vae = AutoencoderKLWan(**({} if a14b else WAN22_TI2V_5B_VAE))
    finally:
        torch.set_default_dtype(previous)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=WAN22_A14B_SHIFT if a14b else 5.0)
    extra = (dict(transformer_2=experts[1].eval(), boundary_ratio=WAN22_A14B_BOUNDARY) if a14b
             else dict(expand_timesteps=True))
    vae = vae.to(torch.float32).eval()  # diffusers runs the Wan VAE in fp32
    return WanPipeline(tokenizer=_tiny_t5_tokenizer(), text_encoder=text_encoder.eval(), vae=vae, scheduler=scheduler,
                       transformer=experts[0].eval(), **extra)


def _expert_switch(pipe):
    """steps -> the index of the low-noise expert's first step, as WanPipeline decides it."""
    def switch_at(steps: int) -> int:
        pipe.scheduler.set_timesteps(steps, device="cpu")
        boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
        return int((pipe.scheduler.timesteps >= boundary).sum())

    return switch_at


def wan_rig(name: str, device: str) -> Rig:
    if name.startswith("tiny"):
        from vecdit.pipelines.tiny import tiny_wan_pipeline

        variant = {"tiny": "wan2.1", "tiny-wan2.2-a14b": "wan2.2-a14b", "tiny-wan2.2-ti2v-5b": "wan2.2-ti2v-5b"}[name]
        pipe = tiny_wan_pipeline(variant=variant).to(device)
    elif name.startswith("wan2.2"):
        pipe = random_wan22_pipeline(name, device, torch.bfloat16)
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
    timestep = None
    if pipe.config.expand_timesteps:  # TI2V-5B: one timestep per token (all the same without an image)
        p_t, p_h, p_w = pipe.transformer.config.patch_size
        f, h, w = latents.shape[2:]
        timestep = torch.full((1, (f // p_t) * (h // p_h) * (w // p_w)), 500.0, device=device)
    two = getattr(pipe, "transformer_2", None) is not None
    return Rig(pipe.transformer, encode, passes, latents, pipe.vae, PRESET_OF.get(name, name),
               transformer_2=pipe.transformer_2 if two else None, switch_at=_expert_switch(pipe) if two else None,
               timestep=timestep)


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


def hunyuan15_text_config():
    """Qwen2.5-VL-7B-Instruct's language model, HunyuanVideo-1.5's prompt encoder (3584 wide: the
    transformer's `text_embed_dim`)."""
    from transformers import Qwen2_5_VLTextConfig

    return Qwen2_5_VLTextConfig(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                num_attention_heads=28, num_key_value_heads=4, rope_theta=1000000.0,
                                rope_scaling={"type": "default", "mrope_section": [16, 24, 24]})


def hunyuan15_rig(name: str, device: str) -> Rig:
    """HunyuanVideo-1.5 T2V with random weights: the 8.3B transformer (`task_type="t2v"`), its 16x
    VAE and Qwen2.5-VL-7B's language model on 1000 + 108 template tokens (the third-last hidden
    layer, cropped, as the pipeline takes it); no glyph text in the prompt, so ByT5 is not run (the
    pipeline passes zeros), and T2V's image tokens are zeros too. Two passes per step (its CFG guider)."""
    from diffusers import AutoencoderKLHunyuanVideo15, HunyuanVideo15Transformer3DModel
    from transformers import Qwen2_5_VLTextModel

    full = not name.startswith("tiny")
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if full:
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                transformer = HunyuanVideo15Transformer3DModel(task_type="t2v")
                text = Qwen2_5_VLTextModel(hunyuan15_text_config())
                vae = AutoencoderKLHunyuanVideo15()
        finally:
            torch.set_default_dtype(previous)
        n_text, crop, n_glyph, n_image = 1000, 108, 256, 729
    else:
        from vecdit.pipelines.tiny import tiny_hunyuan15_pipeline

        pipe = tiny_hunyuan15_pipeline().to(device)
        transformer, text, vae = pipe.transformer, pipe.text_encoder, pipe.vae
        n_text, crop, n_glyph, n_image = pipe.tokenizer_max_length, pipe.prompt_template_encode_start_idx, 16, 16
    for m in (transformer, text, vae):
        m.eval().requires_grad_(False)
    cfg = transformer.config
    g = torch.Generator(device=device).manual_seed(0)
    ids = [torch.randint(0, text.config.vocab_size, (1, n_text + crop), generator=g, device=device) for _ in range(2)]

    def encode():  # the prompt and the negative prompt
        with torch.inference_mode():
            return [text(input_ids=i, output_hidden_states=True).hidden_states[-3][:, crop:] for i in ids]

    embeds = encode()
    passes = []
    valid_tokens = (64, 8) if full else (7, 3)  # a prompt, and the negative prompt's few template tokens
    for branch, hidden, valid in zip(("pred_cond", "pred_uncond"), embeds, valid_tokens):
        mask = torch.zeros(1, n_text, dtype=torch.long, device=device)
        mask[:, :valid] = 1
        passes.append((branch, dict(
            encoder_hidden_states=hidden.to(dtype), encoder_attention_mask=mask,
            encoder_hidden_states_2=torch.zeros(1, n_glyph, cfg.text_embed_2_dim, device=device, dtype=dtype),
            encoder_attention_mask_2=torch.zeros(1, n_glyph, dtype=torch.long, device=device),
            image_embeds=torch.zeros(1, n_image, cfg.image_embed_dim, device=device, dtype=dtype))))
    channels = vae.config.latent_channels
    noise = _latents(channels, MODELS[name], 4, vae.config.spatial_compression_ratio, device, dtype)
    # T2V's model input: the latents, zero condition latents, a zero mask channel
    latents = torch.cat([noise, torch.zeros(1, cfg.in_channels - channels, *noise.shape[2:], device=device,
                                            dtype=dtype)], 1)
    return Rig(transformer, encode, passes, latents, vae, "hunyuanvideo-1.5-t2v")


def make_rig(name: str, device: str) -> Rig:
    if "hunyuan15" in name or "hunyuanvideo-1.5" in name:
        return hunyuan15_rig(name, device)
    return (hunyuan_rig if "hunyuan" in name else wan_rig)(name, device)


def schedule_counts(config: VecAttnConfig, steps: int, switch: int | None = None) -> dict:
    """Steps of each kind (dense, select, reuse) in a run of `steps`, as vecdit's step hook decides
    them; at `switch` (Wan2.2 A14B's second expert) nothing is left to reuse, so that step selects."""
    first, last = config.num_dense_steps(steps), config.num_dense_last_steps(steps)
    counts, selected = {"dense": 0, "select": 0, "reuse": 0}, False
    for i in range(steps):
        if i == switch:
            selected = False
        sparse = i - first
        if sparse < 0 or i >= steps - last:
            counts["dense"] += 1
        elif sparse % config.reuse_interval and selected:
            counts["reuse"] += 1
        else:
            counts["select"] += 1
            selected = True
    return counts


def _registry():
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    return _AttentionBackendRegistry


def _name(backend) -> str:
    return str(getattr(backend, "value", backend))


def attention_state(models) -> tuple:
    """What a variant may change: the active backend, each module's processor, each processor's backend."""
    processors = [dict(m.attn_processors) for m in models]
    backends = [{name: getattr(p, "_attention_backend", None) for name, p in procs.items()} for procs in processors]
    return _registry()._active_backend, processors, backends


def same_state(a: tuple, b: tuple) -> bool:
    return (a[0] == b[0] and all(x.keys() == y.keys() and all(x[n] is y[n] for n in x) for x, y in zip(a[1], b[1]))
            and a[2] == b[2])


def backends_in_effect(models) -> dict:
    """Where the attention processors dispatch: each processor's own backend, else diffusers' active
    one; `sdpa-direct` for processors that call PyTorch's SDPA themselves (HunyuanVideo's token refiner)."""
    active = _registry()._active_backend
    counts = Counter()
    for m in models:
        for p in m.attn_processors.values():
            if not hasattr(p, "_attention_backend"):
                counts["sdpa-direct"] += 1
            else:
                counts[_name(p._attention_backend or active)] += 1
    return {"active": _name(active), "processors": dict(counts)}


def _drop_compiled(models) -> None:
    torch._dynamo.reset()
    for model in models:
        for module in model.modules():
            if getattr(module, "_compiled_call_impl", None) is not None:
                module._compiled_call_impl = None


@contextlib.contextmanager
def isolated_variant(rig: Rig):
    """Run one variant and put everything it changed back: vecdit disabled, compiled blocks dropped,
    the processors, their backends and diffusers' active backend as they were before (checked)."""
    models = rig.transformers
    saved = attention_state(models)
    try:
        yield
    finally:
        if vecdit.is_enabled(rig.target()):
            vecdit.disable(rig.target())
        _drop_compiled(models)
        active, processors, backends = saved
        for model, procs, bends in zip(models, processors, backends):
            model.set_attn_processor(dict(procs))  # set_attn_processor pops from the dict it gets
            for name, p in procs.items():
                if hasattr(p, "_attention_backend"):
                    p._attention_backend = bends[name]
        _registry().set_active_backend(active)
    if not same_state(attention_state(models), saved):  # pragma: no cover - a diffusers change would show here
        raise RuntimeError("the pipeline benchmark could not restore the attention state after a variant")


def run_pipeline(name: str, variants=VARIANTS, steps: int | None = None, repeats: int = 2, device: str = "cuda",
                 config: VecAttnConfig | None = None, overrides: dict | None = None) -> dict:
    """Stock and vecdit `variants` of one model's generation, each isolated (`isolated_variant`);
    vecdit runs `config`, else the model's preset with `overrides` (e.g. `density`, `query_tiles`).
    `steps`: the model's own count where None."""
    size = MODELS[name]
    steps = steps or size.get("steps", 50)
    flags = {v: variant_flags(v) for v in variants}  # unknown names refused before anything is built
    rig = make_rig(name, device)
    rig.switch = rig.switch_at(steps) if rig.switch_at is not None else None
    text_s = timed(rig.encode, device, repeats)
    print(f"[{name}] built; text encoding {text_s:.2f} s"
          + (f"; the low-noise expert from step {rig.switch} of {steps}" if rig.switch is not None else ""), flush=True)

    def step(index: int):
        rig.step(index, steps)

    import vecdit.processors  # noqa: F401 - the model families register their presets

    config = config or VecAttnConfig.for_model(rig.preset, **(overrides or {}))
    counts = schedule_counts(config, steps, rig.switch)
    sage = None
    if any("sage" in f for _, f in flags.values()):
        from . import sage

        sage.use_in_diffusers()
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
            quantize_fp8(rig.target())
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
        with isolated_variant(rig):
            if base == "vecdit":
                vecdit.enable(rig.target(), config)
            if "sage" in opts:  # after vecdit: its processors keep the backend for their dense paths
                for model in rig.transformers:
                    model.set_attention_backend("sage")
            if "compile" in opts:
                torch._dynamo.reset()
                for model in rig.transformers:
                    model.compile_repeated_blocks(fullgraph=True)
            backend = backends_in_effect(rig.transformers)
            fallbacks = sage.FALLBACKS["sdpa_calls"] if sage is not None else 0
            first = config.num_dense_steps(steps)
            kinds = {"stock": 0} if base == "stock" else {"dense": 0, "select": first}
            if base == "vecdit" and counts["reuse"]:
                kinds["reuse"] = first + 1
            if variant == "vecdit" and "stock" in runs:
                del kinds["dense"]  # eager warm-up steps run the stock processors: the stock step's time
            seconds = {}
            for kind, i in kinds.items():
                seconds[kind] = timed(lambda i=i: step(i), device, repeats)
                # progress as it comes: a run cut short by its time limit still says what it measured
                print(f"[{name}] {variant}: {kind} step {seconds[kind]:.2f} s", flush=True)
            if base == "vecdit" and "dense" not in seconds:
                seconds["dense"] = runs["stock"]["step_s"]["stock"]
            if base == "stock":
                denoise = steps * seconds["stock"]
            else:
                denoise = sum(counts[kind] * seconds.get(kind, 0.0) for kind in counts)
            out = rig.last_output.float()
            runs[variant] = {"step_s": seconds, "denoise_s": denoise, "attention_backend": backend,
                             # calls the sage backend handed to PyTorch's SDPA (a mask it does not take)
                             "sage_sdpa_fallbacks": (sage.FALLBACKS["sdpa_calls"] - fallbacks) if sage else None,
                             # the last timed step's first pass: equal for equal variants (on one device)
                             "output_fingerprint": [float(out.mean()), float(out.square().mean().sqrt())]}
    vae = rig.vae
    if hasattr(vae, "enable_tiling") and not name.startswith("tiny"):
        vae.enable_tiling()
    channels = vae.config.get("z_dim", vae.config.get("latent_channels"))
    z = rig.latents[:, :channels].to(vae.dtype)
    with torch.inference_mode():
        decode_s = timed(lambda: vae.decode(z, return_dict=False), device, 1)
    for run in runs.values():
        run["total_s"] = text_s + run["denoise_s"] + decode_s
    stock = runs.get("stock")
    for run in runs.values():  # ratios only against baselines that ran
        run["speedup_vs_stock"] = stock["total_s"] / run["total_s"] if stock else None
        run["denoise_speedup_vs_stock"] = stock["denoise_s"] / run["denoise_s"] if stock else None
        # end to end against every stock baseline of the run (e.g. stock-sage-compile-fp8)
        run["speedup_vs"] = {b: other["total_s"] / run["total_s"] for b, other in runs.items() if b.startswith("stock")}
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(device).type == "cuda" else None
    return {"model": name, **{k: size[k] for k in ("height", "width", "frames")}, "steps": steps,
            "config": config.to_dict(), "cfg_passes": len(rig.passes), "experts": len(rig.transformers),
            "expert_switch_step": rig.switch, "schedule": counts,
            "text_encoding_s": text_s, "vae_decode_s": decode_s, "runs": runs, "peak_memory_gb": peak,
            # relative error of one forward (stock processors) with fp8 Linear layers against bf16
            "fp8_forward_rel_err": fp8_error}


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def pipeline_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# vecdit pipeline benchmark on {env['card']}", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['date']}. Full-size configs, random weights, bf16 "
             "(tiled decode), batch 1, each step as its pipeline runs it (Wan, HunyuanVideo-1.5: CFG, 2 passes; "
             "HunyuanVideo: 1, guidance-distilled). One timed step of each kind, projected to the "
             "run's steps with the preset's schedule; text encoding and VAE decode are the same for every variant. "
             "Each variant ran isolated (attention backend and processors restored after it); `backend` is where "
             "its attention processors dispatched.", ""]
    for r in results:
        sch = r["schedule"]
        baselines = [name for name in r["runs"] if name.startswith("stock-")]  # beside plain stock's column
        experts = (f"; {r['experts']} experts, the second from step {r['expert_switch_step']}"
                   if r.get("experts", 1) > 1 else "")
        lines += [f"## {r['model']}: {r['height']}x{r['width']}, {r['frames']} frames, {r['steps']} steps "
                  f"({sch['dense']} dense, {sch['select']} selecting, {sch['reuse']} reusing)", "",
                  f"text encoding {r['text_encoding_s']:.2f} s, VAE decode {r['vae_decode_s']:.2f} s, "
                  f"peak memory {r['peak_memory_gb'] or 0:.1f} GB{experts}"
                  + (f"; fp8 Linear layers: one forward's relative error vs bf16 {r['fp8_forward_rel_err']:.4f}"
                     if r.get("fp8_forward_rel_err") is not None else ""), "",
                  "| variant | backend | step s (each kind) | denoising s | x stock (denoising) | total s | "
                  "x stock (end to end) |" + "".join(f" x {b} |" for b in baselines),
                  "| --- | --- | --- | --- | --- | --- | --- |" + " --- |" * len(baselines)]
        for variant, run in r["runs"].items():
            kinds = ", ".join(f"{k} {v:.2f}" for k, v in run["step_s"].items())
            backend = ", ".join(f"{k} x{n}" for k, n in run.get("attention_backend", {}).get("processors", {}).items())
            lines.append(f"| {variant} | {backend} | {kinds} | {run['denoise_s']:.1f} | "
                         f"{_ratio(run['denoise_speedup_vs_stock'])} | {run['total_s']:.1f} | "
                         f"{_ratio(run['speedup_vs_stock'])} |"
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
