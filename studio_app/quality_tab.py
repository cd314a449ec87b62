"""Quality & Split tab: the data quality report with its plots, then a leakage-free split and its statistics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from pipeline import service

from . import status, step_ui
from .common import Choice, guarded

INTRO = ("Check a converted dataset, then split it. CLI: `python -m pipeline validate DATASET --out REPORT` and "
         "`python -m pipeline split DATASET --strategy temporal --ratios 0.8,0.1,0.1 --seed 42`.")


def _outputs(report: dict[str, Any]) -> tuple[Any, ...]:
    """Summary JSON, the report (counts and findings table), its plots and the report files."""
    info = {k: report[k] for k in ("dataset", "passed", "summary", "findings")}
    return info, report["markdown"], report["plots"], report["files"]


def validate_summary(info: dict[str, Any], *_: Any) -> str:
    summary = info.get("summary") or {}
    verdict = "<b>passed</b>" if info.get("passed") else "<b>has errors</b> (see the findings)"
    return (f"Quality report of <b>{info['dataset']}</b> {verdict}: {summary.get('errors', 0)} error(s), "
            f"{summary.get('warnings', 0)} warning(s), {summary.get('infos', 0)} info. Next: split it below.")


@guarded
def validate(dataset: str, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's way
    """Queue a validation job, follow it, then the report from disk: summary JSON, Markdown, plots and files."""
    job = service.submit_validate(dataset)
    return _outputs(step_ui.follow(job["job_id"], "validate", progress))


@guarded
def validate_stream(dataset: str) -> Iterator[Any]:
    """The button: queue the validation job, its progress in the status line, then the report from disk."""
    job_id = int(service.submit_validate(dataset)["job_id"])
    yield from step_ui.stream(job_id, "validate")
    yield _outputs(step_ui.outcome(job_id, "validate"))


def _select(params: dict[str, Any]) -> tuple[Any, ...]:
    name = params.get("dataset")
    return (gr.update(value=name) if name and name in service.list_datasets() else gr.skip(),)


@guarded
def reattach() -> Iterator[tuple[Any, ...]]:
    """On page load: the dataset of the newest validation, its progress while it runs, then its report from disk
    and the status lines."""
    yield from step_ui.reattach("validate", _outputs, 4, validate_summary, _select, 1)


@guarded
def split(dataset: str, strategy: str, ratios: str, seed: float) -> tuple[Any, ...]:
    """Split the dataset: counts, label shares and notes, plus a chart of the label shares per split."""
    result = service.split(dataset, strategy, ratios, int(seed or 0))
    return result, service.split_figure(result)


def split_summary(result: dict[str, Any], *_: Any) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in (result.get("counts") or {}).items())
    notes = result.get("notes") or []
    return (f"Split <b>{result['dataset']}</b> ({result['strategy']}): {counts} frames; largest label-share "
            f"deviation {100 * result.get('max_share_deviation', 0):.1f} points."
            + (f" Note: {notes[0]}" if notes else "") + " Next: the <b>Train</b> tab.")


@guarded
def show_saved(dataset: str | None) -> tuple[Any, ...]:
    """The report and split already on disk for this dataset (re-shown after a reload or a dataset change)."""
    if not dataset or dataset not in service.list_datasets():
        return None, "", [], None, None, None, status.note("Pick a dataset."), ""
    saved = service.saved_dataset_state(dataset)
    report, result = saved.get("report"), saved.get("split")
    out_report = (report, report["markdown"], report["plots"], report["files"]) if report else (None, "", [], None)
    out_split = (result, service.split_figure(result)) if result else (None, None)
    report_line = status.ok("(saved) " + validate_summary(report)) if report else status.note(
        "No quality report yet for this dataset: run it.")
    split_line = status.ok("(saved) " + split_summary(result)) if result else status.note(
        "Not split yet: training would use every frame and evaluation would score training data.")
    return (*out_report, *out_split, report_line, split_line)


def build() -> dict[str, Any]:
    """The Quality & Split tab; returns the dataset dropdown and the split event."""
    with gr.Tab("Quality & Split", id="quality") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            dataset = Choice(service.list_datasets(), label="Dataset", elem_id="quality-dataset", scale=3)
            refresh = gr.Button("↻", scale=0, min_width=50)
            validate_btn = gr.Button("Run the quality report", variant="primary", elem_id="validate", scale=1)
        report_status = status.line("validate-status")
        job_line = gr.Markdown(elem_id="validate-job", label="validation job")
        report_md = gr.Markdown(elem_id="quality-report", label="report")
        plots = gr.Gallery(label="Plots", columns=2, height="auto", object_fit="contain", elem_id="quality-plots",
                           allow_preview=True)
        files = gr.File(label="Report files (the full report with record ids)", file_count="multiple",
                        interactive=False)
        with gr.Accordion("Summary and findings (JSON)", open=False):
            report_json = gr.JSON(label="Summary and findings")
        gr.Markdown("### Split")
        with gr.Row():
            strategy = gr.Radio(["temporal", "stratified", "random"], value="temporal", label="Strategy",
                                info="temporal: whole videos (or time blocks of one video) per split")
            ratios = gr.Textbox("0.8,0.1,0.1", label="Ratios train,val,test")
            seed = gr.Number(42, precision=0, label="Seed")
            split_btn = gr.Button("Split", variant="primary", elem_id="split")
        split_status = status.line("split-status")
        split_plot = gr.Plot(label="Label share per split", elem_id="split-plot")
        with gr.Accordion("Split statistics (JSON)", open=False):
            split_json = gr.JSON(label="Split statistics")

    refresh_event = {"fn": lambda current: gr.update(choices=service.list_datasets(), value=current),
                     "inputs": dataset, "outputs": dataset, "api_visibility": "private"}
    refresh.click(**refresh_event)
    tab.select(**refresh_event)
    report_out = [report_json, report_md, plots, files]
    status.action(validate_btn.click, validate, dataset, report_out, report_status, api_name="validate",
                  what="Quality report", summary=validate_summary, ui_fn=validate_stream, **step_ui.STEP_EVENT).then(
        lambda: step_ui.status_line("validate"), None, job_line, api_visibility="private", **step_ui.CHEAP_EVENT)
    split_event = status.action(split_btn.click, split, [dataset, strategy, ratios, seed], [split_json, split_plot],
                                split_status, api_name="split", what="Split", summary=split_summary)
    dataset.input(show_saved, dataset, [report_json, report_md, plots, files, split_json, split_plot, report_status,
                                        split_status], api_visibility="private")
    return {"dataset": dataset, "split": split_event, "show_saved": show_saved,
            "saved_out": [report_json, report_md, plots, files, split_json, split_plot, report_status, split_status],
            "reattach": {"fn": reattach, "inputs": None, "outputs": [dataset, *report_out, report_status, job_line],
                         "api_visibility": "private", **step_ui.STEP_EVENT}}
