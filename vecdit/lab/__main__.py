# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.lab compare --geometry cpu-small --heads 8 --out bench/results` (JSON, + PNG with matplotlib)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

import torch

from .patterns import PATTERNS, compare_patterns
from .synthetic import GEOMETRIES, SyntheticConfig, structured_qkv


def summarize(rows):
    agg = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for key in ("recall", "density", "rel_l2"):
            agg[(r["pattern"], r["target_density"])][key].append(r[key])
    return [{"pattern": p, "target_density": d, **{k: sum(v) / len(v) for k, v in vals.items()}}
            for (p, d), vals in sorted(agg.items(), key=lambda x: (x[0][1], x[0][0]))]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vecdit.lab")
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("compare", help="patterns at matched density on the structured proxy")
    c.add_argument("--geometry", default="cpu-small", choices=list(GEOMETRIES))
    c.add_argument("--heads", type=int, default=8)
    c.add_argument("--densities", nargs="+", type=float, default=[0.05, 0.1, 0.25, 0.5])
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--blocks", type=int, help="sampled 64-query blocks per head (long sequences)")
    c.add_argument("--out", default="bench/results")
    args = parser.parse_args(argv)
    cfg = SyntheticConfig(geometry=args.geometry, heads=args.heads, head_dim=128, seed=args.seed)
    q, k, v = structured_qkv(cfg)
    if torch.cuda.is_available():
        q, k, v = q.cuda(), k.cuda(), v.cuda()
    rows = compare_patterns(q, k, v, args.densities, blocks=args.blocks, seed=args.seed)
    summary = summarize(rows)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"patterns-{args.geometry}")
    with open(stem + ".json", "w") as f:
        json.dump({"config": vars(cfg), "sampled_blocks_per_head": args.blocks, "per_head": rows,
                   "mean_over_heads": summary}, f, indent=2, default=str)
    print("| pattern | target density | density | recall | rel L2 |\n| --- | --- | --- | --- | --- |")
    for s in summary:
        print(f"| {s['pattern']} | {s['target_density']} | {s['density']:.3f} | {s['recall']:.3f} | {s['rel_l2']:.3f} |")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG", file=sys.stderr)
        return 0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for p in PATTERNS:
        pts = [s for s in summary if s["pattern"] == p]
        axes[0].plot([s["density"] for s in pts], [s["recall"] for s in pts], marker="o", label=p)
        axes[1].plot([s["density"] for s in pts], [s["rel_l2"] for s in pts], marker="o", label=p)
    sampled = f", {args.blocks} sampled blocks/head" if args.blocks else ""
    axes[0].set(xlabel="density", ylabel="recall (attention mass kept)", title=f"{args.geometry}, {args.heads} heads{sampled}")
    axes[1].set(xlabel="density", ylabel="relative L2 error of output", yscale="log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
