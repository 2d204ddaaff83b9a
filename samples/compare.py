# Copyright 2026 The vecdit authors. Apache-2.0.
"""`vecdit compare DIR_A DIR_B`: dense-vs-sparse video fidelity, one documented metric definition.

Frames are RGB, uint8 scaled to [0, 1] (data range 1).
PSNR per video: 10 log10(1 / MSE), MSE over every frame, pixel and channel; inf for identical videos.
SSIM per video: Wang et al. 2004 with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03,
population statistics, valid region only (no padding), per channel, averaged over channels and
frames; equal to scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)` per frame.
LPIPS (AlexNet) only when the `lpips` package and its weights are available locally; else "skipped".
"""
from __future__ import annotations

import glob
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from .video_io import read_video

VIDEO_EXTS = (".mp4", ".npz")


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _gaussian_window(size=11, sigma=1.5):
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 [F, H, W, C] videos (see module docstring)."""
    x = torch.from_numpy(a).double().permute(0, 3, 1, 2).reshape(-1, 1, *a.shape[1:3]) / 255
    y = torch.from_numpy(b).double().permute(0, 3, 1, 2).reshape(-1, 1, *b.shape[1:3]) / 255
    w = _gaussian_window()
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    var_x = F.conv2d(x * x, w) - mu_x**2
    var_y = F.conv2d(y * y, w) - mu_y**2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())


def _lpips_or_reason():
    try:
        import lpips  # noqa: F401
    except ImportError:
        return None, "skipped: the `lpips` package is not installed"
    try:
        return lpips.LPIPS(net="alex", verbose=False).eval(), None
    except Exception as e:  # noqa: BLE001 - weights missing offline
        return None, f"skipped: LPIPS weights are not available locally ({type(e).__name__})"


def compare_dirs(dir_a: str, dir_b: str) -> dict:
    def index(d):
        return {os.path.splitext(os.path.basename(p))[0]: p for ext in VIDEO_EXTS for p in glob.glob(os.path.join(d, "*" + ext))
                if ".partial" not in p}

    for label, d in (("DIR_A", dir_a), ("DIR_B", dir_b)):
        if not os.path.isdir(d):
            what = "is a file, not a folder" if os.path.exists(d) else "does not exist"
            raise ValueError(f"{label} {d!r} {what}; give two folders of videos (.mp4 or .npz) named alike")
    a, b = index(dir_a), index(dir_b)
    for label, d, found in (("DIR_A", dir_a, a), ("DIR_B", dir_b, b)):
        if not found:
            raise ValueError(f"{label} {d!r} holds no videos (.mp4 or .npz)")
    names = sorted(set(a) & set(b))
    if not names:
        raise ValueError(f"no videos with the same name in {dir_a!r} and {dir_b!r}")
    net, lpips_note = _lpips_or_reason()
    rows = []
    for name in names:
        va, vb = read_video(a[name]), read_video(b[name])
        if va.shape != vb.shape:
            raise ValueError(f"{name}: shapes differ, {va.shape} vs {vb.shape}")
        row = {"name": name, "psnr": psnr(va, vb), "ssim": ssim(va, vb)}
        if net is not None:
            with torch.no_grad():
                ta = torch.from_numpy(va).permute(0, 3, 1, 2).float() / 127.5 - 1
                tb = torch.from_numpy(vb).permute(0, 3, 1, 2).float() / 127.5 - 1
                row["lpips"] = float(net(ta, tb).mean())
        rows.append(row)

    def mean(key):
        vals = [r[key] for r in rows if key in r]
        return sum(vals) / len(vals) if vals else None

    return {"dir_a": dir_a, "dir_b": dir_b, "videos": rows, "unpaired": sorted(set(a) ^ set(b)),
            "mean": {"psnr": mean("psnr"), "ssim": mean("ssim"), "lpips": mean("lpips") if net else lpips_note},
            "metric": __doc__.split("\n\n", 1)[1].strip()}


def write_report(report: dict, out_prefix: str) -> tuple[str, str]:
    with open(out_prefix + ".json", "w") as f:
        json.dump(report, f, indent=2)
    lp = isinstance(report["mean"]["lpips"], float)
    lines = [f"# {report['dir_a']} vs {report['dir_b']}", "", "| video | PSNR dB | SSIM |" + (" LPIPS |" if lp else ""),
             "| --- | --- | --- |" + (" --- |" if lp else "")]
    for r in report["videos"]:
        lines.append(f"| {r['name']} | {r['psnr']:.2f} | {r['ssim']:.4f} |" + (f" {r['lpips']:.4f} |" if lp else ""))
    m = report["mean"]
    lines.append(f"| **mean** | {m['psnr']:.2f} | {m['ssim']:.4f} |" + (f" {m['lpips']:.4f} |" if lp else ""))
    if not lp:
        lines += ["", f"LPIPS: {m['lpips']}"]
    with open(out_prefix + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    return out_prefix + ".json", out_prefix + ".md"
