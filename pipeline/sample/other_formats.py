"""SA-V manual annotations, COCO instances (every segmentation kind) and the SAM 2 demo stream (JSONL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..masks import encode_rle, mask_bbox, mask_to_runs
from .scene import (
    COCO_STEP,
    FPS,
    LABELS,
    SAV_STEP,
    SEG_KINDS,
    Frame,
    Scene,
    colours,
    encode_video,
    render_frames,
    truth_objects,
)

# ---------------------------------------------------------------- SA-V, COCO, SAM 2 demo stream


def write_sav(tmp: Path, scene: Scene, video_id: str, tick: Callable[..., Any]) -> dict[str, Any]:
    """SA-V `<video_id>_manual.json` (every 4th frame, full-resolution column-major COCO RLE) + `<video_id>.mp4`."""
    masklet: list[list[dict[str, Any]]] = []
    truth_frames: list[dict[str, Any]] = []

    def visit(frame: Frame) -> None:
        if frame.index % SAV_STEP == 0:
            masklet.append([encode_rle(vis) for vis in frame.visible])  # invisible -> all-zero RLE, kept
            truth_frames.append({"frame_index": frame.index, "sav_index": frame.index // SAV_STEP,
                                 "objects": truth_objects(frame)})

    encode_video(scene, tmp / f"{video_id}.mp4", visit, tick)
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
            "masklet_id": keep, "colours": colours(scene), "frames": truth_frames}


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


def write_coco(tmp: Path, scene: Scene, tick: Callable[..., Any]) -> dict[str, Any]:
    """COCO instances (CVAT style): JPEG frames, polygon / compressed RLE / uncompressed RLE, an extra key."""
    from PIL import Image

    folder = tmp / "coco_frames"
    folder.mkdir()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    truth_frames: list[dict[str, Any]] = []
    for frame in render_frames(scene, tick, range(0, scene.frames, COCO_STEP)):
        image_id, file_name = len(images) + 1, f"coco_frames/frame_{frame.index:06d}.jpg"
        Image.fromarray(frame.rgb).save(tmp / file_name, quality=92)
        images.append({"id": image_id, "width": scene.width, "height": scene.height, "file_name": file_name,
                       "license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0})
        objects = truth_objects(frame)
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
            "height": scene.height, "colours": colours(scene), "frames": truth_frames}


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


def write_stream(tmp: Path, scene: Scene, tick: Callable[..., Any]) -> dict[str, Any]:
    """The upstream demo's propagation stream: every frame, forward from the clicked frame, then backward."""
    rles: dict[int, list[dict[str, Any]]] = {}
    truth: dict[int, list[dict[str, Any]]] = {}

    def visit(frame: Frame) -> None:
        rles[frame.index] = [encode_rle(vis) for vis in frame.visible]  # SAM 2 answers for every tracked object
        truth[frame.index] = truth_objects(frame)

    encode_video(scene, tmp / "sam2_stream.mp4", visit, tick)
    click = scene.frames // 3
    order = list(range(click, scene.frames)) + list(range(click - 1, -1, -1))
    lines = [json.dumps({"frame_index": t, "results": [{"object_id": oid, "mask": rle}
                                                       for oid, rle in enumerate(rles[t])]}) for t in order]
    (tmp / "sam2_stream.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"file": "sam2_stream.jsonl", "video": "sam2_stream.mp4", "video_id": "sam2_stream",
            "width": scene.width, "height": scene.height, "fps": FPS, "frame_count": scene.frames,
            "click_frame": click, "order": order, "colours": colours(scene),
            "frames": [{"frame_index": t, "objects": truth[t]} for t in range(scene.frames)]}

