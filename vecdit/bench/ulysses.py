# Copyright 2026 The vecdit authors. Apache-2.0.
"""Wan2.1-14B-720p forward with vecdit on 1 GPU vs diffusers Ulysses over N GPUs (random weights).

    torchrun --nproc_per_node 2 -m vecdit.bench.ulysses --out bench/results

Every rank builds the same random model (same seed), calibrates the same per-layer thresholds to
the target density on the same input, and rank 0 first times the single-GPU forward.
"""
from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="wan2.1-14b-720p")
    parser.add_argument("--density", type=float, default=0.25)
    parser.add_argument("--out", default="bench/results/ulysses")
    args = parser.parse_args(argv)
    from diffusers import ContextParallelConfig

    from vecdit import VecAttnConfig
    from vecdit.api import apply_vec_sparse

    from .common import environment, write_results
    from .transformer import build, timed_forward

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl")
    torch.manual_seed(0)
    model, inputs = build(args.model)
    config = VecAttnConfig(density=args.density, dense_steps=0)
    result = {"model": args.model, "density": args.density, "gpus": world}
    if rank == 0:
        apply_vec_sparse(model, config)
        timed_forward(model, inputs)
        model._reset_stateful_cache()
        result["single_gpu_ms"], single = timed_forward(model, inputs)
        from vecdit.api import remove_vec_sparse

        remove_vec_sparse(model)
    dist.barrier()
    apply_vec_sparse(model, config)
    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
    timed_forward(model, inputs)
    model._reset_stateful_cache()
    ms, out = timed_forward(model, inputs)
    if rank == 0:
        result["ulysses_ms"] = ms
        result["speedup"] = result["single_gpu_ms"] / ms
        result["rel_diff_vs_single_gpu"] = float((out.float() - single.float()).norm() / single.float().norm())
        env = environment()
        md = (f"# Ulysses {world} x {env['card']}: {args.model}, vecdit {args.density:.0%}\n\n"
              f"single GPU {result['single_gpu_ms'] / 1e3:.2f} s, Ulysses {world} {ms / 1e3:.2f} s "
              f"({result['speedup']:.2f}x), relative difference {result['rel_diff_vs_single_gpu']:.2e}\n")
        print(md)
        write_results(f"ulysses{world}-{args.model}", {"environment": env, **result}, md, args.out)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
