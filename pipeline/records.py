"""Canonical per-frame records and `records.jsonl` I/O: what every reader produces and every writer reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_FIELDS = {"id": str, "video_id": str, "frame_index": int, "image": str, "width": int, "height": int}


@dataclass
class ObjectAnn:
    """One visible object in one frame; `bbox` is [x1, y1, x2, y2] in image pixels, x2/y2 exclusive."""

    object_id: int
    label: str
    bbox: list[int]
    area: int
    rle: dict[str, Any]  # COCO compressed RLE {"size": [h, w], "counts": str}


@dataclass
class FrameRecord:
    """One annotated frame; `image` is a path relative to the dataset folder."""

    id: str
    source: str
    video_id: str
    frame_index: int
    image: str
    width: int
    height: int
    objects: list[ObjectAnn] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameRecord:
        objects = [ObjectAnn(**obj) for obj in data.get("objects", [])]
        fields = {k: data[k] for k in ("id", "source", "video_id", "frame_index", "image", "width", "height")}
        return cls(**fields, objects=objects)

    @property
    def labels(self) -> list[str]:
        return [obj.label for obj in self.objects]


def record_line(record: FrameRecord) -> str:
    """One record as a JSON line (records.jsonl, splits/*.jsonl)."""
    return json.dumps(record.to_dict(), separators=(",", ":")) + "\n"


def records_text(records: Iterable[FrameRecord]) -> str:
    """Records as JSON-lines text (for an atomic write)."""
    return "".join(record_line(r) for r in records)


def write_records(records: Iterable[FrameRecord], path: str | Path) -> int:
    """Write records as JSON lines; returns how many were written."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record_line(record))
            count += 1
    return count


def iter_records(path: str | Path) -> Iterator[FrameRecord]:
    """Stream records from a JSON-lines file."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield FrameRecord.from_dict(json.loads(line))


def read_records(path: str | Path) -> list[FrameRecord]:
    """Read every record of a JSON-lines file (a dataset folder: `pipeline.dataset.open_dataset(...).records()`)."""
    return list(iter_records(Path(path)))


def parse_record(data: Any) -> FrameRecord:
    """A FrameRecord from one decoded JSON line; ValueError naming the first problem."""
    if not isinstance(data, dict):
        raise ValueError("line is not a JSON object")
    for key, kind in _FIELDS.items():
        value = data.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"field {key!r} is missing or not a {kind.__name__}")
    if data["width"] <= 0 or data["height"] <= 0:
        raise ValueError(f"size {data['width']}x{data['height']} is not positive")
    objects = data.get("objects") or []
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise ValueError("'objects' is not a list of objects")
    anns = []
    for obj in objects:
        if not isinstance(obj.get("object_id"), int):
            raise ValueError(f"object_id {obj.get('object_id')!r} is not an integer")
        anns.append(ObjectAnn(object_id=obj["object_id"], label=str(obj.get("label") or ""), bbox=obj.get("bbox"),
                              area=obj.get("area") or 0, rle=obj.get("rle")))
    return FrameRecord(**{key: data[key] for key in _FIELDS}, source=str(data.get("source") or ""), objects=anns)
