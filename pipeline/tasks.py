"""Instruction-answer pairs from frame records: grounding, referring, counting, listing, polygon and negatives.

Phrasings are picked by an RNG seeded from (seed, record id, task), so the same seed gives the same rows whatever
the order of the records. Prompts carry no `<image>` placeholder: the writers in `formats.py` add one per format.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .clips import BUILDERS as CLIP_BUILDERS
from .clips import PHRASES as CLIP_PHRASES
from .clips import VIDEO_TASKS, ClipOptions, build_clips
from .coords import Convention, get_convention
from .errors import UserError
from .masks import decode_rle, mask_to_polygon
from .records import FrameRecord, ObjectAnn

POLYGON_POINTS = 16

PHRASES: dict[str, list[str]] = {
    "grounding": [
        "Find every {label} in the image.",
        "Locate all instances of {label}.",
        "Detect {label}.",
        "Give the bounding box of each {label}.",
        "Where is the {label}? Answer with boxes.",
    ],
    "referring": [
        "What is the object at {region}?",
        "Name the object in the region {region}.",
        "Which label fits the object at {region}?",
    ],
    "counting": [
        "How many {label} objects are in the image?",
        "Count the {label} objects.",
        "How many times does {label} appear in this frame?",
    ],
    "listing": [
        "Which objects are in the image?",
        "List the objects you can see.",
        "What objects appear in this frame?",
    ],
    "polygon": [
        "Outline the {label}{where}.",
        "Give the polygon of the {label}{where}.",
        "Segment the {label}{where} as a polygon.",
    ],
}
PHRASES["negative"] = PHRASES["grounding"]  # a negative asks the grounding question about an absent label
PHRASES.update(CLIP_PHRASES)
FRAME_TASKS = ("grounding", "referring", "counting", "listing", "polygon", "negative")
TASKS = (*FRAME_TASKS, "track", "visibility", "count_unique")  # the last three: clips of K frames (clips.py)


@dataclass
class Example:
    """One instruction-answer pair; `image` is relative to the dataset folder, `truth` is for evaluation."""

    id: str
    record_id: str
    task: str
    image: str
    prompt: str
    answer: str
    width: int
    height: int
    truth: dict[str, Any] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)  # a clip's frames in time order (video tasks); else empty

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def frames(self) -> list[str]:
        """Every image of the example, in order: a clip's frames, else the one image."""
        return list(self.images) if self.images else [self.image]


@dataclass
class _Ctx:
    record: FrameRecord
    conv: Convention
    rng: random.Random
    label_set: list[str]
    polygon_points: int


def _labels_in(record: FrameRecord) -> list[str]:
    return sorted(set(record.labels))


def _of_label(record: FrameRecord, label: str) -> list[ObjectAnn]:
    return [obj for obj in record.objects if obj.label == label]


def _grounding(ctx: _Ctx) -> Iterable[tuple[str, str, dict[str, Any]]]:
    rec, conv = ctx.record, ctx.conv
    for label in _labels_in(rec):
        boxes = [list(obj.bbox) for obj in _of_label(rec, label)]
        answer = conv.encode_boxes([(label, box) for box in boxes], rec.width, rec.height)
        yield ctx.rng.choice(PHRASES["grounding"]).format(label=label), answer, {
            "label": label, "boxes": boxes, "labels": [label] * len(boxes)}


def _referring(ctx: _Ctx) -> Iterable[tuple[str, str, dict[str, Any]]]:
    rec, conv = ctx.record, ctx.conv
    for obj in rec.objects:
        region = conv.encode_region(list(obj.bbox), rec.width, rec.height)
        yield ctx.rng.choice(PHRASES["referring"]).format(region=region), conv.encode_label(obj.label), {
            "label": obj.label, "box": list(obj.bbox), "object_id": obj.object_id}


def _counting(ctx: _Ctx) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for label in _labels_in(ctx.record):
        count = len(_of_label(ctx.record, label))
        yield ctx.rng.choice(PHRASES["counting"]).format(label=label), ctx.conv.encode_count(count), {
            "label": label, "count": count}


def _listing(ctx: _Ctx) -> Iterable[tuple[str, str, dict[str, Any]]]:
    labels = _labels_in(ctx.record)
    yield ctx.rng.choice(PHRASES["listing"]), ctx.conv.encode_labels(labels), {"labels": labels}


def _polygon(ctx: _Ctx) -> Iterable[tuple[str, str, dict[str, Any]]]:
    rec, conv = ctx.record, ctx.conv
    for obj in rec.objects:
        polygon = mask_to_polygon(decode_rle(obj.rle), max_points=ctx.polygon_points)
        if len(polygon) < 6:
            continue
        # A label seen more than once in the frame needs its region to say which object is meant.
        where = "" if len(_of_label(rec, obj.label)) == 1 else " at " + conv.encode_region(
            list(obj.bbox), rec.width, rec.height)
        prompt = ctx.rng.choice(PHRASES["polygon"]).format(label=obj.label, where=where)
        yield prompt, conv.encode_polygon(obj.label, polygon, rec.width, rec.height), {
            "label": obj.label, "box": list(obj.bbox), "polygon": polygon, "rle": obj.rle, "object_id": obj.object_id}


def _negative(ctx: _Ctx) -> Iterable[tuple[str, str, dict[str, Any]]]:
    present = set(ctx.record.labels)
    absent = [label for label in ctx.label_set if label not in present]
    if absent:
        label = ctx.rng.choice(absent)
        yield ctx.rng.choice(PHRASES["negative"]).format(label=label), ctx.conv.none_answer, {
            "label": label, "boxes": [], "labels": []}


_BUILDERS: dict[str, Callable[[_Ctx], Iterable[tuple[str, str, dict[str, Any]]]]] = {
    "grounding": _grounding, "referring": _referring, "counting": _counting,
    "listing": _listing, "polygon": _polygon, "negative": _negative,
}


def build_examples(records: Iterable[FrameRecord], tasks: list[str], convention: str, seed: int = 0,
                   label_set: list[str] | None = None, polygon_points: int = POLYGON_POINTS,
                   max_pixels: int | None = None, clips: ClipOptions | None = None,
                   fps: dict[str, float] | None = None) -> list[Example]:
    """Instruction-answer pairs for every record and task, answers written in `convention` (a pixel-grid convention
    such as qwen2_5_vl on the grid of the Qwen image cap `max_pixels`; None: registry.QWEN_MAX_PIXELS); video tasks
    take clips of `clips.frames` records of one video (`fps`: video id -> fps, for the default stride)."""
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise UserError(f"unknown task(s) {', '.join(unknown)} (choose from {', '.join(TASKS)})")
    records = list(records)
    conv = get_convention(convention)
    if max_pixels and getattr(conv, "max_pixels", max_pixels) != max_pixels:
        conv = get_convention(convention, max_pixels=max_pixels)
    labels = sorted(set(label_set) if label_set is not None else {lab for rec in records for lab in rec.labels})
    examples: list[Example] = []
    for task in [t for t in tasks if t in VIDEO_TASKS]:
        examples += _clip_examples(records, task, conv, seed, clips or ClipOptions(), fps)
    for record in records:
        for task in [t for t in tasks if t not in VIDEO_TASKS]:
            rng = random.Random(f"{seed}:{record.id}:{task}")  # str seeds hash the same in every process
            ctx = _Ctx(record, conv, rng, labels, polygon_points)
            for index, (prompt, answer, truth) in enumerate(_BUILDERS[task](ctx)):
                examples.append(Example(f"{record.id}-{task}-{index}", record.id, task, record.image, prompt,
                                        answer, record.width, record.height, truth))
    return examples


def _clip_examples(records: list[FrameRecord], task: str, conv: Convention, seed: int, options: ClipOptions,
                   fps: dict[str, float] | None) -> list[Example]:
    out = []
    for clip in build_clips(records, options, fps):
        first = clip.records[0]
        rng = random.Random(f"{seed}:{clip.id}:{task}")
        for index, made in enumerate(CLIP_BUILDERS[task](clip, conv, rng)):
            out.append(Example(f"{clip.id}-{task}-{index}", first.id, task, first.image, made.prompt, made.answer,
                               first.width, first.height, made.truth, [r.image for r in clip.records]))
    return out


def label_set(meta: dict[str, Any]) -> list[str] | None:
    """A dataset's label names (sorted, from dataset.json), which negative and listing examples draw from."""
    return sorted(meta["labels"]) if isinstance(meta.get("labels"), dict | list) else None


def pick_subset(examples: list[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """A fixed, seeded pick of `limit` examples taken round-robin over the tasks (each task is represented as far
    as the limit allows), returned in their original order."""
    if not limit or limit >= len(examples):
        return list(examples)
    if limit < 1:
        raise UserError(f"--limit must be at least 1 (got {limit})")
    rng = random.Random(seed)
    queues: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        queues.setdefault(example.task, []).append(index)
    for queue in queues.values():
        rng.shuffle(queue)
    chosen: list[int] = []
    while len(chosen) < limit:
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop())
    return [examples[i] for i in sorted(chosen)]
