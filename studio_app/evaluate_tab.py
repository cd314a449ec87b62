"""Evaluate tab: score a run's checkpoint against its base model and a mean-box baseline; worst examples first."""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import service

from . import step_ui
from .common import choices_update, guarded

INTRO = ("Pick a finished run and a checkpoint. The fine-tuned model, its base model and the mean-box baseline "
         "answer the same split; answers are parsed back to boxes and scored (IoU, AP). "
         "CLI: `python -m pipeline evaluate RUN --split test --limit 32`.")


def _outputs(info: dict[str, Any]) -> tuple[Any, ...]:
    return info, {"headers": info["columns"], "data": info["rows"]}, service.step_gallery(info)


@guarded
def evaluate(run_id: str, checkpoint: str, split: str, limit: float | None,
             progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's way
    """Queue an evaluation job and follow it; metrics (base vs fine-tuned vs baseline) and the worst examples."""
    job = service.submit_evaluate(run_id, checkpoint or "best", split or "test", int(limit) if limit else None)
    return _outputs(step_ui.follow(job["job_id"], "evaluate", progress))


@guarded
def reattach(progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's way
    """On page load: the newest evaluation (followed to its end when still running) and its status."""
    result, line = step_ui.reattach("evaluate", progress)
    return (*(_outputs(result) if result else (gr.skip(),) * 3), line)


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
        job_line = gr.Markdown(elem_id="evaluate-job", label="evaluation job")
        with gr.Accordion("Evaluation (JSON)", open=False):
            info = gr.JSON(label="Evaluation")
        table = gr.Dataframe(label="Metrics: fine-tuned vs base vs baseline", interactive=False,
                             elem_id="eval-metrics")
        gallery = gr.Gallery(label="Worst examples first (truth green, prediction red)", columns=4, height=420,
                             object_fit="contain", elem_id="eval-gallery")

    tab.select(refresh_runs, run, run, api_visibility="private")
    run.change(refresh_checkpoints, run, checkpoint, api_visibility="private")
    evaluate_btn.click(evaluate, [run, checkpoint, split, limit], [info, table, gallery], api_name="evaluate",
                       **step_ui.STEP_EVENT).then(lambda: step_ui.status_line("evaluate"), None, job_line,
                                                  api_visibility="private", **step_ui.CHEAP_EVENT)
    return {"run": run, "reattach": {"fn": reattach, "inputs": None, "outputs": [info, table, gallery, job_line],
                                     "api_visibility": "private", **step_ui.STEP_EVENT}}
