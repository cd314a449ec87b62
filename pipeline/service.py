"""The app's facade: plain functions the Gradio handlers call (no gradio here), returning JSON-able dicts, paths,
PIL images and plotly figures. Everything is addressed by name inside STUDIO_HOME (datasets/<name>, runs by run id,
exports/<name>), so a remote caller can never point the studio at an arbitrary path.

    from pipeline import service
    service.convert_inputs([], "demo", sample=True)           # built-in sample -> STUDIO_HOME/datasets/demo
    service.split("demo", "random", "0.8,0.1,0.1", 42)
    job = service.start_training("demo", preset="quick_test", max_steps=3)
    for view in service.watch_job(job["job_id"]): print(view["status"], view["step"], view["total_steps"])
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .home import home_dir, studio_home

if TYPE_CHECKING:
    from .jobs import LocalBackend

DEFAULT_MODEL = "tiny-smolvlm"
DEFAULT_PRESET = "cpu_demo"
DEFAULT_TASKS = ("grounding",)
SAMPLE_NAME = "sample"
# The built-in sample the app generates on demand: two demo-export sessions, every other frame annotated.
SAMPLE_OPTIONS: dict[str, Any] = {"frames": 240, "videos": 2, "width": 128, "height": 72, "export_every": 2, "seed": 0}
FORM_FIELDS = ("training.method", "training.max_steps", "training.epochs", "training.batch_size",
               "training.grad_accum", "training.learning_rate", "training.scheduler", "lora.r", "lora.alpha",
               "data.max_length", "training.save_steps", "training.logging_steps")
MAX_YAML_BYTES = 64 * 1024
PALETTE = [(230, 40, 40), (40, 190, 70), (40, 90, 235), (250, 205, 30), (205, 50, 205), (30, 205, 215),
           (255, 128, 0), (128, 64, 255)]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LOCK = threading.Lock()
_BACKENDS: dict[Path, LocalBackend] = {}
_MODE = {"scheduler": "process"}
_HARDWARE: dict[str, Any] = {}


# -- names, homes, the jobs backend ----------------------------------------------------------------------------
def check_name(name: str, what: str = "name") -> str:
    """A folder name of letters, digits, '_', '.', '-' (at most 64, no '..'); UserError otherwise."""
    name = (name or "").strip()
    if not _NAME.fullmatch(name) or ".." in name:
        raise UserError(f"{what} {name!r}: use letters, digits, '_', '.', '-' (at most 64 characters)")
    return name


def dataset_dir(name: str) -> Path:
    """The folder of a converted dataset in STUDIO_HOME/datasets; UserError when there is none."""
    from .quality import is_dataset

    path = home_dir("datasets") / check_name(name, "dataset")
    if not is_dataset(path):
        raise UserError(f"no converted dataset named {name!r} (convert an export first)")
    return path


def list_datasets() -> list[str]:
    """Names of the converted datasets, newest first."""
    folders = [p for p in home_dir("datasets").iterdir() if (p / "dataset.json").is_file()]
    return [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


def on_space() -> bool:
    """True when running as a Hugging Face Space (SPACE_ID is set)."""
    return bool(os.environ.get("SPACE_ID"))


def require_user(username: str | None, action: str) -> None:
    """On a Space only signed-in users may start jobs or push; UserError otherwise."""
    if on_space() and not username:
        raise UserError(f"sign in with Hugging Face (button at the top) to {action}")


def backend() -> LocalBackend:
    """The jobs backend of the current STUDIO_HOME (one per data home and process)."""
    from .jobs import LocalBackend

    home = studio_home()
    with _LOCK:
        found = _BACKENDS.get(home)
        if found is None:
            found = _BACKENDS[home] = LocalBackend(home, scheduler=_MODE["scheduler"])
        return found


def start_scheduler() -> LocalBackend:
    """The app's scheduler: marks jobs whose process is gone interrupted, then runs the loop in a daemon thread."""
    _MODE["scheduler"] = "thread"
    found = backend()
    found.mode = "thread"
    found.start()
    return found


def hardware() -> Any:
    """The detected training hardware (probed once per process; importing torch takes a few seconds)."""
    with _LOCK:
        if "hw" not in _HARDWARE:
            from .hardware import detect_hardware

            _HARDWARE["hw"] = detect_hardware()
        return _HARDWARE["hw"]


# -- inputs: the built-in sample and uploads -------------------------------------------------------------------
@dataclass
class Inputs:
    """Uploaded (or sample) files sorted by role."""

    annotations: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    images: Path | None = None
    image_count: int = 0
    labels_file: Path | None = None
    labels: dict[int, str] = field(default_factory=dict)


def ensure_sample() -> Path:
    """The built-in sample in STUDIO_HOME/sample, generated on first use (a few seconds)."""
    from .sample import generate_sample

    folder = studio_home() / SAMPLE_NAME
    with _LOCK:
        if not (folder / "sample_truth.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            generate_sample(folder, **SAMPLE_OPTIONS)
    return folder


def sample_inputs() -> Inputs:
    """The sample's SAM 2 demo exports with their source videos and the real names of the objects."""
    from .sources.labels import load_labels

    folder = ensure_sample()
    labels = folder / "labels.json"
    return Inputs(annotations=sorted(folder.glob("sam2_export_*.zip")), videos=sorted(folder.glob("session_*.mp4")),
                  labels_file=labels, labels=load_labels(labels))


@contextmanager
def staged_inputs(files: Sequence[str | Path] | None, sample: bool = False) -> Iterator[Inputs]:
    """Sort uploads into annotations / videos / frames / labels; frames are gathered into one temporary folder."""
    from .sources.common import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from .sources.labels import load_labels

    if sample:
        yield sample_inputs()
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


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


# -- Data tab ---------------------------------------------------------------------------------------------------
def detect_inputs(files: Sequence[str | Path] | None, sample: bool = False, preview: int = 8,
                  ) -> tuple[dict[str, Any], list[tuple[Any, str]], list[tuple[Any, str]]]:
    """(what was recognised, preview frames with masks and boxes drawn, one thumbnail per object)."""
    from .ingest import detect

    with staged_inputs(files, sample) as inputs:
        found = [detect(path) for path in inputs.annotations]
        info: dict[str, Any] = {
            "inputs": [{"file": f.path.name, "format": f.format, "details": f.details} for f in found],
            "videos": [v.name for v in inputs.videos], "frames": inputs.image_count,
            "labels_file": inputs.labels_file.name if inputs.labels_file else None, "sample": sample}
        shots, objects, problems = _preview_frames(inputs, preview)
    info["objects"] = [{"object_id": oid, "label": o["label"], "name": inputs.labels.get(oid, ""),
                        "frames": o["frames"]} for oid, o in sorted(objects.items())]
    info["problems"] = problems
    thumbs = [(o["thumb"], f"{oid}: {o['label']}") for oid, o in sorted(objects.items())]
    return info, shots, thumbs


def _preview_frames(inputs: Inputs, limit: int) -> tuple[list[tuple[Any, str]], dict[int, dict[str, Any]], list]:
    from .sources import IssueLog, ReadOptions, open_source

    options = ReadOptions(videos=tuple(inputs.videos), images=inputs.images,
                          single_input=len(inputs.annotations) == 1)
    log, shots, objects = IssueLog(), [], {}
    per_input = max(1, limit // max(1, len(inputs.annotations)))
    for path in inputs.annotations:
        with open_source(path, options, log) as src:
            plan = {vid: idx for vid, idx in src.plan().items() if idx}
            for vid, indices in plan.items():
                for frame in src.frames(vid, _spread(indices, max(1, per_input // len(plan)))):
                    image = frame.image.convert("RGB")
                    shots.append((draw_objects(image, frame.objects), f"{vid} · frame {frame.frame_index}"))
                    _collect(objects, image, frame.objects)
    problems = [f"{Path(i['source']).name}: {i['message']}" for i in log.issues if i.get("severity") == "error"][:5]
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
            pad = 4
            crop = draw_objects(image, [obj], boxes=False).crop((max(0, x1 - pad), max(0, y1 - pad),
                                                                 min(image.width, x2 + pad), min(image.height, y2 + pad)))
            entry["area"], entry["thumb"] = obj.area, _upscale(crop, 96)


def draw_objects(image: Any, objects: list[Any], boxes: bool = True, min_width: int = 320) -> Any:
    """A copy of a frame with each object's mask tinted and its box and label drawn (upscaled when small)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from .masks import decode_rle

    rgb = np.asarray(image.convert("RGB")).copy()
    for obj in objects:
        mask = decode_rle(obj.rle).astype(bool)
        if mask.shape == rgb.shape[:2]:
            colour = np.array(PALETTE[obj.object_id % len(PALETTE)])
            rgb[mask] = (0.5 * rgb[mask] + 0.5 * colour).astype(np.uint8)
    scale = max(1, min_width // max(1, rgb.shape[1])) if boxes else 1
    out = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST)
    if boxes:
        draw = ImageDraw.Draw(out)
        for obj in objects:
            colour = PALETTE[obj.object_id % len(PALETTE)]
            x1, y1, x2, y2 = (v * scale for v in obj.bbox)
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=2)
            draw.text((x1 + 3, max(0, y1 - 12)), obj.label, fill=colour)
    return out


def _upscale(image: Any, side: int) -> Any:
    from PIL import Image

    scale = max(1, side // max(1, max(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


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


def convert_inputs(files: Sequence[str | Path] | None, name: str, *, sample: bool = False,
                   labels: dict[int, str] | None = None, tasks: Sequence[str] = DEFAULT_TASKS,
                   family: str = DEFAULT_MODEL, every: int = 1, max_frames: int | None = None,
                   overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Convert uploads (or the sample) into STUDIO_HOME/datasets/<name>; names typed in the editor win."""
    from .commands.convert import resolve_convention
    from .ingest import convert

    name = check_name(name, "dataset name")
    out = home_dir("datasets") / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"a dataset named {name!r} already exists: choose another name or tick 'replace'")
    with staged_inputs(files, sample) as inputs:
        names = {**inputs.labels, **(labels or {})}
        summary = convert(inputs.annotations, out, video=inputs.videos, images=inputs.images, labels=names or None,
                          convention=resolve_convention(family or DEFAULT_MODEL), tasks=list(tasks or DEFAULT_TASKS),
                          every=int(every or 1), max_frames=int(max_frames) if max_frames else None,
                          progress=progress, overwrite=overwrite, family=family or DEFAULT_MODEL)
    return {"dataset": name, "frames": summary.frames, "objects": summary.objects, "labels": summary.labels,
            "videos": summary.videos, "issues": summary.issues, "warnings": summary.warnings[:20],
            "files": summary.files}


# -- Quality & Split tab ---------------------------------------------------------------------------------------
def validate_dataset(name: str) -> dict[str, Any]:
    """Run the quality rules on a dataset; report files in STUDIO_HOME/reports/<name>/ (replaced on each run)."""
    from .quality import run_rules, write_report

    report = write_report(run_rules(dataset_dir(name)), home_dir("reports") / name, overwrite=True)
    folder = home_dir("reports") / name
    text = (folder / "report.md").read_text(encoding="utf-8")
    return {"dataset": name, "passed": report.passed, "summary": report.summary,
            "findings": [{"rule": f.rule, "severity": f.severity, "message": f.message, "records": len(f.records)}
                         for f in report.findings],
            "markdown": text.split("\n## Plots")[0],
            "plots": [str(p) for p in sorted(folder.glob("*.png"))],
            "files": [str(folder / "report.md"), str(folder / "report.json")]}


def split(name: str, strategy: str = "temporal", ratios: str | Sequence[float] = "0.8,0.1,0.1",
          seed: int = 42) -> dict[str, Any]:
    """Split a dataset (writes splits/ and split.yaml into it); the counts, shares and notes."""
    from .split import split_dataset

    result = split_dataset(dataset_dir(name), strategy=strategy, ratios=ratios, seed=int(seed))
    return {"dataset": name, "strategy": result.strategy, "ratios": list(result.ratios), "seed": result.seed,
            "guard": result.guard, "counts": result.counts, "objects": result.objects,
            "label_shares": result.label_shares, "max_share_deviation": round(result.max_deviation, 4),
            "videos": result.videos, "notes": result.notes, "digest": result.digest}


def split_figure(result: dict[str, Any]) -> Any:
    """Frames per split and each label's share per split, as one grouped bar chart."""
    import plotly.graph_objects as go

    shares = {k: v for k, v in result.get("label_shares", {}).items() if k != "overall"}
    labels = sorted({label for per in shares.values() for label in per})
    counts = result.get("counts", {})
    fig = go.Figure([go.Bar(x=labels, y=[100 * per.get(label, 0.0) for label in labels],
                            name=f"{split} ({counts.get(split, 0)} frames)") for split, per in shares.items()])
    fig.update_layout(title="Label share per split (% of the split's objects)", barmode="group", height=320,
                      template="plotly_white", margin={"t": 50, "b": 30, "l": 40, "r": 10})
    return fig
