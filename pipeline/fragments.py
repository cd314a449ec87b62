"""Mask fidelity: detached specks of a SAM 2 mask that hold a small share of its area but widen its box.

SAM 2 masks often carry a few stray pixels on a neighbouring object (the real fork export's kettle carries three
specks on the hand and the mug, up to 115 px away, which make its box 35% wider). `analyse` finds the connected
components (OpenCV, 8-connectivity), `clean_mask` keeps the main region plus pieces above a share of the area, and
`drop_fragments` applies that to a frame's objects at convert time, returning what it changed for dataset.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .masks import box_iou, decode_rle, encode_rle, mask_bbox
from .records import ObjectAnn

DEFAULT_KEEP_SHARE = 0.05  # convert --keep-share: pieces holding at least this share of the mask's area stay


@dataclass
class Fragments:
    """A mask's pieces: the main (largest) region, every other piece, and the box with and without the pieces."""

    area: int
    main_area: int
    pieces: list[tuple[int, list[int]]]  # (pixels, [x1, y1, x2, y2]) of every detached piece, largest first
    box: list[int]  # the whole mask's box
    main_box: list[int]  # the main region's box

    def kept_box(self, keep_share: float) -> list[int]:
        """The box of the main region plus the pieces holding at least `keep_share` of the area."""
        boxes = [self.main_box] + [box for pixels, box in self.pieces if pixels >= keep_share * self.area]
        return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]

    def small(self, keep_share: float) -> list[tuple[int, list[int]]]:
        """The pieces below `keep_share` of the area (what --drop-fragments removes)."""
        return [(pixels, box) for pixels, box in self.pieces if pixels < keep_share * self.area]


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label image, stats rows [x, y, w, h, area]) of the 8-connected foreground components, background dropped."""
    import cv2

    _, labels, stats, _ = cv2.connectedComponentsWithStats((np.asarray(mask) > 0).astype(np.uint8), connectivity=8)
    return labels, stats[1:]


def _box(stat: np.ndarray) -> list[int]:
    x, y, w, h = (int(v) for v in stat[:4])
    return [x, y, x + w, y + h]


def analyse(mask: np.ndarray) -> Fragments | None:
    """The pieces of a binary mask (None when it is empty)."""
    _, stats = _components(mask)
    if len(stats) == 0:
        return None
    order = np.argsort(-stats[:, 4], kind="stable")
    main = stats[order[0]]
    pieces = [(int(stats[i, 4]), _box(stats[i])) for i in order[1:]]
    return Fragments(area=int(stats[:, 4].sum()), main_area=int(main[4]), pieces=pieces, box=mask_bbox(mask),
                     main_box=_box(main))


def clean_mask(mask: np.ndarray, keep_share: float = DEFAULT_KEEP_SHARE) -> np.ndarray:
    """The mask without the detached pieces below `keep_share` of its area (the main region always stays)."""
    labels, stats = _components(mask)
    if len(stats) <= 1:
        return (np.asarray(mask) > 0).astype(np.uint8)
    total, biggest = int(stats[:, 4].sum()), int(np.argmax(stats[:, 4]))
    keep = [i + 1 for i in range(len(stats)) if i == biggest or stats[i, 4] >= keep_share * total]
    return np.isin(labels, keep).astype(np.uint8)


def fragment_problem(obj: ObjectAnn, max_share: float, min_box_growth: float) -> str:
    """Why an object's mask counts as fragmented ('' when it does not): detached pieces below `max_share` of the
    area that grow its box by at least `min_box_growth` (1 - IoU of the box with and without them)."""
    found = analyse(decode_rle(obj.rle))
    if found is None or not found.small(max_share):
        return ""
    own = found.kept_box(max_share)
    growth = 1.0 - box_iou(own, found.box)
    if growth < min_box_growth:
        return ""
    specks = found.small(max_share)
    sizes = ", ".join(str(pixels) for pixels, _ in specks[:5]) + (" ..." if len(specks) > 5 else "")
    return (f"{len(specks)} detached piece(s) of {sizes} px ({sum(p for p, _ in specks) / found.area:.2%} of "
            f"{found.area} px) widen the box {found.box} from its own {own} (box IoU {1 - growth:.2f})")


def drop_fragments(objects: list[ObjectAnn], keep_share: float = DEFAULT_KEEP_SHARE) -> list[dict[str, Any]]:
    """Remove small detached pieces from each object's mask in place (box, area and RLE recomputed); one entry per
    object changed: object id, box before/after, area before/after."""
    changes = []
    for obj in objects:
        mask = decode_rle(obj.rle)
        cleaned = clean_mask(mask, keep_share)
        area = int(cleaned.sum())
        if area == obj.area or area == 0:
            continue
        before, box = list(obj.bbox), mask_bbox(cleaned)
        changes.append({"object_id": obj.object_id, "label": obj.label, "box_before": before, "box_after": box,
                        "area_before": obj.area, "area_after": area})
        obj.bbox, obj.area, obj.rle = box, area, encode_rle(cleaned)
    return changes


def correction_summary(changes: list[dict[str, Any]], keep_share: float, listed: int = 1000) -> dict[str, Any]:
    """What dataset.json records of --drop-fragments: the share, totals and the first `listed` corrections."""
    return {"keep_share": keep_share, "objects_corrected": len(changes),
            "pixels_removed": sum(c["area_before"] - c["area_after"] for c in changes),
            "corrections": changes[:listed], "listed": min(len(changes), listed)}
