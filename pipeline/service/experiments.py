"""The app facade: the Experiments tab."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..home import home_dir, studio_home

if TYPE_CHECKING:
    pass
from .common import _preset_of, _round, backend

# -- Experiments tab -------------------------------------------------------------------------------------------
EXPERIMENT_COLUMNS = ["run_id", "name", "status", "model", "method", "steps", "final_loss", "best_metric",
                      "seconds", "created", "metric", "preset", "learning_rate", "lora_r", "batch_size", "max_steps"]
EXPERIMENT_HEADERS = {"best_metric": "best value of the metric", "metric": "metric (best checkpoint by)",
                      "final_loss": "final train loss"}


def _check_conditions(conditions: list[str], store: Any) -> None:
    """A malformed filter is refused with a reason instead of silently emptying the table."""
    from ..experiments import _MISSING, lookup, parse_condition
    from ..experiments import list_experiments as query

    everything = query(store=store)
    for text in conditions:
        key, _op, value = parse_condition(text)
        if value == "" or value is None:
            raise UserError(f"condition {text!r} has no value after the operator")
        if everything and all(lookup(exp, key) is _MISSING for exp in everything):
            raise UserError(f"condition {text!r}: no experiment has a field {key!r} (try lora.r, "
                            "training.learning_rate, model.name, final_loss, steps)")


def list_experiments(status: str | None = None, model: str | None = None, where: str = "",
                     sort: str = "created", descending: bool | None = None) -> list[dict[str, Any]]:
    """Experiments as flat rows; `where` holds conditions such as `lora.r=16, final_loss<1` (comma or newline)."""
    import time

    from ..experiments import list_experiments as query

    conditions = [c.strip() for c in re.split(r"[,\n]", where or "") if c.strip()]
    _check_conditions(conditions, backend().store)
    rows = []
    for exp in query(status=status or None, model=model or None, where=conditions, sort=sort or "created",
                     descending=descending, store=backend().store):
        summary, config = exp.summary or {}, exp.config or {}
        training, lora = config.get("training") or {}, config.get("lora") or {}
        rows.append({"run_id": exp.run_id, "name": exp.name, "status": exp.status, "model": exp.model,
                     "method": training.get("method"), "steps": summary.get("steps"),
                     "final_loss": _round(summary.get("final_loss")), "best_metric": _round(summary.get("best_metric")),
                     "seconds": _round(summary.get("seconds")),
                     "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(exp.created_at)),
                     "metric": summary.get("best_metric_name") or training.get("best_metric"),
                     "preset": _preset_of(exp), "learning_rate": training.get("learning_rate"),
                     "lora_r": lora.get("r") if training.get("method") != "full" else None,
                     "batch_size": training.get("batch_size"), "max_steps": training.get("max_steps")})
    return rows


def compare_experiments(run_ids: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config diff and summaries, {metric: plotly figure with one line per run})."""
    from ..experiments import compare, comparison_figures

    comparison = compare([r for r in run_ids or [] if r], store=backend().store)
    info = {"runs": [r.run_id for r in comparison.runs], "diff": comparison.diff, "table": comparison.table()}
    return info, comparison_figures(comparison)


def delete_experiment(run_id: str) -> dict[str, Any]:
    """Delete an experiment's records and run folder (refused while one of its jobs is queued or running)."""
    from ..experiments import delete_experiment as delete

    if not (run_id or "").strip():
        raise UserError("pick an experiment to delete")
    folder = delete(run_id.strip(), store=backend().store)
    return {"deleted": run_id.strip(), "folder_removed": folder is not None}


def blocked_paths() -> list[str]:
    """What the web server must never serve: the database, the run folders, models, logs, uploads in staging."""
    home = studio_home()
    names = ("studio.db", "studio.db-wal", "studio.db-shm", "scheduler.lock", "runs", "models", "logs", "cache", "jobs")
    return [str(home / n) for n in names]


def download_paths() -> list[str]:
    """The only folders downloads are served from: export zips and quality reports."""
    return [str(home_dir("exports")), str(home_dir("reports"))]


__all__ = [
    'EXPERIMENT_COLUMNS', 'EXPERIMENT_HEADERS', 'blocked_paths', 'compare_experiments', 'delete_experiment',
    'download_paths', 'list_experiments',
]
