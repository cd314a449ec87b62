"""Uploads and the built-in sample: sort what a user uploaded into annotations, videos, frames and labels (staged in
a private cache folder, removed afterwards), detect formats, and preview frames with their masks drawn."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .gallery import draw_objects, upscale
from .home import home_dir, studio_home

SAMPLE_NAME = "sample"
# Options of the built-in sample the app generates on demand; empty: the offline demo's own (pipeline/demo.py: enough
# short videos for a temporal split and for the tiny model to learn boxes).
SAMPLE_OPTIONS: dict[str, Any] = {}
_SAMPLE_LOCK = threading.Lock()


@dataclass
class Inputs:
    """Uploaded (or sample) files sorted by role."""

    annotations: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    images: Path | None = None
    image_count: int = 0
    labels_file: Path | None = None
    labels: dict[int, str] = field(default_factory=dict)


def sample_options() -> dict[str, Any]:
    """The generator options of the built-in sample."""
    from .demo import SAMPLE_OPTIONS as DEMO_SAMPLE

    return dict(SAMPLE_OPTIONS or DEMO_SAMPLE)


def ensure_sample(progress: bool = False) -> Path:
    """The built-in sample in STUDIO_HOME/sample, generated on first use (seconds; a tqdm bar when `progress`)."""
    from .sample import generate_sample

    folder = studio_home() / SAMPLE_NAME
    with _SAMPLE_LOCK:
        if not (folder / "sample_truth.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            generate_sample(folder, **sample_options(), progress=progress)
    return folder


def sample_inputs(progress: bool = False) -> Inputs:
    """The sample's SAM 2 demo exports with their source videos and the real names of the objects."""
    from .sources.labels import load_labels

    folder = ensure_sample(progress)
    labels = folder / "labels.json"
    return Inputs(annotations=sorted(folder.glob("sam2_export_*.zip")), videos=sorted(folder.glob("session_*.mp4")),
                  labels_file=labels, labels=load_labels(labels))


@contextmanager
def staged_inputs(files: Sequence[str | Path] | None, sample: bool = False, progress: bool = False,
                  ) -> Iterator[Inputs]:
    """Sort uploads into annotations / videos / frames / labels; frames are gathered into one temporary folder."""
    from .sources.common import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from .sources.labels import load_labels

    if sample:
        yield sample_inputs(progress)
        return
    paths = [Path(f) for f in files or [] if f]
    if not paths:
        raise UserError("upload an export (ZIP, JSON, JSONL, with its video or frames) or pick the built-in sample")
    staging = Path(tempfile.mkdtemp(prefix="upload-", dir=home_dir("cache")))
    try:
        found = Inputs()
        for path in paths:
            suffix, stem = path.suffix.lower(), path.stem.lower()
            if not path.is_file():
                raise UserError("uploaded file is missing", path.name)
            if suffix in VIDEO_SUFFIXES:
                found.videos.append(path)
            elif suffix in IMAGE_SUFFIXES:
                _link(path, staging / "frames" / path.name)
                found.images, found.image_count = staging / "frames", found.image_count + 1
            elif "label" in stem and suffix in (".json", ".csv", ".txt"):
                found.labels_file, found.labels = path, load_labels(path)
            elif suffix == ".zip" and _frames_zip(path, IMAGE_SUFFIXES):
                from .safezip import extract_zip

                target = staging / "frames" / f"zip-{len(found.annotations)}-{path.stem}"
                target.mkdir(parents=True)
                found.image_count += len(extract_zip(path, target))
                found.images = staging / "frames"
            elif suffix in (".zip", ".json", ".jsonl", ".ndjson"):
                found.annotations.append(path)
            else:
                raise UserError("unsupported file type (expected ZIP, JSON, JSONL, a video or image frames)",
                                path.name)
        if not found.annotations:
            raise UserError("no annotation file among the uploads (a SAM 2 export ZIP, JSON or JSONL)")
        yield found
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _frames_zip(path: Path, image_suffixes: Any) -> bool:
    """True for a ZIP holding only image frames (in any sub-folders), not an export."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/") and not Path(n).name.startswith(".")
                     and "__MACOSX" not in n]
    except (OSError, zipfile.BadZipFile):
        return False
    return bool(names) and all(Path(n).suffix.lower() in image_suffixes for n in names)


def missing_frames(inputs: Inputs, limit: int = 10) -> tuple[int, list[str]]:
    """(how many, the first names) of the frames a COCO export names that are not among the uploads."""
    import json

    from .sources.coco import resolve_image

    missing: list[str] = []
    for path in inputs.annotations:
        if path.suffix.lower() != ".json":
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("images"), list) or "annotations" not in data:
            continue
        base = inputs.images or path.parent
        for image in data["images"]:
            name = image.get("file_name") if isinstance(image, dict) else None
            if not isinstance(name, str):
                continue
            try:
                found = resolve_image(name, base)
            except UserError:
                found = None
            if found is None or not found.is_file():
                missing.append(name)
    return len(missing), missing[:limit]


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def detect_inputs(files: Sequence[str | Path] | None, sample: bool = False, preview: int = 8, progress: bool = False,
                  ) -> tuple[dict[str, Any], list[tuple[Any, str]], list[tuple[Any, str]]]:
    """(what was recognised, preview frames with masks and boxes drawn, one thumbnail per object)."""
    from .ingest import detect

    with staged_inputs(files, sample, progress) as inputs:
        found = [detect(path) for path in inputs.annotations]
        info: dict[str, Any] = {
            "inputs": [{"file": f.path.name, "format": f.format, "details": f.details} for f in found],
            "videos": [v.name for v in inputs.videos], "frames": inputs.image_count,
            "labels_file": inputs.labels_file.name if inputs.labels_file else None, "sample": sample}
        count, names = missing_frames(inputs)
        info["missing_frames"] = {"count": count, "first": names}
        shots, objects, problems = _preview_frames(inputs, preview)
        if count:
            problems.insert(0, f"{count} frame(s) named in the export are not among the uploads (first: "
                               f"{', '.join(names[:5])}): upload them, or a ZIP of the frames folder")
    for oid in inputs.labels.keys() - objects.keys():  # named in labels.json but not in the previewed frames
        objects[oid] = {"label": "", "frames": 0, "thumb": None}
    info["objects"] = [{"object_id": oid, "label": o["label"], "name": inputs.labels.get(oid, ""),
                        "frames": o["frames"]} for oid, o in sorted(objects.items())]
    cache = re.escape(str(home_dir("cache")))
    info["problems"] = [re.sub(cache + r"/[^/\s]+/(?:frames/)?", "", p) for p in problems]  # names, not paths
    thumbs = [(o["thumb"], f"{oid}: {o['label']}") for oid, o in sorted(objects.items()) if o["thumb"] is not None]
    return info, shots, thumbs


def _preview_frames(inputs: Inputs, limit: int) -> tuple[list[tuple[Any, str]], dict[int, dict[str, Any]], list]:
    from .sources import IssueLog, ReadOptions, open_source

    options = ReadOptions(videos=tuple(inputs.videos), images=inputs.images,
                          single_input=len(inputs.annotations) == 1)
    log = IssueLog()
    shots: list[tuple[Any, str]] = []
    objects: dict[int, dict[str, Any]] = {}
    per_input = max(2, -(-limit // max(1, len(inputs.annotations))))
    for path in inputs.annotations:
        if len(shots) >= limit:
            break  # enough to look at; opening every export of a large upload would only cost time
        with open_source(path, options, log) as src:
            plan, start = {vid: idx for vid, idx in src.plan().items() if idx}, len(shots)
            for vid, indices in plan.items():
                for frame in src.frames(vid, _spread(indices, 2 * max(1, per_input // len(plan)))):
                    if frame.objects and len(shots) - start < per_input:  # frames without objects say little
                        image = frame.image.convert("RGB")
                        shots.append((draw_objects(image, frame.objects), f"{vid} · frame {frame.frame_index}"))
                        _collect(objects, image, frame.objects)
    problems = [f"{Path(i['source']).name}: {i['message']}" for i in log.issues if i.get("severity") == "error"]
    problems = (log.warnings + problems)[:5]
    return shots, objects, problems


def _spread(indices: list[int], count: int) -> list[int]:
    """`count` indices evenly spread over a sorted list."""
    if len(indices) <= count:
        return list(indices)
    step = (len(indices) - 1) / max(1, count - 1)
    return sorted({indices[round(k * step)] for k in range(count)})


def _collect(objects: dict[int, dict[str, Any]], image: Any, anns: list[Any]) -> None:
    for obj in anns:
        entry = objects.setdefault(obj.object_id, {"label": obj.label, "frames": 0, "area": -1, "thumb": None})
        entry["frames"] += 1
        if obj.area > entry["area"]:
            x1, y1, x2, y2 = obj.bbox
            box = (max(0, x1 - 4), max(0, y1 - 4), min(image.width, x2 + 4), min(image.height, y2 + 4))
            crop = draw_objects(image, [obj], boxes=False).crop(box)
            entry["area"], entry["thumb"] = obj.area, upscale(crop, 96)


def labels_from_rows(rows: Any) -> dict[int, str]:
    """The label editor's rows [[object id, label in export, name], ...] (or {id: name}) as {id: name}."""
    if isinstance(rows, dict) and "data" in rows:
        rows = rows["data"]
    if isinstance(rows, dict):
        rows = [[key, "", value] for key, value in rows.items()]
    labels = {}
    for row in rows or []:
        if len(row) < 3 or row[0] in (None, "") or not str(row[2] or "").strip():
            continue
        try:
            labels[int(float(row[0]))] = str(row[2]).strip()
        except ValueError:
            raise UserError(f"label editor: object id {row[0]!r} is not a number") from None
    return labels
