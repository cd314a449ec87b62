"""Follow a run folder: tail progress.jsonl from a byte offset, fold events into a summary (a job's watch stream is
`pipeline.jobs.watch`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.jsonl"
LOG_FILE = "train.log"


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
    for event in read_events(Path(run_dir) / PROGRESS_FILE, offset):
        if event.get("event") == "end":
            status = event.get("status")
            error = event.get("error") or error
        elif event.get("event") == "error":
            error = str(event.get("message") or event.get("error") or "error event without a message")
    return status, error


def fold_summary(summary: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Update summary metrics (final_loss, best_metric, steps, seconds, ...) with one progress event."""
    if "step" in event and isinstance(event["step"], int | float):
        summary["steps"] = int(event["step"])
    if isinstance(event.get("total_steps"), int | float):
        summary["total_steps"] = int(event["total_steps"])
    if _number(event.get("loss")):
        summary["final_loss"] = float(event["loss"])
    for key, value in event.items():
        if key.startswith("eval_") and _number(value):
            summary[key] = float(value)
    if _number(event.get("best_metric")):  # the trainer's own notion of best wins
        summary["best_metric"] = float(event["best_metric"])
        name = event.get("best_metric_name") or summary.get("best_metric_name") or "eval_loss"
        summary["best_metric_name"] = str(name)
    elif _number(event.get("eval_loss")) and summary.get("best_metric_name", "eval_loss") == "eval_loss":
        if summary.get("best_metric") is None or event["eval_loss"] < summary["best_metric"]:
            summary["best_metric"], summary["best_metric_name"] = float(event["eval_loss"]), "eval_loss"
    for key in ("elapsed", "elapsed_s", "seconds", "runtime"):
        if _number(event.get(key)):
            summary["seconds"] = float(event[key])
    if event.get("event") == "end" and event.get("status"):
        summary["end_status"] = event["status"]
    return summary


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def summarize_run(run_dir: str | Path) -> dict[str, Any]:
    """Summary metrics of a whole run folder (progress.jsonl plus best.json when present)."""
    summary: dict[str, Any] = {}
    for event in read_events(Path(run_dir) / PROGRESS_FILE):
        fold_summary(summary, event)
    best_file = Path(run_dir) / "best.json"
    if best_file.is_file():
        try:
            best = json.loads(best_file.read_text(encoding="utf-8"))
        except ValueError:
            best = None
        if isinstance(best, dict):
            value = next((best[k] for k in ("best_metric", "value", "metric_value") if _number(best.get(k))), None)
            if value is not None:
                summary["best_metric"] = float(value)
                summary["best_metric_name"] = str(best.get("metric") or best.get("metric_name") or "eval_loss")
            if best.get("checkpoint") or best.get("path"):
                summary["best_checkpoint"] = str(best.get("checkpoint") or best.get("path"))
    return summary
