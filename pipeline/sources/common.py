"""Shared pieces of the source readers: options, the issue log, the Source base class, RLE checks and mask->object."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..records import ObjectAnn

# Rule ids of per-record issues (dataset.json["issues"]); the quality report turns them into findings.
RULES = {
    "invalid_rle": "a mask (RLE, run string, polygon) cannot be decoded; the object is skipped",
    "mask_size_mismatch": "a mask's size differs from the frame: resized when the aspect matches, else skipped",
    "bbox_out_of_bounds": "a stored box lies outside the frame; the box is recomputed from the mask",
    "bbox_mismatch": "a stored box disagrees with its mask; the box is recomputed from the mask",
    "empty_mask": "an object's mask has no pixel; the object is skipped",
    "missing_annotations": "a frame listed by the export has no annotation entry (or an object lacks its mask)",
    "missing_frame": "an annotated frame has no clean image (beyond the video, file missing or unreadable)",
    "invalid_record": "an annotation entry is malformed (wrong type, missing key); it is skipped",
    "overlay_frames": "frames are the export's overlay renders (mask and box drawn in), not clean frames",
    "fps_mismatch": "the frame rate claimed by the export differs from the video's",
}
SEVERITIES = ("error", "warning", "info")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_JSON_BYTES = 512 * 2**20  # one JSON input (parsed whole, several times its size in memory)


@dataclass
class ReadOptions:
    """What the user passed besides the inputs (shared by every reader)."""

    videos: tuple[Path, ...] = ()
    images: Path | None = None
    labels: dict[int, str] | None = None
    allow_overlay_frames: bool = False
    include_auto: bool = False
    single_input: bool = True  # a lone --video then applies whatever its name

    def find_video(self, names: list[str], beside: list[Path], dirs: bool = False) -> Path | None:
        """The given --video matching one of `names` (or the only one), else a file/folder of that name beside."""
        stems = {Path(n).stem for n in names if n}
        for video in self.videos:
            if video.name in names or video.stem in stems:
                return video
        if len(self.videos) == 1 and self.single_input:
            return self.videos[0]
        for folder in beside:
            for name in names:
                if not name or Path(name).name != name or name in (".", ".."):
                    continue  # a bare file name only: an export never sends the lookup elsewhere
                candidate = folder / name
                if candidate.is_file() or (dirs and candidate.is_dir()):
                    return candidate
        return None


@dataclass
class IssueLog:
    """Per-record problems (never fatal) and source-level warnings, collected over a whole conversion."""

    issues: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, rule: str, severity: str, source: str, message: str, *, video_id: str | None = None,
            frame_index: int | None = None, object_id: int | None = None) -> None:
        """Record one issue dict in the shape dataset.json["issues"] uses."""
        assert rule in RULES and severity in SEVERITIES, (rule, severity)
        self.issues.append({"rule": rule, "severity": severity, "source": source, "video_id": video_id,
                            "frame_index": frame_index, "object_id": object_id, "message": message})

    def count(self, source: str, severity: str | None = None) -> int:
        return sum(1 for i in self.issues if i["source"] == source and severity in (None, i["severity"]))

    def first(self, source: str, severity: str = "error") -> dict[str, Any] | None:
        return next((i for i in self.issues if i["source"] == source and i["severity"] == severity), None)


@dataclass
class SourceFrame:
    """One clean frame with its visible objects, as a reader hands it to the writer."""

    video_id: str
    frame_index: int
    width: int
    height: int
    image: Any  # PIL image (possibly lazily opened from image_path)
    objects: list[ObjectAnn]
    image_path: Path | None = None  # set when the frame is a file on disk (JPEGs are copied as they are)


class Source:
    """Base of every reader: `plan()` lists annotated frames per video, `frames()` yields them in index order."""

    format = ""

    def __init__(self, path: Path, options: ReadOptions, log: IssueLog) -> None:
        self.path = Path(path)
        self.options = options
        self.log = log
        self.video: Path | None = None
        self.fps_claimed: float | None = None
        self.fps_video: float | None = None
        self.overlay_frames = False
        self.corrections: list[str] = []
        self.fingerprint_path: Path = self.path

    def plan(self) -> dict[str, list[int]]:
        """Annotated frame indices per video id, sorted."""
        raise NotImplementedError

    def frames(self, video_id: str, indices: list[int]) -> Iterator[SourceFrame]:
        """Clean frames with their objects for the chosen indices of one video, in index order."""
        raise NotImplementedError

    def video_meta(self, video_id: str) -> dict[str, Any]:
        """What is known of one video: fps, width, height, frame_count (None when unknown)."""
        return {"fps": self.fps_video or self.fps_claimed}

    def finish(self) -> None:
        """Called after all frames were read: log aggregated issues."""

    def info(self) -> dict[str, Any]:
        """The dataset.json `sources` entry."""
        return {"path": str(self.path), "format": self.format, "fingerprint": fingerprint(self.fingerprint_path),
                "video": str(self.video) if self.video else None, "fps_claimed": self.fps_claimed,
                "fps_video": self.fps_video, "overlay_frames": self.overlay_frames, "corrections": self.corrections}

    def issue(self, rule: str, severity: str, message: str, **where: Any) -> None:
        self.log.add(rule, severity, str(self.path), message, **where)

    def label_for(self, key: int, default: str | None = None) -> str:
        """--labels first, then the label the export carries, then object_<id>."""
        labels = self.options.labels or {}
        if key in labels:
            return labels[key]
        return default if default else f"object_{key}"


def fingerprint(path: Path) -> str | None:
    """sha256 of a file (or of the sorted file list and sizes of a folder)."""
    import hashlib

    digest = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    elif path.is_dir():
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{item.relative_to(path)}:{item.stat().st_size}\n".encode())
    else:
        return None
    return "sha256:" + digest.hexdigest()


def check_json_size(path: Path, shown: str | Path | None = None, what: str = "JSON file") -> None:
    """UserError when a JSON file is over MAX_JSON_BYTES: it is parsed whole, so it must fit in memory many times."""
    size = Path(path).stat().st_size
    if size > MAX_JSON_BYTES:
        raise UserError(f"{what} is {size / 2**20:.0f} MiB, over the {MAX_JSON_BYTES // 2**20} MiB limit for one "
                        "JSON file (split the export into several files)", shown or path)


def load_json(path: Path, shown: str | Path | None = None, what: str = "file") -> Any:
    """Parse a JSON file; bad JSON is a UserError naming the file and the position."""
    shown = shown or path
    try:
        check_json_size(path, shown, what)
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})", shown) from None
    except UnicodeDecodeError:
        raise UserError(f"{what} is not valid JSON (not UTF-8 text)", shown) from None
    except OSError as exc:
        raise UserError(f"cannot read {what} ({exc.strerror or exc})", shown) from None


def require_keys(data: Any, keys: tuple[str, ...], shown: str | Path, what: str) -> dict[str, Any]:
    """A dict holding `keys`, else a UserError saying what the file looks like and what was expected."""
    if not isinstance(data, dict):
        raise UserError(f"{what} must be a JSON object, got {type(data).__name__}", shown)
    missing = [k for k in keys if k not in data]
    if missing:
        raise UserError(f"{what} has keys {sorted(data)[:12]}; missing {missing}", shown)
    return data


def safe_id(text: str) -> str:
    """A video id usable as a folder name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return cleaned or "video"


def as_int(value: Any) -> int | None:
    """An int from an int or an integral float/str, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def decode_counts(counts: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string, or None when the string is malformed."""
    runs: list[int] = []
    pos, n = 0, len(counts)
    while pos < n:
        value = shift = 0
        more = True
        while more:
            if pos >= n:
                return None
            code = ord(counts[pos]) - 48
            if code < 0 or code > 63:
                return None
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            pos += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def check_rle(rle: Any) -> str | None:
    """Why a COCO RLE dict is unusable (None when it is fine); guards pycocotools, which does not check."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        return "not an RLE object with 'size' and 'counts'"
    size = rle["size"]
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(as_int(v) is not None for v in size)):
        return f"RLE size {size!r} is not [height, width]"
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        return f"RLE size {size!r} is empty"
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        runs = decode_counts(counts)
        if runs is None:
            return "RLE counts string is malformed"
    elif isinstance(counts, list) and all(as_int(v) is not None for v in counts):
        runs = [int(v) for v in counts]
    else:
        return "RLE counts must be a string or a list of integers"
    if any(r < 0 for r in runs):
        return "RLE has a negative run"
    if sum(runs) != h * w:
        return f"RLE runs cover {sum(runs)} pixels, size {h}x{w} needs {h * w}"
    return None


def coco_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """A checked RLE dict -> pycocotools' compressed form (bytes counts)."""
    from pycocotools import mask as mask_utils

    h, w = int(rle["size"][0]), int(rle["size"][1])
    counts = rle["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)
    return {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def same_aspect(size_a: tuple[int, int], size_b: tuple[int, int], tolerance: float = 0.01) -> bool:
    """Whether two (h, w) sizes have the same aspect ratio (one is a scaled copy of the other)."""
    ratio_a, ratio_b = size_a[0] / size_a[1], size_b[0] / size_b[1]
    return abs(ratio_a - ratio_b) <= tolerance * ratio_b


def object_from_mask(mask: np.ndarray, object_id: int, label: str) -> ObjectAnn | None:
    """A full-resolution binary mask -> ObjectAnn (box and area from the mask); None when empty."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return _object(rle, object_id, label)


def _object(rle: dict[str, Any], object_id: int, label: str) -> ObjectAnn | None:
    from pycocotools import mask as mask_utils

    area = int(mask_utils.area(rle))
    if area == 0:
        return None
    x, y, w, h = (int(round(v)) for v in mask_utils.toBbox(rle))
    counts = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return ObjectAnn(object_id=int(object_id), label=label, bbox=[x, y, x + w, y + h], area=area,
                     rle={"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts})


def object_from_rle(source: Source, rle: Any, frame: tuple[int, int], object_id: int, label: str, *,
                    video_id: str, frame_index: int, empty: str | None = "warning") -> ObjectAnn | None:
    """A COCO RLE dict (checked first) -> ObjectAnn at the frame's (h, w); problems are logged as issues."""
    problem = check_rle(rle)
    if problem:
        source.issue("invalid_rle", "error", f"object {object_id}: {problem}; object skipped",
                     video_id=video_id, frame_index=frame_index, object_id=object_id)
        return None
    return object_from_coco(source, coco_rle(rle), frame, object_id, label, video_id=video_id,
                            frame_index=frame_index, empty=empty)


def object_from_coco(source: Source, coco: dict[str, Any], frame: tuple[int, int], object_id: int, label: str, *,
                     video_id: str, frame_index: int, empty: str | None = "warning") -> ObjectAnn | None:
    """A pycocotools RLE -> ObjectAnn at the frame's (h, w): resized when its size differs (same aspect only)."""
    where = {"video_id": video_id, "frame_index": frame_index, "object_id": object_id}
    size = (int(coco["size"][0]), int(coco["size"][1]))
    if size != tuple(frame):
        fitted = fit_rle(source, coco, size, frame, object_id, where)
        if fitted is None:
            return None
        coco = fitted
    obj = _object(coco, object_id, label)
    if obj is None and empty:
        source.issue("empty_mask", empty, f"object {object_id}: mask has no pixel; object skipped", **where)
    return obj


def fit_rle(source: Source, coco: dict[str, Any], size: tuple[int, int], frame: tuple[int, int],
            object_id: int, where: dict[str, Any]) -> dict[str, Any] | None:
    """Resize a mask of another size to the frame when the aspect ratio matches; None (logged) otherwise."""
    from pycocotools import mask as mask_utils

    from ..masks import resize_mask

    text = f"object {object_id}: mask is {size[1]}x{size[0]} but the frame is {frame[1]}x{frame[0]}"
    if not same_aspect(size, frame):
        source.issue("mask_size_mismatch", "error", f"{text} (different aspect ratio); object skipped", **where)
        return None
    source.issue("mask_size_mismatch", "warning", f"{text}; mask resized to the frame", **where)
    mask = resize_mask(mask_utils.decode(coco), frame[0], frame[1])
    return mask_utils.encode(np.asfortranarray(mask))


def stored_box_check(source: Source, box_xywh: Any, obj: ObjectAnn, frame: tuple[int, int],
                     where: dict[str, Any]) -> None:
    """Compare a stored [x, y, w, h] box with the box recomputed from the mask (COCO-style exports)."""
    from ..masks import box_iou

    if not (isinstance(box_xywh, list | tuple) and len(box_xywh) == 4):
        return
    try:
        x, y, w, h = (float(v) for v in box_xywh)
    except (TypeError, ValueError):
        return
    stored = [x, y, x + w, y + h]
    height, width = frame
    if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
        source.issue("bbox_out_of_bounds", "warning", f"object {obj.object_id}: stored box {box_xywh} lies outside "
                     f"the {width}x{height} frame; box recomputed from the mask", **where)
    elif box_iou(stored, obj.bbox) < 0.9 and max(abs(a - b) for a, b in zip(stored, obj.bbox, strict=True)) > 2:
        source.issue("bbox_mismatch", "warning", f"object {obj.object_id}: stored box {box_xywh} disagrees with "
                     f"the mask's box {obj.bbox} (x1,y1,x2,y2); box recomputed from the mask", **where)
