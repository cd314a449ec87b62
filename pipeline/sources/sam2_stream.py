"""Reader for a SAM 2 demo session: JSONL of `propagate_in_video` results (COCO RLE per object) + the video."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..records import ObjectAnn
from .common import (
    VIDEO_SUFFIXES,
    IssueLog,
    ReadOptions,
    Source,
    SourceFrame,
    as_int,
    object_from_rle,
    safe_id,
)
from .frames import VideoFrames, open_frames, read_frames

MAX_LINE_CHARS = 64 * 1024 * 1024  # one frame's masks; far above any real export, far below the machine's memory


def iter_stream_lines(path: Path, max_chars: int | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the JSONDecodeError) for each non-empty line; an overlong line is refused."""
    max_chars = max_chars or MAX_LINE_CHARS
    with open(path, encoding="utf-8", errors="replace") as handle:
        number = 0
        while line := handle.readline(max_chars + 1):
            number += 1
            if len(line) > max_chars and not line.endswith("\n"):  # the newline itself does not count
                raise UserError(f"line {number} is longer than {max_chars:,} characters; each line of a SAM 2 "
                                "stream holds one frame's masks", path)
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    yield number, exc


class StreamSource(Source):
    """`{"frame_index", "results": [{"object_id", "mask": {"size", "counts"}}]}` per line; frames in any order."""

    format = "sam2_stream"

    def __init__(self, path: Path, options: ReadOptions, log: IssueLog, data: list[Any] | None = None) -> None:
        super().__init__(path, options, log)
        self.video_id = safe_id(path.stem)
        lines = list(enumerate(data, start=1)) if data is not None else iter_stream_lines(path)
        self.entries: dict[int, list[Any]] = {}
        bad = 0
        for number, record in lines:
            if not self._add(number, record):
                bad += 1
        if not self.entries:
            raise UserError(f"no usable SAM 2 stream record ({bad} malformed lines); each line must be "
                            '{"frame_index": int, "results": [{"object_id", "mask": {"size", "counts"}}]}', path)
        self.corrections = ["frames sorted by frame_index; a repeated frame keeps its last record"]
        self.provider = self._frames()

    def _add(self, number: int, record: Any) -> bool:
        index = as_int(record.get("frame_index")) if isinstance(record, dict) else None
        results = record.get("results") if isinstance(record, dict) else None
        if index is None or index < 0 or not isinstance(results, list):
            problem = f"not JSON ({record.msg})" if isinstance(record, json.JSONDecodeError) else \
                "lacks an integer frame_index and a results list"
            self.issue("invalid_record", "error", f"line {number} {problem}; skipped", video_id=self.video_id)
            return False
        self.entries[index] = results  # the backward pass repeats frames: the last record wins
        return True

    def _frames(self):
        names = [self.path.stem + ext for ext in VIDEO_SUFFIXES]
        video = self.options.find_video(names, [self.path.parent])
        if video is None:
            raise UserError(f"no video found for this SAM 2 session (looked for {self.path.stem}.mp4 beside it): "
                            "pass the session video with --video", self.path)
        self.video = video
        provider = open_frames(video)
        if isinstance(provider, VideoFrames):
            self.fps_video = provider.info.fps
        return provider

    def plan(self) -> dict[str, list[int]]:
        return {self.video_id: sorted(self.entries)}

    def frames(self, video_id: str, indices: list[int]) -> Iterator[SourceFrame]:
        return read_frames(self, self.provider, video_id, indices, self._objects)

    def _objects(self, index: int, frame: tuple[int, int]) -> list[ObjectAnn]:
        objects: dict[int, ObjectAnn] = {}
        for result in self.entries.get(index, []):
            oid = as_int(result.get("object_id")) if isinstance(result, dict) else None
            if oid is None:
                self.issue("invalid_record", "error", "result without an integer object_id; skipped",
                           video_id=self.video_id, frame_index=index)
                continue
            obj = object_from_rle(self, result.get("mask"), frame, oid, self.label_for(oid),
                                  video_id=self.video_id, frame_index=index, empty=None)  # not visible
            if obj is not None:
                objects[oid] = obj
        return list(objects.values())

    def video_meta(self, video_id: str) -> dict[str, Any]:
        if isinstance(self.provider, VideoFrames):
            info = self.provider.info
            return {"fps": info.fps, "width": info.width, "height": info.height, "frame_count": info.frame_count}
        return {"fps": None}
