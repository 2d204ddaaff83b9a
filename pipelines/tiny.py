# Copyright 2026 The vecdit authors. Apache-2.0.
"""Tiny random-weight models and a Wan pipeline built entirely offline (no download, no weights).

For tests and for a first run on a machine without a GPU: the frames they produce are noise.
"""
from __future__ import annotations

import string

import torch

# head_dim 64: the smallest head size the Triton kernel takes, so tiny models exercise it too
TINY_HEADS, TINY_HEAD_DIM = 2, 64


TINY_LATENT = 4  # latent channels of the tiny VAEs


def tiny_wan_transformer(image: bool = False, seed: int = 0, in_channels: int = TINY_LATENT):
    """`image`: Wan2.1 I2V's CLIP image attention; `in_channels` 3 x latent for the I2V pipelines
    (noise, frame mask, conditioning latents)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    extra = dict(image_dim=16, added_kv_proj_dim=TINY_HEADS * TINY_HEAD_DIM) if image else {}
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=TINY_HEADS, attention_head_dim=TINY_HEAD_DIM,
        in_channels=in_channels, out_channels=TINY_LATENT, text_dim=16, freq_dim=32, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32, **extra,
    ).eval()


def tiny_hunyuan_transformer(seed: int = 0, in_channels: int = TINY_LATENT, image_condition_type: str | None = None):
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=in_channels, out_channels=TINY_LATENT, num_attention_heads=TINY_HEADS, attention_head_dim=TINY_HEAD_DIM,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
        guidance_embeds=image_condition_type is None, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(16, 24, 24),
        image_condition_type=image_condition_type,
    ).eval()


def _tiny_t5_tokenizer(words=()):
    """A unigram vocabulary of single characters (every prompt tokenizes to something), plus whole
    `words`: a word of the vocabulary is one token (its score beats any spelling of it), so a small
    text encoder need not learn to spell (the trained tiny model's grammar words)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + ".,'-"]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_lowercase]
    pieces += [("\u2581" + w, -1.0) for w in dict.fromkeys(words) if len(w) > 1]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


WAN_VARIANTS = ("wan2.1", "wan2.2-a14b", "wan2.2-ti2v-5b")


def _tiny_wan_parts(seed: int, variant: str):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import UMT5Config, UMT5EncoderModel

    if variant not in WAN_VARIANTS:
        raise ValueError(f"variant must be one of {WAN_VARIANTS}, got {variant!r}")
    tokenizer = _tiny_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).eval()
    # Wan2.2 TI2V-5B's VAE: 2x2 pixel patches before the encoder, 16x spatial compression
    ti2v = (dict(is_residual=True, patch_size=2, scale_factor_spatial=16, in_channels=12, out_channels=12)
            if variant == "wan2.2-ti2v-5b" else {})
    vae = AutoencoderKLWan(base_dim=3 if not ti2v else 8, z_dim=TINY_LATENT, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * TINY_LATENT,
                           latents_std=[1.0] * TINY_LATENT, **ti2v).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler)


def tiny_wan_pipeline(seed: int = 0, variant: str = "wan2.1"):
    """A `WanPipeline` of random tiny components, built offline in about a second.

    `variant`: "wan2.1" (one transformer), "wan2.2-a14b" (two experts switched at the boundary
    timestep 875, as the A14B checkpoint) or "wan2.2-ti2v-5b" (per-token timesteps, 16x VAE).
    """
    from diffusers import WanPipeline

    parts = _tiny_wan_parts(seed, variant)
    extra = {}
    if variant == "wan2.2-a14b":
        extra = dict(transformer_2=tiny_wan_transformer(seed=seed + 1), boundary_ratio=0.875)
    elif variant == "wan2.2-ti2v-5b":
        extra = dict(expand_timesteps=True)
    return WanPipeline(transformer=tiny_wan_transformer(seed=seed), **parts, **extra)


def tiny_wan_i2v_pipeline(seed: int = 0, variant: str = "wan2.1"):
    """A `WanImageToVideoPipeline`: Wan2.1 I2V (CLIP image tokens in the cross-attention), Wan2.2
    A14B I2V (no image encoder, two experts, boundary 900) or Wan2.2 TI2V-5B (the image as the first
    latent frame, at timestep 0)."""
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    parts = _tiny_wan_parts(seed, variant)
    if variant == "wan2.2-ti2v-5b":
        return WanImageToVideoPipeline(transformer=tiny_wan_transformer(seed=seed), expand_timesteps=True, **parts)
    i2v_channels = 3 * TINY_LATENT  # noise, first-frame mask (4 = the VAE's temporal factor), image latents
    if variant == "wan2.2-a14b":
        return WanImageToVideoPipeline(
            transformer=tiny_wan_transformer(seed=seed, in_channels=i2v_channels),
            transformer_2=tiny_wan_transformer(seed=seed + 1, in_channels=i2v_channels), boundary_ratio=0.9, **parts)
    torch.manual_seed(seed)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
    )).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return WanImageToVideoPipeline(
        transformer=tiny_wan_transformer(image=True, seed=seed, in_channels=i2v_channels),
        image_encoder=image_encoder, image_processor=image_processor, **parts)


def tiny_hunyuan_pipeline(seed: int = 0, image_condition_type: str | None = None):
    """A `HunyuanVideoPipeline`, or with `image_condition_type` ("latent_concat", "token_replace") a
    `HunyuanVideoImageToVideoPipeline`, with a tiny transformer and VAE. Their text encoders are a
    LLaMA / LLaVA model and CLIP; no tiny ones are built here, so callers pass `prompt_embeds` and
    `pooled_prompt_embeds` (`tiny_hunyuan_prompt_embeds`), which the pipelines support."""
    from diffusers import (AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoImageToVideoPipeline,
                           HunyuanVideoPipeline)

    torch.manual_seed(seed)
    in_channels = 2 * TINY_LATENT + 1 if image_condition_type == "latent_concat" else TINY_LATENT
    transformer = tiny_hunyuan_transformer(seed, in_channels=in_channels, image_condition_type=image_condition_type)
    vae = AutoencoderKLHunyuanVideo(latent_channels=TINY_LATENT, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                    norm_num_groups=4, mid_block_add_attention=False).eval()
    parts = dict(text_encoder=None, tokenizer=None, transformer=transformer, vae=vae,
                 scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=None, tokenizer_2=None)
    if image_condition_type is None:
        return HunyuanVideoPipeline(**parts)
    return HunyuanVideoImageToVideoPipeline(image_processor=None, **parts)


def tiny_hunyuan_prompt_embeds(seed: int = 0, valid: int = 7, total: int = 10) -> dict:
    """Prompt embeddings for the tiny HunyuanVideo transformer: `valid` of `total` text tokens."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(1, total, dtype=torch.long)
    mask[:, :valid] = 1
    return dict(prompt_embeds=torch.randn(1, total, 16, generator=g), prompt_attention_mask=mask,
                pooled_prompt_embeds=torch.randn(1, 8, generator=g))


def _tiny_qwen_tokenizer():
    """A character-level Qwen2 tokenizer with a chat template (HunyuanVideo-1.5 formats prompts as a chat)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {c: i for i, c in enumerate(specials + list(string.printable))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[0]))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = Qwen2TokenizerFast(tokenizer_object=backend, unk_token=specials[0], pad_token=specials[0],
                                   eos_token=specials[2])
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return tokenizer


def tiny_hunyuan15_pipeline(seed: int = 0, image: bool = False):
    """`HunyuanVideo15Pipeline` (or `HunyuanVideo15ImageToVideoPipeline`) of tiny random components:
    Qwen2.5-VL text model, ByT5 glyph encoder, SigLIP image encoder (I2V), 16x VAE, CFG guider.
    The text slots are shrunk (32 Qwen, 16 ByT5, 16 image tokens instead of 1000, 256, 729)."""
    from diffusers import (AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler,
                           HunyuanVideo15ImageToVideoPipeline, HunyuanVideo15Pipeline, HunyuanVideo15Transformer3DModel)
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    tokenizer = _tiny_qwen_tokenizer()
    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, bos_token_id=0, eos_token_id=2, pad_token_id=0,
        rope_scaling={"type": "default", "mrope_section": [2, 1, 1]})).eval()
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=384, d_model=8, d_kv=4, d_ff=16, num_layers=1, num_heads=2)).eval()
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=2 * TINY_LATENT + 1, out_channels=TINY_LATENT, num_attention_heads=TINY_HEADS,
        attention_head_dim=TINY_HEAD_DIM, num_layers=2, num_refiner_layers=1, text_embed_dim=16, text_embed_2_dim=8,
        image_embed_dim=8, rope_axes_dim=(16, 24, 24), target_size=128, task_type="i2v" if image else "t2v").eval()
    vae = AutoencoderKLHunyuanVideo15(latent_channels=TINY_LATENT, block_out_channels=(8, 8, 8, 8, 8),
                                      layers_per_block=1).eval()
    parts = dict(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                 scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), text_encoder_2=text_encoder_2,
                 tokenizer_2=ByT5Tokenizer(), guider=ClassifierFreeGuidance(guidance_scale=6.0))
    if image:
        from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

        parts["image_encoder"] = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=32,
            patch_size=8)).eval()
        parts["feature_extractor"] = SiglipImageProcessor(size={"height": 32, "width": 32})
    pipe = (HunyuanVideo15ImageToVideoPipeline if image else HunyuanVideo15Pipeline)(**parts)
    pipe.tokenizer_max_length, pipe.prompt_template_encode_start_idx, pipe.tokenizer_2_max_length = 32, 8, 16
    pipe.vision_num_semantic_tokens = 16
    return pipe
