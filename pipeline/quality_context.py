"""What the quality rules share: the loaded dataset, per-object mask checks, image hashes and object tracks.

Loading is lenient on purpose: a record that does not parse becomes an `invalid_record` finding instead of an
exception, and every derived fact is computed once, on first use, whatever the number of rules that need it.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import open_dataset
from .masks import decode_rle, rle_bbox, rle_iou
from .records import FrameRecord, ObjectAnn, parse_record  # noqa: F401  (parse_record: the rules' callers)


@dataclass
class Finding:
    """One problem: which rule, how bad, what, where (record ids) and how to fix it."""

    rule: str
    severity: str
    message: str
    records: list[str]
    recommendation: str
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ObjInfo:
    """The mask check of one object: status ok | missing | invalid | size | empty."""

    status: str
    area: int = 0
    box: list[int] | None = None
    problem: str = ""


@dataclass
class ImageInfo:
    """One frame's image: a problem ('' when readable), its size, byte hash and 64-bit perceptual hash."""

    problem: str = ""
    size: tuple[int, int] | None = None
    sha1: str = ""
    phash: int | None = None


@dataclass
class Pair:
    """Two consecutive annotated frames of one object: record indices a < b in time, object indices oa / ob."""

    a: int
    oa: int
    b: int
    ob: int
    gap: int
    iou: float
    area_ratio: float


def load_dataset(dataset_dir: str | Path) -> Context:
    """Open a dataset (UserError when the folder is not one); unreadable record lines are kept for the report."""
    dataset = open_dataset(dataset_dir)
    records, bad = dataset.scan()
    return Context(dataset.root, records, dataset.meta, bad)


class Context:
    """A loaded dataset plus the facts rules share, each computed once on first use."""

    def __init__(self, root: Path, records: list[FrameRecord], meta: dict[str, Any],
                 bad_lines: list[tuple[int, str]]) -> None:
        self.dir, self.records, self.meta, self.bad_lines = root, records, meta, bad_lines
        self.issues = [i for i in meta.get("issues") or [] if isinstance(i, dict)]
        self.objects = {(ri, oi): check_object(rec, obj) for ri, rec in enumerate(records)
                        for oi, obj in enumerate(rec.objects)}
        self._by_frame = {(r.video_id, r.frame_index): r.id for r in records}

    def rid(self, ri: int) -> str:
        return self.records[ri].id

    def ok_objects(self, ri: int | None = None) -> Iterator[tuple[int, int, FrameRecord, ObjectAnn, ObjInfo]]:
        """(record index, object index, record, object, check) of every object whose mask is usable."""
        for index in range(len(self.records)) if ri is None else [ri]:
            rec = self.records[index]
            for oi, obj in enumerate(rec.objects):
                if self.objects[index, oi].status == "ok":
                    yield index, oi, rec, obj, self.objects[index, oi]

    def image_path(self, ri: int) -> Path:
        return self.dir / self.records[ri].image

    @cached_property
    def label_counts(self) -> Counter[str]:
        return Counter(label for rec in self.records for label in rec.labels)

    @cached_property
    def images(self) -> list[ImageInfo]:
        return image_infos(self.dir, self.records)

    @cached_property
    def tracks(self) -> dict[tuple[str, int], list[tuple[int, int, int]]]:
        """(video_id, object_id) -> [(frame_index, record index, object index)] in time order, usable masks only."""
        tracks: dict[tuple[str, int], list[tuple[int, int, int]]] = defaultdict(list)
        for ri, oi, rec, obj, _ in self.ok_objects():
            tracks[rec.video_id, obj.object_id].append((rec.frame_index, ri, oi))
        return {key: sorted(tracks[key]) for key in sorted(tracks)}

    @cached_property
    def pairs(self) -> dict[tuple[str, int], list[Pair]]:
        """Consecutive annotated frames of each object with their mask IoU and area ratio."""
        out = {}
        for key, items in self.tracks.items():
            pairs = []
            for (fa, ra, oa), (fb, rb, ob) in zip(items, items[1:], strict=False):
                if fb == fa:
                    continue
                area_a, area_b = self.objects[ra, oa].area, self.objects[rb, ob].area
                iou = rle_iou(self.records[ra].objects[oa].rle, self.records[rb].objects[ob].rle)
                pairs.append(Pair(ra, oa, rb, ob, fb - fa, iou, max(area_a, area_b) / min(area_a, area_b)))
            out[key] = pairs
        return out

    def crowded(self, ri: int, oi: int) -> bool:
        """The object touches the frame border or another object's box: its visible mask may change legitimately."""
        rec, box = self.records[ri], self.objects[ri, oi].box or [0, 0, 0, 0]
        if box[0] <= 0 or box[1] <= 0 or box[2] >= rec.width or box[3] >= rec.height:
            return True
        for _, other, _, _, info in self.ok_objects(ri):
            b = info.box
            if other != oi and b and b[0] <= box[2] + 2 and box[0] <= b[2] + 2 and b[1] <= box[3] + 2 \
                    and box[1] <= b[3] + 2:
                return True
        return False

    def aligned_iou(self, pair: Pair) -> float:
        """Mask IoU with both masks' centroids put on top of each other (shape change without the motion)."""
        (a, ca), (b, cb) = self._crop(pair.a, pair.oa), self._crop(pair.b, pair.ob)
        dy, dx = int(round(ca[0] - cb[0])), int(round(ca[1] - cb[1]))
        top, left = min(0, dy), min(0, dx)
        height = max(a.shape[0], dy + b.shape[0]) - top
        width = max(a.shape[1], dx + b.shape[1]) - left
        canvas_a, canvas_b = np.zeros((height, width), bool), np.zeros((height, width), bool)
        canvas_a[-top : -top + a.shape[0], -left : -left + a.shape[1]] = a
        canvas_b[dy - top : dy - top + b.shape[0], dx - left : dx - left + b.shape[1]] = b
        union = np.logical_or(canvas_a, canvas_b).sum()
        return float(np.logical_and(canvas_a, canvas_b).sum() / union) if union else 0.0

    def _crop(self, ri: int, oi: int) -> tuple[np.ndarray, tuple[float, float]]:
        x1, y1, x2, y2 = self.objects[ri, oi].box or [0, 0, 0, 0]
        crop = decode_rle(self.records[ri].objects[oi].rle)[y1:y2, x1:x2] > 0
        ys, xs = np.nonzero(crop)
        return crop, (float(ys.mean()), float(xs.mean()))

    def video_step(self, video_id: str) -> int:
        """The usual spacing of annotated frames in a video (median difference of frame indices, at least 1)."""
        return self._steps.get(video_id, 1)

    @cached_property
    def _steps(self) -> dict[str, int]:
        frames: dict[str, set[int]] = defaultdict(set)
        for rec in self.records:
            frames[rec.video_id].add(rec.frame_index)
        steps = {}
        for video_id, indices in frames.items():
            diffs = np.diff(sorted(indices))
            steps[video_id] = max(1, int(np.median(diffs))) if len(diffs) else 1
        return steps

    def source_records(self, source: str) -> list[str]:
        """Ids of the records read from a source path (through dataset.json "videos", or the record's source)."""
        name = Path(source).name
        videos = {str(v.get("video_id")) for v in self.meta.get("videos") or []
                  if isinstance(v, dict) and v.get("source") is not None
                  and (str(v["source"]) == source or Path(str(v["source"])).name == name)}
        return [r.id for r in self.records if r.video_id in videos or r.source == source]

    def locate(self, issue: dict[str, Any]) -> list[str]:
        """Record ids an ingest issue is about (video_id@frame when the reader dropped the frame)."""
        video_id, frame = issue.get("video_id"), issue.get("frame_index")
        if video_id is not None and frame is not None:
            return [self._by_frame.get((str(video_id), frame), f"{video_id}@{frame}")]
        if video_id is not None:
            return [r.id for r in self.records if r.video_id == str(video_id)]
        return self.source_records(str(issue.get("source"))) if issue.get("source") else []

    def ingest_findings(self, rule_ids: str | tuple[str, ...], fix: str,
                        severity: str | None = None) -> Iterator[Finding]:
        """The readers' dataset.json issues of these rule ids as findings, one per severity (or forced severity)."""
        rule_ids = (rule_ids,) if isinstance(rule_ids, str) else rule_ids
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for issue in self.issues:
            if issue.get("rule") in rule_ids:
                level = severity or issue.get("severity")
                groups[level if level in ("error", "warning", "info") else ""].append(issue)
        for level, issues in groups.items():
            more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
            records = [rid for issue in issues for rid in self.locate(issue)]
            details = [_where(i) + str(i.get("message")) for i in issues]
            yield Finding("", level, f"found on import: {issues[0].get('message') or issues[0].get('rule')}{more}",
                          sorted(dict.fromkeys(records)), fix, details)


def _where(issue: dict[str, Any]) -> str:
    parts = [Path(str(issue["source"])).name if issue.get("source") else None, issue.get("video_id"),
             None if issue.get("frame_index") is None else f"frame {issue['frame_index']}",
             None if issue.get("object_id") is None else f"object {issue['object_id']}"]
    return "".join(f"{part}: " for part in parts if part is not None)


def check_object(rec: FrameRecord, obj: ObjectAnn) -> ObjInfo:
    """Check one object's mask without decoding it: present, valid RLE, frame-sized, non-empty."""
    if not obj.rle:
        return ObjInfo("missing", problem="no mask")
    problem, runs = rle_problem(obj.rle)
    if problem:
        return ObjInfo("invalid", problem=problem)
    height, width = (int(v) for v in obj.rle["size"])
    if (height, width) != (rec.height, rec.width):
        return ObjInfo("size", problem=f"mask {width}x{height}, frame {rec.width}x{rec.height}")
    area = int(sum(runs[1::2]))
    if area == 0:
        return ObjInfo("empty", problem="mask has no pixel")
    return ObjInfo("ok", area=area, box=rle_bbox(obj.rle))


def rle_problem(rle: Any) -> tuple[str, list[int]]:
    """('', runs) for a COCO RLE whose runs cover exactly its size, else (problem, [])."""
    if not isinstance(rle, dict):
        return "mask is not an RLE object", []
    size, counts = rle.get("size"), rle.get("counts")
    if not (isinstance(size, list | tuple) and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        return f"RLE size {size!r} is not [height, width]", []
    if isinstance(counts, str):
        runs = _string_runs(counts)
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in counts):
        runs = counts
    else:
        return "RLE counts are neither a string nor a list of integers", []
    if runs is None:
        return "RLE counts string is malformed", []
    if any(r < 0 for r in runs):
        return "RLE has a negative run", []
    if sum(runs) != size[0] * size[1]:
        return f"RLE runs cover {sum(runs)} pixels, its size {size[0]}x{size[1]} has {size[0] * size[1]}", []
    return "", runs


def _string_runs(text: str) -> list[int] | None:
    """pycocotools' compressed counts string -> runs (its rleFrString), None when malformed."""
    runs: list[int] = []
    p = 0
    while p < len(text):
        x, k, more = 0, 0, True
        while more:
            if p >= len(text):
                return None
            c = ord(text[p]) - 48
            if not 0 <= c <= 63:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        runs.append(x + runs[-2] if len(runs) > 2 else x)
    return runs


# ---------------------------------------------------------------- pixels


def hash_image(path: Path) -> ImageInfo:
    """Size, SHA-1 of the bytes and perceptual hash of one image (a problem text when it cannot be read)."""
    import imagehash
    from PIL import Image

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ImageInfo("image file is missing")
    except OSError as exc:
        return ImageInfo(f"image cannot be read ({exc.__class__.__name__})")
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            image.draft("L", (128, 128))  # JPEG: decode at reduced scale, the hash works on 32x32 anyway
            phash = int(str(imagehash.phash(image)), 16)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return ImageInfo(f"image does not decode ({exc.__class__.__name__})")
    return ImageInfo("", size, hashlib.sha1(data).hexdigest(), phash)


def image_infos(root: Path, records: list[FrameRecord], progress: bool = True) -> list[ImageInfo]:
    """ImageInfo per record (paths leaving the dataset folder count as missing), with a progress bar."""
    from tqdm import tqdm

    cache: dict[Path, ImageInfo] = {}
    infos = []
    for rec in tqdm(records, desc="hashing frames", unit="frame", disable=None if progress else True):
        path = (root / rec.image).resolve()
        if not path.is_relative_to(root):
            infos.append(ImageInfo("image path leaves the dataset folder"))
            continue
        if path not in cache:
            cache[path] = hash_image(path)
        infos.append(cache[path])
    return infos


def duplicate_groups(infos: list[ImageInfo], max_distance: int) -> list[list[int]]:
    """Groups (sorted index lists, 2+ members) of images whose perceptual hashes are within max_distance bits."""
    index = [i for i, info in enumerate(infos) if info.phash is not None]
    hashes = np.array([infos[i].phash for i in index], dtype=np.uint64)
    parent = list(range(len(index)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in range(len(index) - 1):
        close = np.flatnonzero(np.bitwise_count(hashes[a + 1 :] ^ hashes[a]) <= max_distance)
        for b in close:
            parent[find(a + 1 + int(b))] = find(a)
    groups: dict[int, list[int]] = defaultdict(list)
    for a, i in enumerate(index):
        groups[find(a)].append(i)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def looks_like_overlay(rgb: np.ndarray, mask: np.ndarray, cfg: dict[str, Any]) -> bool:
    """True when a thin line of one vivid colour runs along the mask's outline or its box (a drawn overlay)."""
    ys, xs = np.nonzero(mask)
    pad, (h, w) = 8, mask.shape
    if len(xs) < 50 or xs.min() == 0 or ys.min() == 0 or xs.max() == w - 1 or ys.max() == h - 1:
        return False  # too small to judge, or cut by the frame border (no outside to compare with)
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    image, shape = rgb[y0:y1, x0:x1].astype(np.int16), mask[y0:y1, x0:x1].astype(np.uint8)
    box = np.zeros_like(shape)
    box[ys.min() - y0 : ys.max() - y0 + 1, xs.min() - x0 : xs.max() - x0 + 1] = 1
    return _drawn_outline(image, shape, False, cfg) or _drawn_outline(image, box, True, cfg)


def _drawn_outline(image: np.ndarray, shape: np.ndarray, rect: bool, cfg: dict[str, Any]) -> bool:
    import cv2

    kind = cv2.MORPH_RECT if rect else cv2.MORPH_ELLIPSE

    def grown(r: int) -> np.ndarray:
        if r == 0:
            return shape > 0
        kernel = cv2.getStructuringElement(kind, (2 * abs(r) + 1, 2 * abs(r) + 1))
        return (cv2.dilate(shape, kernel) if r > 0 else cv2.erode(shape, kernel)) > 0

    edge, band = grown(0) & ~grown(-1), grown(1) & ~grown(-2)
    inside, outside = grown(-3) & ~grown(-6), grown(6) & ~grown(3)
    if edge.sum() < 20 or not inside.any() or not outside.any():
        return False
    parts = [edge]
    if rect:  # a drawn box has all four sides
        rows, cols = np.nonzero(shape)
        parts = [edge & (np.arange(edge.shape[0])[:, None] == rows.min()),
                 edge & (np.arange(edge.shape[0])[:, None] == rows.max()),
                 edge & (np.arange(edge.shape[1])[None, :] == cols.min()),
                 edge & (np.arange(edge.shape[1])[None, :] == cols.max())]
    pixels = image[band]
    vivid = pixels[pixels.max(1) - pixels.min(1) >= cfg["min_saturation"]]
    if len(vivid) < 10:
        return False
    keys = (vivid // 16) @ np.array([256, 16, 1])
    values, counts = np.unique(keys, return_counts=True)
    inner, outer = image[inside].mean(0), image[outside].mean(0)
    for key in values[np.argsort(-counts, kind="stable")[:3]]:  # the line, a tinted fill, an object colour...
        colour = vivid[keys == key].mean(0)
        if not _distinct_line(colour, inner, outer, cfg):
            continue
        near = (np.abs(image - colour).max(2) < cfg["tolerance"]).astype(np.uint8)
        lined = cv2.dilate(near, np.ones((3, 3), np.uint8))
        line = min(lined[part].mean() for part in parts)
        if line >= cfg["line_fraction"] and max(near[inside].mean(), near[outside].mean()) <= cfg["side_fraction"]:
            return True
    return False


def _distinct_line(colour: np.ndarray, inner: np.ndarray, outer: np.ndarray, cfg: dict[str, Any]) -> bool:
    """A drawn line is no mix of the colours on its two sides, and is more vivid, or lighter/darker, than both."""
    if _blend_distance(colour, inner, outer) < cfg["tolerance"]:
        return False  # a soft (anti-aliased, compressed) edge mixes inside and outside
    luma = np.array([0.299, 0.587, 0.114])
    y, sides = float(colour @ luma), (float(inner @ luma), float(outer @ luma))
    margin = cfg["saturation_margin"]
    return bool(np.ptp(colour) >= max(np.ptp(inner), np.ptp(outer)) + margin
                or y >= max(sides) + margin or y <= min(sides) - margin)


def _blend_distance(colour: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """How far a colour is from every mix of colours a and b (max channel difference)."""
    span = b - a
    t = float(np.clip(np.dot(colour - a, span) / max(float(np.dot(span, span)), 1e-9), 0.0, 1.0))
    return float(np.abs(colour - (a + t * span)).max())
