"""Answers back to geometry and scores: one row per example (parse, per-sample IoU), metrics per label and overall,
and the mean-box baseline (what a model that learned nothing about the image would answer).

A malformed answer is a parse failure (row `parse_ok: false`), never an exception: it scores as a miss everywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

import numpy as np

from . import clips
from .clips import VIDEO_TASKS
from .coords import Convention, ParseError, get_convention
from .masks import decode_rle, polygon_to_mask
from .metrics import ConfusionMatrix, DetectionSample, coco_ap, count_scores, mask_scores, matched_iou
from .records import FrameRecord
from .tasks import Example

METRIC_KEYS = ("miou", "ap50", "map", "mask_iou", "dice", "pixel_accuracy", "label_accuracy", "count_accuracy",
               "count_mae", "negative_accuracy", "listing_f1", "track_miou", "track_lost_rate", "visibility_f1",
               "unique_accuracy", "unique_mae", "parse_failure_rate")
HIGHER_IS_BETTER = {key: key not in ("count_mae", "track_lost_rate", "unique_mae", "parse_failure_rate")
                    for key in METRIC_KEYS}
BOX_TASKS = ("grounding", "negative")


# -- one example ------------------------------------------------------------------------------------------------
def _boxes(ex: Example, answer: str, conv: Convention) -> tuple[dict[str, Any], dict[str, Any]]:
    items = conv.parse_boxes(answer, ex.width, ex.height)
    pred = [box for _, box in items]
    iou = matched_iou(pred, [list(map(float, b)) for b in ex.truth.get("boxes", [])])
    return {"boxes": pred, "labels": [label for label, _ in items]}, {"iou": iou, "score": iou}


def _polygon_scores(ex: Example, polygons: list[list[float]]) -> dict[str, float]:
    truth = decode_rle(ex.truth["rle"]).astype(bool)
    pred = np.zeros_like(truth)
    for polygon in polygons:
        pred |= polygon_to_mask(polygon, truth.shape[0], truth.shape[1]).astype(bool)
    return mask_scores(pred, truth)


def _polygon(ex: Example, answer: str, conv: Convention) -> tuple[dict[str, Any], dict[str, Any]]:
    items = conv.parse_polygon(answer, ex.width, ex.height)
    scores = _polygon_scores(ex, [p for _, p in items])
    parsed = {"polygons": [p for _, p in items], "labels": [label for label, _ in items]}
    return parsed, {"iou": scores["mask_iou"], "score": scores["mask_iou"], "mask": scores}


def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip().casefold() == b.strip().casefold()


def _referring(ex: Example, answer: str, conv: Convention) -> tuple[dict[str, Any], dict[str, Any]]:
    label = conv.parse_label(answer)
    return {"label": label}, {"score": float(_same(label, ex.truth["label"]))}


def _counting(ex: Example, answer: str, conv: Convention) -> tuple[dict[str, Any], dict[str, Any]]:
    count = conv.parse_count(answer)
    return {"count": count}, {"score": float(count == ex.truth["count"])}


def _listing(ex: Example, answer: str, conv: Convention) -> tuple[dict[str, Any], dict[str, Any]]:
    pred = {label.casefold() for label in conv.parse_labels(answer)}
    truth = {label.casefold() for label in ex.truth.get("labels", [])}
    hits = len(pred & truth)
    f1 = 1.0 if not pred and not truth else 2 * hits / (len(pred) + len(truth))
    return {"labels": sorted(pred)}, {"score": f1}


_SCORERS = {"grounding": _boxes, "negative": _boxes, "polygon": _polygon, "referring": _referring,
            "counting": _counting, "listing": _listing}


def _failure(ex: Example) -> dict[str, Any]:
    """What an unparsable answer scores: a miss (an empty prediction) for every task."""
    if ex.task in BOX_TASKS:
        return {"iou": 0.0, "score": 0.0}
    if ex.task == "polygon":
        scores = _polygon_scores(ex, [])
        return {"iou": scores["mask_iou"], "score": scores["mask_iou"], "mask": scores}
    return {"score": 0.0}


def score_answer(example: Example, answer: str, convention: Convention | str) -> dict[str, Any]:
    """One predictions.jsonl row: the answer parsed with the convention and scored against the example's truth."""
    conv = get_convention(convention) if isinstance(convention, str) else convention
    row: dict[str, Any] = {
        "id": example.id, "record_id": example.record_id, "task": example.task, "label": example.truth.get("label"),
        "image": example.image, "width": example.width, "height": example.height, "prompt": example.prompt,
        "answer": answer, "truth_answer": example.answer, "truth": example.truth, "parsed": None, "parse_ok": True,
        "error": None, "iou": None, "score": 0.0, "count": None}
    if example.images:
        row["images"] = list(example.images)
    try:
        if example.task in VIDEO_TASKS:
            parsed, scores = clips.score(example.task, example.truth, answer, conv, example.width, example.height)
        else:
            parsed, scores = _SCORERS[example.task](example, answer, conv)
        row["parsed"] = parsed
    except ParseError as exc:
        row.update(parse_ok=False, error=str(exc)[:300])
        scores = clips.failure(example.task, example.truth) if example.task in VIDEO_TASKS else _failure(example)
    row.update(scores)
    if example.task == "counting" and row["parsed"]:
        row["count"] = row["parsed"]["count"]
    return row


def score_answers(examples: list[Example], answers: list[str], convention: Convention | str) -> list[dict[str, Any]]:
    """Rows for parallel lists of examples and answers."""
    return [score_answer(ex, ans, convention) for ex, ans in zip(examples, answers, strict=True)]


# -- metrics ----------------------------------------------------------------------------------------------------
def _mean(values: Iterable[float | None]) -> float | None:
    kept = [float(v) for v in values if v is not None]
    return mean(kept) if kept else None


def _detection_sample(row: dict[str, Any]) -> DetectionSample:
    # A grounding query is about one label: every box it answers is a detection of that label.
    label = row["label"]
    pred = [(label, box) for box in (row["parsed"] or {}).get("boxes", [])]
    truth = [(label, list(map(float, box))) for box in row["truth"].get("boxes", [])]
    return DetectionSample(row["id"], pred, truth, row["width"], row["height"])


def _confusion(rows: list[dict[str, Any]], known: set[str]) -> ConfusionMatrix:
    """Referring rows as truth -> answer counts; answers outside the known labels are pooled as '<other>'."""
    canonical = {label.casefold(): label for label in known}
    confusion = ConfusionMatrix()
    for row in rows:
        if row["task"] == "referring":
            pred = (row["parsed"] or {}).get("label")
            confusion.add(row["truth"]["label"], None if pred is None else canonical.get(pred.casefold(), "<other>"))
    return confusion


def _block(rows: list[dict[str, Any]], known: set[str]) -> dict[str, Any]:
    """Every metric over `rows`; None where no row has the task the metric needs."""
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    grounding, polygons = by_task.get("grounding", []), by_task.get("polygon", [])
    ap = coco_ap([_detection_sample(r) for r in grounding + by_task.get("negative", [])]) if grounding else {}
    counts = by_task.get("counting", [])
    counted = count_scores([r["count"] for r in counts], [r["truth"]["count"] for r in counts])
    return {
        "miou": _mean(r["iou"] for r in grounding), "ap50": ap.get("ap50"), "map": ap.get("map"),
        **{key: _mean(r["mask"][key] for r in polygons) for key in ("mask_iou", "dice", "pixel_accuracy")},
        "label_accuracy": _confusion(rows, known).accuracy(), **counted,
        "negative_accuracy": _mean(r["score"] for r in by_task.get("negative", [])),
        "listing_f1": _mean(r["score"] for r in by_task.get("listing", [])),
        **clips.metrics(rows),
        "parse_failure_rate": (sum(not r["parse_ok"] for r in rows) / len(rows)) if rows else None,
        "n": len(rows),
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """metrics.json: overall metrics, example counts per task, the referring confusion matrix and a per-label table."""
    labels = sorted({r["label"] for r in rows if r["label"] is not None})
    known = set(labels) | {label for r in rows for label in r["truth"].get("labels", [])}
    out = _block(rows, known)
    out["n_by_task"] = dict(sorted(Counter(r["task"] for r in rows).items()))
    confusion = _confusion(rows, known)
    out["confusion"] = confusion.as_table() if confusion.counts else None
    out["per_label"] = {label: _block([r for r in rows if r["label"] == label], known) for label in labels}
    return out


# -- mean-box baseline ---------------------------------------------------------------------------------------------
@dataclass
class MeanBoxBaseline:
    """Answers from training-split statistics only: the mean normalised box (per label when seen), the most common
    label, the most common count per label and the most common label set."""

    boxes: dict[str, list[float]] = field(default_factory=dict)  # label -> [x1, y1, x2, y2] in 0..1
    overall: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0, 1.0])
    majority_label: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    label_set: list[str] = field(default_factory=list)
    unique_counts: dict[str, int] = field(default_factory=dict)  # count_unique: training mode per label ('' all)

    def box(self, label: str | None, width: int, height: int) -> list[float]:
        """The baseline box for a label on a width x height image, in pixels."""
        x1, y1, x2, y2 = self.boxes.get(label or "", self.overall)
        return [x1 * width, y1 * height, x2 * width, y2 * height]

    def answer(self, example: Example, convention: Convention | str) -> str:
        """The answer text the baseline gives to one example, written in the convention."""
        conv = get_convention(convention) if isinstance(convention, str) else convention
        label, w, h = example.truth.get("label"), example.width, example.height
        if example.task in VIDEO_TASKS:  # copy the given box / always visible / the training mode
            return clips.baseline_answer(example.task, example.truth, conv, w, h, self.unique_counts)
        if example.task in BOX_TASKS:
            return conv.encode_boxes([(label or "object", self.box(label, w, h))], w, h)
        if example.task == "polygon":
            x1, y1, x2, y2 = self.box(label, w, h)
            return conv.encode_polygon(label or "object", [x1, y1, x2, y1, x2, y2, x1, y2], w, h)
        if example.task == "referring":
            return conv.encode_label(self.majority_label or "object")
        if example.task == "counting":
            return conv.encode_count(self.counts.get(label or "", 1))
        return conv.encode_labels(self.label_set)


def mean_box_baseline(records: Iterable[FrameRecord]) -> MeanBoxBaseline:
    """Training-split statistics for the baseline; boxes are normalised to each record's image size first."""
    per_label: dict[str, list[list[float]]] = {}
    counts: dict[str, Counter[int]] = {}
    sets: Counter[tuple[str, ...]] = Counter()
    labels: Counter[str] = Counter()
    for rec in records:
        for obj in rec.objects:
            x1, y1, x2, y2 = obj.bbox
            per_label.setdefault(obj.label, []).append([x1 / rec.width, y1 / rec.height, x2 / rec.width,
                                                        y2 / rec.height])
            labels[obj.label] += 1
        for label, n in Counter(rec.labels).items():
            counts.setdefault(label, Counter())[n] += 1
        sets[tuple(sorted(set(rec.labels)))] += 1
    everything = [box for boxes in per_label.values() for box in boxes]
    return MeanBoxBaseline(
        boxes={label: np.mean(boxes, axis=0).tolist() for label, boxes in per_label.items()},
        overall=np.mean(everything, axis=0).tolist() if everything else [0.0, 0.0, 1.0, 1.0],
        majority_label=_most_common(labels) if labels else None,
        counts={label: _most_common(c) for label, c in counts.items()},
        label_set=list(_most_common(sets)) if sets else [])


def _most_common(counter: Counter[Any]) -> Any:
    """The most frequent key; the smallest key among equals (deterministic, unlike Counter.most_common)."""
    return min(counter, key=lambda key: (-counter[key], key))
