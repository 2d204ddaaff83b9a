# Copyright 2026 The vecdit authors. Apache-2.0.
"""Full-size pipelines with random weights: real shapes and timings without downloading weights.

Only for benchmarks (`vecdit generate --random-weights`): the video is noise. The tokenizer is the
tiny in-memory one (token ids fall inside the real vocabulary); every network has its real config.
"""
from __future__ import annotations

import torch

from .models import GenerateError, ModelPreset

WAN_TRANSFORMERS = {
    "wan2.1-t2v-1.3b": dict(num_attention_heads=12, ffn_dim=8960, num_layers=30),
    "wan2.1-t2v-14b": dict(num_attention_heads=40, ffn_dim=13824, num_layers=40),
}


def wan_transformer_kwargs(name: str) -> dict:
    """The full-size `WanTransformer3DModel` arguments of `name` (a key of WAN_TRANSFORMERS)."""
    return dict(patch_size=(1, 2, 2), attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
                freq_dim=256, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
                **WAN_TRANSFORMERS[name])


def random_pipeline(name: str, preset: ModelPreset, device: str, dtype: torch.dtype):
    if name not in WAN_TRANSFORMERS:
        raise GenerateError(f"--random-weights builds {', '.join(WAN_TRANSFORMERS)} only, not {name!r}")
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from .tiny import _tiny_t5_tokenizer

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in the target dtype: no fp32 copy of 14B parameters
    try:
        with torch.device(device):
            transformer = WanTransformer3DModel(**wan_transformer_kwargs(name))
            text_encoder = UMT5EncoderModel(UMT5Config(
                vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1))
            vae = AutoencoderKLWan()
    finally:
        torch.set_default_dtype(previous)
    vae = vae.to(torch.float32)  # diffusers runs the Wan VAE in fp32
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=preset.flow_shift)
    pipe = WanPipeline(tokenizer=_tiny_t5_tokenizer(), text_encoder=text_encoder.eval(), vae=vae.eval(),
                       scheduler=scheduler, transformer=transformer.eval())
    return pipe
