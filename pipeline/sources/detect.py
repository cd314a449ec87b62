"""Which SAM 2 export format a file or folder is: `detect_format(path) -> DetectResult(format, path, details)`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import VIDEO_SUFFIXES, check_json_size

FORMATS = {
    "sam2_demo_zip": "SAM 2 demo export (annotations.json + metadata.json, ZIP or job folder)",
    "sav": "SA-V (*_manual.json / *_auto.json, or JPEGImages_24fps/ + Annotations_6fps/)",
    "sam2_stream": "SAM 2 demo stream (JSONL of frame_index + results)",
    "coco": "COCO instances JSON (images, annotations, categories)",
    "ytvis": "YouTube-VIS JSON (videos, annotations)",
}
# distinctive keys of each JSON format, in the order they are tried
JSON_KEYS = [
    ("sav", ("masklet", "masklet_id")),
    ("sam2_demo_zip", ("video", "annotations")),
    ("ytvis", ("videos", "annotations")),
    ("coco", ("images", "annotations")),
    ("sam2_stream", ("frame_index", "results")),
]
EXPECTED = ("expected SAM 2 demo export {video, annotations}, SA-V {masklet, masklet_id}, COCO {images, "
            "annotations}, YouTube-VIS {videos, annotations} or SAM 2 stream lines {frame_index, results}")


@dataclass
class DetectResult:
    """A recognised input: its format id, path and a one-line description (`data`: the parsed JSON, if any)."""

    format: str
    path: Path
    details: str
    data: Any = field(default=None, repr=False, compare=False)


def detect_format(path: str | Path) -> DetectResult:
    """Recognise an input; UserError saying what was recognised or why nothing matched."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError("no such file or folder", path)
    if path.is_dir():
        return _detect_folder(path)
    from ..safezip import is_zip_file

    if is_zip_file(path):
        return DetectResult("sam2_demo_zip", path, "ZIP archive (SAM 2 demo export)")
    suffix = path.suffix.lower()
    if suffix == ".zip":
        raise UserError("not a ZIP archive (its bytes do not start with the ZIP signature; re-download or re-export "
                        "it)", path)
    if suffix in VIDEO_SUFFIXES:
        raise UserError("is a video, not an annotation export: give the annotations as INPUT and the video with "
                        "--video", path)
    if suffix not in (".json", ".jsonl", ".ndjson") and not _head(path).lstrip().startswith((b"{", b"[")):
        raise UserError("not a ZIP, JSON or JSONL file (unrecognised content)", path)
    if suffix in (".jsonl", ".ndjson"):
        return _detect_jsonl(path)
    check_json_size(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except UnicodeDecodeError:
        raise UserError("not a ZIP, JSON or JSONL file (not UTF-8 text)", path) from None
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several JSON documents: JSON lines with another suffix
            return _detect_jsonl(path)
        raise UserError(f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})", path) from None
    return classify_json(data, path)


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(4096).lstrip(b"\xef\xbb\xbf")


def classify_json(data: Any, path: Path) -> DetectResult:
    """The format of a parsed JSON document, or a UserError listing its keys and what was expected."""
    if isinstance(data, list):
        first = data[0] if data else None
        if isinstance(first, dict) and "frame_index" in first and "results" in first:
            return DetectResult("sam2_stream", path, f"SAM 2 stream records (JSON list of {len(data)})", data)
        kind = f"{_kind(first)}s" if data else "nothing"
        raise UserError(f"JSON is a list of {kind}; {EXPECTED}", path)
    if not isinstance(data, dict):
        raise UserError(f"JSON is a {_kind(data)}, not an object; {EXPECTED}", path)
    for name, keys in JSON_KEYS:
        if all(k in data for k in keys):
            return DetectResult(name, path, _details(name, data), data)
    present = sorted(data)
    partial = [f"{FORMATS[name].split(' (')[0]} needs {list(k for k in need if k not in data)}"
               for name, need in JSON_KEYS if any(k in data for k in need)]
    hint = f" (looks like {'; '.join(partial)})" if partial else ""
    raise UserError(f"JSON has keys {present[:15]}{hint}; {EXPECTED}", path)


def _kind(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object"}
    return names.get(type(value), "null")


def _details(name: str, data: dict[str, Any]) -> str:
    if name == "sav":
        return f"SA-V annotation of video {data.get('video_id')!r}: {len(data['masklet'])} annotated frames"
    if name == "sam2_demo_zip":
        return f"SAM 2 demo export annotations.json ({len(data['annotations'])} frames)"
    if name == "ytvis":
        return f"YouTube-VIS JSON ({len(data['videos'])} videos, {len(data['annotations'])} tracks)"
    if name == "coco":
        return f"COCO instances JSON ({len(data['images'])} images, {len(data['annotations'])} annotations)"
    return "SAM 2 stream record (one JSON object)"


def _detect_jsonl(path: Path) -> DetectResult:
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON lines (first line: {exc.msg})", path) from None
    if isinstance(record, dict) and "frame_index" in record and "results" in record:
        return DetectResult("sam2_stream", path, "SAM 2 stream (JSON lines)")
    keys = sorted(record) if isinstance(record, dict) else f"a {_kind(record)}"
    raise UserError(f"JSON lines whose first record has {keys}; expected SAM 2 stream records "
                    "{frame_index, results}", path)


def _detect_folder(path: Path) -> DetectResult:
    from .sam2_demo_zip import find_export_root

    if (path / "JPEGImages_24fps").is_dir() and (path / "Annotations_6fps").is_dir():
        return DetectResult("sav", path, "SA-V val/test folders (JPEGImages_24fps + Annotations_6fps)")
    root = find_export_root(path)
    if root is not None:
        return DetectResult("sam2_demo_zip", path, f"SAM 2 demo export job folder ({root.name})")
    seen = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))[:10]
    raise UserError(f"folder holds {seen or 'nothing'}; expected a SAM 2 demo export job folder (annotations.json) "
                    "or SA-V val/test folders (JPEGImages_24fps/ + Annotations_6fps/); give JSON/ZIP files directly",
                    path)
