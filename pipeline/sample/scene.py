"""Synthetic scenes: labelled shapes that fly in, cross, occlude each other and leave; exact visible masks."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

LABELS = ("circle", "square", "triangle", "star")  # object id -> shape, the same in every video of a sample
FPS = 24  # what the SAM 2 demo transcodes every upload to
CLAIMED_FPS = 30.0  # what the demo exporter hard-codes instead (defect 4)
GRID = 256  # SAM 2's low-resolution mask grid, the frame squashed to a square (defect 1)
CONFIDENCE = 0.95  # the exporter's constant (defect 6)
SAV_STEP = 4  # SA-V annotates every 4th frame of the 24 fps video (6 fps)
COCO_STEP = 6
EXPORT_TIME = datetime(2025, 1, 1, 8, 0, 0)  # fixed, so every JSON and ZIP is byte-identical per seed
SEG_KINDS = ("polygon", "rle", "uncompressed_rle")
PALETTE = [(230, 40, 40), (40, 190, 70), (40, 90, 235), (250, 205, 30), (205, 50, 205), (30, 205, 215),
           (250, 130, 20), (150, 80, 235)]
# The exporter's overlay colours, BGR as it wrote them (it drew on a BGR frame)
OVERLAY_BGR = [(0, 255, 0), (255, 0, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (128, 255, 0),
               (255, 128, 0)]



@dataclass
class Shape:
    object_id: int
    colour: tuple[int, int, int]
    radius: float
    entry: np.ndarray  # (x, y) just outside the frame, where the shape starts moving in
    velocity: np.ndarray  # pixels per frame
    start: int  # frame at which it starts moving in (absent before)
    angle: float
    spin: float
    depth: int  # higher = nearer the camera


@dataclass
class Scene:
    width: int
    height: int
    frames: int
    background: np.ndarray
    shapes: list[Shape]


@dataclass
class Frame:
    index: int
    rgb: np.ndarray
    visible: list[np.ndarray]  # per object id: the visible part of the shape (uint8 HxW)
    occluded: list[bool]  # per object id: a nearer shape hides part of it

# ---------------------------------------------------------------- scenes


MOTIONS = ("cross", "track")  # the default scene, and fast shapes that leave and re-enter (the track demo)


def make_scene(width: int, height: int, frames: int, rng: np.random.Generator, objects: int | None = None,
               motion: str = "cross") -> Scene:
    """2-4 shapes (at most `objects`) entering from the edges; shapes 0 and 1 cross mid-way, one occluding.
    motion "track": each shape starts inside the frame and moves fast in its own direction, leaving one side and
    re-entering the other, so its box a few frames later is far from where it started."""
    count = int(rng.integers(2, len(LABELS) + 1))
    count = min(count, objects) if objects else count
    if motion == "track":
        return _track_scene(width, height, frames, rng, count)
    radii = rng.uniform(0.11, 0.17, count) * min(width, height)
    lead = max(1, frames // 12)  # the first frames are empty: every shape is still outside
    meet = max(lead + 2, min(frames // 2, lead + 40))
    centre = np.array([width, height], float) * (0.5 + rng.uniform(-0.08, 0.08, 2))
    colours = rng.choice(len(PALETTE), count, replace=False)
    depths = rng.permutation(count)
    shapes: list[Shape] = []
    for i in range(count):
        margin = radii[i] + 2
        if i < 2:
            entry = _edge_point(i, width, height, margin, rng)
            target = centre + (0.0 if i == 0 else radii[0] * np.array([0.7, 0.35]))
            start, velocity = lead, (target - entry) / (meet - lead)
        else:
            entry = _edge_point(int(rng.integers(4)), width, height, margin, rng)
            target = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height])
            speed = np.linalg.norm(shapes[0].velocity) * rng.uniform(0.6, 1.1)
            start = lead + int(rng.integers(0, max(1, frames // 4)))
            velocity = (target - entry) / np.linalg.norm(target - entry) * speed
        shapes.append(Shape(i, PALETTE[colours[i]], float(radii[i]), entry, velocity, start,
                             float(rng.uniform(0, np.pi)), float(rng.uniform(-0.06, 0.06)), int(depths[i])))
    return Scene(width, height, frames, _background(width, height, rng), shapes)


def _track_scene(width: int, height: int, frames: int, rng: np.random.Generator, count: int) -> Scene:
    """Shapes from frame 0 at random places, 7-11% of the frame side per frame in random directions (wrapping)."""
    radii = rng.uniform(0.11, 0.17, count) * min(width, height)
    colours = rng.choice(len(PALETTE), count, replace=False)
    depths = rng.permutation(count)
    shapes = []
    for i in range(count):
        start = rng.uniform([0.2 * width, 0.2 * height], [0.8 * width, 0.8 * height])
        heading = rng.uniform(0, 2 * np.pi)
        speed = rng.uniform(0.07, 0.11) * min(width, height)
        velocity = np.array([np.cos(heading), np.sin(heading)]) * speed
        shapes.append(Shape(i, PALETTE[colours[i]], float(radii[i]), start, velocity, 0,
                            float(rng.uniform(0, np.pi)), float(rng.uniform(-0.06, 0.06)), int(depths[i])))
    return Scene(width, height, frames, _background(width, height, rng), shapes)


def _edge_point(side: int, width: int, height: int, margin: float, rng: np.random.Generator) -> np.ndarray:
    """A point just outside the left/right/top/bottom edge (0..3), inside the wrap-around band."""
    along_x, along_y = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    return np.array([(-margin + 0.01, along_y), (width + margin - 0.01, along_y),
                     (along_x, -margin + 0.01), (along_x, height + margin - 0.01)][side], float)


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A muted two-colour diagonal gradient with a soft wavy texture (smooth, so overlay PNGs stay small)."""
    top, bottom = rng.uniform(60, 150, 3), rng.uniform(60, 150, 3)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xs / width, ys / height
    ramp = ((u + v) / 2)[..., None]
    waves = (9 * np.sin(u * rng.uniform(8, 16) + v * rng.uniform(3, 8))
             + 6 * np.sin(v * rng.uniform(10, 20) - u * rng.uniform(2, 6) + np.sin(u * 7) * 2))[..., None]
    image = top * (1 - ramp) + bottom * ramp + waves
    return np.clip(image, 0, 255).astype(np.uint8)


def _position(shape: Shape, t: int, width: int, height: int) -> np.ndarray | None:
    """Centre at frame t on a torus just larger than the frame (a shape leaving one side re-enters the other)."""
    if t < shape.start:
        return None
    margin = shape.radius + 2
    p = shape.entry + shape.velocity * (t - shape.start)
    size = np.array([width, height], float) + 2 * margin
    return np.mod(p + margin, size) - margin


def _shape_mask(shape: Shape, t: int, width: int, height: int) -> np.ndarray:
    import cv2

    mask = np.zeros((height, width), np.uint8)
    centre = _position(shape, t, width, height)
    if centre is None:
        return mask
    label, r = LABELS[shape.object_id], shape.radius
    if label == "circle":
        cx, cy = (int(round(v * 16)) for v in centre)
        cv2.circle(mask, (cx, cy), int(round(r * 16)), 1, thickness=-1, lineType=cv2.LINE_8, shift=4)
        return mask
    angle = shape.angle + shape.spin * (t - shape.start)
    n, radii = {"square": (4, [r]), "triangle": (3, [r]), "star": (10, [r, 0.45 * r])}[label]
    theta = angle + np.arange(n) * 2 * np.pi / n
    rad = np.array([radii[k % len(radii)] for k in range(n)])
    points = centre + np.stack([np.cos(theta) * rad, np.sin(theta) * rad], axis=1)
    cv2.fillPoly(mask, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask


def _render(scene: Scene, t: int) -> Frame:
    """Draw frame t back to front; the visible mask of a shape is what nearer shapes leave of it."""
    shapes = scene.shapes
    masks = [_shape_mask(s, t, scene.width, scene.height) for s in shapes]
    rgb = scene.background.copy()
    for s in sorted(shapes, key=lambda s: s.depth):
        rgb[masks[s.object_id] > 0] = s.colour
    visible, occluded = [np.zeros(0)] * len(shapes), [False] * len(shapes)
    covered = np.zeros((scene.height, scene.width), bool)
    for s in sorted(shapes, key=lambda s: -s.depth):
        whole = masks[s.object_id] > 0
        vis = whole & ~covered
        visible[s.object_id] = vis.astype(np.uint8)
        occluded[s.object_id] = bool(vis.any() and vis.sum() < whole.sum())
        covered |= whole
    return Frame(t, rgb, visible, occluded)


def render_frames(scene: Scene, tick: Callable[..., Any], indices: Iterable[int] | None = None) -> Iterator[Frame]:
    for t in range(scene.frames) if indices is None else indices:
        yield _render(scene, t)
        tick(1)


def encode_video(scene: Scene, path: Path, visit: Callable[[Frame], None], tick: Callable[..., Any]) -> None:
    """Render every frame into an H.264 mp4 at 24 fps, handing each frame to `visit` on the way."""
    from ..video import write_video

    def rgb_frames() -> Iterator[np.ndarray]:
        for frame in render_frames(scene, tick):
            visit(frame)
            yield frame.rgb

    write_video(rgb_frames(), path, fps=FPS)


def bbox(mask: np.ndarray) -> list[int]:
    """Tight [x1, y1, x2, y2] (exclusive) of a non-empty mask (masks.mask_bbox, faster on many small frames)."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def colours(scene: Scene) -> dict[str, list[int]]:
    """Object id -> the RGB colour it is drawn with in this video."""
    return {str(s.object_id): list(s.colour) for s in scene.shapes}


def truth_objects(frame: Frame) -> list[dict[str, Any]]:
    """The visible objects of a frame: exact [x1, y1, x2, y2] (exclusive) box and area."""
    return [{"object_id": oid, "label": LABELS[oid], "bbox": bbox(vis), "area": int(vis.sum()),
             "occluded": frame.occluded[oid]} for oid, vis in enumerate(frame.visible) if vis.any()]


