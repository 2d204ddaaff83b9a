# Copyright 2026 The vecdit authors. Apache-2.0.
"""Train the tiny video model on procedural clips (`tiny_data.py`): a real `WanPipeline` of small
diffusers / transformers classes, trained here, saved with `save_pretrained` (fp16 safetensors).

    python -m vecdit.pipelines.tiny_train --out runs/tiny --max-minutes 9     # resumable: run again

Stage 1 trains the `AutoencoderKLWan` as an autoencoder on short clips and crops (L1 + a small KL
term), then fixes its latent mean / std. Stage 2 encodes a fixed set of clips once with the frozen
VAE and trains the `WanTransformer3DModel` and the small UMT5 text encoder jointly with the
flow-matching loss on those latents (captions dropped 10% of the time, for classifier-free guidance).
An optional stage 3 (`--decoder-steps`) trains the VAE's decoder alone, which the DiT does not see.
Every `--save-every` steps a checkpoint (models, optimizer, step, stage, loss history) is written, so
a run of under 10 minutes picks up where the last one stopped; when the stages are done the pipeline
folder and a loss-curve PNG are written.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .tiny import _tiny_t5_tokenizer
from .tiny_data import caption_words, make_clip


@dataclass
class TinyModelConfig:
    frames: int = 33
    size: int = 256
    z_dim: int = 8
    vae_base_dim: int = 16
    vae_dim_mult: tuple = (1, 2, 4, 4)
    heads: int = 4
    head_dim: int = 64
    layers: int = 6
    ffn: int = 512
    text_dim: int = 64
    text_layers: int = 2
    # as WanPipeline encodes prompts (max_sequence_length 512): the zeroed padding tokens are
    # attended by the cross-attention, so training must see as many as generation does
    max_text_tokens: int = 512


@dataclass
class TrainConfig:
    # sized for about 15 minutes of one H200 (measured 2026-12-02 at batch 8: VAE 0.40 s per step of
    # 33-frame 128-px crops, most of it a fixed cost of the VAE's causal chunk loop, so larger
    # batches are cheap; DiT 0.07 s per step)
    vae_steps: int = 800
    dit_steps: int = 5000
    # the DiT stage trains on this many clips encoded once by the frozen VAE (re-encoding every
    # batch would cost more than the DiT step); batches are drawn from them by the step's seed
    dit_clips: int = 4096  # encoded again in every run (37 s on the H200): not kept in the checkpoint
    batch: int = 16  # the DiT stage's
    vae_batch: int = 16
    lr_vae: float = 6e-4
    lr_dit: float = 3e-4
    kl_weight: float = 1e-6
    # the VAE is convolutional: it trains on crops around the first object (4x cheaper than whole
    # frames, which took 0.66 s per step of 8 on an H200), but over the whole clip length: trained
    # on 9 frames, its causal time cache drifted past frame 9 of a 33-frame clip
    vae_frames: int = 33
    vae_crop: int = 128
    # pixels away from the frame's median colour (objects, texture) weigh this much more in the
    # reconstruction loss: with a plain L1 the background dominated and objects faded
    vae_object_weight: float = 8.0
    caption_dropout: float = 0.1
    # a last stage that trains only the VAE's decoder (encoder and latent statistics fixed, so what the
    # DiT learned stays valid): the v3 decoder lost red after frame 16 though the latents kept it,
    # and this stage can run beside a DiT run (`--init-from` both, then `take_decoder`)
    decoder_steps: int = 0
    save_every: int = 500
    seed: int = 0


def build_components(cfg: TinyModelConfig) -> dict:
    """Fresh (random) components of the tiny pipeline, fp32."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = _tiny_t5_tokenizer(caption_words())  # a grammar word is one token
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=cfg.text_dim, d_kv=cfg.text_dim // 4, d_ff=cfg.text_dim * 4,
        num_layers=cfg.text_layers, num_heads=4, relative_attention_num_buckets=16, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0))
    vae = AutoencoderKLWan(base_dim=cfg.vae_base_dim, z_dim=cfg.z_dim, dim_mult=list(cfg.vae_dim_mult), num_res_blocks=1,
                           temperal_downsample=[False, True, True], latents_mean=[0.0] * cfg.z_dim,
                           latents_std=[1.0] * cfg.z_dim)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=cfg.heads, attention_head_dim=cfg.head_dim, in_channels=cfg.z_dim,
        out_channels=cfg.z_dim, text_dim=cfg.text_dim, freq_dim=64, ffn_dim=cfg.ffn, num_layers=cfg.layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=64)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler)


def clip_batch(step: int, batch: int, cfg: TinyModelConfig, seed: int, device,
               frames: int | None = None, centres: list | None = None) -> tuple[torch.Tensor, list[str]]:
    """[B, 3, F, H, W] in [-1, 1] and the captions; clip i of step s is seed-determined (resumable).
    `centres`, if given, receives each clip's first-object centre (pixels) averaged over its frames."""
    on_gpu = torch.device(device).type == "cuda"  # rendered where it trains: the CPU would starve the GPU
    clips = [make_clip(seed * 10_000_019 + step * batch + i, frames or cfg.frames, cfg.size, device if on_gpu else None)
             for i in range(batch)]
    if centres is not None:
        centres += [tuple(float(v) for v in c.centres[0].mean(0)) for c in clips]
    frames = [c.frames if on_gpu else torch.from_numpy(c.frames) for c in clips]
    video = torch.stack(frames).permute(0, 4, 1, 2, 3).to(device)
    return video * 2 - 1, [c.caption for c in clips]


def random_crop(video: torch.Tensor, crop: int, step: int, centres: list | None = None) -> torch.Tensor:
    """The same `crop` x `crop` window of every frame of each clip, seeded by the step: around the
    clip's (x, y) centre (jittered by a quarter crop) where `centres` are given, else anywhere."""
    size = video.shape[-1]
    if crop >= size:
        return video
    g = torch.Generator().manual_seed(step)
    corners = torch.randint(0, size - crop + 1, (video.shape[0], 2), generator=g).tolist()
    if centres is not None:
        jitter = (torch.rand(video.shape[0], 2, generator=g) - 0.5) * (crop / 2)
        corners = [[min(max(int(c - crop / 2 + j), 0), size - crop) for c, j in zip((cy, cx), jit)]
                   for (cx, cy), jit in zip(centres, jitter.tolist())]
    return torch.stack([v[..., y:y + crop, x:x + crop] for v, (y, x) in zip(video, corners)])


def encode_text(parts, captions, cfg: TinyModelConfig, device):
    tokens = parts["tokenizer"](captions, padding="max_length", max_length=cfg.max_text_tokens, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    ids, mask = tokens.input_ids.to(device), tokens.attention_mask.to(device)
    out = parts["text_encoder"](ids, mask).last_hidden_state
    # as WanPipeline does: the padding positions are zeroed
    return out * mask[..., None]


def _straight_through_clamp(module, inputs, out):
    """A forward hook on the VAE's decoder: diffusers clamps the decoded video to [-1, 1], which
    gives no gradient to a pixel past the range, so a pixel that overshoots (black backgrounds sit
    at -0.92) stays dead. The value is clamped here already (the later clamp changes nothing) and
    the gradient passes straight through. (On the CPU, 200 steps of 9-frame 64-px crops: L1 0.26
    with it, 0.46 without; starting the posterior's log-variance at -6 instead of 0 did not help.)"""
    return out + (out.clamp(-1, 1) - out).detach()


def vae_loss(vae, video, kl_weight, object_weight: float = 0.0):
    """(loss, plain L1): L1 weighted up where a pixel is far from its frame's median colour."""
    posterior = vae.encode(video).latent_dist
    recon = vae.decode(posterior.sample()).sample
    error = (recon.float() - video).abs()
    median = video.flatten(3).median(-1).values[..., None, None]  # [B, 3, F, 1, 1]
    weight = 1 + object_weight * ((video - median).abs().amax(1, keepdim=True) * 4).clamp(max=1)
    kl = posterior.kl().mean()
    return (error * weight).mean() / weight.mean() + kl_weight * kl, error.mean()


def flow_loss(parts, latents, context, generator):
    """Flow matching as the UniPC flow scheduler samples it: x_t = (1 - s) x0 + s e, target e - x0."""
    b = latents.shape[0]
    sigma = torch.rand(b, generator=generator, device=latents.device)
    sigma = 3.0 * sigma / (1 + 2.0 * sigma)  # the sampler's flow shift: train where it samples
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    s = sigma.view(b, 1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise
    pred = parts["transformer"](hidden_states=noisy, timestep=sigma * 1000, encoder_hidden_states=context,
                                return_dict=False)[0]
    return F.mse_loss(pred.float(), (noise - latents).float())


def _compact(optimizer_state: dict) -> dict:
    """Adam's moments in bf16: the checkpoint (about 49 MB at the default sizes) then fits, with the
    wheels and the working tree, in the 64 MiB a GPU run carries, so a later run can resume from it."""
    state = {k: {n: (v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() and v.dim() > 0 else v)
                 for n, v in entry.items()} for k, entry in optimizer_state["state"].items()}
    return {**optimizer_state, "state": state}


class Trainer:
    def __init__(self, out: str, model_cfg: TinyModelConfig, train_cfg: TrainConfig, device: str,
                 init_from: str | None = None):
        """`init_from`: a pipeline folder this script exported (the packaged tiny model, say): where
        `out` holds no checkpoint, training goes on from its weights and step counts (fresh optimizer
        after a short warm-up), so a run needs to carry no optimizer checkpoint, only that folder."""
        self.out, self.mcfg, self.tcfg, self.device = out, model_cfg, train_cfg, device
        self.parts = build_components(model_cfg)
        for name in ("vae", "transformer", "text_encoder"):
            self.parts[name].to(device).train()
        self.parts["vae"].decoder.register_forward_hook(_straight_through_clamp)
        self.state = {"stage": "vae", "step": 0, "losses": {"vae": [], "dit": [], "decoder": []}}
        self.opt = self._optimizer()
        if init_from is not None and not os.path.exists(self.checkpoint_path):
            self._init_from(init_from)
        self._resume()

    def done_steps(self, stage: str) -> int:
        """Steps of `stage` trained so far, those of the model it started from (`init_from`) included."""
        return self.state.get("offset", {}).get(stage, 0) + len(self.state["losses"].get(stage, []))

    def _init_from(self, folder: str):
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import UMT5EncoderModel

        with open(os.path.join(folder, "vecdit_tiny.json")) as f:
            steps = json.load(f)["steps"]
        loaded = {"vae": AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32),
                  "transformer": WanTransformer3DModel.from_pretrained(folder, subfolder="transformer", dtype=torch.float32),
                  "text_encoder": UMT5EncoderModel.from_pretrained(folder, subfolder="text_encoder", dtype=torch.float32)}
        for name, model in loaded.items():
            self.parts[name].load_state_dict(model.state_dict())
        offset = {"vae": steps["vae"], "dit": steps["dit"], "decoder": steps.get("decoder", 0)}
        if self.tcfg.vae_steps > steps["vae"]:  # the VAE goes on; the DiT starts over (its latents change)
            self._restart_dit()
            stage, offset["dit"], offset["decoder"] = "vae", 0, 0
        else:
            config = loaded["vae"].config
            # a decoder trained on its own (the decoder stage) stays as exported: rounding it to bf16
            # again would undo part of that training (the encoder is bf16 already, unchanged either way)
            self._freeze_vae({"mean": list(config.latents_mean), "std": list(config.latents_std)},
                             round_to_bf16=offset["decoder"] == 0)
            stage = "dit"
            if self.tcfg.dit_steps <= steps["dit"] and self.tcfg.decoder_steps > offset["decoder"]:
                stage = "decoder"
                self._unfreeze_decoder()
        self.state = {"stage": stage, "step": offset[stage], "warm_from": offset[stage], "offset": offset,
                      "losses": {"vae": [], "dit": [], "decoder": []}}
        self.opt = self._optimizer()
        print(f"from {folder} ({steps}): {stage} stage at step {offset[stage]}", flush=True)

    def _restart_dit(self):
        """Fresh transformer and text encoder: the VAE goes on, so what they learned of its latents is moot."""
        fresh = build_components(self.mcfg)
        for name in ("transformer", "text_encoder"):
            self.parts[name].load_state_dict(fresh[name].state_dict())

    def _unfreeze_decoder(self):
        """The decoder side of the frozen VAE (`post_quant_conv`, `decoder`) trains again; the encoder
        side and the latent statistics stay as the DiT learned them."""
        vae = self.parts["vae"].train()
        for module in (vae.post_quant_conv, vae.decoder):
            module.requires_grad_(True)

    def _optimizer(self):
        if self.state["stage"] == "vae":
            return torch.optim.AdamW(self.parts["vae"].parameters(), lr=self.tcfg.lr_vae, weight_decay=0.0)
        if self.state["stage"] == "decoder":
            vae = self.parts["vae"]
            params = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())
            return torch.optim.AdamW(params, lr=self.tcfg.lr_vae, weight_decay=0.0)
        params = list(self.parts["transformer"].parameters()) + list(self.parts["text_encoder"].parameters())
        return torch.optim.AdamW(params, lr=self.tcfg.lr_dit, weight_decay=0.01)

    @property
    def checkpoint_path(self):
        return os.path.join(self.out, "checkpoint.pt")

    def _resume(self):
        if not os.path.exists(self.checkpoint_path):
            return
        ckpt = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        for name in ("vae", "transformer", "text_encoder"):
            self.parts[name].load_state_dict(ckpt["models"][name])
        self.state = ckpt["state"]
        vae_done = self.done_steps("vae")
        if self.state["stage"] == "dit" and self.tcfg.vae_steps > vae_done:
            # --vae-steps raised after the VAE stage ended: it reopens where it stopped (a fresh optimizer
            # after a short warm-up); the DiT stage starts over, since the latents it learned will change
            self._restart_dit()
            self.state = {"stage": "vae", "step": vae_done, "warm_from": vae_done,
                          "offset": {"vae": self.state.get("offset", {}).get("vae", 0), "dit": 0},
                          "losses": {"vae": self.state["losses"]["vae"], "dit": []}}
            self.opt = self._optimizer()
            print(f"VAE stage reopened at step {vae_done} of {self.tcfg.vae_steps}; the DiT stage starts over", flush=True)
            return
        self.state["losses"].setdefault("decoder", [])
        if self.state["stage"] in ("dit", "decoder"):  # (a trained decoder is not rounded again)
            self._freeze_vae(ckpt["latent_stats"], round_to_bf16=self.state["stage"] == "dit")
        if self.state["stage"] == "decoder":
            self._unfreeze_decoder()
        self.opt = self._optimizer()
        self.opt.load_state_dict(ckpt["optimizer"])  # casts the bf16 moments back to the parameters' fp32

    def save(self):
        os.makedirs(self.out, exist_ok=True)
        vae = self.parts["vae"]
        models = {n: self.parts[n].state_dict() for n in ("vae", "transformer", "text_encoder")}
        if self.state["stage"] == "dit":  # the frozen VAE, bf16-rounded at the freeze: half the bytes
            models["vae"] = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in models["vae"].items()}
        ckpt = {"models": models,
                "optimizer": _compact(self.opt.state_dict()), "state": self.state,
                "latent_stats": {"mean": list(vae.config.latents_mean), "std": list(vae.config.latents_std)},
                "model_config": asdict(self.mcfg), "train_config": asdict(self.tcfg)}
        tmp = self.checkpoint_path + ".partial"
        torch.save(ckpt, tmp)
        os.replace(tmp, self.checkpoint_path)  # a killed run keeps the previous checkpoint

    def _freeze_vae(self, stats=None, round_to_bf16: bool = True):
        vae = self.parts["vae"].eval().requires_grad_(False)
        with torch.no_grad():  # rounded to bf16 once: the DiT-stage checkpoints then keep it in bf16, losslessly
            for p in vae.parameters() if round_to_bf16 else ():
                p.copy_(p.to(torch.bfloat16))
        if stats is None:  # the latent statistics of a fresh batch: the transformer sees unit-scale latents
            video, _ = clip_batch(10**6, max(4, self.tcfg.batch), self.mcfg, self.tcfg.seed + 1, self.device)
            with torch.no_grad():
                z = vae.encode(video).latent_dist.mode()
            stats = {"mean": z.mean((0, 2, 3, 4)).tolist(), "std": z.std((0, 2, 3, 4)).clamp_min(1e-3).tolist()}
        vae.register_to_config(latents_mean=stats["mean"], latents_std=stats["std"])

    def vae_report(self) -> str:
        """How the autoencoder does on whole clips of the motion prompts: L1 and whether
        `motion_check` still reads the caption from the reconstruction (before the DiT stage spends
        its time on the latents); the clips over their reconstructions as `vae-check.png` in `out`."""
        from .tiny_data import parse_caption, render
        from .tiny_quality import MOTION_PROMPTS, frame_strip, motion_check

        lines, rows = [], []
        for i, prompt in enumerate(MOTION_PROMPTS):
            clip = render(parse_caption(prompt, np.random.default_rng(i)), self.mcfg.frames, self.mcfg.size)
            video, recon = self._reconstruct(clip)
            frames = ((recon[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
            check = motion_check(frames, prompt)
            rows += [(clip.frames * 255).round().astype(np.uint8), frames]
            lines.append(f"vae check: {prompt}: L1 {(recon - video).abs().mean():.4f}, colour seen in "
                         f"{check['seen']:.0%} of frames, motion {'ok' if check['ok'] else 'NOT ok'}")
        lines.append(self._drift_line())
        try:  # each clip over its reconstruction
            os.makedirs(self.out, exist_ok=True)
            frame_strip(np.concatenate(rows, axis=1), os.path.join(self.out, "vae-check.png"))
        except ImportError:  # PIL
            pass
        return "\n".join(lines)

    def _drift_line(self) -> str:
        return ("vae colour drift (worst |decoded - true| at a still circle's centre, over frames; 2 = lost): " +
                ", ".join(f"{c} {d:.2f}" for c, d in self.colour_drift().items()))

    def _reconstruct(self, clip) -> tuple[torch.Tensor, torch.Tensor]:
        """(video, its VAE reconstruction), `[1, 3, F, H, W]` in [-1, 1]."""
        vae = self.parts["vae"]
        video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2)[None].to(self.device) * 2 - 1
        with torch.no_grad():
            return video, vae.decode(vae.encode(video).latent_dist.mode()).sample.float().clamp(-1, 1)

    def colour_drift(self) -> dict:
        """Per colour of the grammar: the worst error over frames of the decoded colour at the centre
        of a still circle (the v3 VAE lost red, its R channel fading to black after frame 16, and
        green: git history: bench/results/tiny-train-v3-nvidia-h200-2026-12-02.md at a9c5bc1)."""
        from .tiny_data import COLORS, parse_caption, render

        drift = {}
        for color in COLORS:
            spec = parse_caption(f"a {color} circle moving right")
            spec["objects"][0].speed = 0.0
            clip = render(spec, self.mcfg.frames, self.mcfg.size)
            video, recon = self._reconstruct(clip)
            x, y = (int(v) for v in clip.centres[0][0])
            r = max(1, int(0.05 * self.mcfg.size))  # well inside the circle (radius 0.13 of the side)
            decoded = recon[0, :, :, y - r:y + r, x - r:x + r].mean((2, 3))  # [3, frames]
            truth = video[0, :, 0, y, x][:, None]
            drift[color] = float((decoded - truth).abs().amax())
        return drift

    def _latents(self, video):
        vae = self.parts["vae"]
        with torch.no_grad():
            z = vae.encode(video).latent_dist.mode()
        shape = (1, -1, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean, device=z.device).view(shape)
        std = torch.tensor(vae.config.latents_std, device=z.device).view(shape)
        return (z - mean) / std

    def _latent_batch(self, step: int):
        """A DiT batch from the encoded clip set (built on first use, the same after a resume)."""
        if getattr(self, "_latent_set", None) is None:
            latents, captions, chunk, start_s = [], [], max(1, self.tcfg.batch), time.time()
            for start in range(0, self.tcfg.dit_clips, chunk):
                if time.time() > getattr(self, "_deadline", float("inf")):
                    return None, None
                video, caps = clip_batch(start // chunk, chunk, self.mcfg, self.tcfg.seed + 1, self.device)
                latents.append(self._latents(video).to(torch.bfloat16 if self.device.startswith("cuda") else torch.float32))
                captions += caps
            self._latent_set = (torch.cat(latents)[: self.tcfg.dit_clips], captions[: self.tcfg.dit_clips])
            print(f"encoded {self.tcfg.dit_clips} clips for the DiT stage in {time.time() - start_s:.0f} s", flush=True)
        latents, captions = self._latent_set
        pick = torch.randint(0, latents.shape[0], (self.tcfg.batch,), generator=torch.Generator().manual_seed(step))
        return latents[pick.to(latents.device)].float(), [captions[i] for i in pick.tolist()]

    def _set_lr(self, stage: str, step: int):
        """A short warm-up (200 steps; 50 where a stage goes on with a fresh optimizer), then
        constant, then a linear decay to a tenth over the last 30% of the stage."""
        base, steps = {"vae": (self.tcfg.lr_vae, self.tcfg.vae_steps), "dit": (self.tcfg.lr_dit, self.tcfg.dit_steps),
                       "decoder": (self.tcfg.lr_vae, self.tcfg.decoder_steps)}[stage]
        warm_from = self.state.get("warm_from", 0)
        warm = min(1.0, (step - warm_from + 1) / (50 if warm_from else 200))
        decay = min(1.0, max(0.1, (steps - step) / (0.3 * steps)))
        for group in self.opt.param_groups:
            group["lr"] = base * warm * decay

    def run(self, max_minutes: float, log_every: int = 50, max_steps: int | None = None, finish: bool = False) -> bool:
        """Train until done, `max_minutes` or `max_steps` optimizer steps (this run); True when both
        stages are finished. `finish`: if the time runs out in the DiT stage, export the pipeline as
        it is (the last run of a fixed device budget)."""
        t_end = self._deadline = time.time() + 60 * max_minutes
        generator = torch.Generator(device=self.device).manual_seed(self.tcfg.seed + self.state["step"])
        taken, t_log = 0, time.time()
        while time.time() < t_end and (max_steps is None or taken < max_steps):
            stage, step = self.state["stage"], self.state["step"]
            if stage == "vae" and step >= self.tcfg.vae_steps:
                self._freeze_vae()
                print(self.vae_report(), flush=True)
                self.state.update(stage="dit", step=0, warm_from=0)
                self.opt = self._optimizer()
                continue
            if stage == "dit" and step >= self.tcfg.dit_steps and self.tcfg.decoder_steps > self.done_steps("decoder"):
                self._unfreeze_decoder()
                print("before the decoder stage: " + self._drift_line(), flush=True)
                self.state.update(stage="decoder", step=self.done_steps("decoder"), warm_from=self.done_steps("decoder"))
                self.opt = self._optimizer()
                continue
            if (stage == "dit" and step >= self.tcfg.dit_steps) or (stage == "decoder" and step >= self.tcfg.decoder_steps):
                self.save()
                self._finish()
                return True
            if stage in ("vae", "decoder"):
                centres = []
                video, captions = clip_batch(step, self.tcfg.vae_batch, self.mcfg, self.tcfg.seed, self.device,
                                             frames=self.tcfg.vae_frames, centres=centres)
                video = random_crop(video, self.tcfg.vae_crop, step, centres)
            else:
                latents, captions = self._latent_batch(step)
                if latents is None:  # the deadline came while encoding the clip set: the next run redoes it
                    break
            self._set_lr(stage, step)
            with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16, enabled=self.device.startswith("cuda")):
                if stage in ("vae", "decoder"):  # the decoder stage: no gradient reaches the frozen encoder
                    loss, report = vae_loss(self.parts["vae"], video, self.tcfg.kl_weight, self.tcfg.vae_object_weight)
                else:
                    drop = torch.rand(len(captions), generator=torch.Generator().manual_seed(step)) < self.tcfg.caption_dropout
                    captions = ["" if d else c for c, d in zip(captions, drop.tolist())]
                    context = encode_text(self.parts, captions, self.mcfg, self.device)
                    loss = report = flow_loss(self.parts, latents, context, generator)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in self.opt.param_groups for p in g["params"]], 1.0)
            self.opt.step()
            self.state["losses"][stage].append(float(report.detach()))
            self.state["step"] = step + 1
            taken += 1
            if (step + 1) % log_every == 0:
                recent = self.state["losses"][stage][-log_every:]
                rate, t_log = (time.time() - t_log) / log_every, time.time()
                print(f"{stage} step {step + 1}: loss {sum(recent) / len(recent):.4f} ({rate:.3f} s/step)", flush=True)
            if (step + 1) % self.tcfg.save_every == 0:
                self.save()
        self.save()
        if finish and self.state["stage"] in ("dit", "decoder") and self.state["step"] > 0:
            print(f"finishing early at {self.state['stage']} step {self.state['step']}", flush=True)
            self._finish()
            return True
        return False

    def _finish(self):
        """The export, after a check of the VAE where its decoder was the last thing trained."""
        if self.state["stage"] == "decoder":
            self.parts["vae"].eval()
            print(self.vae_report(), flush=True)
        self.export()

    def export(self, folder: str | None = None) -> str:
        """The trained pipeline (`WanPipeline.save_pretrained`, fp16 safetensors) and the loss PNG."""
        from diffusers import WanPipeline

        folder = folder or os.path.join(self.out, "pipeline")
        parts = {k: (v.eval().to("cpu", torch.float16) if isinstance(v, torch.nn.Module) else v)
                 for k, v in self.parts.items()}
        WanPipeline(**parts).save_pretrained(folder, safe_serialization=True)
        for name in ("vae", "transformer", "text_encoder"):  # back for more training, if any
            self.parts[name].to(self.device, torch.float32)
        with open(os.path.join(folder, "vecdit_tiny.json"), "w") as f:
            json.dump({"model_config": asdict(self.mcfg), "train_config": asdict(self.tcfg),
                       "steps": {k: self.done_steps(k) for k in self.state["losses"]}}, f, indent=1)
        plot_losses(self.state["losses"], os.path.join(self.out, "loss.png"))
        return folder


def take_decoder(pipeline: str, source: str) -> None:
    """Put the VAE of `source` (an export whose last stage trained only the decoder) into `pipeline`
    (an export of the same model whose DiT went on meanwhile): checks that both encoders and latent
    statistics are the same, so the DiT's latents are unchanged."""
    import shutil

    from diffusers import AutoencoderKLWan

    mine, theirs = (AutoencoderKLWan.from_pretrained(f, subfolder="vae") for f in (pipeline, source))
    for part in ("encoder", "quant_conv"):
        a, b = getattr(mine, part).state_dict(), getattr(theirs, part).state_dict()
        if any(not torch.equal(a[k], b[k]) for k in a):
            raise ValueError(f"source: its VAE's {part} differs from the pipeline's; only a decoder-stage export of the same model fits")
    if list(mine.config.latents_mean) != list(theirs.config.latents_mean) or list(mine.config.latents_std) != list(theirs.config.latents_std):
        raise ValueError("source: its latent statistics differ from the pipeline's")
    shutil.rmtree(os.path.join(pipeline, "vae"))
    shutil.copytree(os.path.join(source, "vae"), os.path.join(pipeline, "vae"))
    with open(os.path.join(pipeline, "vecdit_tiny.json")) as f:
        record = json.load(f)
    with open(os.path.join(source, "vecdit_tiny.json")) as f:
        record["steps"]["decoder"] = json.load(f)["steps"].get("decoder", 0)
    with open(os.path.join(pipeline, "vecdit_tiny.json"), "w") as f:
        json.dump(record, f, indent=1)


def plot_losses(losses: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    losses = {k: v for k, v in losses.items() if v}  # a run from `--init-from` trains one stage
    if not losses:
        return False
    fig, axes = plt.subplots(1, len(losses), figsize=(4.5 * len(losses), 3.2), squeeze=False)
    axes = axes[0]
    for ax, (stage, values) in zip(axes, losses.items()):
        if values:
            window = max(1, len(values) // 100)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(smooth)
        ax.set(title={"vae": "autoencoder L1", "dit": "flow matching MSE", "decoder": "decoder-only L1"}[stage],
               xlabel="step", yscale="log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m vecdit.pipelines.tiny_train")
    p.add_argument("--out", default="runs/tiny")
    p.add_argument("--max-minutes", type=float, default=9.0, help="stop (with a checkpoint) after this long")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for f in TrainConfig.__dataclass_fields__.values():
        p.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), default=f.default)
    p.add_argument("--frames", type=int, default=TinyModelConfig.frames)
    p.add_argument("--size", type=int, default=TinyModelConfig.size)
    p.add_argument("--init-from", help="go on from this exported pipeline folder (e.g. pipelines/tiny_model)")
    p.add_argument("--finish", action="store_true", help="export at the deadline even if the DiT stage is not done")
    p.add_argument("--take-decoder-from", metavar="FOLDER",
                   help="no training: put this decoder-stage export's VAE into OUT/pipeline (see take_decoder)")
    args = p.parse_args(argv)
    if args.take_decoder_from:
        take_decoder(os.path.join(args.out, "pipeline"), args.take_decoder_from)
        print("decoder taken from", args.take_decoder_from)
        return 0
    train_cfg = TrainConfig(**{k: getattr(args, k) for k in TrainConfig.__dataclass_fields__})
    trainer = Trainer(args.out, TinyModelConfig(frames=args.frames, size=args.size), train_cfg, args.device,
                      init_from=args.init_from)
    done = trainer.run(args.max_minutes, finish=args.finish)
    if done:
        print("done: the pipeline is in", os.path.join(args.out, "pipeline"))
    else:
        print(f"not done yet: stage {trainer.state['stage']} step {trainer.state['step']}; run again to resume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
