"""Evaluate tab: score a run's checkpoint against its base model and a mean-box baseline; worst examples first."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service
from pipeline.coords import CONVENTIONS

from .common import TRACK_TQDM, choices_update, guarded

INTRO = ("Pick a finished run and a checkpoint. The fine-tuned model, its base model and the mean-box baseline "
         "answer the same split; answers are parsed back to boxes and scored (IoU, AP). "
         "CLI: `python -m pipeline evaluate RUN --split test --limit 32`.")


@guarded
def evaluate(run_id: str, checkpoint: str, split: str, limit: float | None,
             progress: gr.Progress = TRACK_TQDM) -> tuple[Any, ...]:
    """Metrics (base vs fine-tuned vs baseline) and the gallery of the worst-scored examples."""
    progress(0, desc="evaluating")
    info, gallery = service.evaluate(run_id, checkpoint or "best", split or "test", int(limit) if limit else None)
    return info, {"headers": info["columns"], "data": info["rows"]}, gallery


@guarded
def evaluate_folder(model: str, dataset: str, convention: str, split: str, limit: float | None,
                    progress: gr.Progress = TRACK_TQDM) -> tuple[Any, ...]:
    """Score a model folder trained elsewhere (STUDIO_HOME/models/<name>) on a dataset split."""
    progress(0, desc="evaluating")
    info, gallery = service.evaluate_folder(model, dataset, split or "test", int(limit) if limit else None,
                                            None if convention in ("", "auto") else convention)
    return info, {"headers": info["columns"], "data": info["rows"]}, gallery


@guarded
def upload_model(path: str | None, current: str | None) -> Any:
    """Unpack an uploaded model ZIP into the models folder and select it."""
    name = service.import_model_zip(path) if path else current
    return choices_update(service.model_folder_choices(), name)


@guarded
def refresh_folders(current: str | None, dataset: str | None) -> tuple[Any, Any]:
    """The model folders and datasets to choose from."""
    return (choices_update(service.model_folder_choices(), current),
            choices_update(service.list_datasets(), dataset))


@guarded
def refresh_runs(current: str | None) -> Any:
    """The runs to choose from, newest first."""
    return choices_update(service.run_choices(), current)


@guarded
def refresh_checkpoints(run_id: str | None) -> Any:
    """best, last and the checkpoint steps of the chosen run."""
    return choices_update(service.checkpoint_choices(run_id or ""), "best")


def build() -> dict[str, Any]:
    """The Evaluate tab."""
    with gr.Tab("Evaluate", id="evaluate") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            run = gr.Dropdown(service.run_choices(), label="Run", elem_id="eval-run", scale=3,
                              allow_custom_value=True)
            checkpoint = gr.Dropdown(["best", "last"], value="best", label="Checkpoint", allow_custom_value=True)
            split = gr.Radio(["test", "val", "train"], value="test", label="Split")
            limit = gr.Number(32, precision=0, label="At most N examples (0: all)")
        evaluate_btn = gr.Button("Evaluate", variant="primary", elem_id="evaluate")
        with gr.Accordion("Score a model trained elsewhere (LLaMA-Factory, Unsloth, transformers)", open=False):
            gr.Markdown("Any Hugging Face VLM folder in `STUDIO_HOME/models` (or upload one as a ZIP). The "
                        "coordinate convention comes from its config.json unless you pick one; the prompt from "
                        "its own chat template. CLI: `python -m pipeline evaluate --model FOLDER --data DATASET`.")
            with gr.Row():
                folder = gr.Dropdown(service.model_folder_choices(), label="Model folder", scale=2,
                                     allow_custom_value=True, elem_id="eval-folder")
                upload = gr.File(label="or upload a model folder (ZIP)", file_types=[".zip"], type="filepath")
                dataset = gr.Dropdown(service.list_datasets(), label="Dataset", allow_custom_value=True)
                convention = gr.Dropdown(["auto", *CONVENTIONS], value="auto", label="Convention")
            folder_btn = gr.Button("Evaluate folder", elem_id="evaluate-folder")
        with gr.Accordion("Evaluation (JSON)", open=False):
            info = gr.JSON(label="Evaluation")
        table = gr.Dataframe(label="Metrics: fine-tuned vs base vs baseline", interactive=False,
                             elem_id="eval-metrics")
        gallery = gr.Gallery(label="Worst examples first (truth green, prediction red)", columns=4, height=420,
                             object_fit="contain", elem_id="eval-gallery")

    tab.select(refresh_runs, run, run, api_visibility="private")
    run.change(refresh_checkpoints, run, checkpoint, api_visibility="private")
    evaluate_btn.click(evaluate, [run, checkpoint, split, limit], [info, table, gallery], api_name="evaluate")
    tab.select(refresh_folders, [folder, dataset], [folder, dataset], api_visibility="private")
    upload.upload(upload_model, [upload, folder], folder, api_visibility="private")
    folder_btn.click(evaluate_folder, [folder, dataset, convention, split, limit], [info, table, gallery],
                     api_name="evaluate_folder")
    return {"run": run}
