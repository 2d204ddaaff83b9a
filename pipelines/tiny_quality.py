# Copyright 2026 The vecdit authors. Apache-2.0.
"""Dense vs sparse generations of the tiny model over a fixed prompt set: PSNR / SSIM per density
and query order, with the achieved density and time (the end-to-end quality check of the tiny
trained model; on the random tiny model it only exercises the path).

    python -m vecdit.pipelines.tiny_quality --out bench/results   # the packaged tiny model (or a --model folder)
    python -m vecdit.pipelines.tiny_quality --motion-seeds 0 1 2   # only: does it move and keep its shape as captioned (dense)
    python -m vecdit.pipelines.tiny_quality --attention-error --prompts 2   # only: its attention's output error
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

from .tiny_data import MOTIONS, circularity, color_centroid, color_mask, components, parse_caption, perimeter

# one object each, moving along an axis: what `motion_check` reads back from the frames
MOTION_PROMPTS = (
    "a red circle moving right",
    "a blue square moving left",
    "a yellow triangle moving up",
    "a green circle moving down",
)
PROMPTS = MOTION_PROMPTS + (
    "a white square bouncing on a checkered background",
    "a purple triangle moving right and a red circle moving left",
)
DENSITIES = (0.1, 0.25, 0.5)
ORDERS = {"raster": "raster", "tiles": (4, 4, 4)}
# (query order, compensate) measured by default: tiles without and with the dropped keys' compensation
VARIANTS = (("tiles", False), ("tiles", True))


def variant_label(order: str, compensate) -> str:
    if compensate is True:
        return f"{order}, compensated"
    return f"{order}, compensated ({compensate})" if compensate else order


def _generate(pipe, prompt, seed, size, steps, device, guidance: float = 5.0):
    generator = torch.Generator(device).manual_seed(seed)
    start = time.perf_counter()
    frames = pipe(prompt, height=size["size"], width=size["size"], num_frames=size["frames"], num_inference_steps=steps,
                  guidance_scale=guidance, generator=generator, output_type="np").frames[0]
    return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8), time.perf_counter() - start


def motion_of(frames: np.ndarray, color: str) -> dict:
    """Where the `color` object goes: its centroid averaged over the first and over the last quarter
    of the frames, the move between them in frame sides (x right, y down) and the share of frames
    in which the colour is found at all."""
    found = [color_centroid(f.astype(np.float32) / 255, color) for f in frames]
    quarter = max(1, len(frames) // 4)
    first = [c for c in found[:quarter] if c is not None]
    last = [c for c in found[-quarter:] if c is not None]
    seen = sum(c is not None for c in found) / len(found)
    if not first or not last:
        return {"seen": seen, "move": None}
    side = frames.shape[2]
    move = [(np.mean([c[i] for c in last]) - np.mean([c[i] for c in first])) / side for i in (0, 1)]
    return {"seen": seen, "move": [float(m) for m in move]}


def motion_check(frames: np.ndarray, prompt: str, min_move: float = 0.15, min_seen: float = 0.8) -> dict:
    """Does the video show what a one-object `prompt` says: the colour in most frames, moving at
    least `min_move` frame sides in the caption's direction, more along that axis than across it."""
    (obj,) = parse_caption(prompt)["objects"]
    direction = MOTIONS[obj.motion]
    report = {"prompt": prompt, **motion_of(frames, obj.color)}
    along = None if report["move"] is None else sum(d * m for d, m in zip(direction, report["move"]))
    across = None if report["move"] is None else abs(report["move"][1 if direction[0] else 0])
    report["ok"] = bool(report["seen"] >= min_seen and along is not None and along >= min_move and along > across)
    return report


def shape_of(frames: np.ndarray, color: str, connectivity: int = 8, min_seen: float = 0.002) -> dict:
    """Per frame, the `color` object as `color_mask` finds it: its pixels (`area`), the share of them
    in the largest `connectivity`-connected region (`piece`; 0 where the colour is not seen: under
    `min_seen` of the frame, as in `color_centroid`) and that region's `circularity` (None unseen)."""
    mask = color_mask(frames, color)
    count, pixels = len(frames), mask[0].size
    labels = components(mask, connectivity).reshape(count, pixels)
    area = mask.reshape(count, pixels).sum(1)
    sizes = np.bincount(labels[labels >= 0], minlength=count * pixels).reshape(count, pixels)
    largest, root = sizes.max(1), sizes.argmax(1)
    seen = area >= min_seen * pixels
    piece = np.where(seen, largest / np.maximum(area, 1), 0.0)
    region = labels == (root + np.arange(count) * pixels)[:, None]
    rounds = circularity(largest, perimeter(region.reshape(mask.shape)))
    return {"area": area.tolist(), "piece": piece.tolist(),
            "circularity": [float(c) if s else None for c, s in zip(rounds, seen)]}


def shape_check(frames: np.ndarray, prompt: str, min_piece: float = 0.9, min_round: float = 0.7,
                max_spread: float = 0.3) -> dict:
    """Does a one-object `prompt`'s video keep its object whole, round (circles) and of one size,
    read back from the frames (`shape_of`): in every frame the largest connected region of the
    caption's colour holds at least `min_piece` of its pixels (`piece`: the worst frame's share);
    for a circle the circularity of that region, averaged over the frames where the colour is seen,
    is at least `min_round` (a drawn disk reads 1.0, a square 0.8, a triangle 0.63); that region's
    area over the frames varies by at most `max_spread` of its mean ((largest - smallest) / mean,
    `size_spread`; so a split reads as a change of size too, as in the issue's numbers). `round` is
    None for other shapes; `shape_ok` all of them."""
    (obj,) = parse_caption(prompt)["objects"]
    shape = shape_of(frames, obj.color)
    area = np.array(shape["area"], dtype=np.float64) * np.array(shape["piece"])  # the largest region's
    rounds = [c for c in shape["circularity"] if c is not None]
    report = {"prompt": prompt, "piece": float(min(shape["piece"])),
              "piece_frame": int(np.argmin(shape["piece"])),
              "circularity": float(np.mean(rounds)) if rounds else None,
              "size_spread": float((area.max() - area.min()) / area.mean()) if area.mean() > 0 else float("inf")}
    report["one_piece"] = report["piece"] >= min_piece
    rounded = report["circularity"] is not None and report["circularity"] >= min_round
    report["round"] = rounded if obj.shape == "circle" else None
    report["stable"] = report["size_spread"] <= max_spread
    report["shape_ok"] = report["one_piece"] and report["round"] is not False and report["stable"]
    return report


def video_check(frames: np.ndarray, prompt: str) -> dict:
    """`motion_check` (its `ok`) and `shape_check` of one one-object video, in one report."""
    return {**motion_check(frames, prompt), **shape_check(frames, prompt)}


# the checks counted per video (`check_counts`, `checks_lost`): report key, what passing means
CHECKS = (("ok", "motion as captioned"), ("one_piece", "one piece in every frame"), ("round", "circles round"),
          ("stable", "a stable size"))
# the bar compares these three (dense against vecdit); the size is shown beside them
COMPARED = ("ok", "one_piece", "round")


def check_counts(reports: list[dict]) -> dict:
    """Per check (`CHECKS`): (videos passing, videos checked); `round` only counts circles."""
    return {key: (sum(r[key] is True for r in reports), sum(r.get(key) is not None for r in reports))
            for key, _ in CHECKS}


def counts_line(reports: list[dict]) -> str:
    """"motion as captioned in 9 of 12, one piece in every frame in 3 of 12, ..." """
    counts = check_counts(reports)
    return ", ".join(f"{text} in {counts[key][0]} of {counts[key][1]}" for key, text in CHECKS)


def checks_lost(dense: list[dict], sparse: list[dict]) -> int:
    """How many of the `COMPARED` checks a dense video passes and its sparse twin (same prompt and
    seed, same order) fails."""
    return sum(d[key] is True and s[key] is not True for d, s in zip(dense, sparse) for key in COMPARED)


def frame_strip(frames: np.ndarray, path: str, count: int = 5) -> str:
    """`count` evenly spaced frames side by side, as a PNG (the README's strip)."""
    from PIL import Image

    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    Image.fromarray(np.concatenate([frames[i] for i in picks], axis=1)).save(path)
    return path


def plot_quality(result: dict, path: str, strip: str | None = None, labels=()) -> bool:
    """PSNR and SSIM against achieved density, one curve per query order; below them, if given,
    the frame strip (one row per label). False where matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig = plt.figure(figsize=(10, 9 if strip else 3.4))
    grid = fig.add_gridspec(2 if strip else 1, 2, height_ratios=[1, 1.6] if strip else [1])
    for col, (metric, unit) in enumerate((("psnr", "PSNR dB vs dense"), ("ssim", "SSIM vs dense"))):
        ax = fig.add_subplot(grid[0, col])
        for order in dict.fromkeys(r["order"] for r in result["rows"]):
            rows = sorted((r for r in result["rows"] if r["order"] == order), key=lambda r: r["achieved_density"])
            ax.plot([r["achieved_density"] for r in rows], [r[metric] for r in rows], "o-", label=order)
        ax.set(xlabel="achieved density", ylabel=unit)
        ax.legend()
    if strip:
        from PIL import Image

        ax = fig.add_subplot(grid[1, :])
        image = np.asarray(Image.open(strip))
        ax.imshow(image)
        step = image.shape[0] / max(1, len(labels))
        ax.set_yticks([step * (i + 0.5) for i in range(len(labels))], labels)
        ax.set_xticks([])
        ax.set_title(result["prompts"][0])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


SEED_STRIDE = 1000


def video_seeds(index: int, seeds: int) -> list[int]:
    """The seeds of prompt `index`: its index first (the one-seed set), then index + 1000, + 2000, ..."""
    return [index + SEED_STRIDE * j for j in range(seeds)]


def quality(pipe, size: dict, steps: int = 20, prompts=PROMPTS, densities=DENSITIES, variants=VARIANTS,
            device: str = "cpu", strips: dict | None = None, guidance: float = 5.0, seeds: int = 1) -> dict:
    """Per (query order, compensate) variant and density: mean PSNR / SSIM against the dense
    generation of each prompt (same seed; `seeds` seeds per prompt, `video_seeds`), achieved density,
    seconds and how many one-object videos pass each of `motion_check` and `shape_check`'s one piece
    and round (`motion_ok`, `one_piece_ok`, `round_ok`) and how many checks the dense twin passes that
    they fail (`checks_lost`); the dense seconds and the dense videos' checks (`motion`) beside them.
    Each row keeps its videos' PSNRs (`psnr_videos`, prompt-major)
    for paired comparisons (`paired_gain`). `strips`, if given, receives the first prompt's frames per
    (label, density) and "dense"."""
    pipe.set_progress_bar_config(disable=True)
    videos = [(prompt, seed) for i, prompt in enumerate(prompts) for seed in video_seeds(i, seeds)]
    dense, dense_s = {}, []
    _warm_up(pipe, prompts[0], size, device, guidance)
    for prompt, seed in videos:
        dense[prompt, seed], seconds = _generate(pipe, prompt, seed, size, steps, device, guidance)
        dense_s.append(seconds)
    motion = [{"seed": s, **video_check(dense[p, s], p)} for p, s in videos if p in MOTION_PROMPTS]
    rows = []
    for order, compensate in variants:
        label = variant_label(order, compensate)
        for density in densities:
            vecdit.enable(pipe, VecAttnConfig(density=density, query_tiles=ORDERS[order], compensate=compensate,
                                              collect_stats=True))
            _warm_up(pipe, prompts[0], size, device, guidance)
            scores, moves = [], []
            for i, (prompt, seed) in enumerate(videos):
                frames, seconds = _generate(pipe, prompt, seed, size, steps, device, guidance)
                if prompt in MOTION_PROMPTS:
                    moves.append(video_check(frames, prompt))
                if strips is not None and i == 0:
                    strips[(label, density)] = frames
                records = vecdit.stats(pipe)["records"]
                achieved = sum(r["density"] for r in records) / len(records) if records else None
                scores.append((psnr(frames, dense[prompt, seed]), ssim(frames, dense[prompt, seed]), achieved, seconds))
            vecdit.disable(pipe)
            finite = [s[0] for s in scores if np.isfinite(s[0])]
            counts = check_counts(moves)
            rows.append({"order": label, "compensate": compensate, "density": density,
                         "psnr": sum(finite) / len(finite) if finite else float("inf"),
                         "ssim": sum(s[1] for s in scores) / len(scores),
                         "achieved_density": sum(s[2] for s in scores if s[2] is not None) / len(scores),
                         "seconds": sum(s[3] for s in scores) / len(scores),
                         "motion_ok": "{}/{}".format(*counts["ok"]), "one_piece_ok": "{}/{}".format(*counts["one_piece"]),
                         "round_ok": "{}/{}".format(*counts["round"]), "checks_lost": checks_lost(motion, moves),
                         "psnr_videos": [s[0] for s in scores]})
    if strips is not None:
        strips["dense"] = dense[videos[0]]
    return {"prompts": list(prompts), "seeds": seeds, "steps": steps, "guidance": guidance, **size,
            "dense_seconds": sum(dense_s) / len(dense_s),
            "motion": motion, "rows": rows}


CAPTURE_STEPS = (4, 10, 16)


def attention_error(pipe, size: dict, steps: int = 20, prompts=PROMPTS[:2], densities=(0.1, 0.25, 0.5),
                    capture_steps=CAPTURE_STEPS, device: str = "cpu", guidance: float = 5.0) -> dict:
    """The model's own attention, not its video: dense generations of `prompts` (seed = index) hand
    every self-attention layer's post-RoPE q, k, v at `capture_steps` (both CFG branches) to the
    lab, which scores each head's top-k on 4x4x4 tiles at each density: recall, and the output
    error (all query rows, fp64, all keys) without and with each compensation variant
    (`vecdit.lab.compensation.VARIANTS`). Deterministic, unlike PSNR: it ranks the variants that
    one 20-step video per prompt cannot tell apart. Rows: one per (capture, head, density)."""
    from vecdit.lab.patterns import compare_patterns
    from vecdit.processors import CalibrationProcessor

    rows = []

    def sink(layer, q, k, v, first_head=0, query_tiles=None):
        for r in compare_patterns(q.float(), k.float(), v.float(), query_tiles.grid, densities, patterns=("tiles-topk",),
                                  compensation=True):
            rows.append({"layer": layer, **r, "head": first_head + r["head"]})

    processors = pipe.transformer.attn_processors
    pipe.transformer.set_attn_processor(CalibrationProcessor(sink, capture_steps))
    pipe.set_progress_bar_config(disable=True)
    try:
        for i, prompt in enumerate(prompts):
            _generate(pipe, prompt, i, size, steps, device, guidance)
    finally:
        pipe.transformer.set_attn_processor(processors)
    if not rows:
        raise ValueError(f"nothing was captured: `capture_steps` {tuple(capture_steps)} must lie below `steps` ({steps})")
    return {"prompts": list(prompts), "steps": steps, "capture_steps": list(capture_steps), "guidance": guidance,
            **size, "densities": list(densities), "rows": rows}


def attention_error_markdown(result: dict, model: str, card: str) -> str:
    from vecdit.lab.compensation import summary_table
    from vecdit.ops.attention.compensation import DEFAULT_COMPENSATION

    heads = len({(r["layer"], r["head"]) for r in result["rows"]})
    lines = [f"# Tiny model: output error of its own attention ({model}, {card})", "",
             f"Dense generations of {len(result['prompts'])} prompt(s) ({result['frames']} frames at {result['size']}x{result['size']}, "
             f"{result['steps']} steps, CFG {result['guidance']:g}); q, k, v of every self-attention layer captured at steps "
             f"{', '.join(map(str, result['capture_steps']))}, both CFG branches ({heads} layer-heads). Top-k per 4x4x4 query "
             "tile on pooled scores; output error = mean over all query rows of |out - dense| / |dense| (fp64, all keys), "
             f"mean over captures and heads; cut = 1 - {DEFAULT_COMPENSATION} (the default) / none; worse = captured heads where "
             "the default is worse than none.", ""]
    return "\n".join(lines + summary_table(result["rows"])) + "\n"


COMPENSATIONS = {"none": False, "default": True, "query": "query", "pooled": "pooled", "dropped": "dropped"}


def one_step(pipe, size: dict, steps: int = 20, prompts=PROMPTS, seeds: int = 2, densities=DENSITIES,
             compensations=("none", "pooled", "default"), capture_steps=CAPTURE_STEPS, guidance: float = 5.0,
             layers: bool = False, configs=(), query_tiles=(4, 4, 4), one=None) -> dict:
    """The model-level error (`vecdit.pipelines.one_step`): dense generations of `prompts` at `seeds`
    seeds each (`video_seeds`), the transformer's inputs at `capture_steps` (both CFG branches);
    from each, one forward per configuration. Rows: (compensation, density) on `query_tiles`, then
    each of `configs` (name -> VecAttnConfig, e.g. calibrated per-layer densities); `layers` adds
    each layer's error with it alone sparse."""
    from .one_step import OneStep

    t0 = time.perf_counter()
    if one is None:
        kwargs = dict(height=size["size"], width=size["size"], num_frames=size["frames"], num_inference_steps=steps,
                      guidance_scale=guidance)
        runs = [(i, seed) for i in range(len(prompts)) for seed in video_seeds(i, seeds)]
        one = OneStep.capture(pipe, list(prompts), capture_steps=capture_steps, call_kwargs=kwargs, runs=runs)
    capture_s = time.perf_counter() - t0
    rows = []

    def row(name, compensation, density, config):
        t = time.perf_counter()
        e = one.error(config)
        r = {"variant": name, "compensate": compensation, "density": density,
             "mean_density": config.mean_density(), "error": e["error"],
             "by_step": {str(k): v for k, v in e["by_step"].items()}, "seconds": time.perf_counter() - t}
        if layers:
            r["layers"] = one.layer_errors(config)
        rows.append(r)
        print(f"{name} {density}: {e['error']:.4f}", file=sys.stderr, flush=True)

    for comp in compensations:
        for d in densities:
            row(comp, comp, d, VecAttnConfig(density=d, query_tiles=query_tiles, compensate=COMPENSATIONS[comp]))
    for name, config in dict(configs).items():
        row(name, config.compensate, None, config)
    return {"prompts": list(prompts), "seeds": seeds, "steps": steps, "capture_steps": list(capture_steps),
            "guidance": guidance, **size, "query_tiles": list(query_tiles), "forwards": len(one.forwards),
            "capture_seconds": capture_s, "rows": rows}


def one_step_markdown(result: dict, model: str, card: str) -> str:
    steps = [str(s) for s in result["capture_steps"]]
    lines = [f"# Tiny model: one-step error against dense ({model}, {card})", "",
             f"{len(result['prompts'])} prompts x {result['seeds']} seeds, dense {result['steps']}-step generations "
             f"({result['frames']} frames at {result['size']}x{result['size']}, CFG {result['guidance']:g}); the "
             f"transformer's inputs at steps {', '.join(steps)}, both CFG branches ({result['forwards']} forwards). From "
             "each, one forward with vecdit sparse from that call (top-k on "
             f"{'x'.join(map(str, result['query_tiles']))} query tiles unless the row says otherwise): error = "
             "|prediction - dense prediction| / |dense prediction|, mean over the forwards. Deterministic.", "",
             "| variant | density | mean density | one-step error | " + " | ".join(f"step {s}" for s in steps) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in steps) + " |"]
    for r in result["rows"]:
        density = "per layer" if r["density"] is None else f"{r['density']:g}"
        lines.append(f"| {r['variant']} | {density} | {r['mean_density']:.3f} | {r['error']:.4f} | "
                     + " | ".join(f"{r['by_step'][s]:.4f}" for s in steps) + " |")
    with_layers = [r for r in result["rows"] if "layers" in r]
    if with_layers:
        count = len(with_layers[0]["layers"])
        lines += ["", "One layer sparse at a time (the others dense), one-step error:", "",
                  "| variant | density | " + " | ".join(f"layer {i}" for i in range(count)) + " | quadrature sum |",
                  "| --- | --- | " + " | ".join("---" for _ in range(count)) + " | --- |"]
        for r in with_layers:
            density = "per layer" if r["density"] is None else f"{r['density']:g}"
            total = sum(e * e for e in r["layers"]) ** 0.5
            lines.append(f"| {r['variant']} | {density} | " + " | ".join(f"{e:.3f}" for e in r["layers"])
                         + f" | {total:.3f} |")
    return "\n".join(lines) + "\n"


def _warm_up(pipe, prompt, size, device, guidance):
    """On a GPU, one short untimed generation first: the kernels' JIT compile stays out of the seconds."""
    if torch.device(device).type == "cuda":
        _generate(pipe, prompt, 0, size, 2, device, guidance)


def motion_sweep(pipe, size: dict, seeds, steps: int = 20, guidance: float = 5.0, device: str = "cpu") -> list[dict]:
    """Dense generations of every motion prompt at each seed, read back by `motion_check` and
    `shape_check`: how a trained model's motion and shapes are tracked from one version to the next
    (one seed is too noisy)."""
    pipe.set_progress_bar_config(disable=True)
    reports = []
    for prompt in MOTION_PROMPTS:
        for seed in seeds:
            frames, _ = _generate(pipe, prompt, seed, size, steps, device, guidance)
            reports.append({"seed": seed, **video_check(frames, prompt)})
    return reports


def _verdict(value: float | None, ok: bool | None) -> str:
    number = "not found" if value is None else "inf" if not np.isfinite(value) else f"{value:.2f}"
    return number if ok is None else f"{number}, {'yes' if ok else 'no'}"


def motion_markdown(reports: list[dict]) -> str:
    """One row per video: `motion_check` and `shape_check` (one piece: the worst frame's share in
    the largest region; circularity judged for circles only), then the counts of each check."""
    lines = ["| prompt | seed | colour seen in | move (x, y) | motion ok | one piece (worst frame) | circularity | "
             "size spread |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in reports:
        move = "not found" if r["move"] is None else f"({r['move'][0]:+.2f}, {r['move'][1]:+.2f})"
        lines.append(f"| {r['prompt']} | {r['seed']} | {r['seen']:.0%} | {move} | {'yes' if r['ok'] else 'no'} | "
                     f"{_verdict(r['piece'], r['one_piece'])} (frame {r['piece_frame']}) | "
                     f"{_verdict(r['circularity'], r['round'])} | {_verdict(r['size_spread'], r['stable'])} |")
    lines.append(f"\n{counts_line(reports)}.")
    return "\n".join(lines) + "\n"


def paired_gain(result: dict, row: dict) -> tuple[float, float] | None:
    """PSNR gain in dB of `row` over the uncompensated row at its density, video by video (same
    prompt and seed): (mean, standard error of the mean); None without such a row or for itself."""
    base = next((r for r in result["rows"] if r["compensate"] is False and r["density"] == row["density"]), None)
    if base is None or base is row or "psnr_videos" not in row:
        return None
    gains = [a - b for a, b in zip(row["psnr_videos"], base["psnr_videos"]) if np.isfinite(a) and np.isfinite(b)]
    if not gains:
        return None
    spread = float(np.std(gains, ddof=1)) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
    return float(np.mean(gains)), spread


def markdown(result: dict, model: str, card: str) -> str:
    lines = [f"# Tiny model: dense vs vecdit ({model}, {card})", "",
             f"{len(result['prompts'])} prompts, {result['frames']} frames at {result['size']}x{result['size']}, "
             f"{result['steps']} steps, CFG {result.get('guidance', 5.0):g}; {result.get('seeds', 1)} seed(s) per prompt, the same "
             f"for dense and sparse. Dense: {result['dense_seconds']:.1f} s per video.",
             "", "Dense, the motion and shape each one-object prompt asks for, read back from the frames (x right, y down; "
             "frame sides; `motion_check`, `shape_check`):", "", motion_markdown(result["motion"]).rstrip()]
    dense = {key: "{}/{}".format(*n) for key, n in check_counts(result["motion"]).items()}
    lines += ["", "PSNR gain: over the uncompensated row at the same density, video by video (mean ± standard error). "
              "Lost: checks (motion, one piece, round) a dense video passes and its vecdit twin fails.",
              "", "| query order | target density | achieved | PSNR dB | PSNR gain dB | SSIM | motion ok | one piece | "
              "round | lost vs dense | s per video |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
              f"| dense | 1 | 1 | | | | {dense['ok']} | {dense['one_piece']} | {dense['round']} | | "
              f"{result['dense_seconds']:.1f} |"]
    for r in result["rows"]:
        gain = paired_gain(result, r)
        gain = "" if gain is None else f"{gain[0]:+.2f} ± {gain[1]:.2f}"
        lines.append(f"| {r['order']} | {r['density']:g} | {r['achieved_density']:.3f} | {r['psnr']:.2f} | {gain} | "
                     f"{r['ssim']:.4f} | {r['motion_ok']} | {r.get('one_piece_ok', '')} | {r.get('round_ok', '')} | "
                     f"{r.get('checks_lost', '')} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    from diffusers import WanPipeline

    from .models import tiny_model_folder, trained_tiny_preset

    p = argparse.ArgumentParser(prog="python -m vecdit.pipelines.tiny_quality")
    p.add_argument("--model", help="a trained tiny pipeline folder (default: the packaged one)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help="the first N prompts of the set")
    p.add_argument("--densities", nargs="+", type=float, default=list(DENSITIES), help="vecdit's top-k densities")
    p.add_argument("--compensate", nargs="+", default=None, choices=list(COMPENSATIONS),
                   help="the tile-order variants: uncompensated, the default compensation, or a mode (default: none "
                        "default; with --one-step: none pooled default)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per prompt (the first is the prompt's index)")
    p.add_argument("--out", default="bench/results/tiny-quality")
    p.add_argument("--motion-seeds", type=int, nargs="+", metavar="SEED",
                   help="only the dense motion check: every motion prompt at these seeds, printed as a table")
    p.add_argument("--attention-error", action="store_true",
                   help="only the output error of the model's own attention (captured from dense generations of the "
                        "first --prompts prompts) at --densities, without and with each compensation variant")
    p.add_argument("--one-step", action="store_true",
                   help="only the model-level error: from dense trajectories' latents at steps 4/10/16 (--seeds seeds "
                        "per prompt), one forward per --compensate x --densities and per --config, against dense")
    p.add_argument("--layers", action="store_true", help="with --one-step: also each layer alone sparse")
    p.add_argument("--config", nargs="+", default=[], metavar="FILE",
                   help="with --one-step: also rows for these `vecdit calibrate` files")
    p.add_argument("--guidance", type=float, default=None,
                   help="CFG scale (default: the model's own, its vecdit_tiny.json's generation settings)")
    args = p.parse_args(argv)
    folder = args.model or tiny_model_folder()
    if folder is None:
        print("no trained tiny model: train one (python -m vecdit.pipelines.tiny_train) or pass --model", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # bf16 on the GPU, where vecdit's kernels take it (in fp32 they fall back to the PyTorch reference)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    pipe = WanPipeline.from_pretrained(folder, dtype=dtype).to(device)
    preset = trained_tiny_preset(folder)  # its clip size and its own CFG
    size = {"size": preset.height, "frames": preset.frames}
    guidance = args.guidance if args.guidance is not None else preset.guidance
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    name = os.path.basename(os.path.normpath(folder))

    def write(kind: str, result: dict, text: str) -> str:
        """`<out>/tiny-<kind>-<card>-<date>.json` and `.md`; returns the stem."""
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, f"tiny-{kind}-{card.lower().replace(' ', '-')}-{datetime.date.today().isoformat()}")
        with open(stem + ".json", "w") as f:
            json.dump({"model": folder, "card": card, "dtype": str(dtype).removeprefix("torch."), **result}, f, indent=1)
        with open(stem + ".md", "w") as f:
            f.write(text)
        return stem

    if args.attention_error:
        result = attention_error(pipe, size, args.steps, PROMPTS[: args.prompts], tuple(args.densities), device=device,
                                 guidance=guidance)
        text = attention_error_markdown(result, name, card)
        write("attention-error", result, text)
        print(text)
        return 0
    if args.one_step:
        configs = {os.path.basename(path): VecAttnConfig.from_calibration(path) for path in args.config}
        result = one_step(pipe, size, args.steps, PROMPTS[: args.prompts], args.seeds, tuple(args.densities),
                          tuple(args.compensate or ("none", "pooled", "default")), guidance=guidance, layers=args.layers,
                          configs=configs)
        text = one_step_markdown(result, name, card)
        write("one-step", result, text)
        print(text)
        return 0
    if args.motion_seeds:
        print(motion_markdown(motion_sweep(pipe, size, args.motion_seeds, args.steps, guidance, device)))
        return 0
    strips = {}
    variants = tuple(("tiles", COMPENSATIONS[m]) for m in (args.compensate or ("none", "default")))
    result = quality(pipe, size, args.steps, PROMPTS[: args.prompts], densities=tuple(args.densities), variants=variants,
                     device=device, strips=strips, guidance=guidance, seeds=args.seeds)
    stem = write("quality", result, markdown(result, name, card))
    # the first prompt: dense, then each variant and density, one row of frames each
    keys = sorted(k for k in strips if k != "dense")
    strip = frame_strip(np.concatenate([strips["dense"]] + [strips[k] for k in keys], axis=1), stem + "-strip.png")
    labels = ["dense"] + [f"vecdit {d:g} ({label})" for label, d in keys]
    if plot_quality(result, stem + ".png", strip, labels):  # one PNG: the curves over the strip
        os.remove(strip)
    print(markdown(result, folder, card))
    return 0


if __name__ == "__main__":
    sys.exit(main())
