"""Experiments tab: a sortable, filterable table of runs; compare runs (config diff + overlaid curves); delete."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from .common import choices_update, guarded, records
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
    ids = [row["run_id"] for row in rows]
    return records(rows, service.EXPERIMENT_COLUMNS), gr.update(choices=ids), choices_update(ids)


@guarded
def compare_experiments(run_ids: list[str]) -> tuple[Any, ...]:
    """Config differences and summaries as a table, loss curves overlaid (one line per run)."""
    info, figures = service.compare_experiments(run_ids or [])
    return info, info["table"], figures.get("loss"), figures.get("eval_loss") or figures.get("lr")


@guarded
def delete_experiment(run_id: str) -> dict[str, Any]:
    """Delete an experiment and its run folder."""
    return service.delete_experiment(run_id)


def build() -> dict[str, Any]:
    """The Experiments tab."""
    with gr.Tab("Experiments", id="experiments") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            status = gr.Dropdown(["", "queued", "running", "succeeded", "failed", "cancelled", "interrupted"],
                                 value="", label="Status")
            model = gr.Dropdown([""] + [key for _, key in service.model_choices()], value="", label="Model")
            where = gr.Textbox(label="Conditions", placeholder="lora.r=16, final_loss<2")
            sort = gr.Dropdown(SORTS, value="created", label="Sort by")
            descending = gr.Checkbox(False, label="Descending")
            refresh = gr.Button("Refresh", variant="primary")
        table = gr.Dataframe(headers=service.EXPERIMENT_COLUMNS, interactive=False, elem_id="experiments-table",
                             label="experiments")
        with gr.Row():
            chosen = gr.Dropdown([], multiselect=True, label="Compare runs", allow_custom_value=True)
            compare_btn = gr.Button("Compare")
        with gr.Accordion("Comparison (JSON)", open=False):
            compare_json = gr.JSON(label="Comparison")
        diff = gr.Markdown(label="diff")
        with gr.Row():
            loss_plot = gr.Plot(label="Loss")
            second_plot = gr.Plot(label="Eval loss")
        with gr.Row():
            doomed = gr.Dropdown([], label="Delete run", allow_custom_value=True)
            delete_btn = gr.Button("Delete", variant="stop")
        deleted = gr.JSON(label="Deleted", open=False)

    listing = {"fn": list_experiments, "inputs": [status, model, where, sort, descending],
               "outputs": [table, chosen, doomed]}
    refresh.click(**listing, api_name="list_experiments", **CHEAP_EVENT)
    tab.select(**listing, api_visibility="private")
    compare_btn.click(compare_experiments, chosen, [compare_json, diff, loss_plot, second_plot],
                      api_name="compare_experiments")
    delete_btn.click(delete_experiment, doomed, deleted, api_name="delete_experiment").then(
        **listing, api_visibility="private")
    return {"table": table}
