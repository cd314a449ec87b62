"""Follow a run: tail progress.jsonl from a byte offset, fold events into a summary, stream a job's events.

Reading and tailing the run folder is `pipeline.rundir`'s; this module folds and streams what it reads.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rundir import ProgressTail, progress_path, read_best, run_events

if TYPE_CHECKING:
    from .jobstore import JobStore


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
    for event in run_events(run_dir):
        fold_summary(summary, event)
    best = read_best(run_dir)
    if best is not None:
        value = next((best[k] for k in ("best_metric", "value", "metric_value") if _number(best.get(k))), None)
        if value is not None:
            summary["best_metric"] = float(value)
            summary["best_metric_name"] = str(best.get("metric") or best.get("metric_name") or "eval_loss")
        if best.get("checkpoint") or best.get("path"):
            summary["best_checkpoint"] = str(best.get("checkpoint") or best.get("path"))
    return summary


def watch(job_id: int, from_seq: int = 0, poll: float = 0.5, timeout: float | None = None,
          store: JobStore | None = None) -> Iterator[dict[str, Any]]:
    """Yield progress events with seq > from_seq and {"event": "status", ...} changes until the job ends.

    Seqs start at 1, so the default replays everything; reconnect after a dropped stream with
    `from_seq=<last seq seen>` to get exactly what was missed. The file is tailed from a byte offset, never re-read.
    """
    from .jobstore import TERMINAL

    if store is None:
        from .jobs import open_store

        store = open_store()
    job = store.get_job(job_id)
    tail = ProgressTail(progress_path(job.run_dir))
    history = store.transitions(job_id)
    last_transition = history[-1]["id"] if history else 0
    yield _status_event(job.id, job.status, job.attempt, job.error, job.position)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = store.get_job(job_id)  # read the status before the file: events written before an end are drained
        for change in store.transitions(job_id, after_id=last_transition):
            last_transition = change["id"]
            if change["to_status"] not in TERMINAL:
                yield _status_event(job.id, change["to_status"], change["attempt"], None, None)
        for event in tail.read():
            if not isinstance(event.get("seq"), int) or event["seq"] > from_seq:
                yield event
        if job.status in TERMINAL:
            yield _status_event(job.id, job.status, job.attempt, job.error, None)
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        time.sleep(poll)


def _status_event(job_id: int, status: str, attempt: int, error: str | None, position: int | None) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "status", "job_id": job_id, "status": status, "attempt": attempt}
    if error:
        event["error"] = error
    if position is not None:
        event["position"] = position
    return event
