# Copyright 2026 The vecdit authors. Apache-2.0.
"""`vecdit generate | sample | compare` (console script)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

# no torch or diffusers here: they load when a command runs, so `vecdit --help` answers at once
from .models import PRESETS, GenerateError

NOISE_NOTE = "note: this tiny model has random weights: its frames are noise (it checks the whole path, offline)"
PRESET_DEFAULT = "default: the model preset's"
VECDIT_DEFAULT = "default: vecdit's preset for the model"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except where there is none to show (None, "", a flag's
    True or False): those options say their default in their help text."""

    def _get_help_string(self, action):
        if action.default is None or action.default == "" or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny",
                   help=f"a preset ({', '.join(PRESETS)}), a hub id (org/name) or a local diffusers folder")
    p.add_argument("--attention", default="vec", choices=["vec", "dense"],
                   help="vec: vecdit's sparse attention; dense: the model's own processors")
    p.add_argument("--height", type=int, help=f"pixels, a multiple of 16 (32 for wan2.2-ti2v-5b); {PRESET_DEFAULT}")
    p.add_argument("--width", type=int, help=f"pixels, a multiple of 16 (32 for wan2.2-ti2v-5b); {PRESET_DEFAULT}")
    p.add_argument("--frames", type=int, help=f"4k+1 frames (9, 33, 81, ...); {PRESET_DEFAULT}")
    p.add_argument("--steps", type=int, help=f"denoising steps, 1 or more; {PRESET_DEFAULT}")
    p.add_argument("--guidance", type=float, help=f"classifier-free guidance scale (1: none); {PRESET_DEFAULT}")
    p.add_argument("--negative-prompt", default="", help="what the video should not show (with guidance > 1); default: none")
    p.add_argument("--image", help="image-to-video models: the first frame (a PNG or JPEG)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--threshold", type=float,
                        help="min-p rule: keep keys with p >= threshold * p_max, in (0, 1]; default: the top-k rule")
    budget.add_argument("--density", type=float,
                        help=f"top-k rule (the default rule): this fraction of keys per query tile, in (0, 1]; {VECDIT_DEFAULT}")
    p.add_argument("--query-tiles",
                   help="query blocks: a tile of the latent grid as frames x height x width, or 'raster'; default: 4x4x4")
    p.add_argument("--max-density", type=float,
                   help="with --threshold: at most this fraction of keys per block, in (0, 1]; default: no cap")
    p.add_argument("--dense-steps", type=float,
                   help=f"warm-up steps run dense: a count, or a fraction < 1 of the steps; {VECDIT_DEFAULT}")
    p.add_argument("--dense-last-steps", type=float,
                   help="last steps run dense: a count, or a fraction < 1 of the steps; default: none")
    p.add_argument("--reuse-interval", type=int,
                   help=f"select keys every r-th sparse step and reuse the selection in between; {VECDIT_DEFAULT}")
    comp = p.add_mutually_exclusive_group()
    comp.add_argument("--no-compensate", dest="compensate", action="store_false",
                      help="attend the selected keys alone (default: the dropped keys are compensated by group means)")
    comp.add_argument("--compensate", dest="compensate", choices=["query", "pooled", "dropped"],
                      help="the compensation mode (vecdit.ops.attention.compensation); default: the preset's")
    p.add_argument("--config", help="a `vecdit calibrate` file: its per-layer densities, tiles and compensation "
                                    "(the flags above still apply on top)")
    p.add_argument("--random-weights", action="store_true", help="full-size config with random weights (benchmarks)")
    p.add_argument("--ulysses", type=int, default=1, help="context parallelism over N GPUs; launch with torchrun")


def _settings(args):
    from .generate import GenerateSettings

    return GenerateSettings(
        model=args.model, attention=args.attention, height=args.height, width=args.width, frames=args.frames,
        steps=args.steps, guidance=args.guidance, negative_prompt=args.negative_prompt, image=args.image,
        threshold=args.threshold, max_density=args.max_density, density=args.density, query_tiles=args.query_tiles,
        dense_steps=args.dense_steps, dense_last_steps=args.dense_last_steps, reuse_interval=args.reuse_interval,
        random_weights=args.random_weights, ulysses=args.ulysses, compensate=True if args.compensate is None else args.compensate,
        config=args.config)


def cmd_generate(args) -> int:
    from .generate import Generator, is_random_tiny
    from .models import check_output

    check_output(args.output)  # before the model loads
    gen = Generator(_settings(args))
    if is_random_tiny(gen.name):
        print(NOISE_NOTE, file=sys.stderr)
    sidecar = gen.render(args.prompt, args.seed, args.output)
    if not sidecar:  # not rank 0 of a --ulysses run
        return 0
    print(json.dumps({"output": args.output, "seconds": sidecar["seconds"], "density": sidecar["density"]}))
    return 0


def _read_prompts(path: str) -> list[str]:
    """The prompts of a text file, one per line (blank lines skipped)."""
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise GenerateError(f"--prompts {path!r} {what}; give a text file with one prompt per line")
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip()]
    if not prompts:
        raise GenerateError(f"--prompts {path!r} holds no prompts; give a text file with one prompt per line")
    return prompts


def cmd_sample(args) -> int:
    from tqdm.auto import tqdm

    from vecdit.samples.suite import load_vbench, sample_name, sample_seed

    from .generate import Generator, atomic_write_json, is_random_tiny
    from .models import check_positive, check_writable_folder

    for flag, value in (("--limit", args.limit), ("--samples-per-prompt", args.samples_per_prompt),
                        ("--steps", args.steps)):
        check_positive(flag, value)
    if args.prompts:
        prompts = _read_prompts(args.prompts)
    else:
        prompts = [e["prompt_en"] for e in load_vbench(args.dimension)]
    prompts = prompts[: args.limit] if args.limit else prompts
    check_writable_folder(args.out, f"--out {args.out!r}")  # before the model loads
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
    gen = Generator(_settings(args))
    if is_random_tiny(gen.name):
        print(NOISE_NOTE, file=sys.stderr)
    manifest["settings"] = {"suite": "prompts-file" if args.prompts else "vbench", "dimension": args.dimension,
                            "samples_per_prompt": args.samples_per_prompt, "base_seed": args.seed,
                            "model": gen.name, **{k: v for k, v in vars(args).items() if k not in ("func",)}}
    quiet = gen.rank != 0  # a --ulysses run: rank 0 shows the bars and writes the files
    # one bar over the videos, and under it the pipeline's own bar over each video's steps
    videos = tqdm(todo, desc="videos", unit="video", file=sys.stderr, disable=quiet, dynamic_ncols=True)
    steps_bar = dict(desc="steps", unit="step", leave=False, position=1, file=sys.stderr, disable=quiet,
                     dynamic_ncols=True)
    for prompt, index in videos:
        name = sample_name(prompt, index)
        seed = sample_seed(args.seed, index)
        videos.set_postfix_str(name[:40], refresh=True)
        t0 = time.perf_counter()
        side = gen.render(prompt, seed, os.path.join(args.out, name), progress=steps_bar)
        if not side:  # not rank 0
            continue
        manifest["videos"][name] = {"prompt": prompt, "index": index, "seed": seed,
                                    "seconds": time.perf_counter() - t0, "density": side["density"]}
        atomic_write_json(manifest_path, manifest)
    videos.close()
    print(f"{len(todo)} videos written to {args.out}", file=sys.stderr)
    return 0


def cmd_calibrate(args) -> int:
    import dataclasses

    import torch

    import vecdit

    from .calibrate import DENSITY_GRID, calibrate, save_calibration
    from .generate import Generator
    from .models import check_writable_folder

    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += _read_prompts(args.prompts)
    if not prompts:
        raise GenerateError("give --prompt (repeatable) or --prompts FILE")
    check_writable_folder(os.path.dirname(os.path.abspath(args.output)), f"--output {args.output!r}")
    if (args.target is None) == (args.target_density is None):
        raise GenerateError("give one of --target (a one-step error, e.g. 0.1) and --target-density (a mean density, "
                            "e.g. 0.25)")
    if args.target is not None and args.target <= 0:
        raise GenerateError(f"--target must be a one-step error > 0, got {args.target}")
    if args.target_density is not None and not min(DENSITY_GRID) <= args.target_density <= 1:
        raise GenerateError(f"--target-density must lie in [{min(DENSITY_GRID)}, 1], got {args.target_density}")
    settings = _settings(args)
    settings.attention = "vec"
    gen = Generator(settings)  # validates the flags before loading; the pipeline comes with vecdit on
    base = dataclasses.replace(gen.config, collect_stats=False)
    vecdit.disable(gen.pipe)  # calibrate captures dense generations and installs vecdit per replay
    s = gen.settings
    if max(args.capture_steps) >= s.steps or min(args.capture_steps) < 0:
        raise GenerateError(f"--capture-steps must lie in [0, --steps={s.steps}), got {args.capture_steps}")
    call = {k: v for k, v in gen._call_kwargs(None, None).items() if k != "generator"}
    result = calibrate(gen.pipe, prompts, base, target_error=args.target, target_density=args.target_density,
                       call_kwargs=call, seeds=[args.seed], capture_steps=args.capture_steps, estimate=args.estimate,
                       gain_group=args.gain_group)
    device = torch.cuda.get_device_name() if gen.device.startswith("cuda") else "cpu"
    save_calibration(result, args.output, model=gen.name, prompts=prompts, capture_steps=args.capture_steps,
                     steps=s.steps, device=device)
    print(json.dumps({k: result[k] for k in ("one_step_error", "mean_density", "predicted_error", "seconds")}))
    print(f"wrote {args.output}: vecdit generate --config {args.output} (or VecAttnConfig.from_calibration)",
          file=sys.stderr)
    return 0


def cmd_compare(args) -> int:
    from vecdit.samples.compare import compare_dirs, write_report

    report = compare_dirs(args.dir_a, args.dir_b)
    out = args.out if args.out is not None else os.path.join(args.dir_b, "compare")  # next to its inputs
    try:
        paths = write_report(report, out)
    except OSError as e:
        raise GenerateError(f"cannot write the report {out!r}.json/.md ({e.strerror or type(e).__name__}); "
                            "choose a writable --out") from None
    print(json.dumps(report["mean"]))
    print("wrote", *paths, file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vecdit", description="vector-sparse attention for video DiTs",
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, **kw):
        return sub.add_parser(name, formatter_class=_HelpFormatter, description=kw.get("help"), **kw)

    g = command("generate", help="text (or image) to video, one video")
    _add_generation_args(g)
    g.add_argument("--prompt", required=True, help="what the video shows")
    g.add_argument("--seed", type=int, default=0, help="random seed of the initial noise")
    g.add_argument("--output", default="out.mp4", help=".mp4, or .npz for raw frames; a JSON sidecar goes next to it")
    g.set_defaults(func=cmd_generate)
    s = command("sample", help="a prompt suite, VBench naming, resumable")
    _add_generation_args(s)
    s.add_argument("--suite", default="vbench", choices=["vbench"], help="the prompt suite (unless --prompts)")
    s.add_argument("--dimension", nargs="+", help="VBench dimensions to keep (e.g. color scene); default: all 16")
    s.add_argument("--limit", type=int, help="only the first N prompts; default: all")
    s.add_argument("--prompts", help="a text file, one prompt per line, instead of the suite")
    s.add_argument("--samples-per-prompt", type=int, default=5, help="videos per prompt (VBench: 5)")
    s.add_argument("--seed", type=int, default=0, help="sample i of every prompt uses seed + i")
    s.add_argument("--out", required=True, help="folder of the videos, their sidecars and manifest.json")
    s.set_defaults(func=cmd_sample)
    k = command("calibrate", help="per-layer densities for this model, chosen by its one-step error")
    _add_generation_args(k)
    k.add_argument("--prompt", action="append", help="a prompt to measure on; repeatable")
    k.add_argument("--prompts", help="a text file, one prompt per line")
    target = k.add_mutually_exclusive_group()
    target.add_argument("--target", type=float, help="the one-step error to reach with the least mean density (e.g. 0.1)")
    target.add_argument("--target-density", type=float, help="the mean density at which to reach the least error")
    k.add_argument("--capture-steps", type=int, nargs="+", default=[4, 10, 16], help="0-based denoising steps measured")
    k.add_argument("--estimate", default="grouped", choices=["grouped", "exact", "local"],
                   help="each layer's error per density: attention error x a gain measured per --gain-group layers, "
                        "one layer sparse at a time, or the attention error alone")
    k.add_argument("--gain-group", type=int, default=1, help="layers sparse at once when measuring the gains")
    k.add_argument("--seed", type=int, default=0, help="random seed of the dense generations")
    k.add_argument("--output", default="vecdit-calibration.json", help="the config, with its measured error, as JSON")
    k.set_defaults(func=cmd_calibrate)
    c = command("compare", help="PSNR / SSIM (/ LPIPS) of videos paired by name")
    c.add_argument("dir_a", metavar="DIR_A", help="folder of reference videos (e.g. dense)")
    c.add_argument("dir_b", metavar="DIR_B", help="folder of videos to compare (e.g. vecdit), named as in DIR_A")
    c.add_argument("--out", help="report path prefix (writes PREFIX.json and PREFIX.md); default: DIR_B/compare")
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
