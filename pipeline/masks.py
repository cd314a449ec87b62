"""Mask geometry: COCO RLE (pycocotools), SAM 2 demo run strings, boxes, polygons, resizing, IoU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils

Box = list[float]  # [x1, y1, x2, y2], x2/y2 exclusive
BoxLike = Sequence[float]  # a box as accepted by parameters: list or tuple, int or float coordinates
Order = Literal["C", "F"]  # run order: row-major (SAM 2 demo) or column-major (COCO)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Binary HxW mask -> COCO compressed RLE with a str `counts`."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _to_coco(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    h, w = int(rle["size"][0]), int(rle["size"][1])
    if isinstance(counts, list):  # uncompressed RLE (CVAT, iscrowd=1)
        return mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """COCO RLE (compressed or uncompressed) -> uint8 HxW mask."""
    return mask_utils.decode(_to_coco(rle))


def rle_area(rle: dict[str, Any]) -> int:
    return int(mask_utils.area(_to_coco(rle)))


def rle_bbox(rle: dict[str, Any]) -> list[int]:
    """Tight [x1, y1, x2, y2] (exclusive) of an RLE; [0, 0, 0, 0] when empty."""
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(_to_coco(rle)))
    return [x, y, x + w, y + h]


def mask_bbox(mask: np.ndarray) -> list[int]:
    """Tight [x1, y1, x2, y2] (exclusive) of a binary mask; [0, 0, 0, 0] when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def runs_to_mask(runs: list[int], height: int, width: int, order: Order = "C") -> np.ndarray:
    """Uncompressed alternating runs (background first) -> mask; raises ValueError on a bad total."""
    if any(r < 0 for r in runs):
        raise ValueError("negative run length")
    if sum(runs) != height * width:
        raise ValueError(f"runs sum to {sum(runs)}, expected {height * width} ({height}x{width})")
    values = np.zeros(len(runs), dtype=np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, runs)
    return flat.reshape((height, width), order=order)


def mask_to_runs(mask: np.ndarray, order: Order = "C") -> list[int]:
    """Binary mask -> alternating runs (background first), the inverse of `runs_to_mask`."""
    flat = mask.flatten(order=order).astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat.size and flat[0] == 1 else runs


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a binary mask (non-uniform scales allowed)."""
    from PIL import Image

    image = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    return (np.asarray(image.resize((width, height), Image.Resampling.NEAREST)) > 127).astype(np.uint8)


def mask_to_polygon(mask: np.ndarray, max_points: int = 16) -> list[float]:
    """Outline of the largest region through pixel corners, simplified to at most `max_points` vertices, flat."""
    import cv2

    if max_points < 3:
        raise ValueError(f"max_points must be at least 3, got {max_points}")
    binary = np.asarray(mask) > 0
    ys, xs = np.nonzero(binary)
    if len(xs) == 0:
        return []
    x0, y0 = int(xs.min()), int(ys.min())
    crop = binary[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1]
    # Pixel (x, y) covers the square [x, x+1] x [y, y+1]. On a doubled grid its corners and edge midpoints are
    # cells of their own, so the boundary cells cv2 traces there are the pixel-corner outline; a plain contour
    # runs through boundary pixel centres and loses half a pixel on every side. A zero border keeps cv2 off the edge.
    h, w = crop.shape
    fine = np.zeros((2 * h + 3, 2 * w + 3), dtype=np.uint8)
    fine[2 : 2 * h + 1 : 2, 2 : 2 * w + 1 : 2] = crop
    fine = cv2.dilate(fine, np.ones((3, 3), np.uint8))
    contours, _ = cv2.findContours(fine, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float32)
    points = (contour - 1.0) / 2.0 + np.array([x0, y0], dtype=np.float32)
    return [float(v) for point in _simplify(points, max_points) for v in point]


def _simplify(points: np.ndarray, max_points: int) -> np.ndarray:
    """Douglas-Peucker with the smallest tolerance (bisection) that fits the point budget."""
    import cv2

    if len(points) <= max_points:
        return points
    closed = points.reshape(-1, 1, 2)
    low, high = 0.0, float(np.ptp(points, axis=0).max()) + 1.0
    best = cv2.approxPolyDP(closed, high, True)
    for _ in range(30):
        middle = (low + high) / 2
        approx = cv2.approxPolyDP(closed, middle, True)
        if len(approx) <= max_points:
            high, best = middle, approx
        else:
            low = middle
        if high - low < 1e-3:
            break
    return best.reshape(-1, 2)


def polygon_to_mask(polygon: list[float], height: int, width: int) -> np.ndarray:
    """Flat polygon (pixel coordinates) -> uint8 HxW mask; empty for fewer than 3 points."""
    if len(polygon) < 6:
        return np.zeros((height, width), dtype=np.uint8)
    rles = mask_utils.frPyObjects([list(map(float, polygon))], height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def box_iou(a: BoxLike, b: BoxLike) -> float:
    """IoU of two [x1, y1, x2, y2] boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter / union) if union else 0.0


def rle_iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    """IoU of two COCO RLEs without decoding them; 0.0 when their sizes differ."""
    ca, cb = _to_coco(a), _to_coco(b)
    if [int(v) for v in ca["size"]] != [int(v) for v in cb["size"]]:
        return 0.0
    return float(mask_utils.iou([ca], [cb], [0])[0][0])
