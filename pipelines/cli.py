# Copyright 2026 The vecdit authors. Apache-2.0.
"""`vecdit generate | sample | compare` (console script)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import torch

from .models import PRESETS, GenerateError

NOISE_NOTE = "note: this tiny model has random weights: its frames are noise (it checks the whole path, offline)"


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help=f"{', '.join(PRESETS)}, a hub id (org/name) or a local folder")
    p.add_argument("--attention", default="vec", choices=["vec", "dense"])
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--frames", type=int, help="4k+1")
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--image", help="image-to-video models: the first frame (a PNG or JPEG)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--threshold", type=float, help="min-p rule: keep keys with p >= threshold * p_max (0, 1]")
    budget.add_argument("--density", type=float, help="top-k rule (default): this fraction of keys per query tile (0, 1]")
    p.add_argument("--query-tiles", help="query blocks: a tile of the latent grid like 4x4x4 (default) or 'raster'")
    p.add_argument("--max-density", type=float, help="with --threshold: at most this fraction of keys per block")
    p.add_argument("--dense-steps", type=float, help="warm-up steps run dense: a count, or a fraction < 1")
    p.add_argument("--dense-last-steps", type=float, help="last steps run dense: a count, or a fraction < 1")
    p.add_argument("--reuse-interval", type=int)
    p.add_argument("--random-weights", action="store_true", help="full-size config with random weights (benchmarks)")
    p.add_argument("--ulysses", type=int, default=1, help="context parallelism over N GPUs; launch with torchrun")


def _settings(args):
    from .generate import GenerateSettings

    return GenerateSettings(
        model=args.model, attention=args.attention, height=args.height, width=args.width, frames=args.frames,
        steps=args.steps, guidance=args.guidance, negative_prompt=args.negative_prompt, image=args.image,
        threshold=args.threshold, max_density=args.max_density, density=args.density, query_tiles=args.query_tiles,
        dense_steps=args.dense_steps, dense_last_steps=args.dense_last_steps, reuse_interval=args.reuse_interval,
        random_weights=args.random_weights, ulysses=args.ulysses)


def cmd_generate(args) -> int:
    from .generate import Generator

    from .generate import is_random_tiny

    gen = Generator(_settings(args))
    if is_random_tiny(gen.name):
        print(NOISE_NOTE, file=sys.stderr)
    sidecar = gen.render(args.prompt, args.seed, args.output)
    if not sidecar:  # not rank 0 of a --ulysses run
        return 0
    print(json.dumps({"output": args.output, "seconds": sidecar["seconds"], "density": sidecar["density"]}))
    return 0


def cmd_sample(args) -> int:
    from vecdit.samples.suite import load_vbench, sample_name, sample_seed

    from .generate import Generator, atomic_write_json

    if args.prompts:
        with open(args.prompts) as f:
            prompts = [line.strip() for line in f if line.strip()]
    else:
        prompts = [e["prompt_en"] for e in load_vbench(args.dimension)]
    prompts = prompts[: args.limit] if args.limit else prompts
    os.makedirs(args.out, exist_ok=True)
    todo = [(p, i) for p in prompts for i in range(args.samples_per_prompt)
            if not os.path.exists(os.path.join(args.out, sample_name(p, i)))]
    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = {"videos": {}}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    total = len(prompts) * args.samples_per_prompt
    print(f"{total - len(todo)} of {total} videos already there; {len(todo)} to make", file=sys.stderr)
    if not todo:
        return 0
    from .generate import is_random_tiny

    gen = Generator(_settings(args))
    if is_random_tiny(gen.name):
        print(NOISE_NOTE, file=sys.stderr)
    manifest["settings"] = {"suite": "prompts-file" if args.prompts else "vbench", "dimension": args.dimension,
                            "samples_per_prompt": args.samples_per_prompt, "base_seed": args.seed,
                            "model": gen.name, **{k: v for k, v in vars(args).items() if k not in ("func",)}}
    for n, (prompt, index) in enumerate(todo, 1):
        name = sample_name(prompt, index)
        seed = sample_seed(args.seed, index)
        t0 = time.perf_counter()
        side = gen.render(prompt, seed, os.path.join(args.out, name), progress=False)
        manifest["videos"][name] = {"prompt": prompt, "index": index, "seed": seed,
                                    "seconds": time.perf_counter() - t0, "density": side["density"]}
        atomic_write_json(manifest_path, manifest)
        print(f"[{n}/{len(todo)}] {name}", file=sys.stderr)
    return 0


def cmd_calibrate(args) -> int:
    from vecdit.utils import transformers_of
    from vecdit.lab.capture import CalibrationProcessor, CurveSink

    from .generate import Generator, atomic_write_json

    prompts = list(args.prompt or [])
    if args.prompts:
        with open(args.prompts) as f:
            prompts += [line.strip() for line in f if line.strip()]
    if not prompts:
        raise GenerateError("give --prompt (repeatable) or --prompts FILE")
    settings = _settings(args)
    settings.attention = "dense"  # the video is computed densely; vecdit only measures
    gen = Generator(settings)
    if max(args.capture_steps) >= gen.settings.steps:
        raise GenerateError(f"--capture-steps must be below --steps ({gen.settings.steps}), got {args.capture_steps}")
    sink = CurveSink(args.blocks)
    for model in transformers_of(gen.pipe):
        model.set_attn_processor(CalibrationProcessor(sink, args.capture_steps))
    s = gen.settings
    for i, prompt in enumerate(prompts):
        gen.pipe(prompt, height=s.height, width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
                 guidance_scale=s.guidance, output_type="latent",
                 generator=torch.Generator(gen.device).manual_seed(args.seed + i))
    result = sink.solve(args.target_density)
    result.update(model=gen.name, prompts=prompts, capture_steps=args.capture_steps, steps=s.steps)
    atomic_write_json(args.output, result)
    print(json.dumps({k: result[k] for k in ("density", "recall", "target_density")}))
    print(f"wrote {args.output}: load with VecAttnConfig.from_calibration({args.output!r})", file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from vecdit.samples.compare import compare_dirs, write_report

    report = compare_dirs(args.dir_a, args.dir_b)
    paths = write_report(report, args.out)
    print(json.dumps(report["mean"]))
    print("wrote", *paths, file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecdit", description="vector-sparse attention for video DiTs")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="text to video")
    _add_generation_args(g)
    g.add_argument("--prompt", required=True)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--output", default="out.mp4", help=".mp4, or .npz for raw frames")
    g.set_defaults(func=cmd_generate)
    s = sub.add_parser("sample", help="a prompt suite, VBench naming, resumable")
    _add_generation_args(s)
    s.add_argument("--suite", default="vbench", choices=["vbench"])
    s.add_argument("--dimension", nargs="+")
    s.add_argument("--limit", type=int)
    s.add_argument("--prompts", help="a text file, one prompt per line, instead of the suite")
    s.add_argument("--samples-per-prompt", type=int, default=5)
    s.add_argument("--seed", type=int, default=0, help="sample i of every prompt uses seed + i")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample)
    k = sub.add_parser("calibrate", help="per-(layer, head) thresholds for a target density, from a real run")
    _add_generation_args(k)
    k.add_argument("--prompt", action="append", help="repeatable")
    k.add_argument("--prompts", help="a text file, one prompt per line")
    k.add_argument("--capture-steps", type=int, nargs="+", default=[5], help="0-based denoising steps to measure")
    k.add_argument("--target-density", type=float, default=0.4)
    k.add_argument("--blocks", type=int, default=16, help="sampled 64-query blocks per head and capture")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--output", default="vecdit-thresholds.json")
    k.set_defaults(func=cmd_calibrate)
    c = sub.add_parser("compare", help="PSNR / SSIM (/ LPIPS) of videos paired by name")
    c.add_argument("dir_a")
    c.add_argument("dir_b")
    c.add_argument("--out", default="compare", help="report path prefix (.json and .md)")
    c.set_defaults(func=cmd_compare)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (GenerateError, ValueError) as e:
        print(f"vecdit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
