"""Data tab: upload an export (or take the built-in sample), see what was detected, name the objects, convert."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from pipeline import service
from pipeline.clips import DEFAULT_CLIP_FRAMES, MAX_CLIP_FRAMES
from pipeline.fragments import DEFAULT_KEEP_SHARE

from . import status, step_ui
from .common import TRACK_TQDM, guarded

UPLOAD_TYPES = [".zip", ".json", ".jsonl", ".ndjson", ".csv", ".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi",
                ".jpg", ".jpeg", ".png", ".webp", ".bmp"]
TASKS_INFO = ("grounding … negative: one frame per example. track, visibility, count_unique: clips of several "
              "frames of one video (a model family that takes several images: not PaliGemma or Florence-2).")
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


def _clip_values(clip_frames: float | None, clip_stride: float | None, drop_fragments: bool,
                 keep_share: float | None) -> dict[str, Any]:
    """The video-task and mask options as `convert` takes them: a blank field (a stride of 0) is the CLI's default,
    the share only counts with 'drop fragments' ticked."""
    return {"clip_frames": DEFAULT_CLIP_FRAMES if clip_frames is None else int(clip_frames),
            "clip_stride": int(clip_stride) if clip_stride else None,
            "drop_fragments": bool(drop_fragments),
            "keep_share": float(keep_share) if drop_fragments and keep_share is not None else None}


def _submit(files: list[str] | None, sample: bool, name: str, labels: Any, tasks: list[str], family: str,
            every: float, overwrite: bool, max_frames: float | None, seed: float | None, include_auto: bool,
            allow_overlay_frames: bool, clip_frames: float | None, clip_stride: float | None, drop_fragments: bool,
            keep_share: float | None) -> int:
    job = service.submit_convert(files, name, sample=bool(sample), labels=service.labels_from_rows(labels),
                                 tasks=tasks, family=family, every=int(every or 1), overwrite=bool(overwrite),
                                 max_frames=int(max_frames) if max_frames else None, seed=int(seed or 0),
                                 include_auto=bool(include_auto), allow_overlay_frames=bool(allow_overlay_frames),
                                 **_clip_values(clip_frames, clip_stride, drop_fragments, keep_share))
    return int(job["job_id"])


@guarded
def convert(files: list[str] | None, sample: bool, name: str, labels: Any, tasks: list[str], family: str,
            every: float, overwrite: bool, max_frames: float | None = 0, seed: float | None = 0,
            include_auto: bool = False, allow_overlay_frames: bool = False,
            clip_frames: float | None = DEFAULT_CLIP_FRAMES, clip_stride: float | None = 0,
            drop_fragments: bool = False, keep_share: float | None = DEFAULT_KEEP_SHARE,
            progress: gr.Progress = gr.Progress()) -> dict[str, Any]:  # noqa: B008 - gradio's way
    """Queue a conversion job into STUDIO_HOME/datasets/<name>, follow its progress; the summary from disk."""
    job_id = _submit(files, sample, name, labels, tasks, family, every, overwrite, max_frames, seed, include_auto,
                     allow_overlay_frames, clip_frames, clip_stride, drop_fragments, keep_share)
    return step_ui.follow(job_id, "convert", progress)


@guarded
def convert_stream(files: list[str] | None, sample: bool, name: str, labels: Any, tasks: list[str], family: str,
                   every: float, overwrite: bool, max_frames: float | None = 0, seed: float | None = 0,
                   include_auto: bool = False, allow_overlay_frames: bool = False,
                   clip_frames: float | None = DEFAULT_CLIP_FRAMES, clip_stride: float | None = 0,
                   drop_fragments: bool = False, keep_share: float | None = DEFAULT_KEEP_SHARE) -> Iterator[Any]:
    """The Convert button: queue the job, its progress in the status line, then the summary from disk."""
    job_id = _submit(files, sample, name, labels, tasks, family, every, overwrite, max_frames, seed, include_auto,
                     allow_overlay_frames, clip_frames, clip_stride, drop_fragments, keep_share)
    yield from step_ui.stream(job_id, "convert")
    yield step_ui.outcome(job_id, "convert")


@guarded
def reattach() -> Iterator[tuple[Any, ...]]:
    """On page load: the newest conversion (its progress while it runs), its summary and status lines."""
    yield from step_ui.reattach("convert", lambda result: (result,), 1, convert_summary)


def detect_summary(info: dict[str, Any], *_: Any) -> str:
    """One line per upload: what was recognised, the videos / frames beside it, the objects and any problem."""
    found = "; ".join(f"<code>{i['file']}</code>: <b>{i['format']}</b>" for i in info.get("inputs", []))
    extra = []
    if info.get("sample"):
        extra.append("the built-in sample")
    if info.get("videos"):
        extra.append(f"{len(info['videos'])} video(s)")
    if info.get("frames"):
        extra.append(f"{info['frames']} frame image(s)")
    extra.append(f"{len(info.get('objects') or [])} object(s) to name below")
    text = f"Detected {found} · " + " · ".join(extra)
    problems = info.get("problems") or []
    if problems:
        text += "<br>⚠️ <b>Fix before converting:</b><ul>" + "".join(f"<li>{p}</li>" for p in problems) + "</ul>"
    else:
        text += ". Next: check the names, then <b>Convert</b>."
    return text


def convert_summary(summary: dict[str, Any]) -> str:
    """The conversion in one line, and where to go next."""
    labels = ", ".join(str(k) for k in (summary.get("labels") or {})) or "none"
    text = (f"Converted dataset <b>{summary['dataset']}</b>: {summary['frames']} frames, {summary['objects']} "
            f"objects, labels: {labels}.")
    if summary.get("fragments") is not None:
        text += f" Mask clean-up: {summary['fragments']} mask(s) lost detached specks."
    warnings = summary.get("warnings") or []
    if warnings:
        text += f" {len(warnings)} warning(s), first: {warnings[0]}."
    return text + " Next: the <b>Quality &amp; Split</b> tab."


def _families() -> list[tuple[str, str]]:
    from pipeline.coords import CONVENTIONS

    models = [(f"{label.split(' · ')[0]} (model)", key) for label, key in service.model_choices()]
    return models + [(f"{name} (convention)", name) for name in CONVENTIONS]


def _video_options() -> tuple[gr.Number, gr.Number, gr.Checkbox, gr.Number]:
    """The clip options of the video tasks and the mask clean-up (convert --clip-frames, --clip-stride,
    --drop-fragments, --keep-share)."""
    with gr.Accordion("Video tasks and mask clean-up", open=True, elem_id="video-options"):
        gr.Markdown("CLI: `--clip-frames K --clip-stride N --drop-fragments --keep-share S`")
        with gr.Row():
            clip_frames = gr.Number(DEFAULT_CLIP_FRAMES, precision=0, label="Frames per clip", elem_id="clip-frames",
                                    info=f"track, visibility, count_unique: frames of one video per example, in "
                                         f"time order (2 to {MAX_CLIP_FRAMES})")
            clip_stride = gr.Number(0, precision=0, label="Clip stride (video frames; 0: auto)",
                                    elem_id="clip-stride", info="source video frames between a clip's frames; 0: "
                                                                "about half a second at the video's fps")
            drop_fragments = gr.Checkbox(False, label="Drop mask fragments", elem_id="drop-fragments",
                                         info="keep each mask's main region; box and area are recomputed, "
                                              "dataset.json lists what changed")
            keep_share = gr.Number(DEFAULT_KEEP_SHARE, label="Keep pieces of at least this share", step=0.01,
                                   elem_id="keep-share", info="with 'Drop mask fragments': a detached piece "
                                                              "holding this share of the mask's area or more stays")
    return clip_frames, clip_stride, drop_fragments, keep_share


def build() -> dict[str, Any]:
    """The Data tab; returns its components and the convert event for cross-tab wiring."""
    from pipeline.tasks import TASKS

    with gr.Tab("Data", id="data"):
        gr.Markdown(INTRO)
        with gr.Row():
            files = gr.File(label="Export files (ZIP / JSON / JSONL + video or frames, optional labels.json)",
                            file_count="multiple", file_types=UPLOAD_TYPES, type="filepath", scale=2,
                            elem_id="data-files")
            with gr.Column(scale=1):
                sample_btn = gr.Button("Load the built-in sample", variant="primary", elem_id="load-sample")
                sample = gr.Checkbox(False, label="Use the built-in sample", elem_id="use-sample")
                detect_status = status.line("detect-status", status.note("Upload files or load the sample."))
        with gr.Accordion("Detected format (JSON)", open=False):
            detected = gr.JSON(label="Detected format", max_height=260)
        preview = gr.Gallery(label="Preview: masks and boxes", columns=4, height=260, elem_id="data-preview",
                             object_fit="contain")
        with gr.Row():
            thumbs = gr.Gallery(label="Objects (thumbnails)", columns=6, height=180, scale=1, object_fit="contain")
            labels = gr.Dataframe(headers=LABEL_HEADERS, datatype=["number", "str", "str"], type="array",
                                  column_count=3, interactive=True, scale=2,
                                  label="Label editor: type a name per object id (blank keeps the export's label)")
        with gr.Row():
            name = gr.Textbox(service.SAMPLE_NAME, label="Dataset name", elem_id="dataset-name")
            family = gr.Dropdown(_families(), value=service.DEFAULT_MODEL, label="Model family (coordinate format)")
            every = gr.Number(1, precision=0, minimum=1, label="Keep every Nth frame")
            overwrite = gr.Checkbox(False, label="Replace a dataset of the same name")
        tasks = gr.CheckboxGroup(list(TASKS), value=list(service.DEFAULT_TASKS), label="Tasks", info=TASKS_INFO,
                                 elem_id="convert-tasks")
        clip_frames, clip_stride, drop_fragments, keep_share = _video_options()
        with gr.Accordion("More convert options (as on the command line)", open=False):
            with gr.Row():
                max_frames = gr.Number(0, precision=0, minimum=0, label="At most N frames per video (0: all)")
                seed = gr.Number(0, precision=0, label="Seed for the prompt phrasing")
                include_auto = gr.Checkbox(False, label="SA-V: also take the *_auto.json masklets")
                overlay = gr.Checkbox(False, label="Demo ZIP without its video: use the overlay PNGs as frames "
                                                   "(not advised)")
        with gr.Row():
            convert_btn = gr.Button("Convert", variant="primary", elem_id="convert", scale=1)
            convert_status = status.line("convert-status")
        job_line = gr.Markdown(elem_id="convert-job", label="conversion job")
        with gr.Accordion("Conversion summary (JSON)", open=False):
            summary = gr.JSON(label="Conversion summary", elem_id="convert-summary")

    outputs = [detected, preview, thumbs, labels, name]
    detecting = {"what": "Detection", "summary": detect_summary}
    status.action(files.upload(lambda: False, outputs=sample, api_visibility="private", queue=False).then,
                  detect_format, [files, sample], outputs, detect_status, api_name="detect_format", **detecting,
                  **step_ui.DETECT_EVENT)
    status.action(sample_btn.click(lambda: (True, None), outputs=[sample, files], api_visibility="private",
                                   queue=False).then,
                  detect_format, [files, sample], outputs, detect_status, api_name=None, **detecting,
                  **step_ui.DETECT_EVENT)
    converted = status.action(convert_btn.click, convert,
                              [files, sample, name, labels, tasks, family, every, overwrite, max_frames, seed,
                               include_auto, overlay, clip_frames, clip_stride, drop_fragments, keep_share],
                              [summary], convert_status, api_name="convert",
                              what="Convert", summary=convert_summary, ui_fn=convert_stream, **step_ui.STEP_EVENT)
    converted.then(lambda: step_ui.status_line("convert"), None, job_line, api_visibility="private",
                   **step_ui.CHEAP_EVENT)
    return {"name": name, "converted": converted, "summary": summary, "status": convert_status, "reattach": {
        "fn": reattach, "inputs": None, "outputs": [summary, convert_status, job_line], "api_visibility": "private",
        **step_ui.STEP_EVENT}}
