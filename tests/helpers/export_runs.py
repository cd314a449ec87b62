"""Real run folders and exports for the export / push / deploy tests, each made once per test process.

A tiny dataset (64x64 frames with a red circle-labelled and a green square-labelled patch, saved random split) is
trained for 2 steps with the real trainer (LoRA, full or QLoRA on tiny-smolvlm), then exported with the real
exporter. Results are memoised at module level, so test files that share them train each run only once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

_CACHE: dict[str, Any] = {}


def make_dataset(root: Path, frames: int = 12, size: int = 64) -> Path:
    """records.jsonl + images/ + dataset.json + a random split (8 train / 4 val frames)."""
    from PIL import Image

    from pipeline.masks import encode_rle
    from pipeline.records import FrameRecord, ObjectAnn, write_records
    from pipeline.split import split_dataset

    (root / "images" / "vid").mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(frames):
        img = np.full((size, size, 3), 30, np.uint8)
        objects = []
        for oid, (label, colour) in enumerate([("circle", (230, 40, 40)), ("square", (40, 200, 60))]):
            w = int(rng.integers(10, 20))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - w))
            mask = np.zeros((size, size), np.uint8)
            mask[y:y + w, x:x + w] = 1
            img[mask == 1] = colour
            objects.append(ObjectAnn(oid, label, [x, y, x + w, y + w], int(mask.sum()), encode_rle(mask)))
        rel = f"images/vid/{i:06d}.jpg"
        Image.fromarray(img).save(root / rel, quality=95)
        records.append(FrameRecord(f"vid-{i}", "synthetic", "vid", i, rel, size, size, objects))
    write_records(records, root / "records.jsonl")
    meta = {"tool_version": "test", "sources": [{"path": str(root / "shapes.zip"), "format": "sam2_demo_zip",
                                                 "fingerprint": "abc123def4567890", "video": "shapes.mp4",
                                                 "fps_claimed": 30.0, "fps_video": 24.0, "overlay_frames": 0}],
            "frames": frames, "objects": 2 * frames, "labels": {"circle": frames, "square": frames},
            "family": "smolvlm", "tasks": ["grounding"], "seed": 0, "warnings": []}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    split_dataset(root, strategy="random", ratios=(0.7, 0.3, 0.0), seed=1, dup_distance=0)
    return root


def dataset(base: Path) -> Path:
    """The shared tiny dataset."""
    if "dataset" not in _CACHE:
        _CACHE["dataset"] = make_dataset(base / "dataset")
    return _CACHE["dataset"]


def trained_run(base: Path, method: str, model: str = "tiny-smolvlm") -> Path:
    """A 2-step run of `model` (`lora`, `full` or `qlora`) with checkpoints at steps 1 and 2."""
    key = f"run-{method}" if model == "tiny-smolvlm" else f"run-{method}-{model}"
    if key not in _CACHE:
        from pipeline.config import set_field
        from pipeline.presets import get_preset
        from pipeline.train import run_training

        cfg = get_preset("quick_test", model=model)
        for field, value in {"data.path": str(dataset(base)), "training.output_dir": str(base / key),
                             "training.method": method, "training.max_steps": 2, "training.save_steps": 1,
                             "training.keep_checkpoints": 2, "data.max_eval_samples": 2}.items():
            set_field(cfg, field, value)
        result = run_training(cfg)
        assert result.status == "succeeded", result
        _CACHE[key] = base / key
    return _CACHE[key]


def exported(base: Path, method: str, mode: str, **options: Any) -> Any:
    """ExportResult of exporting `trained_run(method)` in `mode` into base/exports/<method>-<mode>."""
    from pipeline.export import export_run

    key = f"export-{method}-{mode}"
    if key not in _CACHE:
        _CACHE[key] = export_run(trained_run(base, method), base / "exports" / f"{method}-{mode}", mode=mode,
                                 **options)
    return _CACHE[key]


def base_dir(tmp_path_factory: Any) -> Path:
    """One folder per test process for the shared dataset, runs and exports."""
    if "base" not in _CACHE:
        _CACHE["base"] = tmp_path_factory.mktemp("export_runs")
    return _CACHE["base"]


def scan_for_leaks(files: dict[str, bytes], needles: list[str]) -> list[str]:
    """'name: needle' for every file (all bytes, weights included) that contains one of `needles`."""
    return [f"{name}: {needle}" for name, data in files.items() for needle in needles if needle.encode() in data]


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a folder (relative name -> bytes)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
