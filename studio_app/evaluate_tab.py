"""Evaluate tab: score a run's checkpoint against its base model and a mean-box baseline; worst examples first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from pipeline import service
from pipeline.coords import CONVENTIONS

from . import status, step_ui
from .common import TRACK_TQDM, Choice, choices_update, guarded

INTRO = ("Pick a finished run and a checkpoint. The fine-tuned model, its base model and the mean-box baseline "
         "answer the same split; answers are parsed back to boxes and scored (IoU, AP). Video tasks have their own "
         "rows and baselines: `track_miou` (box IoU over the later frames) and `track_lost_rate` against copying "
         "the first box, `visibility_f1` against 'always visible', `unique_accuracy` / `unique_mae` against the "
         "training split's most common count. CLI: `python -m pipeline evaluate RUN --split test --limit 32`.")
HEADLINE = ("miou", "ap50", "track_miou", "track_lost_rate", "visibility_f1", "unique_accuracy", "unique_mae")
SMOKE = ("⚠️ <b>Smoke test</b>: this run used the quick_test preset (a few steps on a tiny model). Its metrics are "
         "expected to be near zero; they check that the pipeline works, not the data.")


def _outputs(result: dict[str, Any]) -> tuple[Any, ...]:
    """An evaluation job's result (from disk) as the tab shows it: info (no server path), the table, the gallery."""
    info = service.public_evaluation(result)
    return info, {"headers": info["columns"], "data": info["rows"]}, service.step_gallery(result)


@guarded
def evaluate(run_id: str, checkpoint: str, split: str, limit: float | None, allow_no_split: bool = True,
             progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - gradio's way
    """Queue an evaluation job and follow it; metrics (base vs fine-tuned vs baseline) and the worst examples."""
    job = service.submit_evaluate(run_id, checkpoint or "best", split or "test", int(limit) if limit else None,
                                  allow_no_split=bool(allow_no_split))
    return _outputs(step_ui.follow(job["job_id"], "evaluate", progress))


@guarded
def evaluate_stream(run_id: str, checkpoint: str, split: str, limit: float | None,
                    allow_no_split: bool = True) -> Iterator[Any]:
    """The button: queue the evaluation job, its progress in the status line, then the metrics from disk."""
    job = service.submit_evaluate(run_id, checkpoint or "best", split or "test", int(limit) if limit else None,
                                  allow_no_split=bool(allow_no_split))
    yield from step_ui.stream(job["job_id"], "evaluate")
    yield _outputs(step_ui.outcome(job["job_id"], "evaluate"))


def _select(params: dict[str, Any]) -> tuple[Any, ...]:
    run_id, split = params.get("run_id"), params.get("split")
    known = {key for _, key in service.run_choices()}
    return (gr.update(value=run_id) if run_id in known else gr.skip(),
            gr.update(value=split) if run_id in known and split in ("test", "val", "train") else gr.skip())


@guarded
def reattach() -> Iterator[tuple[Any, ...]]:
    """On page load: the run and split of the newest evaluation, its progress while it runs, then its metrics from
    disk and the status lines."""
    yield from step_ui.reattach("evaluate", _outputs, 3, evaluate_summary, _select, 2)


def _headline(info: dict[str, Any]) -> str:
    """The headline metrics of the evaluated model, each with the baseline's value (the table has them all)."""
    from pipeline.eval_report import TITLES

    columns = [str(c) for c in info.get("columns") or []]
    base = next((n for n, c in enumerate(columns) if "baseline" in c), None)
    shown = []
    for row in info.get("rows") or []:
        if row[0] in HEADLINE and row[1] is not None:
            against = f" (baseline {row[base]})" if base is not None and row[base] is not None else ""
            shown.append(f"{TITLES.get(row[0], row[0])} {row[1]}{against}")
    return ", ".join(shown)


def evaluate_summary(info: dict[str, Any], *_: Any) -> str:
    shown = _headline(info)
    text = f"Evaluated {info.get('examples') or ''} {info['split']} example(s) of checkpoint {info.get('checkpoint')}"
    text += f": {shown}." if shown else "."
    if info.get("smoke_test"):
        text += "<br>" + SMOKE
    notes = [n for n in info.get("notes") or [] if not n.startswith("smoke test")]
    return text + "".join(f"<br>Note: {n}" for n in notes[:3])


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
def run_changed(run_id: str | None, split: str | None) -> tuple[Any, ...]:
    """Checkpoints of the run, a loud warning when its dataset has no splits, and its saved evaluation."""
    if not run_id:
        return choices_update(["best", "last"], "best"), "", gr.update(visible=False), gr.skip(), gr.skip(), \
            gr.skip(), status.note("Pick a run.")
    checkpoints = choices_update(service.checkpoint_choices(run_id), "best")
    data = service.run_dataset(run_id)
    warning, choice = "", gr.update(visible=False, value=False)
    if data["exists"] and not data["splits"]:
        warning = (f"<div class='status-error'>⚠️ <b>The dataset {data['name']} has no splits.</b> The model trained "
                   "on every frame, so an evaluation would score training data and look better than it is. Split "
                   "the dataset in the Quality &amp; Split tab and train again, or tick the box to evaluate anyway."
                   "</div>")
        choice = gr.update(visible=True, value=False)
    elif data["name"] and not data["exists"]:
        warning = f"<div class='status-note'>The run's dataset {data['name']} is no longer there.</div>"
    saved = service.saved_evaluation(run_id, split or "test")
    if saved is None:
        return checkpoints, warning, choice, None, None, None, status.note(
            ("⚠️ Smoke-test run. " if service.is_smoke_test(run_id) else "") + "Not evaluated yet on this split.")
    info, gallery = saved
    return (checkpoints, warning, choice, info, {"headers": info["columns"], "data": info["rows"]}, gallery,
            status.ok("(saved) " + evaluate_summary(info)))


def build() -> dict[str, Any]:
    """The Evaluate tab."""
    with gr.Tab("Evaluate", id="evaluate") as tab:
        gr.Markdown(INTRO)
        with gr.Row():
            run = Choice(service.run_choices(), label="Run", elem_id="eval-run", scale=3)
            checkpoint = Choice(["best", "last"], value="best", label="Checkpoint")
            split = gr.Radio(["test", "val", "train"], value="test", label="Split")
            limit = gr.Number(32, precision=0, label="At most N examples (0: all)")
        split_warning = gr.HTML("", elem_id="eval-split-warning", padding=False)
        allow = gr.Checkbox(False, label="Evaluate on the training data anyway (the dataset has no splits)",
                            visible=False, elem_id="eval-allow-no-split")
        with gr.Row():
            evaluate_btn = gr.Button("Evaluate", variant="primary", elem_id="evaluate", scale=0)
            eval_status = status.line("evaluate-status")
        job_line = gr.Markdown(elem_id="evaluate-job", label="evaluation job")
        with gr.Accordion("Score a model trained elsewhere (LLaMA-Factory, Unsloth, transformers)", open=False):
            gr.Markdown("Any Hugging Face VLM folder in `STUDIO_HOME/models` (or upload one as a ZIP). The "
                        "coordinate convention comes from its config.json unless you pick one; the prompt from "
                        "its own chat template. CLI: `python -m pipeline evaluate --model FOLDER --data DATASET`.")
            with gr.Row():
                folder = Choice(service.model_folder_choices(), label="Model folder", scale=2, elem_id="eval-folder")
                upload = gr.File(label="or upload a model folder (ZIP)", file_types=[".zip"], type="filepath")
                dataset = Choice(service.list_datasets(), label="Dataset")
                convention = gr.Dropdown(["auto", *CONVENTIONS], value="auto", label="Convention")
            with gr.Row():
                folder_btn = gr.Button("Evaluate folder", elem_id="evaluate-folder", scale=0)
                folder_status = status.line("evaluate-folder-status")
        table = gr.Dataframe(label="Metrics: fine-tuned vs base vs baseline", interactive=False,
                             elem_id="eval-metrics")
        gallery = gr.Gallery(label="Worst examples first (truth green, prediction magenta)", columns=4, height=420,
                             object_fit="contain", elem_id="eval-gallery")
        with gr.Accordion("Evaluation (JSON)", open=False):
            info = gr.JSON(label="Evaluation")

    shown = {"fn": run_changed, "inputs": [run, split],
             "outputs": [checkpoint, split_warning, allow, info, table, gallery, eval_status],
             "api_visibility": "private"}
    tab.select(refresh_runs, run, run, api_visibility="private").then(**shown)  # the saved evaluation, re-shown
    gr.on([run.input, split.input], **shown)
    hidden = status.hidden_button()
    hidden.click(evaluate, [run, checkpoint, split, limit], [info, table, gallery], api_name="evaluate",
                 **step_ui.STEP_EVENT)
    evaluate_btn.click(status.with_status(evaluate_stream, "Evaluation", evaluate_summary, 3),
                       [run, checkpoint, split, limit, allow], [info, table, gallery, eval_status],
                       api_visibility="private", **step_ui.STEP_EVENT).then(
        lambda: step_ui.status_line("evaluate"), None, job_line, api_visibility="private", **step_ui.CHEAP_EVENT)
    tab.select(refresh_folders, [folder, dataset], [folder, dataset], api_visibility="private")
    upload.upload(upload_model, [upload, folder], folder, api_visibility="private")
    hidden_folder = status.hidden_button()
    hidden_folder.click(evaluate_folder, [folder, dataset, convention, split, limit], [info, table, gallery],
                        api_name="evaluate_folder")
    folder_btn.click(status.with_status(evaluate_folder, "Evaluation", evaluate_summary, 3),
                     [folder, dataset, convention, split, limit], [info, table, gallery, folder_status],
                     api_visibility="private")
    return {"run": run, "reattach": {"fn": reattach, "inputs": None,
                                     "outputs": [run, split, info, table, gallery, eval_status, job_line],
                                     "api_visibility": "private", **step_ui.STEP_EVENT}}
