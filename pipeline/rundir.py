"""The run folder: its file names, progress events (read, tail), checkpoints and their manifests, best.json, STOP.

This module is the only one that spells a run-folder name; every other module asks it (constants or functions).

    RUN/config.yaml            the TrainConfig the run was started with
    RUN/train.log              the trainer's log (and, under a job runner, its stdout/stderr)
    RUN/progress.jsonl         one JSON event a line, each with the next `seq` (ProgressTail reads it by byte offset)
    RUN/checkpoint-N/          Trainer checkpoints; manifest.json (sizes + sha256) is written last: only a checkpoint
                               whose manifest validates counts (newest_valid_checkpoint, the one rule)
    RUN/checkpoint-N/studio_state.json   counters a resume needs (early stopping)
    RUN/best.json              the best checkpoint by the configured metric
    RUN/STOP                   a cancel request; the trainer checks it at every step
    RUN/studio.json            what evaluation and export need (also written into each export)
    RUN/adapter/ or RUN/model/ the final weights (LoRA/QLoRA or full fine-tuning)
    RUN/tb/, RUN/eval/<name>/  TensorBoard events and evaluations

A step job's folder (convert, validate, evaluate, export: STUDIO_HOME/jobs/<id>, `pipeline.steps`) is a run folder
too: train.log, progress.jsonl and STOP as above, plus

    JOB/request.json           what to run (kind and parameters), written when the job is submitted
    JOB/result.json            what the step produced (the app's result view), written atomically at its end
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text

CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"
PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "STOP"
BEST_FILE = "best.json"
STUDIO_FILE = "studio.json"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "studio_state.json"  # early-stopping counters, saved inside each checkpoint
CHECKPOINT_PREFIX = "checkpoint-"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
TENSORBOARD_DIR = "tb"
EVAL_DIR = "eval"
REQUEST_FILE = "request.json"
RESULT_FILE = "result.json"
OUTPUT_TMP = ".output.tmp"  # the final output while it is written; renamed into place when complete
FRESH_RUN_FILES = frozenset({CONFIG_FILE, LOG_FILE, STOP_FILE})  # what a job runner may leave before training starts
# The names no other module may spell (tests/test_architecture.py checks it).
RUN_FILE_NAMES = (CONFIG_FILE, LOG_FILE, PROGRESS_FILE, STOP_FILE, BEST_FILE, STUDIO_FILE, MANIFEST_FILE, STATE_FILE,
                  CHECKPOINT_PREFIX, OUTPUT_TMP, REQUEST_FILE, RESULT_FILE)
_CHECKPOINT = re.compile(re.escape(CHECKPOINT_PREFIX) + r"(\d+)")


# -- paths ------------------------------------------------------------------------------------------------------
def config_path(run_dir: str | Path) -> Path:
    """RUN/config.yaml."""
    return Path(run_dir) / CONFIG_FILE


def log_path(run_dir: str | Path) -> Path:
    """RUN/train.log."""
    return Path(run_dir) / LOG_FILE


def progress_path(run_dir: str | Path) -> Path:
    """RUN/progress.jsonl."""
    return Path(run_dir) / PROGRESS_FILE


def studio_path(folder: str | Path) -> Path:
    """studio.json of a run folder, a final output or an export."""
    return Path(folder) / STUDIO_FILE


def request_path(job_dir: str | Path) -> Path:
    """JOB/request.json of a step job."""
    return Path(job_dir) / REQUEST_FILE


def result_path(job_dir: str | Path) -> Path:
    """JOB/result.json of a step job."""
    return Path(job_dir) / RESULT_FILE


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object file, None when absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Replace a JSON object file atomically (readers never see half of it)."""
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def output_path(run_dir: str | Path, method: str) -> Path:
    """Where the final weights go: RUN/model for full fine-tuning, RUN/adapter otherwise."""
    return Path(run_dir) / (MODEL_DIR if method == "full" else ADAPTER_DIR)


def output_name(method: str) -> str:
    """The final weights' folder name for a training method (model or adapter)."""
    return MODEL_DIR if method == "full" else ADAPTER_DIR


def final_output(run_dir: str | Path) -> Path | None:
    """RUN/adapter or RUN/model when the run wrote its final weights, else None."""
    return next((Path(run_dir) / name for name in (ADAPTER_DIR, MODEL_DIR) if (Path(run_dir) / name).is_dir()), None)


def tensorboard_path(run_dir: str | Path) -> Path:
    """RUN/tb: TensorBoard event files of training and evaluation."""
    return Path(run_dir) / TENSORBOARD_DIR


def eval_path(run_dir: str | Path, name: str) -> Path:
    """RUN/eval/<name>: one evaluation's outputs."""
    return Path(run_dir) / EVAL_DIR / name


def eval_metric_files(run_dir: str | Path) -> list[Path]:
    """RUN/eval/*/metrics.json, sorted."""
    return sorted(Path(run_dir).glob(f"{EVAL_DIR}/*/metrics.json"))


def looks_like_run(path: str | Path) -> bool:
    """True when a folder holds a run's config or progress file."""
    return any((Path(path) / name).exists() for name in (CONFIG_FILE, PROGRESS_FILE))


def leftovers(run_dir: str | Path) -> list[str]:
    """Names in RUN that a fresh (not resumed) run must not find: all but what a job runner writes first."""
    return sorted(p.name for p in Path(run_dir).iterdir() if p.name not in FRESH_RUN_FILES
                  and not p.name.startswith("."))


# -- progress events ------------------------------------------------------------------------------------------
class ProgressTail:
    """Reads only the complete lines appended since the last call; a partial last line waits for its newline."""

    def __init__(self, path: str | Path, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset

    def read(self) -> list[dict[str, Any]]:
        """New events (JSON objects) since the previous call."""
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, 2)
                if size < self.offset:  # the file was replaced or truncated: start over
                    self.offset = 0
                handle.seek(self.offset)
                data = handle.read(size - self.offset)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash: skip it, keep the rest
            if isinstance(event, dict):
                events.append(event)
        return events


def read_events(path: str | Path, offset: int = 0) -> list[dict[str, Any]]:
    """Every complete event of a progress file from a byte offset."""
    return ProgressTail(path, offset).read()


def run_events(run_dir: str | Path, offset: int = 0) -> list[dict[str, Any]]:
    """Every complete event of RUN/progress.jsonl from a byte offset."""
    return read_events(progress_path(run_dir), offset)


def last_event(path: str | Path) -> dict[str, Any]:
    """The last complete JSON line of a progress file ({} when none); reads at most its last 64 KiB."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - 65536))
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return {}
    for line in reversed(lines):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            return event
    return {}


def file_size(path: str | Path) -> int:
    """Size of a file in bytes, 0 when absent."""
    try:
        return Path(path).stat().st_size
    except FileNotFoundError:
        return 0


def log_tail(path: str | Path, lines: int = 20, max_bytes: int = 16384) -> str:
    """The last lines of a log file (reads at most `max_bytes` from its end)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def run_outcome(run_dir: str | Path, offset: int = 0) -> tuple[str | None, str | None]:
    """(status of the last end event, message of the last error event) written after `offset` in progress.jsonl."""
    status = error = None
    for event in run_events(run_dir, offset):
        if event.get("event") == "end":
            status = event.get("status")
            error = event.get("error") or error
        elif event.get("event") == "error":
            error = str(event.get("message") or event.get("error") or "error event without a message")
    return status, error


# -- checkpoints ------------------------------------------------------------------------------------------------
def checkpoint_name(step: int) -> str:
    """checkpoint-N, the Trainer's folder name for step N."""
    return f"{CHECKPOINT_PREFIX}{int(step)}"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """RUN/checkpoint-N."""
    return Path(run_dir) / checkpoint_name(step)


def checkpoint_step(path: str | Path) -> int | None:
    """N of a checkpoint-N folder (or name), None for anything else."""
    match = _CHECKPOINT.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(checkpoint: str | Path, step: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash every file of a checkpoint and write manifest.json last, atomically: the folder is now complete."""
    folder = Path(checkpoint)
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE and
                       not p.name.startswith(".")):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {"step": step, "created": round(time.time(), 3), "files": files,
                "total_bytes": sum(f["size"] for f in files.values()), **(extra or {})}
    atomic_write_text(folder / MANIFEST_FILE, json.dumps(manifest, indent=1) + "\n")
    return manifest


def read_manifest(checkpoint: str | Path) -> dict[str, Any] | None:
    """A checkpoint's manifest.json as written, None when absent or unreadable (nothing is verified)."""
    try:
        manifest = json.loads((Path(checkpoint) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def has_manifest(checkpoint: str | Path) -> bool:
    """True once manifest.json exists (it is written last); check_manifest says whether it validates."""
    return (Path(checkpoint) / MANIFEST_FILE).is_file()


def check_manifest(checkpoint: str | Path, verify_hashes: bool = True) -> str | None:
    """None when the checkpoint's manifest validates, else what is wrong."""
    folder = Path(checkpoint)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        files = manifest["files"]
    except FileNotFoundError:
        return f"no {MANIFEST_FILE} (incomplete)"
    except (ValueError, KeyError, TypeError):
        return f"unreadable {MANIFEST_FILE}"
    if not isinstance(files, dict):
        return f"unreadable {MANIFEST_FILE}"
    for name, info in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if not isinstance(info, dict) or path.stat().st_size != info.get("size"):
            return f"{name} has the wrong size"
        if verify_hashes and _sha256(path) != info.get("sha256"):
            return f"{name} has the wrong sha256"
    return None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """checkpoint-N folders of a run, oldest first."""
    found = []
    for path in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        step = checkpoint_step(path)
        if step is not None and path.is_dir():
            found.append((step, path))
    return sorted(found)


def newest_valid_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[tuple[str, str]]]:
    """The newest checkpoint whose manifest validates, and the newer ones skipped with their reason.

    The one rule for "newest checkpoint": training resumes from it, and the runner, the Celery worker, evaluate
    and export name it.
    """
    skipped: list[tuple[str, str]] = []
    for _, path in reversed(list_checkpoints(run_dir)):
        problem = check_manifest(path)
        if problem is None:
            return path, skipped
        skipped.append((path.name, problem))
    return None, skipped


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint a resume starts from (newest_valid_checkpoint without the skipped list)."""
    return newest_valid_checkpoint(run_dir)[0]


def prune_checkpoints(run_dir: str | Path, keep: int, current_step: int) -> list[str]:
    """Delete checkpoints beyond the `keep` newest complete ones, never the best or any newer than now."""
    best = read_best(run_dir) or {}
    complete = [(step, p) for step, p in list_checkpoints(run_dir) if has_manifest(p)]
    keep_names = {p.name for _, p in complete[-keep:]} | {str(best.get("checkpoint"))}
    removed = []
    for step, path in list_checkpoints(run_dir):
        if step < current_step and path.name not in keep_names:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def write_checkpoint_state(checkpoint: str | Path, data: dict[str, Any]) -> None:
    """checkpoint-N/studio_state.json: counters a resume needs beside the Trainer's own state."""
    atomic_write_text(Path(checkpoint) / STATE_FILE, json.dumps(data) + "\n")


def read_checkpoint_state(checkpoint: str | Path) -> dict[str, Any]:
    """What write_checkpoint_state wrote ({} when absent)."""
    try:
        return json.loads((Path(checkpoint) / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


# -- best -------------------------------------------------------------------------------------------------------
def read_best(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN/best.json, or None."""
    try:
        best = json.loads((Path(run_dir) / BEST_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return best if isinstance(best, dict) else None


def write_best(run_dir: str | Path, best: dict[str, Any]) -> None:
    """Replace RUN/best.json atomically."""
    atomic_write_text(Path(run_dir) / BEST_FILE, json.dumps(best, indent=1) + "\n")


def remove_best(run_dir: str | Path) -> None:
    """Delete RUN/best.json if present."""
    (Path(run_dir) / BEST_FILE).unlink(missing_ok=True)


def best_checkpoint(run_dir: str | Path, verify: bool = True) -> Path | None:
    """The checkpoint best.json names when it exists (and, with `verify`, its manifest validates)."""
    best = read_best(run_dir)
    if not best or not best.get("checkpoint"):
        return None
    folder = Path(run_dir) / str(best["checkpoint"])
    if not folder.is_dir() or (verify and check_manifest(folder) is not None):
        return None
    return folder


# -- STOP ---------------------------------------------------------------------------------------------------------
def stop_path(run_dir: str | Path) -> Path:
    """RUN/STOP."""
    return Path(run_dir) / STOP_FILE


def request_stop(run_dir: str | Path, reason: str) -> None:
    """Write RUN/STOP (the trainer's own cancel path: it checks the file at every step); OSError when it cannot."""
    stop_path(run_dir).write_text(reason.rstrip("\n") + "\n", encoding="utf-8")


def stop_requested(run_dir: str | Path) -> bool:
    """True while RUN/STOP exists."""
    return stop_path(run_dir).exists()


def clear_stop(run_dir: str | Path) -> None:
    """Delete RUN/STOP: a STOP left by an earlier cancel would end a resume at once."""
    stop_path(run_dir).unlink(missing_ok=True)


def clear_stale_stop(run_dir: str | Path, started: float) -> None:
    """Delete RUN/STOP when it is older than `started` (it ended an earlier attempt; a newer one is a new cancel)."""
    stop = stop_path(run_dir)
    try:
        if stop.stat().st_mtime < started:
            stop.unlink()
    except FileNotFoundError:
        pass
