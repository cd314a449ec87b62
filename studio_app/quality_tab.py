"""Quality & Split tab: the data quality report with its plots, then a leakage-free split and its statistics."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from . import step_ui
from .common import guarded

INTRO = ("Check a converted dataset, then split it. CLI: `python -m pipeline validate DATASET --out REPORT` and "
         "`python -m pipeline split DATASET --strategy temporal --ratios 0.8,0.1,0.1 --seed 42`.")


def _outputs(report: dict[str, Any]) -> tuple[Any, ...]:
    info = {k: report[k] for k in ("dataset", "passed", "summary", "findings")}
    return info, report["markdown"], report["plots"], report["files"]


@guarded
def validate(dataset: str, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's way
    """Queue a validation job, follow it, then the report from disk: summary JSON, Markdown, plots and files."""
    job = service.submit_validate(dataset)
    return _outputs(step_ui.follow(job["job_id"], "validate", progress))


@guarded
def reattach(progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's way
    """On page load: the newest validation's report (followed to its end when still running) and its status."""
    result, line = step_ui.reattach("validate", progress)
    return (*(_outputs(result) if result else (gr.skip(),) * 4), line)


@guarded
def split(dataset: str, strategy: str, ratios: str, seed: float) -> tuple[Any, ...]:
    """Split the dataset: counts, label shares and notes, plus a chart of the label shares per split."""
    result = service.split(dataset, strategy, ratios, int(seed or 0))
    return result, service.split_figure(result)


def build() -> dict[str, Any]:
    """The Quality & Split tab; returns the dataset dropdown and the split event."""
    with gr.Tab("Quality & Split", id="quality") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            dataset = gr.Dropdown(service.list_datasets(), label="Dataset", elem_id="quality-dataset", scale=3,
                                  allow_custom_value=True)
            refresh = gr.Button("↻", scale=0, min_width=50)
            validate_btn = gr.Button("Run the quality report", variant="primary", elem_id="validate", scale=1)
        job_line = gr.Markdown(elem_id="validate-job", label="validation job")
        with gr.Accordion("Summary and findings (JSON)", open=False):
            report_json = gr.JSON(label="Summary and findings")
        report_md = gr.Markdown(elem_id="quality-report", label="report")
        plots = gr.Gallery(label="Plots", columns=2, height=360, object_fit="contain")
        files = gr.File(label="Report files", file_count="multiple", interactive=False)
        gr.Markdown("### Split")
        with gr.Row():
            strategy = gr.Radio(["temporal", "stratified", "random"], value="temporal", label="Strategy",
                                info="temporal: whole videos (or time blocks of one video) per split")
            ratios = gr.Textbox("0.8,0.1,0.1", label="Ratios train,val,test")
            seed = gr.Number(42, precision=0, label="Seed")
            split_btn = gr.Button("Split", variant="primary", elem_id="split")
        with gr.Accordion("Split statistics (JSON)", open=False):
            split_json = gr.JSON(label="Split statistics")
        split_plot = gr.Plot(label="Label share per split", elem_id="split-plot")

    refresh_event = {"fn": lambda current: gr.update(choices=service.list_datasets(), value=current),
                     "inputs": dataset, "outputs": dataset, "api_visibility": "private"}
    refresh.click(**refresh_event)
    tab.select(**refresh_event)
    report_out = [report_json, report_md, plots, files]
    validate_btn.click(validate, dataset, report_out, api_name="validate", **step_ui.STEP_EVENT).then(
        lambda: step_ui.status_line("validate"), None, job_line, api_visibility="private", **step_ui.CHEAP_EVENT)
    split_event = split_btn.click(split, [dataset, strategy, ratios, seed], [split_json, split_plot], api_name="split")
    return {"dataset": dataset, "split": split_event, "reattach": {
        "fn": reattach, "inputs": None, "outputs": [*report_out, job_line], "api_visibility": "private",
        **step_ui.STEP_EVENT}}
