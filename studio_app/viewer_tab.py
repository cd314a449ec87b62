"""Dataset viewer: browse a converted dataset's training examples per split and task (image with its objects,
prompt, target answer), filtered by label."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from . import status
from .common import Choice, guarded

PAGE = 12
ROW_COLUMNS = ["example", "split", "task", "prompt", "target answer"]


@guarded
def browse(dataset: str, split: str, task: str, label: str, start: float | None) -> tuple[Any, ...]:
    """A page of examples: the frames with their objects drawn, and a table of prompts and target answers."""
    page = service.browse_dataset(dataset, split or "all", task or "all", label or "all", int(start or 0), PAGE)
    return page["tiles"], {"headers": ROW_COLUMNS, "data": page["rows"]}, page["start"], page["total"]


def browse_summary(_tiles: Any, _rows: Any, start: int, total: int) -> str:
    if not total:
        return "No example matches these filters."
    return f"Examples {start + 1}–{min(total, start + PAGE)} of {total}."


@guarded
def filters(dataset: str | None) -> tuple[Any, ...]:
    """The splits, tasks and labels of the dataset."""
    if not dataset or dataset not in service.list_datasets():
        return (gr.update(choices=["all"], value="all"),) * 3
    found = service.dataset_options(dataset)
    return tuple(gr.update(choices=found[k], value="all") for k in ("splits", "tasks", "labels"))


def build() -> dict[str, Any]:
    """The Dataset viewer tab."""
    with gr.Tab("Dataset viewer", id="viewer") as tab:
        gr.Markdown("Browse what the model will be trained on: each example's frame with its objects, the prompt and "
                    "the target answer, per split and task.")
        with gr.Row():
            dataset = Choice(service.list_datasets(), label="Dataset", elem_id="viewer-dataset", scale=2)
            split = Choice(["all"], value="all", label="Split", elem_id="viewer-split")
            task = Choice(["all"], value="all", label="Task", elem_id="viewer-task")
            label = Choice(["all"], value="all", label="Label", elem_id="viewer-label")
        with gr.Row():
            prev_btn = gr.Button("◀ Previous", scale=0)
            show_btn = gr.Button("Show", variant="primary", elem_id="viewer-show", scale=0)
            next_btn = gr.Button("Next ▶", scale=0)
            viewer_status = status.line("viewer-status")
        tiles = gr.Gallery(label="Examples", columns=4, height="auto", object_fit="contain", elem_id="viewer-gallery")
        rows = gr.Dataframe(headers=ROW_COLUMNS, interactive=False, wrap=True, label="Prompts and target answers",
                            elem_id="viewer-table")
        start = gr.Number(0, precision=0, visible=False, label="first example")
        total = gr.Number(0, precision=0, visible=False, label="examples")

    refresh = {"fn": lambda current: gr.update(choices=service.list_datasets(), value=current),
               "inputs": dataset, "outputs": dataset, "api_visibility": "private"}
    tab.select(**refresh)
    inputs, outputs = [dataset, split, task, label, start], [tiles, rows, start, total]
    kw = {"what": "Browse", "summary": browse_summary}
    status.action(show_btn.click, browse, inputs, outputs, viewer_status, api_name="browse_dataset", **kw)
    shown = dataset.input(filters, dataset, [split, task, label], api_visibility="private")
    shown.then(lambda: 0, None, start, api_visibility="private").then(
        status.with_status(browse, "Browse", browse_summary, 4), inputs, [*outputs, viewer_status],
        api_visibility="private")
    for box in (split, task, label):
        box.input(lambda: 0, None, start, api_visibility="private").then(
            status.with_status(browse, "Browse", browse_summary, 4), inputs, [*outputs, viewer_status],
            api_visibility="private")
    for button, step in ((prev_btn, -PAGE), (next_btn, PAGE)):
        button.click(lambda s, step=step: max(0, int(s or 0) + step), start, start, api_visibility="private").then(
            status.with_status(browse, "Browse", browse_summary, 4), inputs, [*outputs, viewer_status],
            api_visibility="private")
    return {"dataset": dataset}
