"""Video-native tasks from SAM 2 masklets: clips of K frames of one video, and track / visibility / count_unique.

A clip is K annotated frames of one video in time order, about `stride` source frames apart (default: half a second
at the video's fps). Clips are cut from the records they are given, so the clips of a split only hold that split's
frames: a clip never straddles two splits. An object absent from an annotated frame is invisible there (SA-V's
all-zero masks and the demo export's missing objects both end up so in records.jsonl).

- `track`: the label and its box in frame 1; the answer is its box in each later frame, or the family's "none".
- `visibility`: the frames (1..K) in which the label is visible.
- `count_unique`: how many distinct objects (SAM 2 object ids) of the label appear across the K frames.

Answers of several frames are one line per frame, `Frame N: <answer in the family's convention>`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .coords import Convention, ParseError
from .errors import UserError
from .records import FrameRecord

VIDEO_TASKS = ("track", "visibility", "count_unique")
DEFAULT_CLIP_FRAMES = 4
DEFAULT_CLIP_SECONDS = 0.5  # the default stride: about half a second at the source fps
MAX_CLIP_FRAMES = 16
# Families whose processors take one image per example: video tasks are refused at config validation.
SINGLE_IMAGE_FAMILIES = ("paligemma", "florence2", "cogvlm")

PHRASES: dict[str, list[str]] = {
    "track": [
        "These {k} frames are in time order. The {label} is at {region} in frame 1. Where is it in frames 2-{k}?",
        "Track the {label} that is at {region} in frame 1 through frames 2-{k}.",
        "In frame 1 the {label} is at {region}. Give its box in each later frame ({k} frames).",
    ],
    "visibility": [
        "In which of these {k} frames is a {label} visible? Answer with frame numbers.",
        "These {k} frames are in time order. List the frames where a {label} can be seen.",
        "Which frames (1-{k}) show a {label}?",
    ],
    "count_unique": [
        "How many different {label} objects appear across these {k} frames?",
        "Count the distinct {label} objects seen in these {k} frames.",
        "Across the {k} frames, how many individual {label} objects are there?",
    ],
}


@dataclass(frozen=True)
class ClipOptions:
    """K frames per clip; `stride` in source video frames (None: half a second at each video's fps)."""

    frames: int = DEFAULT_CLIP_FRAMES
    stride: int | None = None

    def stride_for(self, fps: float | None) -> int:
        if self.stride:
            return self.stride
        return max(1, round((fps or 24.0) * DEFAULT_CLIP_SECONDS))

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "stride": self.stride}


def check_clip_options(frames: Any, stride: Any) -> ClipOptions:
    """ClipOptions from user values; UserError for a bad --clip-frames / --clip-stride."""
    if not isinstance(frames, int) or isinstance(frames, bool) or not 2 <= frames <= MAX_CLIP_FRAMES:
        raise UserError(f"--clip-frames must be an integer from 2 to {MAX_CLIP_FRAMES} (got {frames})")
    if stride is not None and (not isinstance(stride, int) or isinstance(stride, bool) or stride < 1):
        raise UserError(f"--clip-stride must be a positive number of video frames (got {stride})")
    return ClipOptions(frames, stride)


def clip_options(meta: dict[str, Any] | None) -> ClipOptions:
    """The clip options a dataset was converted with (dataset.json "clips"), else the defaults."""
    clips = (meta or {}).get("clips") or {}
    return ClipOptions(int(clips.get("frames") or DEFAULT_CLIP_FRAMES), clips.get("stride") or None)


def video_fps(meta: dict[str, Any] | None) -> dict[str, float]:
    """video id -> fps from dataset.json "videos" (where known)."""
    out = {}
    for video in (meta or {}).get("videos") or []:
        if isinstance(video, dict) and isinstance(video.get("fps"), int | float) and video["fps"] > 0:
            out[str(video["video_id"])] = float(video["fps"])
    return out


def config_checks(tasks: list[str] | None, meta: dict[str, Any] | None, spec: Any) -> tuple[list[str], int]:
    """(errors, images per example) of a training config (`meta`: its dataset's dataset.json, {} without one): video
    tasks need a family that takes several images."""
    meta = meta or {}
    chosen = list(tasks or meta.get("tasks") or [])
    video = [t for t in chosen if t in VIDEO_TASKS]
    if not video:
        return [], 1
    errors = []
    if spec.family in SINGLE_IMAGE_FAMILIES:
        errors.append("data.tasks: " + _one_image(video, clip_options(meta).frames, spec.key, spec.family, "model"))
    return errors, clip_options(meta).frames


def _one_image(video: list[str], frames: int, name: str, family: str, what: str) -> str:
    who = name if name == family else f"{name} ({family})"
    return (f"{', '.join(video)} show the model {frames} frames per example, but {who} takes one image "
            f"per example; choose a {what} that takes several (SmolVLM/Idefics3, Qwen2/2.5/3-VL, LLaVA-OneVision) "
            "or drop the video tasks")


def check_family_takes_clips(tasks: Iterable[str], family: str, frames: int) -> None:
    """UserError at convert when video tasks are written for a single-image family (the rule of `config_checks`)."""
    from .registry import family_name

    video = [t for t in tasks if t in VIDEO_TASKS]
    name = family_name(family) if video else None
    if name in SINGLE_IMAGE_FAMILIES:
        raise UserError("tasks " + _one_image(video, frames, family, str(name), "model family"))


def uses_clips(tasks: Iterable[str]) -> bool:
    return any(task in VIDEO_TASKS for task in tasks)


def images_per_example(tasks: Iterable[str], meta: dict[str, Any] | None) -> int:
    """The most images one example of these tasks holds (the image-token budget counts every one)."""
    return clip_options(meta).frames if uses_clips(tasks) else 1


@dataclass
class Clip:
    """K records of one video in time order."""

    video_id: str
    records: list[FrameRecord]

    @property
    def id(self) -> str:
        return f"{self.records[0].id}+{len(self.records)}"

    @property
    def frame_indices(self) -> list[int]:
        return [r.frame_index for r in self.records]


def build_clips(records: Iterable[FrameRecord], options: ClipOptions, fps: dict[str, float] | None = None,
                ) -> list[Clip]:
    """Clips of `options.frames` records per video: each frame the first annotated one at least `stride` frames
    after the previous (never more than two strides: a hole in the annotations ends the clip); clips start one
    stride apart."""
    by_video: dict[str, list[FrameRecord]] = {}
    for record in records:
        by_video.setdefault(record.video_id, []).append(record)
    clips: list[Clip] = []
    for video_id, frames in by_video.items():
        frames.sort(key=lambda r: r.frame_index)
        stride = options.stride_for((fps or {}).get(video_id))
        last_start: int | None = None
        for i, first in enumerate(frames):
            if last_start is not None and first.frame_index < last_start + stride:
                continue
            chain = _chain(frames, i, stride, options.frames)
            if chain:
                clips.append(Clip(video_id, chain))
                last_start = first.frame_index
    return clips


def _chain(frames: list[FrameRecord], start: int, stride: int, k: int) -> list[FrameRecord] | None:
    chain, j = [frames[start]], start
    while len(chain) < k:
        j += 1
        while j < len(frames) and frames[j].frame_index < chain[-1].frame_index + stride:
            j += 1
        if j >= len(frames) or frames[j].frame_index > chain[-1].frame_index + 2 * stride:
            return None
        chain.append(frames[j])
    return chain


def clip_groups(records: list[FrameRecord], meta: dict[str, Any] | None, groups: list[list[int]],
                ) -> list[list[int]]:
    """`groups` (record indices that must share a split) joined with every clip the dataset's video tasks cut from
    all records, so that no clip straddles two splits; `groups` unchanged without video tasks."""
    if not uses_clips((meta or {}).get("tasks") or []):
        return groups
    index = {id(r): i for i, r in enumerate(records)}
    parent = list(range(len(records)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    members = [*groups, *([index[id(r)] for r in clip.records]
                          for clip in build_clips(records, clip_options(meta), video_fps(meta)))]
    for group in members:
        for i in group[1:]:
            parent[find(i)] = find(group[0])
    joined: dict[int, list[int]] = {}
    for i in range(len(records)):
        joined.setdefault(find(i), []).append(i)
    return sorted(g for g in joined.values() if len(g) > 1)


# -- examples -----------------------------------------------------------------------------------------------------
@dataclass
class ClipExample:
    """What tasks.build_examples turns into an Example: prompt, answer, truth for one clip and task."""

    prompt: str
    answer: str
    truth: dict[str, Any] = field(default_factory=dict)


def frame_lines(answers: list[str], first: int = 2) -> str:
    """`Frame N: answer` lines, N counting from `first`."""
    return "\n".join(f"Frame {first + n}: {answer}" for n, answer in enumerate(answers))


_FRAME = re.compile(r"(?i)\bframe\s*(\d+)\s*:")


def parse_frame_lines(text: str) -> dict[int, str]:
    """`Frame N: ...` sections of an answer -> {N: text}; ParseError when there is none."""
    if not isinstance(text, str):
        raise ParseError("the answer is not text")
    marks = list(_FRAME.finditer(text))
    if not marks:
        raise ParseError(f"no 'Frame N:' lines in the answer: {text.strip()[:60]!r}")
    out: dict[int, str] = {}
    for n, mark in enumerate(marks):
        end = marks[n + 1].start() if n + 1 < len(marks) else len(text)
        out.setdefault(int(mark.group(1)), text[mark.end():end].strip())
    return out


def encode_frames(frames: list[int]) -> str:
    """Visibility answer: frame numbers joined by ', ' ('none' when the label is never visible)."""
    return ", ".join(str(f) for f in frames) if frames else "none"


def parse_frames(text: str, k: int) -> list[int]:
    """Visibility answer -> sorted frame numbers within 1..k; 'none' -> []."""
    if not isinstance(text, str):
        raise ParseError("the answer is not text")
    if re.fullmatch(r"\s*(none|no frames?|never)\.?\s*", text, re.I):
        return []
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    if not numbers:
        raise ParseError(f"no frame numbers in the answer: {text.strip()[:60]!r}")
    return sorted({n for n in numbers if 1 <= n <= k})


def _track(clip: Clip, conv: Convention, rng: random.Random) -> Iterator[ClipExample]:
    first, k = clip.records[0], len(clip.records)
    for obj in first.objects:
        same = [o for o in first.objects if o.label == obj.label]
        region = conv.encode_region(list(obj.bbox), first.width, first.height)
        boxes: list[list[int] | None] = []
        answers = []
        for rec in clip.records[1:]:
            seen = next((o for o in rec.objects if o.object_id == obj.object_id), None)
            boxes.append(list(seen.bbox) if seen else None)
            answers.append(conv.encode_boxes([(obj.label, seen.bbox)], rec.width, rec.height) if seen
                           else conv.none_answer)
        prompt = rng.choice(PHRASES["track"]).format(k=k, label=obj.label, region=region)
        yield ClipExample(prompt, frame_lines(answers), {
            "label": obj.label, "object_id": obj.object_id, "first_box": list(obj.bbox), "boxes": boxes,
            "frames": clip.frame_indices, "ambiguous": len(same) > 1})


def _labels(clip: Clip) -> list[str]:
    return sorted({obj.label for rec in clip.records for obj in rec.objects})


def _visibility(clip: Clip, conv: Convention, rng: random.Random) -> Iterator[ClipExample]:
    k = len(clip.records)
    for label in _labels(clip):
        frames = [n + 1 for n, rec in enumerate(clip.records) if label in rec.labels]
        yield ClipExample(rng.choice(PHRASES["visibility"]).format(k=k, label=label), encode_frames(frames),
                          {"label": label, "visible": frames, "k": k})


def _count_unique(clip: Clip, conv: Convention, rng: random.Random) -> Iterator[ClipExample]:
    k = len(clip.records)
    for label in _labels(clip):
        ids = sorted({obj.object_id for rec in clip.records for obj in rec.objects if obj.label == label})
        yield ClipExample(rng.choice(PHRASES["count_unique"]).format(k=k, label=label), conv.encode_count(len(ids)),
                          {"label": label, "count": len(ids), "object_ids": ids})


BUILDERS = {"track": _track, "visibility": _visibility, "count_unique": _count_unique}


# -- baselines ----------------------------------------------------------------------------------------------------
def unique_count_modes(records: Iterable[FrameRecord], options: ClipOptions, fps: dict[str, float] | None = None,
                       ) -> dict[str, int]:
    """The training mode of count_unique per label (and under '' over every label): the honest baseline."""
    per_label: dict[str, Counter[int]] = {}
    overall: Counter[int] = Counter()
    for clip in build_clips(records, options, fps):
        for label in _labels(clip):
            n = len({obj.object_id for rec in clip.records for obj in rec.objects if obj.label == label})
            per_label.setdefault(label, Counter())[n] += 1
            overall[n] += 1
    modes = {label: min(c, key=lambda v: (-c[v], v)) for label, c in per_label.items()}
    if overall:
        modes[""] = min(overall, key=lambda v: (-overall[v], v))
    return modes


def baseline_answer(task: str, truth: dict[str, Any], conv: Convention, width: int, height: int,
                    modes: dict[str, int] | None = None) -> str:
    """The honest baseline per video task: copy the given box (track), always visible (visibility), the training
    mode (count_unique)."""
    if task == "track":
        box = truth["first_box"]
        return frame_lines([conv.encode_boxes([(truth["label"], box)], width, height)] * len(truth["boxes"]))
    if task == "visibility":
        return encode_frames(list(range(1, int(truth["k"]) + 1)))
    modes = modes or {}
    return conv.encode_count(modes.get(truth["label"], modes.get("", 1)))


# -- scoring ------------------------------------------------------------------------------------------------------
def score(task: str, truth: dict[str, Any], answer: str, conv: Convention, width: int, height: int,
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parsed, scores) of one video-task answer; ParseError when it cannot be read at all."""
    if task == "track":
        return _score_track(truth, answer, conv, width, height)
    if task == "visibility":
        pred = parse_frames(answer, int(truth["k"]))
        truth_set, pred_set = set(truth["visible"]), set(pred)
        f1 = 1.0 if not truth_set and not pred_set else 2 * len(truth_set & pred_set) / (len(truth_set) + len(pred_set))
        return {"frames": pred}, {"score": f1, "visibility_f1": f1}
    count = conv.parse_count(answer)
    return {"count": count}, {"score": float(count == truth["count"]), "unique_error": abs(count - truth["count"])}


def _score_track(truth: dict[str, Any], answer: str, conv: Convention, width: int, height: int,
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    from .masks import box_iou

    lines = parse_frame_lines(answer)
    pred: list[list[float] | None] = []
    for n in range(len(truth["boxes"])):
        text = lines.get(n + 2)
        try:
            items = conv.parse_boxes(text, width, height) if text is not None else []
        except ParseError:
            items = []
        pred.append(items[0][1] if items else None)
    return {"boxes": pred}, track_scores(truth["boxes"], pred, box_iou)


def track_scores(truth: list[Any], pred: list[Any], iou: Any) -> dict[str, Any]:
    """Per clip: IoU on each later frame where the object is visible, lost frames (no box, or no overlap), and
    false boxes on frames where it is invisible."""
    ious = [iou(p, t) if p is not None else 0.0 for t, p in zip(truth, pred, strict=True) if t is not None]
    lost = sum(1 for t, p in zip(truth, pred, strict=True) if t is not None and (p is None or iou(p, t) == 0.0))
    ghosts = sum(1 for t, p in zip(truth, pred, strict=True) if t is None and p is not None)
    mean = sum(ious) / len(ious) if ious else None
    return {"iou": mean, "score": mean if mean is not None else float(ghosts == 0), "track_ious": ious,
            "track_lost": lost, "track_visible": len(ious), "track_ghosts": ghosts,
            "track_hidden": sum(t is None for t in truth)}


def failure(task: str, truth: dict[str, Any]) -> dict[str, Any]:
    """What an unreadable answer scores: nothing found."""
    if task == "track":
        visible = sum(t is not None for t in truth["boxes"])
        return {"iou": 0.0 if visible else None, "score": 0.0, "track_ious": [0.0] * visible, "track_lost": visible,
                "track_visible": visible, "track_ghosts": 0, "track_hidden": len(truth["boxes"]) - visible}
    if task == "visibility":
        return {"score": 0.0, "visibility_f1": 0.0}
    return {"score": 0.0, "unique_error": int(truth["count"])}  # as if it answered 0


def metrics(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Video-task metrics over scored rows: track mIoU over later visible frames and lost-track rate,
    visibility F1, count_unique accuracy and MAE (None where no row has the task)."""
    track = [r for r in rows if r["task"] == "track"]
    ious = [v for r in track for v in r.get("track_ious") or []]
    visible = sum(r.get("track_visible") or 0 for r in track)
    vis = [r["visibility_f1"] for r in rows if r["task"] == "visibility" and r.get("visibility_f1") is not None]
    unique = [r for r in rows if r["task"] == "count_unique"]
    errors = [r["unique_error"] for r in unique if r.get("unique_error") is not None]
    return {
        "track_miou": sum(ious) / len(ious) if ious else None,
        "track_lost_rate": sum(r.get("track_lost") or 0 for r in track) / visible if visible else None,
        "visibility_f1": sum(vis) / len(vis) if vis else None,
        "unique_accuracy": sum(r["score"] for r in unique) / len(unique) if unique else None,
        "unique_mae": sum(errors) / len(errors) if errors else None,
    }
