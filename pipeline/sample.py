"""The built-in sample: deterministic synthetic SAM 2 sessions written in every input format, with the exact truth.

Each video shows 2-4 labelled shapes that fly in from outside the frame, cross, occlude each other (a nearer shape
hides the one behind) and leave again; the masks are the generator's own, so they are exact (visible part only).
The SAM 2 demo-export ZIP reproduces the real exporter's format and defects (docs/SAMPLE_DATA.md, FORMATS.md 1).
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_output_dir
from .errors import UserError
from .masks import encode_rle, mask_bbox, mask_to_runs, resize_mask

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
_ROLES = {"demo": 1, "sav": 2, "coco": 3, "stream": 4, "names": 5}


@dataclass
class SampleInfo:
    """Every file `generate_sample` wrote (absolute paths) and the truth it wrote to sample_truth.json."""

    out_dir: Path
    demo_zips: list[Path]
    demo_videos: list[Path]
    sav_json: Path
    sav_video: Path
    coco_json: Path
    coco_frames: Path
    stream_jsonl: Path
    stream_video: Path
    labels_json: Path
    truth_json: Path
    truth: dict[str, Any]

    @property
    def files(self) -> list[Path]:
        """All files written, sorted."""
        return sorted(p for p in self.out_dir.rglob("*") if p.is_file())

    def summary(self) -> str:
        """A one-screen description of what was written."""
        return _summary(self)


@dataclass
class _Shape:
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
class _Scene:
    width: int
    height: int
    frames: int
    background: np.ndarray
    shapes: list[_Shape]


@dataclass
class _Frame:
    index: int
    rgb: np.ndarray
    visible: list[np.ndarray]  # per object id: the visible part of the shape (uint8 HxW)
    occluded: list[bool]  # per object id: a nearer shape hides part of it


def generate_sample(out_dir: str | Path, *, frames: int = 72, videos: int = 1, width: int = 320, height: int = 180,
                    export_every: int = 5, seed: int = 0, objects: int | None = None,
                    progress: bool = False) -> SampleInfo:
    """Write the synthetic SAM 2 session in every input format (+ truth) into `out_dir`, atomically.

    `objects` caps the shapes per video (1: a circle only; default: 2-4 at random, the first two crossing).
    """
    _check_arguments(frames, videos, width, height, export_every, seed)
    if objects is not None and not 1 <= objects <= len(LABELS):
        raise UserError(f"objects per video must be between 1 and {len(LABELS)} (got {objects})")
    scenes = {role: [_make_scene(width, height, frames, _rng(seed, role, k), objects) for k in range(count)]
              for role, count in (("demo", videos), ("sav", 1), ("coco", 1), ("stream", 1))}
    names = _rng(seed, "names", 0)
    total = frames * (videos + 2) + len(range(0, frames, COCO_STEP))
    with atomic_output_dir(out_dir) as tmp, _progress_bar(total, progress) as tick:
        demo = [_write_demo(tmp, scene, export_every, _uuid(names), _uuid(names), k, tick)
                for k, scene in enumerate(scenes["demo"])]
        sav = _write_sav(tmp, scenes["sav"][0], f"sav_{seed % 1_000_000:06d}", tick)
        coco = _write_coco(tmp, scenes["coco"][0], tick)
        stream = _write_stream(tmp, scenes["stream"][0], tick)
        used = max(len(s.shapes) for group in scenes.values() for s in group)
        labels = {str(i): LABELS[i] for i in range(used)}
        generator = {"tool": "sam2-vlm-studio sample", "seed": seed, "frames": frames, "videos": videos,
                     "width": width, "height": height, "fps": FPS, "export_every": export_every,
                     **({"objects": objects} if objects else {})}
        truth = {"generator": generator,
                 "labels": labels, "sam2_demo_zip": demo, "sav": sav, "coco": coco, "sam2_stream": stream}
        (tmp / "labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
        (tmp / "sample_truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    out = Path(out_dir).expanduser().resolve()
    return SampleInfo(
        out_dir=out, demo_zips=[out / d["file"] for d in demo], demo_videos=[out / d["video"] for d in demo],
        sav_json=out / sav["file"], sav_video=out / sav["video"], coco_json=out / coco["file"],
        coco_frames=out / coco["images_dir"], stream_jsonl=out / stream["file"], stream_video=out / stream["video"],
        labels_json=out / "labels.json", truth_json=out / "sample_truth.json", truth=truth)


MAX_VIDEOS = 1024


def _check_arguments(frames: int, videos: int, width: int, height: int, every: int, seed: int) -> None:
    if not 8 <= frames <= 20_000:
        raise UserError(f"frames per video (--frames) must be between 8 and 20000 (got {frames})")
    if not 1 <= videos <= MAX_VIDEOS:
        raise UserError(f"videos (--videos) must be between 1 and {MAX_VIDEOS} (got {videos})")
    if not (32 <= width <= 1920 and 32 <= height <= 1920) or width % 2 or height % 2:
        raise UserError(f"size (--size) must be even numbers from 32 to 1920, e.g. 320x180 (got {width}x{height})")
    if not 1 <= every <= frames:
        raise UserError(f"export_every (--every) must be between 1 and the frame count {frames} (got {every})")
    if seed < 0:
        raise UserError(f"seed must be >= 0 (got {seed})")


def _rng(seed: int, role: str, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, _ROLES[role], k])


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[..., Any]]:
    """Yield a tick function: a tqdm bar on stderr when asked for and the sample is large, a no-op otherwise."""
    if not enabled or total < 600:
        yield lambda n=1: None
        return
    import sys

    from tqdm import tqdm

    with tqdm(total=total, desc="sample frames", unit="frame", file=sys.stderr) as bar:
        yield bar.update


# ---------------------------------------------------------------- scenes


def _make_scene(width: int, height: int, frames: int, rng: np.random.Generator, objects: int | None = None) -> _Scene:
    """2-4 shapes (at most `objects`) entering from the edges; shapes 0 and 1 cross mid-way, one occluding."""
    count = int(rng.integers(2, len(LABELS) + 1))
    count = min(count, objects) if objects else count
    radii = rng.uniform(0.11, 0.17, count) * min(width, height)
    lead = max(1, frames // 12)  # the first frames are empty: every shape is still outside
    meet = max(lead + 2, min(frames // 2, lead + 40))
    centre = np.array([width, height], float) * (0.5 + rng.uniform(-0.08, 0.08, 2))
    colours = rng.choice(len(PALETTE), count, replace=False)
    depths = rng.permutation(count)
    shapes: list[_Shape] = []
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
        shapes.append(_Shape(i, PALETTE[colours[i]], float(radii[i]), entry, velocity, start,
                             float(rng.uniform(0, np.pi)), float(rng.uniform(-0.06, 0.06)), int(depths[i])))
    return _Scene(width, height, frames, _background(width, height, rng), shapes)


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


def _position(shape: _Shape, t: int, width: int, height: int) -> np.ndarray | None:
    """Centre at frame t on a torus just larger than the frame (a shape leaving one side re-enters the other)."""
    if t < shape.start:
        return None
    margin = shape.radius + 2
    p = shape.entry + shape.velocity * (t - shape.start)
    size = np.array([width, height], float) + 2 * margin
    return np.mod(p + margin, size) - margin


def _shape_mask(shape: _Shape, t: int, width: int, height: int) -> np.ndarray:
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


def _render(scene: _Scene, t: int) -> _Frame:
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
    return _Frame(t, rgb, visible, occluded)


def _frames(scene: _Scene, tick: Callable[..., Any], indices: Iterable[int] | None = None) -> Iterator[_Frame]:
    for t in range(scene.frames) if indices is None else indices:
        yield _render(scene, t)
        tick(1)


def _encode(scene: _Scene, path: Path, visit: Callable[[_Frame], None], tick: Callable[..., Any]) -> None:
    """Render every frame into an H.264 mp4 at 24 fps, handing each frame to `visit` on the way."""
    from .video import write_video

    def rgb_frames() -> Iterator[np.ndarray]:
        for frame in _frames(scene, tick):
            visit(frame)
            yield frame.rgb

    write_video(rgb_frames(), path, fps=FPS)


def _bbox(mask: np.ndarray) -> list[int]:
    """Tight [x1, y1, x2, y2] (exclusive) of a non-empty mask (masks.mask_bbox, faster on many small frames)."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _colours(scene: _Scene) -> dict[str, list[int]]:
    """Object id -> the RGB colour it is drawn with in this video."""
    return {str(s.object_id): list(s.colour) for s in scene.shapes}


def _truth_objects(frame: _Frame) -> list[dict[str, Any]]:
    """The visible objects of a frame: exact [x1, y1, x2, y2] (exclusive) box and area."""
    return [{"object_id": oid, "label": LABELS[oid], "bbox": _bbox(vis), "area": int(vis.sum()),
             "occluded": frame.occluded[oid]} for oid, vis in enumerate(frame.visible) if vis.any()]


# ---------------------------------------------------------------- SAM 2 demo-export ZIP (fork exporter)


def _write_demo(tmp: Path, scene: _Scene, every: int, session_id: str, job_id: str, k: int,
                tick: Callable[..., Any]) -> dict[str, Any]:
    """One demo session: the clean video and the exporter's ZIP with its defects; returns its truth."""
    video_name = f"session_{session_id}.mp4"
    indices = list(range(0, scene.frames, every))
    wanted = set(indices)
    annotations: list[dict[str, Any]] = []
    truth_frames: list[dict[str, Any]] = []
    pngs: list[tuple[str, bytes]] = []

    def visit(frame: _Frame) -> None:
        if frame.index not in wanted:
            return
        objects, grids, truth = _demo_objects(frame)
        annotations.append({"frame_index": frame.index, "timestamp_sec": round(frame.index / CLAIMED_FPS, 3),
                            "objects": objects})
        truth_frames.append({"frame_index": frame.index, "objects": truth})
        if objects:
            pngs.append((f"images/frame_{frame.index:06d}.png",
                         _overlay_png(frame.rgb, grids, [o["label"] for o in objects])))

    _encode(scene, tmp / video_name, visit, tick)
    stamp = EXPORT_TIME + timedelta(minutes=k)
    annotations_json, metadata_json = _demo_json(scene, video_name, indices, annotations, every, stamp)
    zip_name = f"sam2_export_{job_id}.zip"
    _write_zip(tmp / zip_name, [("annotations.json", annotations_json.encode()),
                                ("metadata.json", metadata_json.encode()), *pngs], stamp)
    return {"file": zip_name, "video": video_name, "video_id": Path(video_name).stem, "job_id": job_id,
            "width": scene.width, "height": scene.height, "fps": FPS, "frame_count": scene.frames,
            "claimed_fps": CLAIMED_FPS, "frame_indices": indices, "colours": _colours(scene), "frames": truth_frames}


def _demo_objects(frame: _Frame) -> tuple[list[dict[str, Any]], list[np.ndarray], list[dict[str, Any]]]:
    """The exporter's objects: row-major runs on the 256 grid, a transposed grid bbox, constant confidence."""
    objects, grids, truth = [], [], []
    for oid, vis in enumerate(frame.visible):
        if not vis.any():
            continue
        grid = _grid_mask(vis)
        x1, y1, x2, y2 = _bbox(grid)
        objects.append({"object_id": oid, "label": f"object_{oid}",
                        "mask_rle": " ".join(map(str, mask_to_runs(grid, "C"))),
                        "bbox": [y1, x1, y2 - y1, x2 - x1],  # computed as if the runs were column-major
                        "area": int(grid.sum()), "confidence": CONFIDENCE})
        grids.append(resize_mask(grid, *vis.shape))
        truth.append({"object_id": oid, "label": LABELS[oid], "bbox": _bbox(vis), "area": int(vis.sum()),
                      "occluded": frame.occluded[oid], "bbox_256": [x1, y1, x2, y2], "area_256": int(grid.sum())})
    return objects, grids, truth


def _grid_mask(mask: np.ndarray) -> np.ndarray:
    """Squash a frame mask onto SAM 2's 256x256 grid: a cell is on when any pixel under it is on.

    Scaled back to the frame (nearest neighbour) it covers the whole mask, so no visible sliver gets lost and
    every edge moves outward by at most one grid cell.
    """
    pooled = mask.astype(np.int32)
    for axis in (0, 1):
        n = mask.shape[axis]
        edges = np.arange(GRID + 1) * n / GRID  # exact: GRID is a power of two
        low = np.floor(edges[:-1]).astype(int)
        high = np.maximum(np.ceil(edges[1:]).astype(int), low + 1)
        sums = np.cumsum(np.insert(pooled, 0, 0, axis=axis), axis=axis)
        pooled = (np.take(sums, high, axis=axis) - np.take(sums, low, axis=axis) > 0).astype(np.int32)
    return pooled.astype(np.uint8)


def _demo_json(scene: _Scene, video_name: str, indices: list[int], annotations: list[dict[str, Any]], every: int,
               stamp: datetime) -> tuple[str, str]:
    """annotations.json and metadata.json with the exporter's keys, key order, rounding and indentation."""
    duration = scene.frames / CLAIMED_FPS
    target_fps = CLAIMED_FPS / every
    annotations_doc = {
        "video": {"filename": video_name, "width": scene.width, "height": scene.height, "source_fps": CLAIMED_FPS,
                  "total_frames": scene.frames, "duration_sec": round(duration, 3)},
        "export_config": {"target_fps": target_fps, "total_exported_frames": len(indices), "frame_indices": indices,
                          "export_timestamp": stamp.isoformat(timespec="microseconds") + "Z",
                          "exporter_version": "1.0.0"},
        "annotations": annotations}
    total_objects = sum(len(a["objects"]) for a in annotations)
    unique = {o["object_id"] for a in annotations for o in a["objects"]}
    metadata_doc = {
        "export_info": {"created_at": (stamp + timedelta(microseconds=1934)).isoformat(timespec="microseconds") + "Z",
                        "format_version": "1.0", "exporter": "SAM2 Demo Export Tool"},
        "video": {"filename": video_name, "width": scene.width, "height": scene.height, "fps": CLAIMED_FPS,
                  "total_frames": scene.frames, "duration_sec": duration},
        "export_config": {"target_fps": target_fps, "frame_indices": indices},
        "statistics": {"total_frames": len(annotations), "total_objects": total_objects,
                       "unique_objects": len(unique), "objects_per_frame": total_objects / len(annotations)}}
    return json.dumps(annotations_doc, indent=2), json.dumps(metadata_doc, indent=2, ensure_ascii=False)


@lru_cache(maxsize=64)
def _label_patch(label: str, font_size: int) -> np.ndarray:
    """The exporter's label: white text on a black box (rendered once per label and size)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    bbox = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), label, font=font)
    left, top, right, bottom = (int(v) for v in bbox)  # already ints at runtime; the stubs say float
    patch = Image.new("RGB", (right - left + 4, bottom - top + 8), (0, 0, 0))
    ImageDraw.Draw(patch).text((2 - left, 2 - top + 1), label, font=font, fill=(255, 255, 255))
    return np.asarray(patch)


def _overlay_png(rgb: np.ndarray, masks: list[np.ndarray], labels: list[str]) -> bytes:
    """The exporter's visualisation of the grid masks scaled back to the frame: 30% tint, contour, label box."""
    import cv2
    from PIL import Image

    height, width = rgb.shape[:2]
    font_size = max(8, round(20 * height / 720))
    image = rgb.copy()
    for idx, (mask, label) in enumerate(zip(masks, labels, strict=True)):
        colour = OVERLAY_BGR[idx % len(OVERLAY_BGR)][::-1]  # same colours as the exporter, on an RGB frame
        tint = np.zeros_like(image)
        tint[mask > 0] = colour
        image = cv2.addWeighted(image, 1.0, tint, 0.3, 0)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(image, contours, -1, colour, max(1, round(2 * height / 720)))
        patch = _label_patch(label, font_size)
        x1, y1, _, _ = _bbox(mask)
        x, y = max(0, x1 - 2), max(0, y1 - font_size // 2 - patch.shape[0])  # above the mask, like the exporter
        h, w = min(patch.shape[0], height - y), min(patch.shape[1], width - x)
        image[y:y + h, x:x + w] = patch[:h, :w]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _write_zip(path: Path, members: list[tuple[str, bytes]], stamp: datetime) -> None:
    """Deflated members at the root in the exporter's order, with fixed dates (byte-identical per seed)."""
    date_time = (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o100644 << 16
            archive.writestr(info, data)


# ---------------------------------------------------------------- SA-V, COCO, SAM 2 demo stream


def _write_sav(tmp: Path, scene: _Scene, video_id: str, tick: Callable[..., Any]) -> dict[str, Any]:
    """SA-V `<video_id>_manual.json` (every 4th frame, full-resolution column-major COCO RLE) + `<video_id>.mp4`."""
    masklet: list[list[dict[str, Any]]] = []
    truth_frames: list[dict[str, Any]] = []

    def visit(frame: _Frame) -> None:
        if frame.index % SAV_STEP == 0:
            masklet.append([encode_rle(vis) for vis in frame.visible])  # invisible -> all-zero RLE, kept
            truth_frames.append({"frame_index": frame.index, "sav_index": frame.index // SAV_STEP,
                                 "objects": _truth_objects(frame)})

    _encode(scene, tmp / f"{video_id}.mp4", visit, tick)
    areas = np.array([[sum(o["area"] for o in f["objects"] if o["object_id"] == oid)
                       for oid in range(len(scene.shapes))] for f in truth_frames], float)
    keep = [oid for oid in range(len(scene.shapes)) if areas[:, oid].any()]  # SA-V has no never-seen masklets
    doc = {"video_id": video_id, "video_duration": scene.frames / FPS, "video_frame_count": float(scene.frames),
           "video_height": float(scene.height), "video_width": float(scene.width),
           "video_resolution": float(scene.height * scene.width), "video_environment": "Indoor",
           "video_split": "train", "masklet": [[row[oid] for oid in keep] for row in masklet]}
    doc.update(_masklet_stats(areas[:, keep], keep, scene.height * scene.width))
    name = f"{video_id}_manual.json"
    (tmp / name).write_text(json.dumps(doc), encoding="utf-8")
    return {"file": name, "video": f"{video_id}.mp4", "video_id": video_id, "width": scene.width,
            "height": scene.height, "fps": FPS, "frame_count": scene.frames, "annotated_step": SAV_STEP,
            "masklet_id": keep, "colours": _colours(scene), "frames": truth_frames}


def _masklet_stats(areas: np.ndarray, ids: list[int], resolution: int) -> dict[str, Any]:
    """The per-masklet keys of a manual SA-V file, computed as in the real files (mean over visible frames)."""
    visible = areas > 0
    first = [int(np.argmax(visible[:, j])) for j in range(len(ids))]
    size_abs = [float(areas[visible[:, j], j].mean()) for j in range(len(ids))]
    changes = [int((np.diff(visible[first[j]:, j].astype(int)) != 0).sum()) for j in range(len(ids))]
    bucket = ["small" if a < 32**2 else "medium" if a < 96**2 else "large" for a in size_abs]
    return {"masklet_id": ids, "masklet_size_rel": [round(a / resolution, 10) for a in size_abs],
            "masklet_size_abs": [round(a, 10) for a in size_abs], "masklet_size_bucket": bucket,
            "masklet_visibility_changes": changes, "masklet_first_appeared_frame": [float(f) for f in first],
            "masklet_frame_count": [len(areas)] * len(ids),
            "masklet_edited_frame_count": [max(1, int(visible[:, j].sum()) // 3) for j in range(len(ids))],
            "masklet_type": ["manual"] * len(ids), "masklet_stability_score": [None] * len(ids),
            "masklet_num": len(ids)}


def _write_coco(tmp: Path, scene: _Scene, tick: Callable[..., Any]) -> dict[str, Any]:
    """COCO instances (CVAT style): JPEG frames, polygon / compressed RLE / uncompressed RLE, an extra key."""
    from PIL import Image

    folder = tmp / "coco_frames"
    folder.mkdir()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    truth_frames: list[dict[str, Any]] = []
    for frame in _frames(scene, tick, range(0, scene.frames, COCO_STEP)):
        image_id, file_name = len(images) + 1, f"coco_frames/frame_{frame.index:06d}.jpg"
        Image.fromarray(frame.rgb).save(tmp / file_name, quality=92)
        images.append({"id": image_id, "width": scene.width, "height": scene.height, "file_name": file_name,
                       "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0})
        objects = _truth_objects(frame)
        for obj in objects:
            kind, segmentation = _segmentation(SEG_KINDS[len(annotations) % 3], frame.visible[obj["object_id"]],
                                               obj["bbox"])
            obj["segmentation"] = kind
            x1, y1, x2, y2 = obj["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": obj["object_id"] + 1, "segmentation": segmentation,
                                "area": float(obj["area"]), "bbox": [float(x1), float(y1), float(x2 - x1),
                                                                     float(y2 - y1)],
                                "iscrowd": int(kind == "uncompressed_rle"),
                                "attributes": {"occluded": obj["occluded"], "track_id": obj["object_id"],
                                               "keyframe": True}})
        truth_frames.append({"image": file_name, "image_id": image_id, "frame_index": frame.index,
                             "objects": objects})
    doc = {"licenses": [{"name": "", "id": 0, "url": ""}],
           "info": {"contributor": "", "date_created": "", "description": "SAM2 VLM Studio synthetic sample",
                    "url": "", "version": "1.0", "year": ""},
           "categories": [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(LABELS)],
           "images": images, "annotations": annotations}
    (tmp / "coco_instances.json").write_text(json.dumps(doc), encoding="utf-8")
    return {"file": "coco_instances.json", "images_dir": "coco_frames", "width": scene.width,
            "height": scene.height, "colours": _colours(scene), "frames": truth_frames}


def _segmentation(kind: str, mask: np.ndarray, box: list[int]) -> tuple[str, Any]:
    """A segmentation of the wanted kind; a polygon falls back to RLE where it would miss the box by > 1 px."""
    if kind == "polygon":
        polygons = _polygons(mask)
        if polygons and _polygon_box_ok(polygons, mask.shape, box):
            return kind, polygons
        kind = "rle"
    if kind == "rle":
        return kind, encode_rle(mask)
    return kind, {"counts": mask_to_runs(mask, "F"), "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _polygons(mask: np.ndarray) -> list[list[float]]:
    import cv2

    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[float(v) for v in c.reshape(-1)] for c in contours if len(c) >= 3]


def _polygon_box_ok(polygons: list[list[float]], shape: tuple[int, ...], box: list[int]) -> bool:
    from pycocotools import mask as mask_utils

    height, width = int(shape[0]), int(shape[1])
    decoded = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))
    return max(abs(a - b) for a, b in zip(mask_bbox(decoded), box, strict=True)) <= 1


def _write_stream(tmp: Path, scene: _Scene, tick: Callable[..., Any]) -> dict[str, Any]:
    """The upstream demo's propagation stream: every frame, forward from the clicked frame, then backward."""
    rles: dict[int, list[dict[str, Any]]] = {}
    truth: dict[int, list[dict[str, Any]]] = {}

    def visit(frame: _Frame) -> None:
        rles[frame.index] = [encode_rle(vis) for vis in frame.visible]  # SAM 2 answers for every tracked object
        truth[frame.index] = _truth_objects(frame)

    _encode(scene, tmp / "sam2_stream.mp4", visit, tick)
    click = scene.frames // 3
    order = list(range(click, scene.frames)) + list(range(click - 1, -1, -1))
    lines = [json.dumps({"frame_index": t, "results": [{"object_id": oid, "mask": rle}
                                                       for oid, rle in enumerate(rles[t])]}) for t in order]
    (tmp / "sam2_stream.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"file": "sam2_stream.jsonl", "video": "sam2_stream.mp4", "video_id": "sam2_stream",
            "width": scene.width, "height": scene.height, "fps": FPS, "frame_count": scene.frames,
            "click_frame": click, "order": order, "colours": _colours(scene),
            "frames": [{"frame_index": t, "objects": truth[t]} for t in range(scene.frames)]}


# ---------------------------------------------------------------- summary


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1024:.0f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


def _summary(info: SampleInfo) -> str:
    truth, gen = info.truth, info.truth["generator"]
    lines = [f"Sample written to {info.out_dir}",
             f"  {gen['videos'] + 2} videos of {gen['frames']} frames, {gen['width']}x{gen['height']} at {FPS} fps, "
             f"seed {gen['seed']}", "", "  SAM 2 demo export (ZIP + its source video; pass --labels labels.json):"]
    demo = truth["sam2_demo_zip"]
    for session, zip_path, video in list(zip(demo, info.demo_zips, info.demo_videos, strict=True))[:4]:
        empty = sum(not f["objects"] for f in session["frames"])
        lines += [f"    {zip_path.name} ({_size(zip_path)}, {len(session['frames'])} frames, {empty} without objects)",
                  f"      + {video.name} ({_size(video)})"]
    if len(demo) > 4:
        lines.append(f"    ... {len(demo) - 4} more sessions")
    sav, coco, stream = truth["sav"], truth["coco"], truth["sam2_stream"]
    kinds = {k: sum(o["segmentation"] == k for f in coco["frames"] for o in f["objects"]) for k in SEG_KINDS}
    lines += ["  SA-V:", f"    {info.sav_json.name} ({len(sav['frames'])} annotated frames, "
                         f"{len(sav['masklet_id'])} masklets) + {info.sav_video.name} ({_size(info.sav_video)})",
              "  COCO instances:", f"    {info.coco_json.name} + {info.coco_frames.name}/ ({len(coco['frames'])} "
                                   f"JPEGs; " + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")",
              "  SAM 2 demo stream:", f"    {info.stream_jsonl.name} ({len(stream['order'])} frames, forward from "
                                      f"{stream['click_frame']} then backward) + {info.stream_video.name}",
              f"  labels: {info.labels_json.name} {json.dumps(truth['labels'])}",
              f"  truth:  {info.truth_json.name} (exact boxes and areas per format, for tests)"]
    return "\n".join(lines)
