"""The SAM 2 demo-export ZIP (fork exporter): overlays, 256x256 grid masks and the exporter's defects."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..masks import mask_to_runs, resize_mask
from .scene import (
    CLAIMED_FPS,
    CONFIDENCE,
    EXPORT_TIME,
    FPS,
    GRID,
    LABELS,
    OVERLAY_BGR,
    Frame,
    Scene,
    bbox,
    colours,
    encode_video,
)

# ---------------------------------------------------------------- SAM 2 demo-export ZIP (fork exporter)


def write_demo(tmp: Path, scene: Scene, every: int, session_id: str, job_id: str, k: int,
                tick: Callable[..., Any]) -> dict[str, Any]:
    """One demo session: the clean video and the exporter's ZIP with its defects; returns its truth."""
    video_name = f"session_{session_id}.mp4"
    indices = list(range(0, scene.frames, every))
    wanted = set(indices)
    annotations: list[dict[str, Any]] = []
    truth_frames: list[dict[str, Any]] = []
    pngs: list[tuple[str, bytes]] = []

    def visit(frame: Frame) -> None:
        if frame.index not in wanted:
            return
        objects, grids, truth = _demo_objects(frame)
        annotations.append({"frame_index": frame.index, "timestamp_sec": round(frame.index / CLAIMED_FPS, 3),
                            "objects": objects})
        truth_frames.append({"frame_index": frame.index, "objects": truth})
        if objects:
            pngs.append((f"images/frame_{frame.index:06d}.png",
                         _overlay_png(frame.rgb, grids, [o["label"] for o in objects])))

    encode_video(scene, tmp / video_name, visit, tick)
    stamp = EXPORT_TIME + timedelta(minutes=k)
    annotations_json, metadata_json = _demo_json(scene, video_name, indices, annotations, every, stamp)
    zip_name = f"sam2_export_{job_id}.zip"
    _write_zip(tmp / zip_name, [("annotations.json", annotations_json.encode()),
                                ("metadata.json", metadata_json.encode()), *pngs], stamp)
    return {"file": zip_name, "video": video_name, "video_id": Path(video_name).stem, "job_id": job_id,
            "width": scene.width, "height": scene.height, "fps": FPS, "frame_count": scene.frames,
            "claimed_fps": CLAIMED_FPS, "frame_indices": indices, "colours": colours(scene), "frames": truth_frames}


def _demo_objects(frame: Frame) -> tuple[list[dict[str, Any]], list[np.ndarray], list[dict[str, Any]]]:
    """The exporter's objects: row-major runs on the 256 grid, a transposed grid bbox, constant confidence."""
    objects, grids, truth = [], [], []
    for oid, vis in enumerate(frame.visible):
        if not vis.any():
            continue
        grid = _grid_mask(vis)
        x1, y1, x2, y2 = bbox(grid)
        objects.append({"object_id": oid, "label": f"object_{oid}",
                        "mask_rle": " ".join(map(str, mask_to_runs(grid, "C"))),
                        "bbox": [y1, x1, y2 - y1, x2 - x1],  # computed as if the runs were column-major
                        "area": int(grid.sum()), "confidence": CONFIDENCE})
        grids.append(resize_mask(grid, *vis.shape))
        truth.append({"object_id": oid, "label": LABELS[oid], "bbox": bbox(vis), "area": int(vis.sum()),
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


def _demo_json(scene: Scene, video_name: str, indices: list[int], annotations: list[dict[str, Any]], every: int,
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
        x1, y1, _, _ = bbox(mask)
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


