# Copyright 2026 The vecdit authors. Apache-2.0.
"""`python -m vecdit.bench fp8`: the Linear layers of one block of each full-size model, at the
real token counts, in bf16 against `vecdit.fp8.Float8Linear` (eager and compiled) and, where it is
installed, torchao's float8 dynamic quantization (eager; compiled under a time limit).

This is the GEMM half of issue 13's "rest" of a step (projections, FFN): what fp8 can take off
it before the pipeline benchmark measures a whole step. Medians of do_bench; errors are relative
to the bf16 layer's output on the same fresh random activations (weights ~ the default init).
"""
from __future__ import annotations

import signal
import time

import torch

from vecdit.fp8 import Float8Linear, fp8_layer_filter

from .common import do_bench_ms

# tokens per stream at the benchmark geometries: HunyuanVideo 720p 129 frames (33 x 45 x 80 after
# patching) + 256 text; Wan2.1-14B 720p 81 frames (21 x 45 x 80) + 512 text
GEOMETRY = {
    "hunyuanvideo": dict(video=33 * 45 * 80, text=256),
    "wan2.1-t2v-14b": dict(video=21 * 45 * 80, text=512),
}
COMPILE_LIMIT_S = 90  # torchao's compile of HunyuanVideo's blocks ran past 6 minutes (bench/DESIGN.md#fp8-linear)


def _config_model(name: str):
    """The transformer with its parameters on the meta device (shapes only, no memory), as diffusers
    builds models before loading weights (accelerate's `init_empty_weights`: it holds whatever torch
    function modes a compile or another test left on the stack, where `with torch.device("meta")`
    was seen to allocate all 13B parameters on the CPU)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        if name == "hunyuanvideo":
            from diffusers import HunyuanVideoTransformer3DModel

            return HunyuanVideoTransformer3DModel()
        from diffusers import WanTransformer3DModel

        from vecdit.pipelines.random_weights import wan_transformer_kwargs

        return WanTransformer3DModel(**wan_transformer_kwargs(name))


def block_layers(name: str) -> list[dict]:
    """The fp8-converted Linear layers of one block of each kind: name, sizes, tokens, how many blocks."""
    model = _config_model(name)
    geometry = GEOMETRY[name]
    counts = {prefix: len(getattr(model, prefix)) for prefix in ("blocks", "transformer_blocks", "single_transformer_blocks")
              if hasattr(model, prefix)}
    layers = []
    for fqn, module in model.named_modules():
        if not fp8_layer_filter(module, fqn):
            continue
        prefix, index, local = fqn.split(".", 2)
        if index != "0":
            continue
        if prefix == "single_transformer_blocks":
            tokens = geometry["video"] + geometry["text"]  # one joint stream
        elif "add_" in local or "context" in local or (prefix == "blocks" and local in ("attn2.to_k", "attn2.to_v")):
            tokens = geometry["text"]
        else:
            tokens = geometry["video"]
        key = (module.in_features, module.out_features, module.bias is not None, tokens, counts[prefix])
        same = next((layer for layer in layers if layer["key"] == key), None)
        if same is not None:  # timed once, counted for each layer of that shape
            same["layer"] += f", {local}"
            same["per_block"] += 1
            continue
        layers.append(dict(layer=f"{prefix}.{local}", in_features=module.in_features, out_features=module.out_features,
                           bias=module.bias is not None, tokens=tokens, blocks=counts[prefix], per_block=1, key=key))
    for layer in layers:
        del layer["key"]
    return layers


class _Alarm:
    def __init__(self, seconds):
        self.seconds = seconds

    def _raise(self, *_):
        raise TimeoutError(f"over {self.seconds} s")

    def __enter__(self):
        self.previous = signal.signal(signal.SIGALRM, self._raise)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


def _torchao_layer(linear):
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_
    except ImportError:
        return None
    wrapper = torch.nn.Sequential(linear)
    quantize_(wrapper, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))
    return wrapper


def time_layer(spec: dict, device="cuda", compile_ops: bool = True, torchao: bool = True,
               torchao_compile: bool = True) -> dict:
    g = torch.Generator(device).manual_seed(0)
    linear = torch.nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"], device=device,
                             dtype=torch.bfloat16)
    x = torch.randn(spec["tokens"], spec["in_features"], generator=g, device=device, dtype=torch.bfloat16)
    flop = 2 * spec["tokens"] * spec["in_features"] * spec["out_features"]
    row = dict(spec)
    with torch.inference_mode():
        reference = linear(x).float()

        def record(label, fn):
            out = fn().float()
            ms = do_bench_ms(fn)
            row[label] = dict(ms=ms, tflops=flop / ms / 1e9,
                              rel_err=float((out - reference).norm() / reference.norm()))

        record("bf16", lambda: linear(x))
        fp8 = Float8Linear(linear)
        record("fp8", lambda: fp8(x))
        if compile_ops:
            torch._dynamo.reset()  # a fresh cache per layer: no recompile limit across instances
            compiled = torch.compile(fp8, fullgraph=True)
            t0 = time.perf_counter()
            compiled(x)
            torch.cuda.synchronize()
            row["fp8_compile_s"] = time.perf_counter() - t0
            record("fp8_compiled", lambda: compiled(x))
        if torchao:
            ao = _torchao_layer(_copy(linear))  # the same weights
            if ao is not None:
                record("torchao", lambda: ao(x))
                if compile_ops and torchao_compile:
                    torch._dynamo.reset()
                    ao_compiled = torch.compile(ao, fullgraph=True)
                    t0 = time.perf_counter()
                    try:
                        with _Alarm(COMPILE_LIMIT_S):
                            ao_compiled(x)
                            torch.cuda.synchronize()
                        row["torchao_compile_s"] = time.perf_counter() - t0
                        record("torchao_compiled", lambda: ao_compiled(x))
                    except Exception as e:  # noqa: BLE001 - a limit or a tracing failure: recorded, not fatal
                        row["torchao_compiled"] = dict(error=f"{type(e).__name__}: {str(e)[:200]}")
    del linear, x, reference
    torch.cuda.empty_cache()
    return row


def _copy(linear):
    clone = torch.nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                            device=linear.weight.device, dtype=linear.weight.dtype)
    clone.load_state_dict(linear.state_dict())
    return clone.requires_grad_(False)


LABELS = ("bf16", "fp8", "fp8_compiled", "torchao", "torchao_compiled")


def run_fp8(name: str, compile_ops: bool = True, torchao: bool = True) -> dict:
    rows, torchao_compile = [], True
    for spec in block_layers(name):
        rows.append(time_layer(spec, compile_ops=compile_ops, torchao=torchao, torchao_compile=torchao_compile))
        r = rows[-1]
        if "error" in r.get("torchao_compiled", {}):
            torchao_compile = False  # one failure or time-out says it: not again for every layer
        print(f"[{name}] {r['layer']} {r['tokens']}x{r['in_features']}x{r['out_features']}: "
              + ", ".join(f"{k} {r[k]['ms']:.3f} ms" for k in LABELS if k in r and "ms" in r[k]), flush=True)
    # per step: every block's layers, once per pass
    per_step = {k: sum(r[k]["ms"] * r["blocks"] * r["per_block"] for r in rows if k in r and "ms" in r[k]) for k in LABELS}
    return {"model": name, "layers": rows, "per_forward_ms": {k: v for k, v in per_step.items() if v}}


def fp8_markdown(env: dict, results: list[dict]) -> str:
    lines = [f"# FP8 Linear layers on {env['card']}", "",
             f"torch {env['torch']}, triton {env['triton']}, {env['date']}. One block's fp8-converted Linear layers "
             "at the real token counts (medians of do_bench, bf16 activations, fresh random inputs), summed over the "
             "model's blocks = the GEMM time of one forward. `fp8`: `vecdit.fp8.Float8Linear` eager (e4m3, per-row "
             "scales on both sides, `torch._scaled_mm`); `fp8_compiled`: the same under `torch.compile(fullgraph=True)` "
             "(the activation's amax and cast fused); `torchao`: `Float8DynamicActivationFloat8WeightConfig(PerRow())`. "
             "Errors: relative to the bf16 layer's output.", ""]
    for r in results:
        lines += [f"## {r['model']}", "", "per forward (all blocks): " + ", ".join(
            f"{k} {v:.0f} ms" for k, v in r["per_forward_ms"].items()), "",
            "| layers (per block) | tokens x in x out | blocks x layers | " + " | ".join(f"{k} ms (TFLOP/s, err)" for k in LABELS) + " |",
            "| --- | --- | --- | " + " | ".join("---" for _ in LABELS) + " |"]
        for row in r["layers"]:
            cells = []
            for k in LABELS:
                c = row.get(k)
                cells.append("-" if c is None else c.get("error", "")[:60] if "ms" not in c
                             else f"{c['ms']:.3f} ({c['tflops']:.0f}, {c['rel_err']:.4f})")
            lines.append(f"| {row['layer']} | {row['tokens']}x{row['in_features']}x{row['out_features']} | "
                         f"{row['blocks']} x {row['per_block']} | " + " | ".join(cells) + " |")
        compiles = [(row["layer"], row.get("fp8_compile_s"), row.get("torchao_compile_s")) for row in r["layers"]]
        lines += ["", "First compiled call, s (vecdit / torchao): " + "; ".join(
            f"{n} {a or 0:.1f} / {b if b is None else round(b, 1)}" for n, a, b in compiles), ""]
    return "\n".join(lines) + "\n"
