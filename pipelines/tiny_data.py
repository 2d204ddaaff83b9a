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


def color_centroid(frame: np.ndarray, color: str, tolerance: float = 0.25) -> tuple[float, float] | None:
    """(x, y) pixel centroid of the pixels close to `color`, or None if there are too few: how
    tests read an object's position back from generated frames."""
    target = np.array(COLORS[color], dtype=np.float32)
    near = np.linalg.norm(frame.astype(np.float32) - target, axis=-1) < tolerance * math.sqrt(3)
    if near.sum() < 0.002 * near.size:
        return None
    ys, xs = np.nonzero(near)
    return float(xs.mean()), float(ys.mean())
