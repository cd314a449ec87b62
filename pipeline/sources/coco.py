"""Reader for COCO instances JSON (polygons, compressed or uncompressed RLE); each image is one record."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..records import ObjectAnn
from .common import (
    IssueLog,
    ReadOptions,
    Source,
    SourceFrame,
    as_int,
    check_rle,
    coco_rle,
    load_json,
    object_from_coco,
    require_keys,
    safe_id,
    stored_box_check,
)
from .frames import ImageFrames, read_frames


def segmentation_rle(seg: Any, height: int, width: int) -> tuple[dict[str, Any] | None, str | None]:
    """COCO segmentation (polygons, compressed or uncompressed RLE) -> (pycocotools RLE, problem)."""
    from pycocotools import mask as mask_utils

    if seg is None or seg == [] or seg == {}:
        return None, "has no segmentation"
    if isinstance(seg, dict):
        problem = check_rle(seg)
        return (None, problem) if problem else (coco_rle(seg), None)
    if isinstance(seg, list):
        polygons = [[float(v) for v in poly] for poly in seg if _is_polygon(poly)]
        if not polygons:
            return None, "has no valid polygon (each needs >= 3 x,y points)"
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)), None
    return None, f"segmentation of type {type(seg).__name__} is neither polygons nor RLE"


def _is_polygon(poly: Any) -> bool:
    return (isinstance(poly, list) and len(poly) >= 6 and len(poly) % 2 == 0
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in poly))


def resolve_image(name: str, base: Path) -> Path | None:
    """An image path from a JSON file name, under `base` (or base/images, base/JPEGImages); None if it escapes.

    When none of those exists, the file is found by its name anywhere under `base` (frames uploaded without their
    sub-folders, e.g. `imgs/im0.jpg` uploaded as `im0.jpg`); only a name held by several files is refused."""
    relative = Path(str(name).replace("\\", "/"))
    root = base.resolve()
    candidates = [base / relative, base / "images" / relative, base / "JPEGImages" / relative]
    inside = [c for c in candidates if c.resolve().is_relative_to(root)]  # never read outside the images folder
    found = next((c for c in inside if c.is_file()), None)
    if found is not None or not relative.name or not base.is_dir():
        return found if found is not None else (inside[0] if inside else None)
    same = _files_by_name(str(root)).get(relative.name, [])
    if len(same) > 1:
        shown = ", ".join(str(p.relative_to(root)) for p in same[:3])
        raise UserError(f"image {name!r}: {len(same)} files are named {relative.name} ({shown}); keep the "
                        "sub-folders (upload a ZIP of the frames folder) so the file names say which one")
    return same[0] if same else (inside[0] if inside else None)


_BY_NAME: dict[str, dict[str, list[Path]]] = {}


def _files_by_name(root: str) -> dict[str, list[Path]]:
    """{file name: [paths]} of every file under `root` (built once per folder and read)."""
    if root not in _BY_NAME:
        index: dict[str, list[Path]] = {}
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                index.setdefault(path.name, []).append(path)
        if len(_BY_NAME) > 8:
            _BY_NAME.clear()
        _BY_NAME[root] = index
    return _BY_NAME[root]


GENERIC_PREFIXES = {"", "frame", "frames", "img", "image", "images", "im", "f"}


def frame_key(name: str, image_id: int, default_video: str) -> tuple[str, int]:
    """(video_id, frame_index) from a file name: video_000123.jpg -> (video, 123), vid/frame_00012.jpg -> (vid, 12)."""
    path = Path(str(name).replace("\\", "/"))
    match = re.fullmatch(r"(.*?)[_\-.]?(\d+)", path.stem)
    if not match:
        return safe_id(path.stem), image_id
    prefix = match.group(1)
    if prefix.lower() in GENERIC_PREFIXES:  # frame_000012.jpg: the folder (or the JSON file) names the video
        prefix = path.parent.name or default_video
    return safe_id(prefix), int(match.group(2))


class CocoSource(Source):
    """COCO instances: images[{id, file_name, width, height}], annotations[{image_id, category_id, segmentation}]."""

    format = "coco"

    def __init__(self, path: Path, options: ReadOptions, log: IssueLog, data: Any = None) -> None:
        super().__init__(path, options, log)
        data = require_keys(load_json(path) if data is None else data, ("images", "annotations"), path, "COCO JSON")
        self.base = options.images or path.parent
        self.categories = {as_int(c.get("id")): str(c.get("name")) for c in data.get("categories") or []
                           if isinstance(c, dict) and c.get("name") is not None}
        self.images = self._images(data["images"])
        self.annotations: dict[int, list[dict[str, Any]]] = {}
        for position, ann in enumerate(data["annotations"] if isinstance(data["annotations"], list) else []):
            image_id = as_int(ann.get("image_id")) if isinstance(ann, dict) else None
            if image_id is None or image_id not in self.images:
                self.issue("invalid_record", "error", f"annotations[{position}] refers to no listed image; skipped")
                continue
            self.annotations.setdefault(image_id, []).append(ann)
        self.keys = self._keys()
        self.corrections = ["boxes and areas recomputed from the segmentation masks"]

    def _images(self, images: Any) -> dict[int, dict[str, Any]]:
        found = {}
        for position, image in enumerate(images if isinstance(images, list) else []):
            image_id = as_int(image.get("id")) if isinstance(image, dict) else None
            if image_id is None or not isinstance(image.get("file_name"), str):
                self.issue("invalid_record", "error", f"images[{position}] lacks an integer id or a file_name; "
                           "skipped")
                continue
            found[image_id] = image
        if not found:
            raise UserError("COCO JSON lists no usable image (each needs an id and a file_name)", self.path)
        return found

    def _keys(self) -> dict[tuple[str, int], int]:
        """(video_id, frame_index) -> image id, from the file names when they are unique, else the image ids."""
        stem = safe_id(self.path.stem)
        keys = {frame_key(image["file_name"], image_id, stem): image_id for image_id, image in self.images.items()}
        if len(keys) == len(self.images):
            return keys
        return {(stem, image_id): image_id for image_id in self.images}

    def plan(self) -> dict[str, list[int]]:
        plan: dict[str, list[int]] = {}
        for video_id, index in sorted(self.keys):
            plan.setdefault(video_id, []).append(index)
        return plan

    def frames(self, video_id: str, indices: list[int]) -> Iterator[SourceFrame]:
        files = {i: resolve_image(self.images[self.keys[(video_id, i)]]["file_name"], self.base) for i in indices}
        provider = ImageFrames(files, str(self.base))
        return read_frames(self, provider, video_id, indices, lambda i, f: self._objects(video_id, i, f))

    def _objects(self, video_id: str, index: int, frame: tuple[int, int]) -> list[ObjectAnn]:
        image_id = self.keys[(video_id, index)]
        image = self.images[image_id]
        size = (as_int(image.get("height")) or frame[0], as_int(image.get("width")) or frame[1])
        objects = []
        for ann in self.annotations.get(image_id, []):
            oid = _object_id(ann)
            cat = as_int(ann.get("category_id"))
            label = self.label_for(oid, self.categories.get(cat) if cat is not None else None)
            obj = self._object(ann.get("segmentation"), size, frame, oid, label, video_id, index)
            if obj is not None:
                stored_box_check(self, ann.get("bbox"), obj, frame,
                                 {"video_id": video_id, "frame_index": index, "object_id": oid})
                objects.append(obj)
        return objects

    def _object(self, seg: Any, size: tuple[int, int], frame: tuple[int, int], oid: int, label: str,
                video_id: str, index: int) -> ObjectAnn | None:
        where = {"video_id": video_id, "frame_index": index, "object_id": oid}
        coco, problem = segmentation_rle(seg, size[0], size[1])
        if coco is None:
            rule = "empty_mask" if problem == "has no segmentation" else "invalid_rle"
            self.issue(rule, "error" if rule == "invalid_rle" else "warning",
                       f"object {oid}: segmentation {problem}; object skipped", **where)
            return None
        return object_from_coco(self, coco, frame, oid, label, video_id=video_id, frame_index=index)


def _object_id(ann: dict[str, Any]) -> int:
    """A track id when the tool wrote one (CVAT: attributes.track_id), else the annotation id."""
    raw = ann.get("attributes")
    attributes = raw if isinstance(raw, dict) else {}
    for value in (ann.get("track_id"), attributes.get("track_id"), ann.get("id")):
        number = as_int(value)
        if number is not None:
            return number
    return 0
