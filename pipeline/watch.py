"""Fold a run's progress events into a summary. Reading and tailing the run folder is `pipeline.rundir`'s; a job's
watch stream is `pipeline.jobs.watch`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .rundir import read_best, run_events


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
