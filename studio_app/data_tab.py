"""Data tab: upload an export (or take the built-in sample), see what was detected, name the objects, convert."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gradio as gr

from pipeline import service

from . import step_ui
from .common import TRACK_TQDM, guarded

UPLOAD_TYPES = [".zip", ".json", ".jsonl", ".ndjson", ".csv", ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi",
                ".jpg", ".jpeg", ".png", ".webp", ".bmp"]
LABEL_HEADERS = ["object id", "label in export", "name"]
INTRO = ("Upload a SAM 2 export (demo-export ZIP, SA-V JSON, SAM 2 stream JSONL, COCO JSON) together with its source "
         "video or its frames, or load the built-in sample. CLI: `python -m pipeline convert INPUT --video V "
         "--labels labels.json --out DATASET`.")


def _suggest_name(info: dict[str, Any]) -> str:
    if info.get("sample"):
        return service.SAMPLE_NAME
    stem = Path(info["inputs"][0]["file"]).stem if info.get("inputs") else "dataset"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._")[:48] or "dataset"


@guarded
def detect_format(files: list[str] | None, sample: bool, progress: gr.Progress = TRACK_TQDM) -> tuple[Any, ...]:
    """Recognise the uploads (or the sample): formats, preview with masks and boxes, the objects to name."""
    progress(0, desc="generating the built-in sample (first time only)" if sample else "reading the uploads")
    info, shots, thumbs = service.detect_inputs(files, sample=bool(sample), progress=True)
    rows = [[o["object_id"], o["label"], o["name"]] for o in info["objects"]]
    return info, shots, thumbs, rows, _suggest_name(info)


@guarded
def convert(files: list[str] | None, sample: bool, name: str, labels: Any, tasks: list[str], family: str,
            every: float, overwrite: bool, progress: gr.Progress = gr.Progress()) -> dict[str, Any]:  # noqa: B008
    """Queue a conversion job into STUDIO_HOME/datasets/<name>, follow its progress; the summary from disk."""
    job = service.submit_convert(files, name, sample=bool(sample), labels=service.labels_from_rows(labels),
                                 tasks=tasks, family=family, every=int(every or 1), overwrite=bool(overwrite))
    return step_ui.follow(job["job_id"], "convert", progress)


@guarded
def reattach(progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's way
    """On page load: the newest conversion's summary (followed to its end when still running) and its status."""
    result, line = step_ui.reattach("convert", progress)
    return result if result else gr.skip(), line


def _families() -> list[tuple[str, str]]:
    from pipeline.coords import CONVENTIONS

    models = [(f"{label.split(' · ')[0]} (model)", key) for label, key in service.model_choices()]
    return models + [(f"{name} (convention)", name) for name in CONVENTIONS]


def build() -> dict[str, Any]:
    """The Data tab; returns its components and the convert event for cross-tab wiring."""
    from pipeline.tasks import TASKS

    with gr.Tab("Data", id="data"):
        gr.Markdown(INTRO)
        with gr.Row():
            files = gr.File(label="Export files (ZIP / JSON / JSONL + video or frames, optional labels.json)",
                            file_count="multiple", file_types=UPLOAD_TYPES, type="filepath", scale=2)
            with gr.Column(scale=1):
                sample_btn = gr.Button("Load the built-in sample", variant="primary", elem_id="load-sample")
                sample = gr.Checkbox(False, label="Use the built-in sample", elem_id="use-sample")
                detected = gr.JSON(label="Detected format", open=True, max_height=260)
        preview = gr.Gallery(label="Preview: masks and boxes", columns=4, height=260, elem_id="data-preview",
                             object_fit="contain")
        with gr.Row():
            thumbs = gr.Gallery(label="Objects (thumbnails)", columns=6, height=180, scale=1, object_fit="contain")
            labels = gr.Dataframe(headers=LABEL_HEADERS, datatype=["number", "str", "str"], type="array",
                                  column_count=3, interactive=True, scale=2,
                                  label="Label editor: type a name per object id (blank keeps the export's label)")
        with gr.Row():
            name = gr.Textbox(service.SAMPLE_NAME, label="Dataset name", elem_id="dataset-name")
            tasks = gr.CheckboxGroup(list(TASKS), value=list(service.DEFAULT_TASKS), label="Tasks")
            family = gr.Dropdown(_families(), value=service.DEFAULT_MODEL, label="Model family (coordinate format)")
            every = gr.Number(1, precision=0, minimum=1, label="Keep every Nth frame")
            overwrite = gr.Checkbox(False, label="Replace a dataset of the same name")
        convert_btn = gr.Button("Convert", variant="primary", elem_id="convert")
        job_line = gr.Markdown(elem_id="convert-job", label="conversion job")
        summary = gr.JSON(label="Conversion summary", open=True, elem_id="convert-summary")

    outputs = [detected, preview, thumbs, labels, name]
    files.upload(lambda: False, outputs=sample, api_visibility="private", queue=False).then(
        detect_format, [files, sample], outputs, api_name="detect_format", **step_ui.DETECT_EVENT)
    sample_btn.click(lambda: (True, None), outputs=[sample, files], api_visibility="private", queue=False).then(
        detect_format, [files, sample], outputs, api_visibility="private")
    converted = convert_btn.click(convert, [files, sample, name, labels, tasks, family, every, overwrite], summary,
                                  api_name="convert", **step_ui.STEP_EVENT)
    converted.then(lambda: step_ui.status_line("convert"), None, job_line, api_visibility="private",
                   **step_ui.CHEAP_EVENT)
    return {"name": name, "converted": converted, "summary": summary, "reattach": {
        "fn": reattach, "inputs": None, "outputs": [summary, job_line], "api_visibility": "private",
        **step_ui.STEP_EVENT}}
