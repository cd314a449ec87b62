"""Reader for the SAM 2 demo-fork export (ZIP or unzipped job folder): corrects the exporter's known defects."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..masks import resize_mask, runs_to_mask
from ..records import ObjectAnn
from .common import IssueLog, ReadOptions, Source, SourceFrame, as_int, load_json, object_from_mask, safe_id
from .frames import ImageFrames, VideoFrames, open_frames, read_frames

if TYPE_CHECKING:
    import numpy as np

GRID = 256  # SAM 2's low-resolution mask grid: the exporter's run strings cover 256x256, not the video


def find_export_root(folder: Path, shown: str | Path | None = None) -> Path | None:
    """The folder holding annotations.json: `folder` itself or one sub-folder down (not __MACOSX/ or dot folders).

    Several candidates are refused (UserError naming `shown`): picking one silently would drop the others' data.
    """
    children = [child for child in sorted(folder.iterdir()) if child.is_dir()
                and not child.name.startswith((".", "__MACOSX")) and (child / "annotations.json").is_file()]
    roots = ([folder] if (folder / "annotations.json").is_file() else []) + children
    if len(roots) > 1:
        names = ", ".join((r.relative_to(folder) / "annotations.json").as_posix() for r in roots[:4])
        raise UserError(f"holds several SAM 2 demo exports ({names}): give each export as its own input",
                        shown or folder)
    return roots[0] if roots else None


class DemoExportSource(Source):
    """`sam2_export_<job>.zip` / job folder: annotations.json (+ metadata.json, images/ overlays) + the source video."""

    format = "sam2_demo_zip"

    def __init__(self, path: Path, options: ReadOptions, log: IssueLog, root: Path) -> None:
        super().__init__(path, options, log)
        self.root = root
        self.is_json = path.is_file() and path.suffix.lower() == ".json"
        annotations = path if self.is_json else root / "annotations.json"
        self.fingerprint_path = path if path.is_file() else annotations
        data = load_json(annotations, shown=path, what="annotations.json")
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            keys = sorted(data)[:12] if isinstance(data, dict) else type(data).__name__
            raise UserError(f"annotations.json has {keys}; expected a SAM 2 demo export with an 'annotations' list",
                            path)
        meta = self._metadata()
        raw_video = data.get("video")
        video = raw_video if isinstance(raw_video, dict) else {}
        self.claimed_size: tuple[int | None, int | None] = (as_int(video.get("height")), as_int(video.get("width")))
        self.fps_claimed = _number(video.get("source_fps")) or _number(meta.get("fps"))
        self.filename = str(video.get("filename") or meta.get("filename") or "")
        job = root.name if path.is_dir() or self.is_json else path.stem
        self.video_id = safe_id(Path(self.filename).stem if self.filename else job)
        self.entries = self._entries(data["annotations"])
        self._listed_without_entry(data.get("export_config"))
        self.provider = self._frames()
        self.stats = {"objects": 0, "bbox_disagrees": 0}
        self.corrections = [
            "mask_rle runs decoded row-major on the 256x256 mask grid, resized to the frame size (non-uniform)",
            "bbox and area recomputed from the mask; stored bbox and confidence ignored",
        ]

    def _metadata(self) -> dict[str, Any]:
        path = self.root / "metadata.json"
        if not path.is_file():
            return {}
        meta = load_json(path, shown=self.path, what="metadata.json")
        video = meta.get("video") if isinstance(meta, dict) else None
        return video if isinstance(video, dict) else {}

    def _entries(self, annotations: list[Any]) -> dict[int, list[Any]]:
        entries: dict[int, list[Any]] = {}
        for position, entry in enumerate(annotations):
            index = as_int(entry.get("frame_index")) if isinstance(entry, dict) else None
            objects = entry.get("objects", []) if isinstance(entry, dict) else None
            if index is None or index < 0 or not isinstance(objects, list):
                self.issue("invalid_record", "error", f"annotations[{position}] lacks an integer frame_index and an "
                           "objects list; entry skipped", video_id=self.video_id)
                continue
            if index in entries:
                self.issue("invalid_record", "warning", f"frame {index} is listed twice; the last entry is kept",
                           video_id=self.video_id, frame_index=index)
            entries[index] = objects
        return entries

    def _listed_without_entry(self, config: Any) -> None:
        listed = config.get("frame_indices") if isinstance(config, dict) else None
        for index in listed if isinstance(listed, list) else []:
            if as_int(index) is not None and as_int(index) not in self.entries:
                self.issue("missing_annotations", "warning", f"frame {index} is listed in export_config.frame_indices "
                           "but has no annotation entry", video_id=self.video_id, frame_index=as_int(index))

    def _frames(self) -> VideoFrames | ImageFrames:
        is_zip = self.path.is_file() and not self.is_json
        beside = [self.root, self.path.parent] if is_zip else [self.root, self.root.parent, self.path.parent]
        video = self.options.find_video([self.filename] if self.filename else [], beside)
        looked = f"looked for '{self.filename}' beside it" if self.filename else "it names no video file"
        if video is not None:
            self.video = video
            return self._video_frames(video)
        images = self.root / "images"
        has_images = images.is_dir() and any(images.iterdir())
        if not has_images:
            raise UserError(f"no source video found for this SAM 2 demo export ({looked}) and the export holds no "
                            "frames: clean frames are decoded from the video, pass it with --video VIDEO", self.path)
        if not self.options.allow_overlay_frames:
            raise UserError(f"no source video found for this SAM 2 demo export ({looked}); its images/*.png are "
                            "overlays with the mask and box drawn in, not clean frames: pass the video with --video "
                            "VIDEO (or --allow-overlay-frames to use the overlays anyway)", self.path)
        self.overlay_frames = True
        self.issue("overlay_frames", "warning", "frames are the export's overlay PNGs (mask, contour, box and label "
                   "drawn in): a model trained on them sees the answer; pass the source video with --video",
                   video_id=self.video_id)
        self.log.warnings.append(f"{self.path.name}: using overlay PNGs as frames (no source video)")
        return ImageFrames.from_folder(images)

    def _video_frames(self, video: Path) -> VideoFrames | ImageFrames:
        provider = open_frames(video)
        if isinstance(provider, VideoFrames):
            info = provider.info
            self.fps_video = info.fps
            if self.fps_claimed and abs(self.fps_claimed - info.fps) > 0.01 * info.fps:
                self.issue("fps_mismatch", "warning", f"export claims {self.fps_claimed:g} fps, the video has "
                           f"{info.fps:g} fps (demo exports hard-code 30); the video's fps is used",
                           video_id=self.video_id)
                self.corrections.append(f"fps taken from the video ({info.fps:g}) instead of the claimed "
                                        f"{self.fps_claimed:g}")
            if None not in self.claimed_size and self.claimed_size != (info.height, info.width):
                self.issue("mask_size_mismatch", "warning", f"export says {self.claimed_size[1]}x"
                           f"{self.claimed_size[0]} but the video is {info.width}x{info.height}; masks are mapped "
                           "to the video size", video_id=self.video_id)
        return provider

    def plan(self) -> dict[str, list[int]]:
        if not self.overlay_frames:
            return {self.video_id: sorted(self.entries)}
        files = self.provider.files if isinstance(self.provider, ImageFrames) else {}
        for index in sorted(i for i, objects in self.entries.items() if not objects and i not in files):
            self.issue("missing_frame", "info", f"frame {index} has no object and no overlay PNG (the exporter writes "
                       "PNGs only for frames with objects); frame skipped", video_id=self.video_id, frame_index=index)
        return {self.video_id: sorted(i for i, objects in self.entries.items() if objects or i in files)}

    def frames(self, video_id: str, indices: list[int]) -> Iterator[SourceFrame]:
        return read_frames(self, self.provider, video_id, indices, self._objects)

    def _objects(self, index: int, frame: tuple[int, int]) -> list[ObjectAnn]:
        objects = []
        for raw in self.entries.get(index, []):
            obj = self._object(raw, index, frame)
            if obj is not None:
                objects.append(obj)
        return objects

    def _object(self, raw: Any, index: int, frame: tuple[int, int]) -> ObjectAnn | None:
        oid = as_int(raw.get("object_id")) if isinstance(raw, dict) else None
        where = {"video_id": self.video_id, "frame_index": index, "object_id": oid}
        if oid is None:
            self.issue("invalid_record", "error", "object without an integer object_id; skipped", **where)
            return None
        grid, problem = self._grid(raw.get("mask_rle"))
        if grid is None:
            self.issue("invalid_rle", "error", f"object {oid}: mask_rle {problem}; object skipped", **where)
            return None
        mask = grid if grid.shape == frame else resize_mask(grid, frame[0], frame[1])
        obj = object_from_mask(mask, oid, self.label_for(oid, raw.get("label")))
        if obj is None:
            self.issue("empty_mask", "warning", f"object {oid}: mask has no pixel; object skipped", **where)
            return None
        self._compare_stored_box(raw.get("bbox"), obj, grid.shape, frame)
        return obj

    def _claimed_shape(self) -> tuple[int, int] | None:
        """The (height, width) the export claims, when it claims both."""
        height, width = self.claimed_size
        return (height, width) if height is not None and width is not None else None

    def _grid(self, text: Any) -> tuple[np.ndarray | None, str | None]:
        """Runs string -> mask on its grid (256x256, or the claimed frame size, or another square)."""
        if not isinstance(text, str):
            return None, "is missing or not a string"
        try:
            runs = [int(v) for v in text.split()]
        except ValueError:
            return None, "is not a list of space-separated integers"
        total, claimed = sum(runs), self._claimed_shape()
        if total == GRID * GRID:
            shape = (GRID, GRID)
        elif claimed is not None and total == claimed[0] * claimed[1]:
            shape = claimed
        elif total > 0 and math.isqrt(total) ** 2 == total:
            shape = (math.isqrt(total), math.isqrt(total))
        else:
            return None, f"runs cover {total} pixels, not a 256x256 grid ({GRID * GRID})"
        try:
            return runs_to_mask(runs, shape[0], shape[1], order="C"), None
        except ValueError as exc:
            return None, str(exc)

    def _compare_stored_box(self, stored: Any, obj: ObjectAnn, grid: tuple[int, int], frame: tuple[int, int]
                            ) -> None:
        from ..masks import box_iou

        self.stats["objects"] += 1
        if isinstance(stored, list) and len(stored) == 4 and all(isinstance(v, int | float) for v in stored):
            sx, sy = frame[1] / grid[1], frame[0] / grid[0]
            box = [stored[0] * sx, stored[1] * sy, (stored[0] + stored[2]) * sx, (stored[1] + stored[3]) * sy]
            if box_iou(box, obj.bbox) < 0.5:
                self.stats["bbox_disagrees"] += 1

    def finish(self) -> None:
        if self.stats["bbox_disagrees"]:
            self.issue("bbox_mismatch", "info", f"stored bbox disagrees with the mask in {self.stats['bbox_disagrees']}"
                       f" of {self.stats['objects']} objects (exporter defect: transposed and in 256-grid units); "
                       "boxes recomputed from the masks", video_id=self.video_id)

    def video_meta(self, video_id: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"fps": self.fps_video or self.fps_claimed, "width": self.claimed_size[1],
                                "height": self.claimed_size[0]}
        if isinstance(self.provider, VideoFrames):
            info = self.provider.info
            meta.update(width=info.width, height=info.height, frame_count=info.frame_count)
        return meta


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None
