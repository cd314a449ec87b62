"""Experiments: list with filters and sorting, query by config values, compare runs, notes, tags, delete."""

from __future__ import annotations

import math
import operator
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import UserError
from .jobs.store import Experiment, JobStore
from .rundir import looks_like_run, run_events

if TYPE_CHECKING:
    import plotly.graph_objects as go

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "!=": operator.ne, ">=": operator.ge, "<=": operator.le, "=": operator.eq, ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^\s*([\w.\-]+)\s*(!=|>=|<=|==|=|>|<)\s*(.*?)\s*$")
_MISSING = object()
# progress keys that are bookkeeping, not curves
_NOT_METRICS = {"seq", "step", "total_steps", "time", "elapsed", "elapsed_s", "eta_s", "epoch", "attempt", "job_id"}
SORT_FIELDS = ("created", "name", "status", "model", "updated")


def _store(store: JobStore | None) -> JobStore:
    if store is not None:
        return store
    from .jobs.store import open_store

    return open_store()


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {"section.field": value}."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def parse_condition(text: str) -> tuple[str, str, Any]:
    """`lora.r=16`, `training.learning_rate<1e-3`, `model.name!=tiny` -> (key, operator, YAML-typed value)."""
    match = _CONDITION.match(text)
    if not match:
        raise UserError(f"cannot read condition {text!r} (expected section.field=value, or !=, <, <=, >, >=)")
    key, op, raw = match.groups()
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key, "=" if op == "==" else op, value


def lookup(exp: Experiment, key: str) -> Any:
    """A config value (`lora.r`), a summary metric (`final_loss` or `summary.final_loss`) or a column."""
    if key.startswith("summary."):
        return exp.summary.get(key[8:], _MISSING)
    flat = flatten(exp.config)
    if key in flat:
        return flat[key]
    if key in exp.summary:
        return exp.summary[key]
    return getattr(exp, key, _MISSING) if key in Experiment.__dataclass_fields__ else _MISSING


def matches(exp: Experiment, condition: tuple[str, str, Any]) -> bool:
    """True when the experiment satisfies one parsed condition (numbers compare as numbers)."""
    key, op, wanted = condition
    have = lookup(exp, key)
    if have is _MISSING:
        return op == "!="
    try:
        return bool(_OPS[op](have, wanted))
    except TypeError:
        return bool(_OPS[op](str(have), str(wanted)))


def _sort_key(name: str) -> Callable[[Experiment], tuple]:
    column = {"created": "created_at", "updated": "updated_at"}.get(name, name)

    def key(exp: Experiment) -> tuple:
        value = getattr(exp, column) if column in Experiment.__dataclass_fields__ else lookup(exp, name)
        if value is _MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
            return (1, 0, "")
        return (0, value, "") if isinstance(value, int | float) else (0, 0, str(value))

    return key


def list_experiments(status: str | Iterable[str] | None = None, model: str | None = None, tag: str | None = None,
                     where: Iterable[str] = (), sort: str = "created", descending: bool | None = None,
                     limit: int | None = None, store: JobStore | None = None) -> list[Experiment]:
    """Experiments filtered by status/model/tag and config conditions, sorted by a column or metric.

    `sort` is created (default, newest first), updated, name, status, model, or any summary metric or config key
    (final_loss, best_metric, steps, seconds, lora.r, ...: smallest first). Missing values sort last.
    """
    conditions = [parse_condition(text) for text in where]
    statuses = {status} if isinstance(status, str) else set(status or ())
    rows = [
        exp for exp in _store(store).list_experiments()
        if (not statuses or exp.status in statuses) and (model is None or exp.model == model)
        and (tag is None or tag in exp.tags) and all(matches(exp, c) for c in conditions)
    ]
    if descending is None:
        descending = sort in ("created", "updated")
    rows.sort(key=lambda e: e.created_at, reverse=True)  # ties and missing values: newest first
    key = _sort_key(sort)
    present = [e for e in rows if key(e)[0] == 0]
    missing = [e for e in rows if key(e)[0] == 1]
    present.sort(key=key, reverse=descending)
    rows = present + missing
    return rows[:limit] if limit else rows


def get_experiment(run_id: str, store: JobStore | None = None) -> Experiment:
    """One experiment by run id (or a unique prefix of it)."""
    return _store(store).find_experiment(run_id)


# -- compare ------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Runs side by side: the config keys whose values differ, summaries, and metric curves per run."""

    runs: list[Experiment]
    diff: list[dict[str, Any]] = field(default_factory=list)  # {"key": k, "values": {run_id: value}}
    curves: dict[str, dict[str, list[tuple[int, float]]]] = field(default_factory=dict)  # metric -> run -> points

    def table(self) -> str:
        """The config diff and summary metrics as a Markdown table."""
        ids = [r.run_id for r in self.runs]
        lines = ["| key | " + " | ".join(ids) + " |", "|---" * (len(ids) + 1) + "|"]
        for row in self.diff:
            lines.append(f"| {row['key']} | " + " | ".join(_cell(row["values"].get(i)) for i in ids) + " |")
        for metric in ("status", "final_loss", "best_metric", "steps", "seconds"):
            values = [r.status if metric == "status" else r.summary.get(metric) for r in self.runs]
            lines.append(f"| {metric} | " + " | ".join(_cell(v) for v in values) + " |")
        return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def metric_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every numeric metric of a run's progress.jsonl as (step, value) points."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for event in run_events(run_dir):
        step = event.get("step")
        if event.get("event", "log") not in ("log", "eval") or not isinstance(step, int | float):
            continue
        for key, value in event.items():
            if key not in _NOT_METRICS and isinstance(value, int | float) and not isinstance(value, bool):
                curves.setdefault(key, []).append((int(step), float(value)))
    return curves


def compare(run_ids: Iterable[str], store: JobStore | None = None) -> Comparison:
    """Config differences and overlaid curves of two or more runs."""
    store = _store(store)
    runs = [store.find_experiment(run_id) for run_id in run_ids]
    if len(runs) < 2:
        raise UserError("compare needs at least two experiment ids")
    flats = [flatten(run.config) for run in runs]
    keys = sorted(set().union(*flats))
    diff = []
    for key in keys:
        values = {run.run_id: flat.get(key) for run, flat in zip(runs, flats, strict=True)}
        if len({repr(v) for v in values.values()}) > 1 and key != "training.output_dir":
            diff.append({"key": key, "values": values})
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run in runs:
        for metric, points in metric_curves(run.run_dir).items():
            curves.setdefault(metric, {})[run.run_id] = points
    return Comparison(runs, diff, curves)


def comparison_figures(comparison: Comparison) -> dict[str, go.Figure]:
    """One plotly figure per metric, one line per run."""
    import plotly.graph_objects as go

    names = {run.run_id: run.name for run in comparison.runs}
    figures = {}
    for metric, per_run in sorted(comparison.curves.items()):
        fig = go.Figure()
        for run_id, points in per_run.items():
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                     name=names.get(run_id, run_id)))
        fig.update_layout(title=metric, xaxis_title="step", yaxis_title=metric, template="plotly_white")
        figures[metric] = fig
    return figures


def write_comparison_html(comparison: Comparison, out: str | Path) -> Path:
    """The diff table and every figure in one self-contained-enough HTML page (plotly.js from its CDN)."""
    import html

    from .atomic import atomic_write_text

    out = Path(out)
    parts = ["<html><head><meta charset='utf-8'><title>Experiment comparison</title></head><body>",
             "<h1>Experiment comparison</h1>", f"<pre>{html.escape(comparison.table())}</pre>"]
    for index, fig in enumerate(comparison_figures(comparison).values()):
        parts.append(fig.to_html(full_html=False, include_plotlyjs="cdn" if index == 0 else False))
    parts.append("</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(parts))
    return out


# -- notes, tags, delete --------------------------------------------------------------------------------
def set_note(run_id: str, text: str, append: bool = False, store: JobStore | None = None) -> Experiment:
    """Replace (or append a line to) an experiment's notes."""
    store = _store(store)
    exp = store.find_experiment(run_id)
    notes = f"{exp.notes}\n{text}".strip() if append else text
    store.update_experiment(exp.run_id, notes=notes)
    return store.get_experiment(exp.run_id)


def tag(run_id: str, name: str, remove: bool = False, store: JobStore | None = None) -> Experiment:
    """Add (or remove) a tag."""
    name = name.strip()
    if not name or "," in name:
        raise UserError(f"tag {name!r}: must be non-empty and contain no comma")
    store = _store(store)
    exp = store.find_experiment(run_id)
    tags = [t for t in exp.tags if t != name] + ([] if remove else [name])
    store.update_experiment(exp.run_id, tags=tags)
    return store.get_experiment(exp.run_id)


def _safe_run_folder(run_dir: Path, home: Path) -> bool:
    """Only delete what looks like a run folder, never the data home or one of its parents."""
    if not run_dir.is_dir() or run_dir == home or run_dir in home.parents or run_dir == Path(run_dir.anchor):
        return False
    return (home / "runs") in run_dir.parents or looks_like_run(run_dir)


def delete_experiment(run_id: str, store: JobStore | None = None) -> Path | None:
    """Delete an experiment's rows and its run folder; refuses while one of its jobs is queued or running."""
    store = _store(store)
    exp = store.find_experiment(run_id)
    store.delete_experiment_rows(exp.run_id)
    run_dir = Path(exp.run_dir).expanduser().resolve()
    if not _safe_run_folder(run_dir, store.path.parent.resolve()):
        return None
    try:
        shutil.rmtree(run_dir)
    except OSError as exc:
        raise UserError(f"records deleted, but the run folder could not be removed ({exc})", run_dir) from exc
    return run_dir


# -- lineage (GRPO runs refine a parent run) ----------------------------------------------------------------------
def parent_run_dir(config: dict[str, Any]) -> str | None:
    """The parent run folder a run's config names (grpo.parent), None for a run trained from its base."""
    grpo = (config or {}).get("grpo") or {}
    return str(grpo.get("parent")) if grpo.get("parent") else None


def experiment_for_folder(run_dir: str | Path, store: JobStore | None = None) -> Experiment | None:
    """The experiment whose run folder is `run_dir`, None when the folder was trained outside the store."""
    target = Path(run_dir).expanduser().resolve()
    return next((exp for exp in _store(store).list_experiments() if Path(exp.run_dir).resolve() == target), None)


def lineage_tags(config: dict[str, Any], store: JobStore | None = None) -> list[str]:
    """Tags that link a GRPO run to its parent in the store: `grpo` and `parent:<run id or folder name>`."""
    parent = parent_run_dir(config)
    if parent is None:
        return []
    found = experiment_for_folder(parent, store)
    return ["grpo", f"parent:{found.run_id if found else Path(parent).name}"]


def parent_experiment(run_id: str, store: JobStore | None = None) -> Experiment | None:
    """The experiment a GRPO run refines (by grpo.parent in its config), None when none is recorded."""
    exp = get_experiment(run_id, store)
    parent = parent_run_dir(exp.config)
    return experiment_for_folder(parent, store) if parent else None
