"""Readers for SA-V (Meta's SAM 2 dataset): `*_manual.json` (+ `*_auto.json`) + video, and the val/test folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..records import ObjectAnn
from .common import IssueLog, ReadOptions, Source, SourceFrame, as_int, load_json, object_from_mask, object_from_rle
from .frames import ImageFrames, VideoFrames, numbered_images, open_frames, read_frames

STEP = 4  # annotated index k is video frame 4k (6 fps annotations of 24 fps videos)
AUTO_OFFSET = 1000  # auto masklet ids are shifted so they never collide with manual ones


class SavJsonSource(Source):
    """SA-V train layout: `{video_id}_manual.json` / `_auto.json` + `{video_id}.mp4` or a `{video_id}/` frame folder."""

    format = "sav"

    def __init__(self, path: Path, options: ReadOptions, log: IssueLog, data: Any = None) -> None:
        super().__init__(path, options, log)
        data = load_json(path) if data is None else data
        name_id = path.stem.removesuffix("_manual").removesuffix("_auto")
        self.video_id = str(data.get("video_id") or name_id) if isinstance(data, dict) else name_id
        self.tracks = [self._track(data, path, 0)]
        self.corrections = ["annotated index k mapped to video frame 4k; all-zero masks are invisible objects"]
        if options.include_auto and path.stem.endswith("_manual"):
            auto = path.with_name(path.name.replace("_manual.json", "_auto.json"))
            if auto.is_file():
                self.tracks.append(self._track(load_json(auto), auto, AUTO_OFFSET))
                self.corrections.append(f"auto masklets included with ids + {AUTO_OFFSET}")
            else:
                log.warnings.append(f"{path.name}: --include-auto given but {auto.name} is not beside it")
        self.size = (as_int(data.get("video_height")), as_int(data.get("video_width")))
        duration, count = data.get("video_duration"), data.get("video_frame_count")
        self.frame_count = as_int(count)
        if isinstance(duration, int | float) and isinstance(count, int | float) and duration > 0:
            self.fps_claimed = round(float(count) / float(duration), 3)
        self.provider = self._frames()

    def _track(self, data: Any, path: Path, offset: int) -> tuple[list[Any], list[int]]:
        if not isinstance(data, dict) or not isinstance(data.get("masklet"), list):
            raise UserError("SA-V annotation needs a 'masklet' list (frames x objects of COCO RLE)", path)
        raw = data.get("masklet_id")
        ids = [as_int(v) for v in raw] if isinstance(raw, list) else []
        known = [i for i in ids if i is not None]
        if not isinstance(raw, list) or len(known) != len(ids):
            raise UserError("SA-V annotation needs 'masklet_id', a list of integers", path)
        return data["masklet"], [i + offset for i in known]

    def _frames(self) -> VideoFrames | ImageFrames:
        names = [f"{self.video_id}{ext}" for ext in (".mp4", ".mov", ".mkv", ".webm")] + [self.video_id]
        video = self.options.find_video(names, [self.path.parent], dirs=True)
        if video is None:
            raise UserError(f"no video found for SA-V video '{self.video_id}' (looked for {self.video_id}.mp4 or a "
                            f"{self.video_id}/ folder of numbered frames beside it): pass it with --video", self.path)
        self.video = video
        provider = open_frames(video)
        if isinstance(provider, VideoFrames):
            info = provider.info
            self.fps_video = info.fps
            if self.fps_claimed and abs(self.fps_claimed - info.fps) > 0.01 * info.fps:
                self.issue("fps_mismatch", "warning", f"annotation implies {self.fps_claimed:g} fps "
                           f"(video_frame_count / video_duration), the video has {info.fps:g} fps",
                           video_id=self.video_id)
            if self.frame_count and abs(self.frame_count - info.frame_count) > 1:
                self.issue("fps_mismatch", "warning", f"annotation says the video has {self.frame_count} frames, "
                           f"{self.video.name} has {info.frame_count}: frame 4k may not be the annotated frame "
                           "(re-encoded or trimmed video?)", video_id=self.video_id)
        return provider

    def plan(self) -> dict[str, list[int]]:
        count = max(len(masklet) for masklet, _ in self.tracks)
        return {self.video_id: [STEP * k for k in range(count)]}

    def frames(self, video_id: str, indices: list[int]) -> Iterator[SourceFrame]:
        return read_frames(self, self.provider, video_id, indices, self._objects)

    def _objects(self, index: int, frame: tuple[int, int]) -> list[ObjectAnn]:
        objects, k = [], index // STEP
        for masklet, ids in self.tracks:
            row = masklet[k] if k < len(masklet) else []
            if not isinstance(row, list) or len(row) != len(ids):
                found = len(row) if isinstance(row, list) else 0
                self.issue("invalid_record", "warning", f"annotated frame {k} has {found} masks for {len(ids)} "
                           "masklet ids; extra masks ignored, absent ones not visible",
                           video_id=self.video_id, frame_index=index)
                row = row if isinstance(row, list) else []
            for oid, rle in zip(ids, row, strict=False):
                obj = object_from_rle(self, rle, frame, oid, self.label_for(oid), video_id=self.video_id,
                                      frame_index=index, empty=None)  # all-zero RLE = not visible, by design
                if obj is not None:
                    objects.append(obj)
        return objects

    def video_meta(self, video_id: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"fps": self.fps_video or self.fps_claimed or 24.0, "width": self.size[1],
                                "height": self.size[0]}
        if isinstance(self.provider, VideoFrames):
            info = self.provider.info
            meta.update(width=info.width, height=info.height, frame_count=info.frame_count)
        return meta


class SavFolderSource(Source):
    """SA-V val/test layout: JPEGImages_24fps/<vid>/00000.jpg + Annotations_6fps/<vid>/<obj:03d>/<frame:05d>.png."""

    format = "sav"

    def __init__(self, path: Path, options: ReadOptions, log: IssueLog) -> None:
        super().__init__(path, options, log)
        self.fps_claimed = 24.0
        self.corrections = ["one binary PNG per object per annotated frame; frame numbers on the 24 fps scale"]
        self.objects: dict[str, dict[int, dict[int, Path]]] = {}  # video -> object id -> frame -> png
        for video_dir in sorted(p for p in (path / "Annotations_6fps").iterdir() if p.is_dir()):
            tracks = {}
            for obj_dir in sorted(p for p in video_dir.iterdir() if p.is_dir() and p.name.isdigit()):
                tracks[int(obj_dir.name)] = numbered_images(obj_dir)
            if tracks:
                self.objects[video_dir.name] = tracks
        if not self.objects:
            raise UserError("Annotations_6fps/ holds no <video>/<object>/<frame>.png masks", path)

    def plan(self) -> dict[str, list[int]]:
        return {vid: sorted({f for frames in tracks.values() for f in frames}) for vid, tracks in self.objects.items()}

    def frames(self, video_id: str, indices: list[int]) -> Iterator[SourceFrame]:
        folder = self.path / "JPEGImages_24fps" / video_id
        provider = ImageFrames(numbered_images(folder) if folder.is_dir() else {}, str(folder))
        return read_frames(self, provider, video_id, indices, lambda i, f: self._objects(video_id, i, f))

    def _objects(self, video_id: str, index: int, frame: tuple[int, int]) -> list[ObjectAnn]:
        from PIL import Image

        objects = []
        for oid, pngs in self.objects[video_id].items():
            where = {"video_id": video_id, "frame_index": index, "object_id": oid}
            if index not in pngs:
                self.issue("missing_annotations", "info", f"object {oid} has no mask PNG for frame {index}", **where)
                continue
            try:
                with Image.open(pngs[index]) as image:
                    mask = (np.asarray(image) > 0).astype(np.uint8)
            except (OSError, Image.DecompressionBombError) as exc:
                self.issue("invalid_rle", "error", f"object {oid}: mask {pngs[index].name} is not a readable image "
                           f"({exc.__class__.__name__}); object skipped", **where)
                continue
            if mask.ndim == 3:
                mask = np.asarray(mask.any(axis=2), dtype=np.uint8)
            obj = self._fit(mask, oid, frame, where)
            if obj is not None:
                objects.append(obj)
        return objects

    def _fit(self, mask: np.ndarray, oid: int, frame: tuple[int, int], where: dict[str, Any]) -> ObjectAnn | None:
        if mask.shape == tuple(frame):
            return object_from_mask(mask, oid, self.label_for(oid))
        from ..masks import encode_rle

        return object_from_rle(self, encode_rle(mask), frame, oid, self.label_for(oid), empty=None,
                               video_id=where["video_id"], frame_index=where["frame_index"])
