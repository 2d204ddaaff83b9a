# Copyright 2026 The vecdit authors. Apache-2.0.
"""Dense vs sparse generations of the tiny model over a fixed prompt set: PSNR / SSIM per density
and query order, with the achieved density and time (the end-to-end quality check of the tiny
trained model; on the random tiny model it only exercises the path).

    python -m vecdit.pipelines.tiny_quality --out bench/results   # the packaged tiny model (or a --model folder)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import numpy as np
import torch

import vecdit
from vecdit.config import VecAttnConfig
from vecdit.samples.compare import psnr, ssim

PROMPTS = (
    "a red circle moving right",
    "a blue square moving left",
    "a yellow triangle moving up",
    "a green circle bouncing",
    "a white square moving down on a checkered background",
    "a purple triangle moving right and a red circle moving left",
)
DENSITIES = (0.1, 0.25, 0.5)
ORDERS = {"raster": "raster", "tiles": (4, 4, 4)}


def _generate(pipe, prompt, seed, size, steps, device):
    generator = torch.Generator(device).manual_seed(seed)
    start = time.perf_counter()
    frames = pipe(prompt, height=size["size"], width=size["size"], num_frames=size["frames"], num_inference_steps=steps,
                  guidance_scale=5.0, generator=generator, output_type="np").frames[0]
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8), time.perf_counter() - start


def quality(pipe, size: dict, steps: int = 20, prompts=PROMPTS, densities=DENSITIES, orders=tuple(ORDERS),
            device: str = "cpu") -> dict:
    """Per (order, density): mean PSNR / SSIM against the dense generation of each prompt (same
    seed), achieved density and seconds; the dense seconds beside them."""
    pipe.set_progress_bar_config(disable=True)
    dense, dense_s = {}, []
    for i, prompt in enumerate(prompts):
        dense[prompt], seconds = _generate(pipe, prompt, i, size, steps, device)
        dense_s.append(seconds)
    rows = []
    for order in orders:
        for density in densities:
            vecdit.enable(pipe, VecAttnConfig(density=density, query_tiles=ORDERS[order], collect_stats=True))
            scores = []
            for i, prompt in enumerate(prompts):
                frames, seconds = _generate(pipe, prompt, i, size, steps, device)
                records = vecdit.stats(pipe)["records"]
                achieved = sum(r["density"] for r in records) / len(records) if records else None
                scores.append((psnr(frames, dense[prompt]), ssim(frames, dense[prompt]), achieved, seconds))
            vecdit.disable(pipe)
            finite = [s[0] for s in scores if np.isfinite(s[0])]
            rows.append({"order": order, "density": density,
                         "psnr": sum(finite) / len(finite) if finite else float("inf"),
                         "ssim": sum(s[1] for s in scores) / len(scores),
                         "achieved_density": sum(s[2] for s in scores if s[2] is not None) / len(scores),
                         "seconds": sum(s[3] for s in scores) / len(scores)})
    return {"prompts": list(prompts), "steps": steps, **size, "dense_seconds": sum(dense_s) / len(dense_s), "rows": rows}


def markdown(result: dict, model: str, card: str) -> str:
    lines = [f"# Tiny model: dense vs vecdit ({model}, {card})", "",
             f"{len(result['prompts'])} prompts, {result['frames']} frames at {result['size']}x{result['size']}, "
             f"{result['steps']} steps, CFG 5; the same seed per prompt. Dense: {result['dense_seconds']:.1f} s per video.",
             "", "| query order | target density | achieved | PSNR dB | SSIM | s per video |", "| --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['order']} | {r['density']:g} | {r['achieved_density']:.3f} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from diffusers import WanPipeline

    from .models import tiny_model_folder

    p = argparse.ArgumentParser(prog="python -m vecdit.pipelines.tiny_quality")
    p.add_argument("--model", help="a trained tiny pipeline folder (default: the packaged one)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help="the first N prompts of the set")
    p.add_argument("--out", default="bench/results")
    args = p.parse_args(argv)
    folder = args.model or tiny_model_folder()
    if folder is None:
        print("no trained tiny model: train one (python -m vecdit.pipelines.tiny_train) or pass --model", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = WanPipeline.from_pretrained(folder, dtype=torch.float32).to(device)
    with open(os.path.join(folder, "vecdit_tiny.json")) as f:
        size = {k: json.load(f)["model_config"][k] for k in ("size", "frames")}
    result = quality(pipe, size, args.steps, PROMPTS[: args.prompts], device=device)
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"tiny-quality-{card.lower().replace(' ', '-')}-{datetime.date.today().isoformat()}")
    with open(stem + ".json", "w") as f:
        json.dump({"model": folder, "card": card, **result}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result, os.path.basename(os.path.normpath(folder)), card))
    print(markdown(result, folder, card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
