"""Evaluation figures (plotly HTML + PNG through plots.save_figure): confusion matrix, model comparison bars,
training curves from progress.jsonl, and a metric grid across evaluations (checkpoints or runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plots import save_figure

# Metrics on a 0..1 scale, in the order they are shown (count_mae has its own scale and stays in the tables).
UNIT_METRICS = ("miou", "ap50", "map", "mask_iou", "dice", "pixel_accuracy", "label_accuracy", "count_accuracy",
                "negative_accuracy", "listing_f1", "parse_failure_rate")
NOT_CURVES = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_loss"}


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _layout(fig: Any, title: str, x: str, y: str, **extra: Any) -> Any:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white", **extra)
    if not fig.data:
        fig.add_annotation(text="no data", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def confusion_matrix(table: dict[str, Any] | None, path_stem: str | Path) -> dict[str, Path]:
    """Referring-task labels: rows the truth, columns the answer (counts in the cells)."""
    go = _go()
    traces = []
    if table and table.get("labels"):
        traces = [go.Heatmap(z=table["matrix"], x=table["labels"], y=table["labels"], colorscale="Viridis",
                             texttemplate="%{z}", hovertemplate="truth %{y}<br>answer %{x}<br>%{z}<extra></extra>")]
    fig = _layout(go.Figure(traces), "Referring: label confusion", "answered label", "true label",
                  height=520, width=620)
    return save_figure(fig, path_stem)


def _present(summaries: dict[str, dict[str, Any]], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if any(s.get(k) is not None for s in summaries.values())]


def comparison_bars(summaries: dict[str, dict[str, Any]], path_stem: str | Path,
                    title: str = "Fine-tuned vs base vs mean-box baseline") -> dict[str, Path]:
    """One bar group per 0..1 metric, one bar per compared model."""
    go = _go()
    keys = _present(summaries, UNIT_METRICS)
    traces = [go.Bar(x=keys, y=[s.get(k) or 0.0 for k in keys], name=name) for name, s in summaries.items()]
    fig = _layout(go.Figure(traces if keys else []), title, "metric", "value", barmode="group",
                  yaxis_range=[0, 1], width=900)
    return save_figure(fig, path_stem)


def metric_grid(summaries: dict[str, dict[str, Any]], path_stem: str | Path,
                title: str = "Metrics across evaluations") -> dict[str, Path]:
    """Heatmap: one row per 0..1 metric, one column per evaluation (checkpoint or run)."""
    go = _go()
    keys = _present(summaries, UNIT_METRICS)
    names = list(summaries)
    z = [[summaries[n].get(k) for n in names] for k in keys]
    traces = [go.Heatmap(z=z, x=names, y=keys, zmin=0, zmax=1, colorscale="Viridis", texttemplate="%{z:.2f}")]
    fig = _layout(go.Figure(traces if keys else []), title, "evaluation", "metric",
                  width=max(600, 140 * len(names) + 260), height=max(360, 36 * len(keys) + 160))
    return save_figure(fig, path_stem)


def training_curves(progress: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """OUT/loss.{html,png} (training and evaluation loss) and OUT/eval_metrics.{html,png} (eval_* per step)."""
    from .rundir import read_events

    go = _go()
    events = read_events(progress)
    logs = [e for e in events if e.get("event") == "log" and isinstance(e.get("loss"), int | float)]
    evals = [e for e in events if e.get("event") == "eval"]
    loss = [go.Scatter(x=[e["step"] for e in logs], y=[e["loss"] for e in logs], name="train loss",
                       mode="lines+markers")] if logs else []
    with_loss = [e for e in evals if isinstance(e.get("eval_loss"), int | float)]
    if with_loss:
        loss.append(go.Scatter(x=[e["step"] for e in with_loss], y=[e["eval_loss"] for e in with_loss],
                               name="eval loss", mode="lines+markers"))
    keys = sorted({k for e in evals for k, v in e.items()
                   if k.startswith("eval_") and k not in NOT_CURVES and isinstance(v, int | float)})
    metrics = [go.Scatter(x=[e["step"] for e in evals if k in e], y=[e[k] for e in evals if k in e], name=k[5:],
                          mode="lines+markers") for k in keys]
    out = Path(out_dir)
    return {"loss": save_figure(_layout(go.Figure(loss), "Loss", "step", "loss"), out / "loss")["png"],
            "eval_metrics": save_figure(_layout(go.Figure(metrics), "Evaluation metrics during training", "step",
                                                "value"), out / "eval_metrics")["png"]}
