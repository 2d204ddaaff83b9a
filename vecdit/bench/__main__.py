# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.bench attention|transformer|... [--out bench/results]` (GPU; `cpu` on the CPU)."""
from __future__ import annotations

import argparse
import sys

import torch


def _attention_markdown(env: dict, results: list[dict]) -> str:
    from vecdit.ops.attention.compensation import COMPENSATION_MODES

    lines = [f"# vecdit attention benchmark on {env['card']}", "",
             f"torch {env['torch']}, triton {env['triton']}, CUDA {env['cuda']}, {env['date']}. "
             "bf16, head_dim 128, batch 1, medians of triton.testing.do_bench. Inputs: `random` (i.i.d., "
             "no locality) or `structured` (the fidelity lab's proxy of video attention). Variants: query "
             "blocks as raster strips or 4x4x4 / 4x4x8 tiles of the latent grid; the top-k rule (the "
             "default) or the published min-p rule with its threshold calibrated to the density. `rel err "
             "vs dense` is large by construction on random (flat) attention, `kernel err` is vs an fp32 "
             "reference of the same selection.", ""]
    for r in results:
        d = r["dense"]
        lines += [f"## {r['shape']} ({r.get('inputs', 'random')} inputs): {r['heads']} heads, {r['video_tokens']} video + "
                  f"{r['text_tokens']} text tokens", "",
                  "dense: " + ", ".join(f"{name} {e['ms']:.2f} ms ({e['tflops']:.0f} TFLOP/s, err vs fp32 "
                                        f"{e.get('rel_err_vs_fp32', float('nan')):.1e})" for name, e in d.items())
                  + ("" if "sage2" in d else " (SageAttention2 not built here)"), "",
                  "| variant | density | selection ms | attention ms | total ms | x cuDNN | x flash | x Sage2 | sel / dense | attn TFLOP/s (computed) | peak extra GB | index GB | rel err vs dense | kernel err |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for v in r["vecdit"]:
            lines.append(
                f"| {v['variant']} | {v['density']:.3f} | {v['selection_ms']:.2f} | {v['attention_ms']:.2f} | {v['total_ms']:.2f} | "
                f"{v['speedup_vs_cudnn']:.2f} | {v['speedup_vs_flash']:.2f} | "
                f"{'-' if v.get('speedup_vs_sage2') is None else format(v['speedup_vs_sage2'], '.2f')} | {v['selection_share_of_dense']:.3f} | "
                f"{v['attention_tflops_on_computed']:.0f} | {v['peak_extra_mem_gb']:.2f} | {v['index_buffer_gb']:.2f} | "
                f"{v['rel_err_vs_dense']:.3f} | {v['kernel_rel_err_vs_fp32_ref']:.1e} |")
        modes = COMPENSATION_MODES
        lines += ["", "The dropped keys' compensation (`compensate`, default "
                  f"`{r['vecdit'][0]['compensate'] if r['vecdit'] else ''}`): the attention alone, uncompensated and per "
                  "mode; extra = its time over the uncompensated attention (group means of K and V, scores, merge), "
                  "as a share of dense cuDNN; kernel err vs an fp32 reference of the compensated softmax:", "",
                  "| variant | density | attention ms, none | " + " | ".join(f"{m} ms (extra, share)" for m in modes)
                  + " | kernel err none / " + " / ".join(modes) + " |", "| --- | --- | --- | " + "--- | " * len(modes) + "--- |"]
        for v in r["vecdit"]:
            c = v.get("compensation")
            if not c:
                continue
            lines.append(f"| {v['variant']} | {v['density']:.3f} | {c['false']['attention_ms']:.2f} | "
                         + " | ".join(f"{c[m]['attention_ms']:.2f} ({c[m]['extra_ms']:+.2f}, {c[m]['extra_share_of_cudnn']:.1%})"
                                      if m in c else "-" for m in modes)
                         + " | " + " / ".join(f"{c[m]['kernel_rel_err_vs_fp32_ref']:.1e}" if m in c else "-"
                                              for m in ("false",) + modes) + " |")
        lines += ["", "Tile order against raster order, same rule (top-k) and density:", "",
                  "| density | attention ms raster / tiles | tiles vs raster | total ms raster / tiles | tiles vs raster |",
                  "| --- | --- | --- | --- | --- |"]
        for d in sorted({v["target_density"] for v in r["vecdit"]}, reverse=True):
            by = {v["variant"]: v for v in r["vecdit"] if v["target_density"] == d}
            if "raster-topk" in by and "tiles-topk" in by:
                a, b = by["raster-topk"], by["tiles-topk"]
                lines.append(f"| {d:g} | {a['attention_ms']:.2f} / {b['attention_ms']:.2f} | "
                             f"{b['attention_ms'] / a['attention_ms'] - 1:+.1%} | {a['total_ms']:.2f} / {b['total_ms']:.2f} | "
                             f"{b['total_ms'] / a['total_ms'] - 1:+.1%} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _transformer_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# vecdit transformer benchmark on {env['card']}", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['date']}. One forward, full-size config, random "
             "weights, bf16, batch 1. Per-layer thresholds calibrated to each density on this input (untimed). "
             "Projection: 50 steps with the default schedule (first 3 steps dense), times CFG passes.", ""]
    for r in results:
        lines += [f"## {r['model']}", "", "| processors | forward s | x stock | density | selection s | sparse attn s | attention share | 50-step projection s | rel diff vs stock |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for label, e in r["runs"].items():
            def f(key, scale=1.0, fmt="{:.2f}"):
                return fmt.format(e[key] * scale) if key in e else "-"
            lines.append(f"| {label} | {f('forward_ms', 1e-3)} | {f('speedup_vs_stock')} | {f('density', fmt='{:.3f}')} | "
                         f"{f('selection_ms', 1e-3)} | {f('sparse_attention_ms', 1e-3)} | {f('attention_share')} | "
                         f"{f('projected_50_steps_s', fmt='{:.0f}')} | {f('rel_diff_vs_stock', fmt='{:.3f}')} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vecdit.bench")
    sub = parser.add_subparsers(dest="what", required=True)
    att = sub.add_parser("attention", help="kernel benchmark against dense SDPA (cuDNN, flash)")
    from .attention import DENSITIES, SHAPES

    att.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    att.add_argument("--densities", nargs="+", type=float, default=list(DENSITIES))
    from .attention import INPUTS, KERNEL_VARIANTS, VARIANTS

    att.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS) + list(KERNEL_VARIANTS))
    att.add_argument("--inputs", nargs="+", default=["random"], choices=list(INPUTS),
                     help="random (i.i.d., the worst case for locality) and/or structured (the lab's video proxy)")
    att.add_argument("--out", default="bench/results/attention")
    att.add_argument("--name", default="attention", help="results file stem (the card and date are appended)")
    att.add_argument("--index-overhead", action="store_true",
                     help="instead: the tile index's own cost (same lists with and without it, timed alternately)")
    pe = sub.add_parser("peers", help="vecdit vs VSA, FlexAttention block-sparse, SpargeAttn and the dense kernels: "
                                      "time, output error, recall, speed at equal output error")
    from .peers import DENSITIES as PEER_DENSITIES
    from .peers import METHODS as PEER_METHODS

    pe.add_argument("--shapes", nargs="+", default=["hunyuanvideo-720p", "wan2.1-14b-720p"], choices=list(SHAPES))
    pe.add_argument("--densities", nargs="+", type=float, default=list(PEER_DENSITIES),
                    help="the sparse methods' densities (vecdit also runs at 0.25 and 0.1, the equal-error levels)")
    pe.add_argument("--methods", nargs="+", default=list(PEER_METHODS), choices=list(PEER_METHODS))
    pe.add_argument("--heads-sampled", type=int, default=6, help="heads of the sampled query rows (256 tokens each)")
    pe.add_argument("--match-recall", action="store_true", help="also vecdit at each peer's recall (slower)")
    pe.add_argument("--inputs", default="structured", choices=list(INPUTS))
    pe.add_argument("--out", default="bench/results/peers")
    sub.add_parser("peers-check", help="which peers are importable here, and a small call of each (GPU)")
    se = sub.add_parser("selection", help="the selection's stages, next to the dense time")
    se.add_argument("--shapes", nargs="+", default=["hunyuanvideo-720p"], choices=list(SHAPES))
    se.add_argument("--densities", nargs="+", type=float, default=[0.25, 0.1])
    se.add_argument("--tiles", nargs="+", default=["4x4x4", "4x4x8"])
    se.add_argument("--out", default="bench/results/selection")
    pi = sub.add_parser("pipeline", help="a whole generation (text, denoising steps, decode): stock vs vecdit")
    from .pipeline import MODELS as PIPELINE_MODELS
    from .pipeline import ALL_VARIANTS
    from .pipeline import VARIANTS as PIPELINE_VARIANTS

    pi.add_argument("--models", nargs="+", default=["wan2.1-t2v-1.3b", "wan2.1-t2v-14b"], choices=list(PIPELINE_MODELS))
    pi.add_argument("--variants", nargs="+", default=list(PIPELINE_VARIANTS),
                    choices=list(ALL_VARIANTS),
                    help="fp8 variants (vecdit.fp8, Hopper / Ada) convert the weights for good: they run last; "
                         "sage variants need SageAttention2 built (bench/build_peers.py)")
    pi.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's own, 50 or Wan2.2 "
                                                           "A14B's 40)")
    pi.add_argument("--repeats", type=int, default=2)
    pi.add_argument("--device", default="cuda", help="cuda; cpu only for --models tiny tiny-hunyuan (a smoke run)")
    pi.add_argument("--density", type=float, default=None, help="the preset's top-k density instead of its own")
    pi.add_argument("--query-tiles", default=None, help="the preset's query tiles instead of its own, e.g. 4x4x8")
    pi.add_argument("--out", default="bench/results/pipeline")
    f8 = sub.add_parser("fp8", help="one block's Linear layers at full size: bf16 vs float8 (vecdit, torchao)")
    f8.add_argument("--models", nargs="+", default=["hunyuanvideo", "wan2.1-t2v-14b"],
                    choices=["hunyuanvideo", "wan2.1-t2v-14b"])
    f8.add_argument("--no-torchao", action="store_true", help="time vecdit's Float8Linear only")
    f8.add_argument("--out", default="bench/results/fp8")
    cp = sub.add_parser("cpu", help="the README's first command on this machine's CPU, dense and vecdit")
    cp.add_argument("--repeats", type=int, default=1, help="generations per attention; the fastest is reported")
    cp.add_argument("--out", default="bench/results/cpu")
    tr = sub.add_parser("transformer", help="one full-size transformer forward, stock vs vecdit")
    from .transformer import MODELS

    tr.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    tr.add_argument("--densities", nargs="+", type=float, default=[0.25, 0.1])
    tr.add_argument("--out", default="bench/results/transformer")
    args = parser.parse_args(argv)
    if args.what == "cpu":
        from .cpu import main_cpu

        return main_cpu(args)
    if args.what == "pipeline" and args.device == "cpu":
        if not all(m.startswith("tiny") for m in args.models) or any("compile" in v or "sage" in v for v in args.variants):
            print("--device cpu runs only the tiny models, without vecdit-compile (a smoke run)", file=sys.stderr)
            return 2
        from .pipeline import main_pipeline

        return main_pipeline(args)
    if args.what == "peers-check":
        from .peer_check import check_peers

        for line in check_peers():
            print(line, flush=True)
        return 0
    if not torch.cuda.is_available():
        print("the benchmark needs a CUDA GPU", file=sys.stderr)
        return 2
    from .common import environment, write_results

    env = environment()
    if args.what == "peers":
        from .peers import peers_markdown, plot_peers, run_peers

        results = []
        for shape in args.shapes:
            results.append(run_peers(shape, args.densities, args.inputs, args.heads_sampled, args.methods,
                                     args.match_recall))
            print(peers_markdown(env, results[-1:]), flush=True)
            torch.cuda.empty_cache()
            # written after every shape: a run cut short by its time limit keeps the shapes it finished
            md = peers_markdown(env, results)
            jpath, mpath = write_results("peers-" + "-".join(args.shapes),
                                         {"environment": env, "results": results}, md, args.out)
            plot_peers(results, jpath[:-5] + ".png")
            print("wrote", jpath, mpath, flush=True)
        return 0
    if args.what == "pipeline":
        from .pipeline import main_pipeline

        return main_pipeline(args)
    if args.what == "fp8":
        from .fp8 import fp8_markdown, run_fp8

        results = []
        for name in args.models:
            results.append(run_fp8(name, torchao=not args.no_torchao))
            print(fp8_markdown(env, results[-1:]), flush=True)
        paths = write_results("fp8-" + "-".join(args.models), {"environment": env, "results": results},
                              fp8_markdown(env, results), args.out)
        print("wrote", *paths)
        return 0
    if args.what == "selection":
        from .selection import run_selection, selection_markdown

        tiles = [tuple(int(x) for x in t.split("x")) for t in args.tiles]
        results = []
        for shape in args.shapes:
            results.append(run_selection(shape, args.densities, tiles))
            print(selection_markdown(env, results[-1:]), flush=True)
            torch.cuda.empty_cache()
        paths = write_results("selection", {"environment": env, "results": results}, selection_markdown(env, results),
                              args.out)
        print("wrote", *paths)
        return 0
    if args.what == "transformer":
        from .transformer import run_model

        results = []
        for name in args.models:
            results.append(run_model(name, args.densities))
            print(_transformer_markdown(env, results[-1:]), flush=True)
        md = _transformer_markdown(env, results)
        paths = write_results("transformer-" + "-".join(args.models), {"environment": env, "results": results}, md, args.out)
        print("wrote", *paths)
        return 0
    from .attention import index_overhead, run_shape

    if args.index_overhead:
        results = [index_overhead(shape, args.densities, inputs) for shape in args.shapes for inputs in args.inputs]
        lines = [f"# Tile index cost on {env['card']}", "", f"torch {env['torch']}, triton {env['triton']}, {env['date']}. "
                 "One tile-order top-k selection attended through its query index vs the same lists on consecutive "
                 "query blocks (no index); medians of do_bench, alternated.", "",
                 "| shape | inputs | density | ms through the index | ms without | index cost | all runs (with / without) |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results:
            for row in r["rows"]:
                m = row["median_ms"]
                runs = " / ".join(", ".join(f"{t:.2f}" for t in row["ms"][key]) for key in ("tiles", "raster-addressed"))
                lines.append(f"| {r['shape']} | {r['inputs']} | {row['density']:.3f} | {m['tiles']:.2f} | "
                             f"{m['raster-addressed']:.2f} | {row['index_cost']:+.1%} | {runs} |")
        md = "\n".join(lines) + "\n"
        print(md)
        print("wrote", *write_results(args.name, {"environment": env, "results": results}, md, args.out))
        return 0
    results = []
    for shape in args.shapes:
        for inputs in args.inputs:
            results.append(run_shape(shape, args.densities, args.variants, inputs))
            print(_attention_markdown(env, [results[-1]]), flush=True)
            torch.cuda.empty_cache()
    md = _attention_markdown(env, results)
    paths = write_results(args.name, {"environment": env, "results": results}, md, args.out)
    print(md)
    print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
