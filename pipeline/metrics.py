"""Geometry metrics: matched box IoU, COCO AP (pycocotools COCOeval), mask IoU/Dice, label and count accuracy."""

from __future__ import annotations

import contextlib
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .masks import Box, BoxLike, box_iou

LabeledBox = tuple[str | None, Box]


def match_boxes(pred: Sequence[BoxLike], truth: Sequence[BoxLike]) -> list[tuple[int, int, float]]:
    """One-to-one matching maximising total IoU (Hungarian); returns (pred_index, truth_index, iou) with iou > 0."""
    if not pred or not truth:
        return []
    from scipy.optimize import linear_sum_assignment

    ious = np.array([[box_iou(p, t) for t in truth] for p in pred])
    rows, cols = linear_sum_assignment(-ious)
    return [(int(r), int(c), float(ious[r, c])) for r, c in zip(rows, cols, strict=True) if ious[r, c] > 0]


def matched_iou(pred: Sequence[BoxLike], truth: Sequence[BoxLike]) -> float:
    """Sum of matched IoUs over max(#pred, #truth): misses and extra boxes both count as 0; 1.0 when both empty."""
    if not pred and not truth:
        return 1.0
    total = sum(iou for _, _, iou in match_boxes(pred, truth))
    return total / max(len(pred), len(truth))


@dataclass
class DetectionSample:
    """Predicted and true labelled boxes of one image for one grounding query."""

    image_key: str
    pred: list[LabeledBox]
    truth: list[LabeledBox]
    width: int
    height: int


def coco_ap(samples: list[DetectionSample]) -> dict[str, float | None]:
    """AP@0.5 and mAP@[.5:.95] by pycocotools' COCOeval (all generated boxes scored 1.0, in answer order)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    labels = sorted({lab or "" for s in samples for lab, _ in s.truth})
    if not labels:
        return {"ap50": None, "map": None}
    cat_ids = {lab: i + 1 for i, lab in enumerate(labels)}
    images: list[dict[str, Any]] = []
    gts: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for img_id, sample in enumerate(samples, start=1):
        images.append({"id": img_id, "width": sample.width, "height": sample.height})
        for lab, box in sample.truth:
            gts.append(_coco_ann(len(gts) + 1, img_id, cat_ids[lab or ""], box))
        for rank, (lab, box) in enumerate(sample.pred):
            if (lab or "") in cat_ids:
                det = _coco_ann(len(dets) + 1, img_id, cat_ids[lab or ""], box)
                det["score"] = 1.0 - rank * 1e-3  # keep answer order as the ranking within an image
                dets.append(det)
    gt = COCO()
    categories = [{"id": i, "name": n} for n, i in cat_ids.items()]
    gt.dataset = {"images": images, "annotations": gts, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not dets:
            return {"ap50": 0.0, "map": 0.0}
        dt = gt.loadRes(dets)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.params.maxDets = [1, 10, 100]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {"map": _nonneg(stats[0]), "ap50": _nonneg(stats[1])}


def _coco_ann(ann_id: int, image_id: int, cat_id: int, box: BoxLike) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(0.0, x2 - x1), max(0.0, y2 - y1)
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "bbox": [x1, y1, w, h], "area": w * h,
            "iscrowd": 0}


def _nonneg(value: float) -> float:
    return max(0.0, float(value))  # COCOeval reports -1 when a category has no ground truth


def mask_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """IoU, Dice and pixel accuracy of two binary masks of the same size."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    inter = float(np.logical_and(pred, truth).sum())
    union = float(np.logical_or(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    return {
        "mask_iou": inter / union if union else 1.0,
        "dice": 2 * inter / total if total else 1.0,
        "pixel_accuracy": float((pred == truth).mean()),
    }


@dataclass
class ConfusionMatrix:
    """Referring-task label confusion: counts[truth][pred]."""

    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def add(self, truth: str, pred: str | None) -> None:
        self.counts[truth][pred if pred is not None else "<unparsed>"] += 1

    def accuracy(self) -> float | None:
        total = sum(sum(row.values()) for row in self.counts.values())
        correct = sum(row.get(label, 0) for label, row in self.counts.items())
        return correct / total if total else None

    def as_table(self) -> dict[str, Any]:
        labels = sorted(set(self.counts) | {p for row in self.counts.values() for p in row})
        return {"labels": labels, "matrix": [[self.counts.get(t, {}).get(p, 0) for p in labels] for t in labels]}


def count_scores(pred: list[int | None], truth: list[int]) -> dict[str, float | None]:
    """Counting accuracy and MAE; an unparsed count is wrong and counts as predicting 0 for the MAE."""
    if not truth:
        return {"count_accuracy": None, "count_mae": None}
    correct = sum(1 for p, t in zip(pred, truth, strict=True) if p == t)
    mae = sum(abs((p or 0) - t) for p, t in zip(pred, truth, strict=True)) / len(truth)
    return {"count_accuracy": correct / len(truth), "count_mae": mae}
