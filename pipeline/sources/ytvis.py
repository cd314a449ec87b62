"""Reader for YouTube-VIS JSON: videos[file_names] + annotations[segmentations per frame, null when absent]."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..records import ObjectAnn
from .coco import resolve_image, segmentation_rle
from .common import (
    IssueLog,
    ReadOptions,
    Source,
    SourceFrame,
    as_int,
    load_json,
    object_from_coco,
    require_keys,
    safe_id,
    stored_box_check,
)
from .frames import ImageFrames, read_frames


class YtvisSource(Source):
    """One record per listed frame of each video; object ids are the annotation (track) ids."""

    format = "ytvis"

    def __init__(self, path: Path, options: ReadOptions, log: IssueLog, data: Any = None) -> None:
        super().__init__(path, options, log)
        data = require_keys(load_json(path) if data is None else data, ("videos", "annotations"), path,
                            "YouTube-VIS JSON")
        self.base = options.images or path.parent
        self.categories = {as_int(c.get("id")): str(c.get("name")) for c in data.get("categories") or []
                           if isinstance(c, dict) and c.get("name") is not None}
        self.videos: dict[str, dict[str, Any]] = {}  # video id -> {"raw", "files": {frame: name}, "position"}
        self.by_raw_id: dict[int, str] = {}
        for position, video in enumerate(data["videos"] if isinstance(data["videos"], list) else []):
            self._add_video(position, video)
        if not self.videos:
            raise UserError("YouTube-VIS JSON lists no usable video (each needs an id and file_names)", path)
        self.tracks: dict[str, list[dict[str, Any]]] = {vid: [] for vid in self.videos}
        for position, ann in enumerate(data["annotations"] if isinstance(data["annotations"], list) else []):
            raw = as_int(ann.get("video_id")) if isinstance(ann, dict) else None
            if raw not in self.by_raw_id or not isinstance(ann.get("segmentations"), list):
                self.issue("invalid_record", "error", f"annotations[{position}] lacks a listed video_id or a "
                           "segmentations list; skipped")
                continue
            self.tracks[self.by_raw_id[raw]].append(ann)
        self.corrections = ["boxes and areas recomputed from the per-frame segmentation masks"]

    def _add_video(self, position: int, video: Any) -> None:
        raw = as_int(video.get("id")) if isinstance(video, dict) else None
        names = video.get("file_names") if isinstance(video, dict) else None
        if raw is None or not isinstance(names, list) or not names:
            self.issue("invalid_record", "error", f"videos[{position}] lacks an integer id or file_names; skipped")
            return
        folder = Path(str(names[0]).replace("\\", "/")).parent.name
        video_id = safe_id(folder) if folder else f"video_{raw}"
        if video_id in self.videos:
            video_id = f"{video_id}_{raw}"
        numbers = [re.findall(r"\d+", Path(str(n)).stem) for n in names]
        frames = [int(n[-1]) for n in numbers if n]
        if len(frames) != len(names) or any(b <= a for a, b in zip(frames, frames[1:], strict=False)):
            frames = list(range(len(names)))  # names without increasing numbers: use the list position
        self.videos[video_id] = {"raw": video, "files": dict(zip(frames, names, strict=True)),
                                 "position": {f: i for i, f in enumerate(frames)}}
        self.by_raw_id[raw] = video_id

    def plan(self) -> dict[str, list[int]]:
        return {vid: sorted(video["files"]) for vid, video in self.videos.items()}

    def frames(self, video_id: str, indices: list[int]) -> Iterator[SourceFrame]:
        files = {i: resolve_image(self.videos[video_id]["files"][i], self.base) for i in indices}
        provider = ImageFrames(files, str(self.base))
        return read_frames(self, provider, video_id, indices, lambda i, f: self._objects(video_id, i, f))

    def _objects(self, video_id: str, index: int, frame: tuple[int, int]) -> list[ObjectAnn]:
        video = self.videos[video_id]
        size = (as_int(video["raw"].get("height")) or frame[0], as_int(video["raw"].get("width")) or frame[1])
        position = video["position"][index]
        objects = []
        for ann in self.tracks[video_id]:
            segs = ann["segmentations"]
            seg = segs[position] if position < len(segs) else None
            if seg is None:
                continue  # not in this frame
            oid = as_int(ann.get("id")) or 0
            where = {"video_id": video_id, "frame_index": index, "object_id": oid}
            cat = as_int(ann.get("category_id"))
            label = self.label_for(oid, self.categories.get(cat) if cat is not None else None)
            coco, problem = segmentation_rle(seg, size[0], size[1])
            if coco is None:
                self.issue("invalid_rle", "error", f"object {oid}: segmentation {problem}; object skipped", **where)
                continue
            obj = object_from_coco(self, coco, frame, oid, label, video_id=video_id, frame_index=index)
            if obj is not None:
                boxes = ann.get("bboxes")
                if isinstance(boxes, list) and position < len(boxes):
                    stored_box_check(self, boxes[position], obj, frame, where)
                objects.append(obj)
        return objects
