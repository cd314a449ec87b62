"""A small converted dataset folder written through pipeline.dataset (records, dataset.json, optional splits)."""

from __future__ import annotations

from pathlib import Path

from pipeline import dataset as ds
from pipeline.records import FrameRecord, ObjectAnn, write_records


def record(i: int, label: str = "cat") -> FrameRecord:
    return FrameRecord(f"v-{i:03d}", "src", "v", i, f"images/v/{i:03d}.jpg", 64, 48,
                       [ObjectAnn(1, label, [1, 2, 30, 40], 100, {"size": [48, 64], "counts": "x"})])


def make(root: Path, frames: int = 6, splits: bool = False, meta: dict | None = None) -> Path:
    root.mkdir(parents=True)
    records = [record(i, "cat" if i % 2 else "dog") for i in range(frames)]
    write_records(records, root / ds.RECORDS_FILE)
    ds.write_meta(root, meta if meta is not None else {"labels": {"cat": 3, "dog": 3}, "tasks": ["grounding"],
                                                       "seed": 3, "convention": "qwen2_5_vl", "max_pixels": 200_704})
    if splits:
        for name, chosen in (("train", records[:4]), ("val", records[4:5]), ("test", records[5:])):
            ds.split_path(root, name).parent.mkdir(exist_ok=True)
            write_records(chosen, ds.split_path(root, name))
    return root
