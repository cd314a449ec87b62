"""Experiments tab: a sortable, filterable table of runs; compare runs (config diff + overlaid curves); delete."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from . import status
from .common import Choice, guarded, records
from .step_ui import CHEAP_EVENT

INTRO = ("Every training run is an experiment. Filter with conditions such as `lora.r=16, final_loss<2`; sort by a "
         "column or any metric. CLI: `python -m pipeline experiments list --sort final_loss` and "
         "`python -m pipeline experiments compare A B`.")
SORTS = ["created", "updated", "name", "status", "model", "final_loss", "best_metric", "steps", "seconds"]


@guarded
def list_experiments(status: str | None, model: str | None, where: str, sort: str, descending: bool,
                     ) -> tuple[Any, ...]:
    """The experiments table plus the run ids to pick for compare and delete."""
    rows = service.list_experiments(status or None, model or None, where, sort or "created",
                                    None if sort in ("created", "updated") else bool(descending))
    named = [(f"{row['name']} · {row['status']} · {row['run_id']}", row["run_id"]) for row in rows]
    table = {"headers": [service.EXPERIMENT_HEADERS.get(c, c) for c in service.EXPERIMENT_COLUMNS],
             "data": records(rows, service.EXPERIMENT_COLUMNS)}
    return table, gr.update(choices=named), gr.update(choices=named, value=None)  # never pre-select a deletion


@guarded
def compare_experiments(run_ids: list[str]) -> tuple[Any, ...]:
    """Config differences and summaries as a table, loss curves overlaid (one line per run)."""
    info, figures = service.compare_experiments(run_ids or [])
    return info, info["table"], figures.get("loss"), figures.get("eval_loss") or figures.get("lr")


@guarded
def delete_experiment(run_id: str) -> dict[str, Any]:
    """Delete an experiment and its run folder."""
    return service.delete_experiment(run_id)


@guarded
def delete_confirmed(run_id: str, confirm: bool) -> tuple[Any, ...]:
    """The Delete button: only with a run picked and the confirmation ticked (which is then cleared)."""
    if not run_id:
        raise gr.Error("pick the run to delete")
    if not confirm:
        raise gr.Error(f"tick 'yes, delete {run_id} and its run folder' to confirm")
    return service.delete_experiment(run_id), False


def build() -> dict[str, Any]:
    """The Experiments tab."""
    with gr.Tab("Experiments", id="experiments") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            status_box = gr.Dropdown(["", "queued", "running", "succeeded", "failed", "cancelled", "interrupted"],
                                 value="", label="Status")
            model = gr.Dropdown([""] + [key for _, key in service.model_choices()], value="", label="Model")
            where = gr.Textbox(label="Conditions", placeholder="lora.r=16, final_loss<2")
            sort = gr.Dropdown(SORTS, value="created", label="Sort by")
            descending = gr.Checkbox(False, label="Descending")
            refresh = gr.Button("Refresh", variant="primary")
        list_status = status.line("experiments-status")
        table = gr.Dataframe(headers=service.EXPERIMENT_COLUMNS, interactive=False, elem_id="experiments-table",
                             label="experiments")
        with gr.Row():
            chosen = Choice([], multiselect=True, label="Compare runs", elem_id="compare-runs")
            compare_btn = gr.Button("Compare")
        compare_status = status.line("compare-status")
        with gr.Accordion("Comparison (JSON)", open=False):
            compare_json = gr.JSON(label="Comparison")
        diff = gr.Markdown(label="diff")
        with gr.Row():
            loss_plot = gr.Plot(label="Loss")
            second_plot = gr.Plot(label="Eval loss")
        with gr.Row():
            doomed = Choice([], value=None, label="Delete run", elem_id="delete-run")
            confirm = gr.Checkbox(False, label="yes, delete this run and its run folder", elem_id="delete-confirm")
            delete_btn = gr.Button("Delete", variant="stop", elem_id="delete")
        delete_status = status.line("delete-status")
        deleted = gr.JSON(label="Deleted", open=False, visible=False)

    inputs, outputs = [status_box, model, where, sort, descending], [table, chosen, doomed]
    summary = {"what": "Listing", "summary": lambda t, *_: f"{len(t['data'])} experiment(s)."}
    status.action(refresh.click, list_experiments, inputs, outputs, list_status, api_name="list_experiments",
                  **summary, **CHEAP_EVENT)
    tab.select(status.with_status(list_experiments, "Listing", summary["summary"], 3), inputs,
               [*outputs, list_status], api_visibility="private")
    status.action(compare_btn.click, compare_experiments, chosen, [compare_json, diff, loss_plot, second_plot],
                  compare_status, api_name="compare_experiments", what="Compare",
                  summary=lambda info, *_: f"Compared {len(info['runs'])} run(s): "
                                           f"{len(info['diff'] or {})} setting(s) differ.")
    hidden = status.hidden_button()
    hidden.click(delete_experiment, doomed, deleted, api_name="delete_experiment")
    delete_btn.click(status.with_status(delete_confirmed, "Delete", lambda d, _c: f"Deleted {d['deleted']}.", 2),
                     [doomed, confirm], [deleted, confirm, delete_status], api_visibility="private").then(
        status.with_status(list_experiments, "Listing", summary["summary"], 3), inputs, [*outputs, list_status],
        api_visibility="private")
    return {"table": table}
