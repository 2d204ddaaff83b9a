# Copyright 2026 The vecdit authors. Apache-2.0.
"""Procedural captioned clips for the tiny video model: coloured shapes moving or bouncing over
plain or textured backgrounds, some with a second object or a camera pan. Seeded, made on the fly
(no dataset on disk), the caption from a small grammar:

    a red circle moving right
    a blue square bouncing on a checkered background
    a yellow triangle moving up and a green circle moving left, the camera panning right

`Clip.frames` is float `[F, H, W, 3]` in [0, 1]; `Clip.objects` records every object's centre per
frame (pixels) so tests can check that the caption's motion is what the frames show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

COLORS = {
    "red": (0.90, 0.12, 0.10), "green": (0.12, 0.75, 0.20), "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10), "white": (0.96, 0.96, 0.96), "purple": (0.60, 0.20, 0.80),
}
SHAPES = ("circle", "square", "triangle")
MOTIONS = {"moving right": (1, 0), "moving left": (-1, 0), "moving up": (0, -1), "moving down": (0, 1), "bouncing": None}
BACKGROUNDS = {"plain": None, "checkered": "checkered", "striped": "striped"}
BACKGROUND_TONES = {"black": (0.04, 0.04, 0.05), "gray": (0.45, 0.45, 0.47), "dark blue": (0.05, 0.08, 0.25)}


@dataclass
class ObjectSpec:
    color: str
    shape: str
    motion: str
    radius: float  # fraction of the frame side
    start: tuple[float, float]  # centre at frame 0, fractions of the frame
    speed: float  # frame sides per clip

    def phrase(self) -> str:
        return f"a {self.color} {self.shape} {self.motion}"


@dataclass
class Clip:
    frames: np.ndarray
    caption: str
    objects: list[ObjectSpec]
    centres: list[np.ndarray] = field(default_factory=list)  # per object: [F, 2] (x, y) pixels


def caption_words() -> list[str]:
    """Every word a caption of the grammar can use (the trained model's tokenizer has each as one token)."""
    phrases = [*COLORS, *SHAPES, *MOTIONS, *BACKGROUNDS, "a and on background the camera panning"]
    return list(dict.fromkeys(w for phrase in phrases for w in phrase.split()))


def sample_spec(rng: np.random.Generator) -> dict:
    """A random scene: 1 or 2 objects, a background, sometimes a camera pan."""
    n = 1 if rng.random() < 0.75 else 2
    objects = []
    for _ in range(n):
        motion = str(rng.choice(list(MOTIONS)))
        objects.append(ObjectSpec(
            color=str(rng.choice(list(COLORS))), shape=str(rng.choice(SHAPES)), motion=motion,
            radius=float(rng.uniform(0.09, 0.16)), start=(float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.25, 0.75))),
            speed=float(rng.uniform(0.35, 0.55))))
    background = str(rng.choice(list(BACKGROUNDS), p=[0.6, 0.2, 0.2]))
    tone = str(rng.choice(list(BACKGROUND_TONES)))
    pan = str(rng.choice(["left", "right"])) if rng.random() < 0.15 and background != "plain" else None
    return dict(objects=objects, background=background, tone=tone, pan=pan)


def caption_of(spec: dict) -> str:
    text = " and ".join(o.phrase() for o in spec["objects"])
    if spec["background"] != "plain":
        text += f" on a {spec['background']} background"
    if spec["pan"]:
        text += f", the camera panning {spec['pan']}"
    return text


def parse_caption(caption: str, rng: np.random.Generator | None = None) -> dict:
    """The scene a caption of the grammar describes (unsaid details drawn from `rng`); raises
    ValueError naming what is not in the grammar."""
    rng = rng or np.random.default_rng(0)
    text = caption.strip().lower().rstrip(".")
    pan = None
    if ", the camera panning " in text:
        text, pan = text.split(", the camera panning ")
    background = "plain"
    for name in BACKGROUNDS:
        if text.endswith(f" on a {name} background"):
            background, text = name, text[: -len(f" on a {name} background")]
    objects = []
    for part in text.split(" and "):
        words = part.split()
        if len(words) < 3 or words[0] not in ("a", "an", "the"):
            raise ValueError(f"caption part {part!r}: expected 'a <color> <shape> <motion>'")
        color, shape, motion = words[1], words[2], " ".join(words[3:]) or "bouncing"
        if color not in COLORS or shape not in SHAPES or motion not in MOTIONS:
            raise ValueError(f"caption part {part!r}: colors {sorted(COLORS)}, shapes {list(SHAPES)}, "
                             f"motions {list(MOTIONS)}")
        start = {"moving right": (0.25, 0.5), "moving left": (0.75, 0.5), "moving up": (0.5, 0.75),
                 "moving down": (0.5, 0.25)}.get(motion, (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))))
        objects.append(ObjectSpec(color, shape, motion, 0.13, start, 0.5))
    return dict(objects=objects, background=background, tone="black", pan=pan)


def _trajectory(obj: ObjectSpec, frames: int, rng_phase: float) -> np.ndarray:
    """[F, 2] centres as fractions of the frame."""
    t = np.linspace(0.0, 1.0, frames)
    x0, y0 = obj.start
    if MOTIONS[obj.motion] is not None:
        dx, dy = MOTIONS[obj.motion]
        return np.stack([x0 + dx * obj.speed * t, y0 + dy * obj.speed * t], 1)
    # bouncing: a vertical bounce (|sin|), the ball stays in the frame
    height = 0.3
    y = (y0 + height / 2) - height * np.abs(np.sin(math.pi * (2 * t + rng_phase)))
    return np.stack([np.full_like(t, x0), y], 1)


def _mask(xp, shape: str, xx, yy, cx, cy, r):
    """Anti-aliased coverage in [0, 1] of a shape centred at (cx, cy) with size r (pixels);
    `xp` is numpy or torch, `cx`, `cy` broadcast against the pixel grid (one per frame)."""
    if shape == "circle":
        d = xp.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - r
    elif shape == "square":
        d = xp.maximum(abs(xx - cx), abs(yy - cy)) - r * 0.85
    else:  # an upward triangle: three half-planes
        k = math.sqrt(3)
        up = (yy - cy) - r * 0.75  # below the base
        left = (-k * (xx - cx) - (yy - cy)) / 2 - r * 0.75
        right = (k * (xx - cx) - (yy - cy)) / 2 - r * 0.75
        d = xp.maximum(up, xp.maximum(left, right))
    return xp.clip(0.5 - d, 0.0, 1.0)


def _background(xp, kind: str, tone, xx, yy, offset, size: int):
    base = xp.ones(xx.shape + (3,)) if xp is np else xp.ones(xx.shape + (3,), device=xx.device)
    base = base * _color(xp, tone, xx)
    if kind == "checkered":
        cell = size / 8
        check = (xp.floor((xx + offset) / cell) + xp.floor(yy / cell)) % 2
        base = base * (0.6 + 0.8 * check[..., None])
    elif kind == "striped":
        stripe = 0.5 + 0.5 * xp.sin(2 * math.pi * (xx + offset) / (size / 6))
        base = base * (0.6 + 0.8 * stripe[..., None])
    return xp.clip(base, 0.0, 1.0)


def _color(xp, rgb, like):
    return np.array(rgb, dtype=np.float32) if xp is np else xp.tensor(rgb, dtype=like.dtype, device=like.device)


def render(spec: dict, frames: int = 33, size: int = 256, phase: float = 0.0, device=None) -> Clip:
    """The clip of `spec`: numpy float32 `[F, H, W, 3]`, or a torch tensor on `device` (all frames
    at once: how training renders its batches on the GPU)."""
    xp = np
    if device is not None:
        import torch

        xp = torch
    paths = [_trajectory(o, frames, phase) * size for o in spec["objects"]]
    pan_speed = {None: 0.0, "right": 0.5, "left": -0.5}[spec["pan"]] * size  # pixels per clip
    offsets = pan_speed * np.arange(frames, dtype=np.float32) / max(frames - 1, 1)
    if xp is np:
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        yy, xx = np.broadcast_to(yy, (frames, size, size)), np.broadcast_to(xx, (frames, size, size))
        column = lambda a: np.asarray(a, dtype=np.float32)[:, None, None]  # noqa: E731
    else:
        grid = torch.arange(size, dtype=torch.float32, device=device) + 0.5
        yy, xx = grid.view(1, size, 1).expand(frames, size, size), grid.view(1, 1, size).expand(frames, size, size)
        column = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)[:, None, None]  # noqa: E731
    img = _background(xp, spec["background"], BACKGROUND_TONES[spec["tone"]], xx, yy, column(offsets), size)
    for obj, path in zip(spec["objects"], paths):
        cover = _mask(xp, obj.shape, xx, yy, column(path[:, 0]), column(path[:, 1]), obj.radius * size)[..., None]
        img = img * (1 - cover) + _color(xp, COLORS[obj.color], xx) * cover
    if xp is np:
        img = img.astype(np.float32)
    return Clip(img, caption_of(spec), spec["objects"], paths)


def make_clip(seed: int, frames: int = 33, size: int = 256, device=None) -> Clip:
    rng = np.random.default_rng(seed)
    spec = sample_spec(rng)
    return render(spec, frames, size, float(rng.uniform(0, 1)), device)


def color_mask(frame: np.ndarray, color: str, tolerance: float = 0.25) -> np.ndarray:
    """Boolean mask of the pixels close to `color` (RGB distance under `tolerance` of the cube's
    diagonal): float frames in [0, 1] or uint8 in [0, 255], `[..., H, W, 3]` (one frame or many)."""
    frame = np.asarray(frame)
    scale = np.float32(255) if frame.dtype == np.uint8 else np.float32(1)
    target = np.array(COLORS[color], dtype=np.float32)
    return np.linalg.norm(frame.astype(np.float32) / scale - target, axis=-1) < tolerance * math.sqrt(3)


def color_centroid(frame: np.ndarray, color: str, tolerance: float = 0.25) -> tuple[float, float] | None:
    """(x, y) pixel centroid of the pixels close to `color`, or None if there are too few: how
    tests read an object's position back from generated frames."""
    near = color_mask(frame, color, tolerance)
    if near.sum() < 0.002 * near.size:
        return None
    ys, xs = np.nonzero(near)
    return float(xs.mean()), float(ys.mean())


def components(mask: np.ndarray, connectivity: int = 8) -> np.ndarray:
    """Connected regions of a boolean mask `[..., H, W]`, each frame (leading index) on its own:
    an int array of the mask's shape, -1 off the mask and on it one label per region (the flat index
    of one of its pixels; a region lies in one frame). `connectivity` 4 (edges) or 8 (and corners).
    Pure numpy: union by hooking each region's root onto the smallest root next to it, then
    pointer jumping, until no two neighbours differ (a few rounds for blobs)."""
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity is 4 or 8, not {connectivity}")
    mask = np.asarray(mask, dtype=bool)
    shape = mask.shape
    frames = mask.reshape((-1,) + shape[-2:])
    flat = np.flatnonzero(frames)
    ids = np.full(frames.shape, -1, dtype=np.int64)
    ids.reshape(-1)[flat] = np.arange(len(flat))
    offsets = [(0, 1), (1, 0)] + ([(1, 1), (1, -1)] if connectivity == 8 else [])
    a_all, b_all = [], []
    h, w = shape[-2:]
    for dy, dx in offsets:  # each pair of neighbours on the mask, once
        here = ids[:, : h - dy, max(0, -dx): w - max(0, dx)]
        there = ids[:, dy:, max(0, dx): w + min(0, dx)]
        both = (here >= 0) & (there >= 0)
        a_all.append(here[both])
        b_all.append(there[both])
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    parent = np.arange(len(flat))
    while True:
        pa, pb = parent[a], parent[b]
        differ = pa != pb
        if not differ.any():
            break
        low, high = np.minimum(pa[differ], pb[differ]), np.maximum(pa[differ], pb[differ])
        np.minimum.at(parent, high, low)  # every root points at or below itself: no cycles
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    labels = np.full(frames.size, -1, dtype=np.int64)
    labels[flat] = flat[parent]
    return labels.reshape(shape)


def _blur(field: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the last two axes (zero outside)."""
    reach = int(math.ceil(3 * sigma))
    kernel = np.exp(-np.arange(-reach, reach + 1) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    lead = [(0, 0)] * (field.ndim - 2)
    padded = np.pad(field, lead + [(reach, reach), (0, 0)])
    n = field.shape[-2]
    field = sum(w * padded[..., i: i + n, :] for i, w in enumerate(kernel))
    padded = np.pad(field, lead + [(0, 0), (reach, reach)])
    n = field.shape[-1]
    return sum(w * padded[..., i: i + n] for i, w in enumerate(kernel))


def perimeter(mask: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Contour length in pixels of a boolean mask `[..., H, W]` per frame: marching squares at the
    half level of the mask blurred by a Gaussian of `sigma` pixels (linear interpolation along the
    cell edges). The blur turns a pixel staircase into the straight edge it stands for, so an edge
    counts about its true length at any angle (a square reads the same turned by 0 to 45 degrees);
    it rounds corners by about `sigma`, and hides raggedness finer than that."""
    mask = np.asarray(mask, dtype=bool)
    lead = tuple(range(mask.ndim - 2))
    rows, cols = np.flatnonzero(mask.any(axis=lead + (-1,))), np.flatnonzero(mask.any(axis=lead + (-2,)))
    if len(rows) == 0:
        return np.zeros(mask.shape[:-2])
    mask = mask[..., rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]  # all frames' bounding box
    margin = int(math.ceil(3 * sigma)) + 1  # the contour closes inside the padding
    field = np.pad(mask.astype(np.float32), [(0, 0)] * (mask.ndim - 2) + [(margin, margin)] * 2)
    if sigma > 0:
        field = _blur(field, sigma)
    level = 0.5
    tl, tr, br, bl = field[..., :-1, :-1], field[..., :-1, 1:], field[..., 1:, 1:], field[..., 1:, :-1]

    def cross(a, b):  # where along a -> b the field crosses the level, NaN if it does not
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((a >= level) != (b >= level), (level - a) / (b - a), np.nan)

    zero, one = np.zeros_like(tl), np.ones_like(tl)
    points = [(zero, cross(tl, tr)), (cross(tr, br), one), (one, cross(bl, br)), (cross(tl, bl), zero)]  # (y, x)
    crossed = [~np.isnan(y + x) for y, x in points]  # top, right, bottom, left
    count = sum(c.astype(np.int8) for c in crossed)

    def dist(i, j):
        return np.nan_to_num(np.hypot(points[i][0] - points[j][0], points[i][1] - points[j][1]))

    total = np.zeros(tl.shape, dtype=np.float64)
    for i in range(4):
        for j in range(i + 1, 4):
            total += np.where((count == 2) & crossed[i] & crossed[j], dist(i, j), 0)
    saddle = count == 4
    if saddle.any():  # two opposite corners in: the cell's mean tells which pair of corners is cut off
        cut_top_left = (tl >= level) != ((tl + tr + br + bl) / 4 >= level)
        total += np.where(saddle, np.where(cut_top_left, dist(0, 3) + dist(1, 2), dist(0, 1) + dist(2, 3)), 0)
    return total.sum(axis=(-2, -1))


# `perimeter` of a disk drawn by `render` (anti-aliased, read back by `color_mask`) over
# 2 * sqrt(pi * its pixel count): 1.003 on 40 disks of radius 12-60 pixels at 256x256 (random
# sub-pixel centres; 0.99 at radius 6-8); `test_circularity_is_calibrated_on_drawn_disks`.
DISK_PERIMETER = 1.003


def disk_perimeter(area) -> np.ndarray:
    """`perimeter` of a drawn disk of `area` pixels (the calibration `circularity` divides by)."""
    return DISK_PERIMETER * 2 * np.sqrt(np.pi * np.asarray(area, dtype=np.float64))


def circularity(area, length) -> np.ndarray:
    """4 pi area / perimeter^2 over the same for a drawn disk of that area: about 1 for a disk
    (`disk_perimeter`), about 0.8 for a square (pi/4 with rounded corners), 0.63 for a triangle,
    lower for a ragged or stretched region."""
    length = np.asarray(length, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(length > 0, (disk_perimeter(area) / length) ** 2, np.nan)
