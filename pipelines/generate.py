# Copyright 2026 The vecdit authors. Apache-2.0.
"""Text-to-video generation with vecdit: load once (`Generator`), render many (`Generator.render`)."""
from __future__ import annotations

import inspect
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace

import torch

import vecdit
from vecdit.config import VecAttnConfig
from vecdit.processors.families import family_named, family_of
from vecdit.samples.video_io import write_video

from .models import (PRESETS, GenerateError, ModelPreset, check_output, check_positive, check_sizes, resolve_model,
                     tiny_model_folder)
from .random_weights import random_pipeline


@dataclass
class GenerateSettings:
    model: str = "tiny"
    attention: str = "vec"  # "vec" or "dense"
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str = ""
    image: str | None = None  # image-to-video: the first frame
    threshold: float | None = None  # the min-p rule
    max_density: float | None = None  # the min-p rule's per-block cap
    density: float | None = None  # the top-k rule: keys kept per query tile
    query_tiles: str | None = None  # "4x4x4", "4x4x8", ... or "raster"
    dense_steps: float | None = None
    dense_last_steps: float | None = None
    reuse_interval: int | None = None
    random_weights: bool = False
    ulysses: int = 1  # diffusers context parallelism over this many processes (launched by torchrun)
    compensate: bool | str = True  # False: the selected keys alone (--no-compensate); a mode (--compensate)
    config: str | None = None  # a `vecdit calibrate` file: the base config in place of the preset
    fps: int | None = None
    extra: dict = field(default_factory=dict)


def attention_config(family: str, s: GenerateSettings, preset_density: float | None = None,
                     preset_tiles: tuple[int, int, int] | None = None) -> VecAttnConfig:
    """vecdit's preset of the model family, at the model preset's own density and query tiles where
    it names them (the trained tiny model: at 2,304 tokens a 25% budget keeps two thirds of its
    attention, and its README video keeps its motion on 4x4x4 tiles, not on 4x4x8), then the flags."""
    base = family_named(family).preset
    if preset_density is not None:
        base = replace(base, density=preset_density)
    if preset_tiles is not None:
        base = replace(base, query_tiles=preset_tiles)
    if s.config is not None:  # a calibration replaces the preset
        try:
            base = VecAttnConfig.from_calibration(s.config)
        except ValueError as e:
            raise GenerateError(f"--config: {e}") from None
    overrides = dict(collect_stats=True)
    if s.max_density is not None and s.threshold is None:
        raise GenerateError("--max-density caps the min-p rule: give it with --threshold (the top-k rule takes --density)")
    if s.threshold is not None:  # the min-p rule replaces the preset's top-k density
        overrides.update(threshold=s.threshold, density=None, max_density=s.max_density, layer_density=None)
    if s.density is not None:
        overrides.update(density=s.density, threshold=None, max_density=None, layer_density=None)
    if s.query_tiles is not None:
        overrides["query_tiles"] = parse_tiles(s.query_tiles)
    for flag in ("dense_steps", "dense_last_steps"):  # a count, or a fraction < 1
        value = getattr(s, flag)
        if value is not None:
            overrides[flag] = int(value) if float(value) >= 1 else float(value)
    if s.reuse_interval is not None:
        overrides["reuse_interval"] = s.reuse_interval
    if s.compensate is not True:
        overrides["compensate"] = s.compensate
    try:
        return replace(base, **overrides)
    except ValueError as e:  # the config's message names the field; say which flag sets it
        raise GenerateError(f"invalid vecdit settings: {e}") from None


def load_pipeline(name: str, preset: ModelPreset, device: str, random_weights: bool = False):
    """The diffusers pipeline: tiny (trained and packaged, or offline random), random full-size
    weights, or `from_pretrained`."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if name == "tiny" and tiny_model_folder() is not None:
        from diffusers import WanPipeline

        return WanPipeline.from_pretrained(tiny_model_folder(), dtype=torch.float32).to(device)
    if name in ("tiny", "tiny-random"):
        from .tiny import tiny_wan_pipeline

        return tiny_wan_pipeline().to(device)
    if random_weights:
        return random_pipeline(name, preset, device, dtype)
    from diffusers import DiffusionPipeline, UniPCMultistepScheduler

    if os.path.isdir(preset.hub_id) and not os.path.isfile(os.path.join(preset.hub_id, "model_index.json")):
        raise GenerateError(f"--model {preset.hub_id!r} is a folder but not a diffusers pipeline (no model_index.json; "
                            "`save_pretrained` or `hf download` writes one)")
    try:
        pipe = DiffusionPipeline.from_pretrained(preset.hub_id, dtype=dtype)
    except (OSError, ValueError) as e:
        if os.path.isdir(preset.hub_id):
            raise GenerateError(f"could not load the folder {preset.hub_id!r} as a diffusers pipeline "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        raise GenerateError(
            f"could not load {preset.hub_id!r}: it is not in the local Hugging Face cache and the hub could not be "
            f"reached ({type(e).__name__}). Download it first (`hf download {preset.hub_id}`) or pass "
            "a local folder to --model"
        ) from None
    if preset.family == "wan" and preset.flow_shift is not None:
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=preset.flow_shift)
    if preset.family == "hunyuan":
        pipe.vae.enable_tiling()
    return pipe.to(device)


def is_random_tiny(name: str) -> bool:
    """`tiny-random`, or `tiny` where no trained weights ship: frames are noise."""
    return name == "tiny-random" or (name == "tiny" and tiny_model_folder() is None)


def parse_tiles(text: str):
    """`raster` or `TxHxW` (e.g. `4x4x4`) -> VecAttnConfig.query_tiles."""
    if text == "raster":
        return "raster"
    try:
        tiles = tuple(int(x) for x in text.lower().split("x"))
    except ValueError:
        tiles = ()
    if len(tiles) != 3:
        raise GenerateError(f"--query-tiles must be 'raster' or frames x height x width like 4x4x4, got {text!r}")
    return tiles


class Generator:
    """Validates settings (before any weights load), loads the pipeline, applies vecdit."""

    def __init__(self, settings: GenerateSettings, device: str | None = None):
        if settings.attention not in ("vec", "dense"):
            raise GenerateError(f"--attention must be 'vec' or 'dense', got {settings.attention!r}")
        for flag, value in (("--steps", settings.steps), ("--ulysses", settings.ulysses)):
            check_positive(flag, value)  # 0 is an error, not "the preset's"
        self.name, preset = resolve_model(settings.model)
        s = settings

        def given(value, default):
            return default if value is None else value

        s.height, s.width = given(s.height, preset.height), given(s.width, preset.width)
        s.frames, s.steps = given(s.frames, preset.frames), given(s.steps, preset.steps)
        s.guidance = given(s.guidance, preset.guidance)
        s.fps = given(s.fps, preset.fps)
        check_sizes(s.height, s.width, s.frames, preset.spatial_multiple)
        if preset.task == "i2v" and not s.image:
            raise GenerateError(f"{self.name} is an image-to-video model: give the first frame with --image PATH")
        if s.image and preset.task == "t2v":
            raise GenerateError(f"{self.name} is a text-to-video model: --image needs an I2V model "
                                f"({', '.join(n for n, p in PRESETS.items() if p.task == 'i2v')})")
        if s.image and not os.path.isfile(s.image):
            raise GenerateError(f"--image {s.image!r} is not a file")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.rank = _init_ulysses(s.ulysses, self.device) if s.ulysses > 1 else 0
        if s.ulysses > 1 and self.device == "cuda":
            self.device = f"cuda:{torch.cuda.current_device()}"
        if preset.full_size and self.device != "cuda":
            raise GenerateError(f"{self.name} is a full-size model and needs a CUDA GPU; on this machine use --model tiny")
        self.settings, self.preset = s, preset
        self.config = (attention_config(preset.family, s, preset.density, preset.query_tiles) if s.attention == "vec"
                       else None)
        t0 = time.perf_counter()
        self.pipe = load_pipeline(self.name, preset, self.device, s.random_weights)
        self.load_seconds = time.perf_counter() - t0
        if self.config is not None:
            vecdit.enable(self.pipe, self.config)
        if s.ulysses > 1:  # after vecdit.enable: the processors read the model's parallel config
            from diffusers import ContextParallelConfig

            from vecdit.parallel import enable_context_parallel

            if self.config is None and family_named(preset.family).cp_plan is not None:
                # vecdit's own plan (HunyuanVideo): its processor does the exchange
                raise GenerateError(f"--ulysses with {self.name} needs --attention vec "
                                    "(vecdit's processor does its exchange)")
            enable_context_parallel(self.pipe.transformer, ContextParallelConfig(ulysses_degree=s.ulysses),
                                    family_of(self.pipe.transformer))

    def render(self, prompt: str, seed: int, output: str, progress: bool | dict = True) -> dict:
        """Generate one video to `output` (written atomically) and its JSON sidecar; returns the sidecar.
        `progress`: the pipeline's bar over the denoising steps on or off, or its tqdm options."""
        check_output(output)
        s, pipe = self.settings, self.pipe
        pipe.set_progress_bar_config(**(progress if isinstance(progress, dict) else dict(disable=not progress)))
        generator = torch.Generator(self.device).manual_seed(seed)
        phases = {}
        image = _load_image(s.image) if s.image else None
        if self.preset.family == "wan":
            frames = self._render_wan(prompt, generator, phases, image)
        else:  # HunyuanVideo (1.5): the pipeline's own call; phases are not split
            t0 = time.perf_counter()
            frames = pipe(prompt=prompt, **self._call_kwargs(generator, image), output_type="np").frames[0]
            phases["total"] = time.perf_counter() - t0
        if self.rank != 0:  # every rank computes the same video; rank 0 writes it
            return {}
        write_video(frames, output, s.fps)
        st = vecdit.stats(pipe) if self.config is not None else None
        sparse = [r["density"] for r in st["records"]] if st else []
        sidecar = {
            "prompt": prompt, "seed": seed, "output": output, "model": self.name,
            "settings": {k: v for k, v in asdict(s).items() if k != "extra"},
            "vecdit_config": self.config.to_dict() if self.config is not None else None,
            "seconds": {"load": self.load_seconds, **phases},
            "density": (sum(sparse) / len(sparse)) if sparse else None,
            "density_by_step": st["by_step"] if st else None,
            "frames": int(frames.shape[0]), "height": int(frames.shape[1]), "width": int(frames.shape[2]),
            "device": torch.cuda.get_device_name() if self.device.startswith("cuda") else "cpu",
            "versions": {"vecdit": vecdit.__version__, "torch": torch.__version__},
            "random_weights": is_random_tiny(self.name) or s.random_weights,
        }
        atomic_write_json(os.path.splitext(output)[0] + ".json", sidecar)
        return sidecar

    def _call_kwargs(self, generator, image) -> dict:
        """The generation settings this pipeline's `__call__` takes (HunyuanVideo-1.5 has no
        `guidance_scale`, its I2V no `height`/`width`: it sizes the video from the image)."""
        s = self.settings
        wanted = dict(image=image, height=s.height, width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                      guidance_scale=s.guidance, generator=generator)
        accepted = inspect.signature(self.pipe.__call__).parameters
        return {k: v for k, v in wanted.items() if k in accepted and v is not None}

    def _render_wan(self, prompt, generator, phases, image=None):
        s, pipe = self.settings, self.pipe
        sync = torch.cuda.synchronize if self.device.startswith("cuda") else (lambda: None)
        t0 = time.perf_counter()
        with torch.no_grad():
            embeds, negative = pipe.encode_prompt(prompt, s.negative_prompt, do_classifier_free_guidance=s.guidance > 1.0,
                                                  max_sequence_length=512, device=self.device)
        sync()
        t1 = time.perf_counter()
        latents = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, **self._call_kwargs(generator, image),
                       output_type="latent").frames
        sync()
        t2 = time.perf_counter()
        with torch.no_grad():
            vae = pipe.vae
            latents = latents.to(vae.dtype)
            shape = (1, vae.config.z_dim, 1, 1, 1)
            mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
            inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
            video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
            frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
        sync()
        phases.update(text_encoding=t1 - t0, denoising=t2 - t1, decoding=time.perf_counter() - t2)
        return frames


def _load_image(path: str):
    import PIL.Image

    return PIL.Image.open(path).convert("RGB")


def _init_ulysses(degree: int, device: str) -> int:
    """Join the torchrun process group; returns this process's rank."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != degree:
        raise GenerateError(f"--ulysses {degree} needs {degree} processes: launch with "
                            f"`torchrun --nproc_per_node {degree} -m vecdit.pipelines.cli generate ...` (WORLD_SIZE={world})")
    if not dist.is_initialized():
        if device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return dist.get_rank()


def atomic_write_json(path: str, payload: dict) -> None:
    tmp = path + ".partial"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)
