# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.lab compare --geometry wan2.1-480p --heads 8 --blocks 8 --out bench/results`
(JSON + Markdown, + PNG with matplotlib). Several geometries in one call share one results file.
`python -m vecdit.lab density`: achieved vs target density of the top-k rule at full size."""
from __future__ import annotations

import argparse
import datetime
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


def markdown(results: dict, card: str) -> str:
    lines = [f"# Fidelity lab: query groupings and rules at matched density ({card})", "",
             "Structured proxy of video-DiT attention (vecdit/lab/synthetic.py), recall = attention mass kept "
             "per query row, mean over heads (and, in brackets, the worst head), sampled query blocks per head "
             "and grouping against all keys.", ""]
    for geometry, res in results.items():
        densities = sorted({s["target_density"] for s in res["mean_over_heads"]})
        lines += [f"## {geometry}: grid {res['grid']}, {res['config']['heads']} heads, "
                  f"{res['sampled_blocks_per_head']} blocks/head", "",
                  "| pattern | " + " | ".join(f"recall @ {d:g}" for d in densities) + " |",
                  "| --- |" + " --- |" * len(densities)]
        for p in res["patterns"]:
            cells = []
            for d in densities:
                s = next(s for s in res["mean_over_heads"] if s["pattern"] == p and s["target_density"] == d)
                worst = min(r["recall"] for r in res["per_head"] if r["pattern"] == p and r["target_density"] == d)
                cells.append(f"{s['recall']:.3f} ({worst:.3f}), d={s['density']:.3f}")
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        lines.append("")
        if any("out_err" in r for r in res["per_head"]):
            from vecdit.ops.attention.compensation import DEFAULT_COMPENSATION

            from .compensation import summary_table

            lines += [f"Output error (mean over sampled query rows of |out - dense| / |dense|, mean over heads) without "
                      "and with the dropped keys' compensation; cut = 1 - default / none (default: `vecdit.ops.attention.compensation.DEFAULT_COMPENSATION`, "
                      f"{DEFAULT_COMPENSATION}); worse = heads where the default is worse than none:", ""]
            lines += summary_table(res["per_head"])
            lines.append("")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no PNG", file=sys.stderr)
        return False
    compensated = any("out_err" in r for res in results.values() for r in res["per_head"])
    fig, axes = plt.subplots(2 if compensated else 1, len(results), figsize=(5 * len(results), 8 if compensated else 4),
                             squeeze=False)
    for ax, (geometry, res) in zip(axes[0], results.items()):
        for p in res["patterns"]:
            pts = [s for s in res["mean_over_heads"] if s["pattern"] == p]
            style = "-" if p.startswith("tiles") else "--"
            ax.plot([s["density"] for s in pts], [s["recall"] for s in pts], style, marker="o", label=p)
        ax.set(xlabel="density", ylabel="recall (attention mass kept)", title=f"{geometry} {tuple(res['grid'])}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if compensated:
        from .compensation import VARIANTS

        for ax, (geometry, res) in zip(axes[1], results.items()):
            for p in sorted({r["pattern"] for r in res["per_head"] if "out_err" in r}):
                sel = [r for r in res["per_head"] if r["pattern"] == p and "out_err" in r]
                densities = sorted({r["target_density"] for r in sel})
                for variant in VARIANTS:
                    err = [sum(r["out_err"][variant] for r in sel if r["target_density"] == d)
                           / sum(r["target_density"] == d for r in sel) for d in densities]
                    ax.plot(densities, err, "--" if variant == "none" else "-", marker="o", label=f"{p} {variant}")
            ax.set(xlabel="density", ylabel="output error vs dense (mean over rows)", yscale="log",
                   title=f"{geometry}: compensation")
            ax.grid(alpha=0.3)
        axes[1][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vecdit.lab")
    sub = parser.add_subparsers(dest="what", required=True)
    c = sub.add_parser("compare", help="query groupings and rules at matched density on the structured proxy")
    c.add_argument("--geometry", nargs="+", default=["cpu-small"], choices=list(GEOMETRIES))
    c.add_argument("--heads", type=int, default=8, help="head families, from global to local")
    c.add_argument("--densities", nargs="+", type=float, default=[0.05, 0.1, 0.25, 0.5])
    c.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--blocks", type=int, help="sampled query blocks per head and grouping (long sequences)")
    c.add_argument("--rule-dtype", choices=["fp64", "bf16"], default="fp64",
                   help="bf16: the rules score bf16 keys with the pooled query rounded to bf16, as the kernels do")
    c.add_argument("--compensation", action="store_true",
                   help="the top-k patterns' output error without and with each compensation variant (vecdit/lab/compensation.py)")
    c.add_argument("--name", default="tiles", help="results file stem")
    c.add_argument("--out", default="bench/results/lab")
    d = sub.add_parser("density", help="achieved vs target density of the top-k rule at full size (host-sync check)")
    d.add_argument("--geometry", nargs="+", default=["wan2.1-720p", "hunyuanvideo-720p"], choices=list(GEOMETRIES))
    d.add_argument("--targets", nargs="+", type=float, default=[0.1, 0.25, 0.5])
    d.add_argument("--layers", type=int, default=4, help="proxy seeds, one per layer")
    d.add_argument("--out", default="bench/results/lab")
    pa = sub.add_parser("pairs", help="neighbouring 64-query tiles: own lists vs their union (128-row programs)")
    pa.add_argument("--geometry", nargs="+", default=["wan2.1-480p"], choices=list(GEOMETRIES))
    pa.add_argument("--heads", type=int, default=8)
    pa.add_argument("--pairs", type=int, default=8, help="sampled tile pairs per head")
    pa.add_argument("--densities", nargs="+", type=float, default=[0.1, 0.25])
    pa.add_argument("--out", default="bench/results/lab")
    m = sub.add_parser("match", help="the density at which one query tile keeps the recall another keeps")
    m.add_argument("--geometry", nargs="+", default=["hunyuanvideo-720p"], choices=list(GEOMETRIES))
    m.add_argument("--heads", nargs="+", type=int, default=[24],
                   help="heads of the proxy per geometry, as the attention benchmark builds it (HunyuanVideo 24, Wan-14B 40)")
    m.add_argument("--tiles", nargs=2, default=["4x4x4", "4x4x8"], help="reference tile, matched tile")
    m.add_argument("--densities", nargs="+", type=float, default=[0.25, 0.1])
    m.add_argument("--sampled-heads", type=int, default=6, help="heads the recall is measured on (as the peers bench)")
    m.add_argument("--by", choices=["recall", "error"], default="recall",
                   help="error: the output error vs dense (what a user sees), the matched tile with --compensate")
    m.add_argument("--compensate", default="pooled", choices=["none", "query", "pooled", "tiles", "exact"],
                   help="--by error: the matched tile's compensation (vecdit/lab/compensation.py variants)")
    m.add_argument("--reference-compensate", default="none", choices=["none", "query", "pooled", "tiles", "exact"],
                   help="--by error: the reference tile's compensation (none: the uncompensated presets)")
    m.add_argument("--out", default="bench/results/lab")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    if args.what == "density":
        return _density(args, device, card)
    if args.what == "pairs":
        return _pairs(args, card)
    if args.what == "match":
        return _match(args, device, card)
    results = {}
    for geometry in args.geometry:
        cfg = SyntheticConfig(geometry=geometry, heads=args.heads, head_dim=128, seed=args.seed)
        q, k, v = structured_qkv(cfg, device=device)
        grid = GEOMETRIES[geometry][0]
        rule_dtype = torch.bfloat16 if args.rule_dtype == "bf16" else None
        rows = compare_patterns(q, k, v, grid, args.densities, args.patterns, blocks=args.blocks, seed=args.seed,
                                rule_dtype=rule_dtype, compensation=args.compensation)
        results[geometry] = {"config": vars(cfg), "grid": list(grid), "sampled_blocks_per_head": args.blocks,
                             "rule_dtype": args.rule_dtype,
                             "patterns": args.patterns, "per_head": rows, "mean_over_heads": summarize(rows)}
        print(markdown({geometry: results[geometry]}, card), flush=True)
        del q, k, v
    stem = _write(args.out, f"{args.name}-{'-'.join(args.geometry)}-{_slug(card)}", card, {"results": results},
                  markdown(results, card))
    plot(results, stem + ".png")
    print("wrote", stem + ".{json,md,png}")
    return 0


def _slug(card: str) -> str:
    return card.lower().replace(" ", "-")


def _write(out: str, name: str, card: str, payload: dict, text: str) -> str:
    """`out/name.json` (with the environment: card, torch, date) and `out/name.md`; returns the stem."""
    os.makedirs(out, exist_ok=True)
    stem = os.path.join(out, name)
    env = {"card": card, "torch": torch.__version__, "date": datetime.date.today().isoformat()}
    with open(stem + ".json", "w") as f:
        json.dump({"environment": env, **payload}, f, indent=1, default=str)
    with open(stem + ".md", "w") as f:
        f.write(text)
    return stem


def _density(args, device, card) -> int:
    from .density import density_rows, markdown as density_markdown

    rows = [r for g in args.geometry for r in density_rows(g, args.targets, args.layers, device=device)]
    text = density_markdown(rows, card)
    print(text)
    stem = _write(args.out, f"density-{_slug(card)}-{datetime.date.today().isoformat()}", card, {"rows": rows}, text)
    worst = max(abs(r["achieved"] - r["target"]) for r in rows)
    print(f"wrote {stem}.{{json,md}}; largest per-layer deviation {worst:.4f}")
    return 0 if worst <= 0.02 else 1


def _pairs(args, card) -> int:
    from .pairs import pair_rows, pairs_markdown, summarize_pairs

    results = {}
    for geometry in args.geometry:
        q, k, _ = structured_qkv(SyntheticConfig(geometry=geometry, heads=args.heads, head_dim=128), device="cpu")
        rows = pair_rows(q, k, GEOMETRIES[geometry][0], args.densities, args.pairs)
        results[geometry] = {"grid": list(GEOMETRIES[geometry][0]), "heads": args.heads, "pairs": args.pairs,
                             "rows": rows, "summary": summarize_pairs(rows)}
        print(pairs_markdown({geometry: results[geometry]}, card), flush=True)
    stem = _write(args.out, f"pairs-{'-'.join(args.geometry)}-{_slug(card)}-{datetime.date.today().isoformat()}", card,
                  {"results": results}, pairs_markdown(results, card))
    print("wrote", stem + ".{json,md}")
    return 0


def _match(args, device, card) -> int:
    from .match import match_by_error, match_tiles

    if len(args.heads) not in (1, len(args.geometry)):
        raise SystemExit(f"--heads: one count, or one per geometry ({len(args.geometry)}), got {args.heads}")
    reference, tile = (tuple(int(x) for x in t.split("x")) for t in args.tiles)
    results, lines = {}, [f"# Equal recall across query tiles ({card})", "",
                          "The attention benchmark's structured inputs (video tokens, seed 0), recall as the peers bench "
                          f"measures it ({args.sampled_heads} sampled heads x 256 query tokens, fp64, all keys); "
                          f"the {args.tiles[1]} density is the smallest (to ~1.6%) that keeps the {args.tiles[0]} recall.", ""]
    if args.by == "error":
        ref_c, comp = (None if c == "none" else c for c in (args.reference_compensate, args.compensate))
        lines[0] = f"# Equal output error across query tiles and compensation ({card})"
        lines[2] = (f"The attention benchmark's structured inputs (video tokens, seed 0); output error = mean over "
                    f"{args.sampled_heads} sampled heads x 256 query tokens of |out - dense| / |dense| (fp64, all keys); "
                    f"the {args.tiles[1]} density (compensation `{args.compensate}`) is the smallest (to ~1.6%) whose "
                    f"error is no more than {args.tiles[0]}'s (compensation "
                    f"`{args.reference_compensate}`).")
    for geometry, heads in zip(args.geometry, args.heads * len(args.geometry) if len(args.heads) == 1 else args.heads):
        q, k, v = structured_qkv(SyntheticConfig(geometry=geometry, heads=heads, head_dim=128, seed=0), device=device)
        q, k, v = q.to(torch.bfloat16), k.to(torch.bfloat16), v.to(torch.bfloat16)
        if args.by == "error":
            rows = match_by_error(q, k, v, GEOMETRIES[geometry][0], reference, tile, args.densities, args.sampled_heads,
                                  comp, ref_c, sampled_heads_only=device == "cpu")
            quality = ("error", "reference_error", "matched_error")
        else:
            rows = match_tiles(q, k, GEOMETRIES[geometry][0], reference, tile, args.densities, args.sampled_heads,
                               sampled_heads_only=device == "cpu")
            quality = ("recall", "reference_recall", "matched_recall")
        results[geometry] = {"grid": list(GEOMETRIES[geometry][0]), "heads": heads, "by": args.by, "rows": rows}
        lines += [f"## {geometry}, grid {GEOMETRIES[geometry][0]}, {heads} heads", "",
                  f"| {args.tiles[0]} density | {args.tiles[0]} {quality[0]} | {args.tiles[1]} density | "
                  f"{args.tiles[1]} {quality[0]} |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['density']:g} | {r[quality[1]]:.4f} | {r['matched_density']:.4f} | "
                  f"{r[quality[2]]:.4f} |" for r in rows]
        lines.append("")
        print("\n".join(lines[-len(rows) - 5:]), flush=True)
        del q, k
    by = "" if args.by == "recall" else f"error-{args.reference_compensate}-{args.compensate}-"
    stem = _write(args.out, f"match-{by}{'-'.join(args.tiles)}-{'-'.join(args.geometry)}-{_slug(card)}-"
                  f"{datetime.date.today().isoformat()}", card, {"results": results}, "\n".join(lines) + "\n")
    print("wrote", stem + ".{json,md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
