# Copyright 2026 The vecdit authors. Apache-2.0.
"""Tiny random-weight models and a Wan pipeline built entirely offline (no download, no weights).

For tests and for a first run on a machine without a GPU: the frames they produce are noise.
"""
from __future__ import annotations

import string

import torch

# head_dim 64: the smallest head size the Triton kernel takes, so tiny models exercise it too
TINY_HEADS, TINY_HEAD_DIM = 2, 64


def tiny_wan_transformer(image: bool = False, seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    extra = dict(image_dim=16, added_kv_proj_dim=TINY_HEADS * TINY_HEAD_DIM) if image else {}
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=TINY_HEADS, attention_head_dim=TINY_HEAD_DIM,
        in_channels=4, out_channels=4, text_dim=16, freq_dim=32, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32, **extra,
    ).eval()


def tiny_hunyuan_transformer(seed: int = 0):
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(seed)
    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=TINY_HEADS, attention_head_dim=TINY_HEAD_DIM,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(16, 24, 24),
    ).eval()


def _tiny_t5_tokenizer():
    from transformers import T5Tokenizer

    # a unigram vocabulary of single characters: every prompt tokenizes to something
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_lowercase + string.digits + ".,'-"]
    pieces += [("\u2581" + c, -2.5) for c in string.ascii_lowercase]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_wan_pipeline(seed: int = 0):
    """A `WanPipeline` of random tiny components, built offline in about a second."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _tiny_t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).eval()
    vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True],
                           latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=tiny_wan_transformer(seed=seed))
