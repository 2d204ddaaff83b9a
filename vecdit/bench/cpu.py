# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.bench cpu`: the README's first command on this machine's CPU, dense and with
vecdit (the packaged tiny model at its shipped settings): load, text, denoising, decoding seconds,
a denoising step dense and a selecting step with vecdit (their ratio is what vecdit costs there).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
import time

import torch

PROMPT = "a red circle moving right"


def run_cpu(repeats: int = 1) -> dict:
    from vecdit.pipelines.generate import GenerateSettings, Generator

    rows = {}
    for attention in ("dense", "vec"):
        t0 = time.perf_counter()
        gen = Generator(GenerateSettings(model="tiny", attention=attention), device="cpu")
        load = time.perf_counter() - t0
        runs = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                side = gen.render(PROMPT, 0, os.path.join(tmp, "circle.mp4"), progress=False)
            runs.append(side["seconds"])
        best = min(runs, key=lambda s: s["denoising"])
        steps = gen.settings.steps
        dense_steps = gen.config.num_dense_steps(steps) + gen.config.num_dense_last_steps(steps) if gen.config else steps
        rows[attention] = {"load_s": load, **{k: v for k, v in best.items() if k != "load"}, "steps": steps,
                           "dense_steps": dense_steps, "density": side.get("density"),
                           "config": gen.config.to_dict() if gen.config else None}
    dense_step = rows["dense"]["denoising"] / rows["dense"]["steps"]
    vec = rows["vec"]
    selecting = (vec["denoising"] - vec["dense_steps"] * dense_step) / max(1, vec["steps"] - vec["dense_steps"])
    return {"environment": {"machine": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
                            "torch": torch.__version__, "date": datetime.date.today().isoformat()},
            "prompt": PROMPT, "repeats": repeats, "rows": rows, "dense_step_s": dense_step,
            "vecdit_selecting_step_s": selecting, "step_ratio": selecting / dense_step}


def cpu_markdown(res: dict) -> str:
    env = res["environment"]
    lines = [f"# The README's first command on the CPU ({env['cpu_threads']} threads, torch {env['torch']}, {env['date']})",
             "", f"`vecdit generate --model tiny --prompt \"{res['prompt']}\"`, dense and vecdit (the tiny model's shipped "
             f"settings), best of {res['repeats']}; seconds:", "",
             "| attention | load | text | denoising | decoding | steps (dense) | density |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in res["rows"].items():
        density = "" if r["density"] is None else f"{r['density']:.3f}"
        lines.append(f"| {name} | {r['load_s']:.1f} | {r['text_encoding']:.2f} | {r['denoising']:.1f} | {r['decoding']:.1f} | "
                     f"{r['steps']} ({r['dense_steps']}) | {density} |")
    lines += ["", f"A dense step {res['dense_step_s']:.2f} s; a vecdit selecting step {res['vecdit_selecting_step_s']:.2f} s "
              f"({res['step_ratio']:.2f}x)."]
    return "\n".join(lines) + "\n"


def main_cpu(args) -> int:
    res = run_cpu(args.repeats)
    text = cpu_markdown(res)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"cpu-tiny-{res['environment']['cpu_threads']}threads-{res['environment']['date']}")
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(text)
    print("wrote", stem + ".{json,md}")
    return 0
