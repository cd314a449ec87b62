"""Train tab: model + preset + editable hyperparameters (validated inline, YAML in and out), start a job, follow it.

Training never runs inside an event: Start queues a job and returns its id; the watch stream only reads the job
store and the run folder, so a closed browser leaves the job running and a reload re-attaches to it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from pipeline import job_view, service

from . import status
from .common import Choice, guarded, records, require_user
from .step_ui import CHEAP_EVENT

TERMINAL = ("succeeded", "failed", "cancelled", "interrupted")
INTRO = ("Pick a dataset, a model and a preset; edit the hyperparameters (or the YAML). Start queues a job; the "
         "progress below follows it and survives page reloads. CLI: `python -m pipeline jobs submit --preset cpu_demo "
         "--model tiny-smolvlm --data DATASET` then `python -m pipeline jobs watch ID`.")
JOB_COLUMNS = ["job_id", "status", "position", "run_id", "attempt", "error", "kind"]
FIELD_LABELS = {"training.method": "method", "training.max_steps": "max steps (-1: use epochs)",
                "training.epochs": "epochs", "training.batch_size": "batch size", "training.grad_accum": "grad accum",
                "training.learning_rate": "learning rate", "training.scheduler": "scheduler", "lora.r": "LoRA r",
                "lora.alpha": "LoRA alpha", "data.max_length": "max length (tokens)",
                "training.save_steps": "save every (steps)", "training.logging_steps": "log every (steps)"}


@guarded
def load_preset(preset: str, model: str) -> tuple[Any, ...]:
    """The preset's config for the model: YAML text and the form fields."""
    cfg = service.training_config(None, model, preset)
    return service.config_yaml(cfg), *service.form_values(cfg).values()


@guarded
def apply_fields(text: str, model: str, *values: Any) -> str:
    """Write the form's values into the YAML (each checked by the schema)."""
    return service.apply_form(text, dict(zip(service.FORM_FIELDS, values, strict=True)), model)


@guarded
def import_yaml(path: str | None) -> tuple[Any, ...]:
    """Load an uploaded YAML config into the editor, the model choice and the form."""
    if not path:
        return (gr.skip(),) * (2 + len(service.FORM_FIELDS))
    name = Path(path).name
    if Path(path).stat().st_size > service.MAX_YAML_BYTES:
        raise gr.Error(f"{name}: a config YAML is at most {service.MAX_YAML_BYTES // 1024} KiB")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise gr.Error(f"{name}: not a UTF-8 text file") from None
    cfg = service.training_config(None, None, service.DEFAULT_PRESET, text)
    return service.config_yaml(cfg), cfg.model.name, *service.form_values(cfg).values()


@guarded
def export_yaml(text: str, model: str) -> str:
    """The current config as a downloadable YAML file."""
    cfg = service.training_config(None, model, service.DEFAULT_PRESET, text)
    folder = Path(tempfile.mkdtemp(prefix="studio-config-"))
    path = folder / f"{cfg.model.name}.yaml"
    path.write_text(service.config_yaml(cfg), encoding="utf-8")
    return str(path)


@guarded
def estimate_memory(model: str, preset: str, config_yaml: str, dataset: str | None) -> tuple[Any, ...]:
    """Validation messages and the memory estimate against the detected hardware (fits / tight / won't fit)."""
    check = service.check_training(dataset, model, preset, config_yaml)
    memory = check["memory"]
    lines = [f"**Error** · {e}" for e in check["errors"]] + [f"*Warning* · {w}" for w in check["warnings"]]
    verdict = "" if memory is None else (
        f"**{memory['verdict']}** · estimated peak {memory['total_gib']:.3f} GiB of {memory['capacity_gib']} GiB "
        f"({memory['device']}) · {memory['hardware']}")
    return memory or {}, verdict, "\n\n".join(lines) or "Config is valid."


@guarded
def start_training(dataset: str, model: str, preset: str, config_yaml: str, max_steps: float | None, run_name: str,
                   profile: gr.OAuthProfile | None = None) -> tuple[Any, ...]:
    """Queue a training job; returns its id at once (the stream below follows it)."""
    require_user(profile, "start training jobs")
    job = service.start_training(dataset, model, preset, config_yaml, int(max_steps) if max_steps else None,
                                 run_name or None)
    return job, job["job_id"], 0


def start_summary(job: dict[str, Any], *_: Any) -> str:
    where = f", position {job['position']} in the queue" if job.get("position") else ""
    return (f"Queued job <b>#{job['job_id']}</b> (run {job['run_id']}, {job['model']}, {job['max_steps']} steps"
            f"{where}). Its progress follows below; it keeps running if you close the page.")


@guarded
def watch_job(job_id: float | None, from_seq: float | None) -> Any:
    """Stream a job's progress (bar, loss and learning-rate plots, throughput, memory, log tail) until it ends."""
    if not job_id:
        yield gr.skip(), job_view.progress_html(None), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return
    first = True
    for view in service.watch_job(int(job_id), int(from_seq or 0)):
        plots = first or (any(e.get("event") in ("log", "eval", "start", "resume", "end") for e in view.events)
                          if view.events else True)
        first = False
        loss = job_view.curve_figure(view, ["loss", "eval_loss"], "Loss") if plots else gr.skip()
        lr = job_view.curve_figure(view, ["lr"], "Learning rate", from_zero=True) if plots else gr.skip()
        yield (view.to_dict(), job_view.progress_html(view), job_view.stats_markdown(view), loss, lr, view.log_tail,
               view.seq)


def _buttons(job_status: str | None) -> tuple[Any, Any]:
    """Cancel only while a job is queued or running; Resume only once it stopped without succeeding."""
    return (gr.update(interactive=job_status in ("queued", "running")),
            gr.update(interactive=job_status in ("failed", "cancelled", "interrupted")))


def watch_ui(job_id: float | None, from_seq: float | None) -> Any:
    """The page's follow stream: the watch outputs plus the jobs table and the buttons that apply, as it goes."""
    last = None
    try:
        for out in watch_job(job_id, from_seq):
            view = out[0]
            state = view.get("status") if isinstance(view, dict) else None
            table = records(service.list_jobs(), JOB_COLUMNS) if state != last else gr.skip()
            last = state or last
            line = status.note(f"Following job #{int(job_id or 0)}: {state}.") if state else gr.skip()
            if state in TERMINAL:
                line = (status.ok(f"Job #{int(job_id or 0)} {state}.") if state == "succeeded" else
                        status.fail(f"Job #{int(job_id or 0)}", view.get("error") or state))
            yield (*out, table, *_buttons(state), line)
    except gr.Error as exc:
        yield (*[gr.skip()] * 7, gr.skip(), *_buttons(None), status.fail("Watch", exc.message))


@guarded
def cancel_job(job_id: float | None) -> dict[str, Any]:
    """Cancel a queued job, or stop a running one at its next step (it saves a checkpoint)."""
    if not job_id:
        raise gr.Error("no job selected")
    return service.cancel_job(int(job_id))


@guarded
def resume_job(job_id: float | None, profile: gr.OAuthProfile | None = None) -> tuple[Any, ...]:
    """Queue a cancelled / failed / interrupted job again; it resumes from its newest checkpoint."""
    require_user(profile, "resume training jobs")
    if not job_id:
        raise gr.Error("no job selected")
    return service.resume_job(int(job_id)), 0


@guarded
def list_jobs() -> list[list[Any]]:
    """Every job, newest first, with its queue position."""
    return records(service.list_jobs(), JOB_COLUMNS)


@guarded
def reattach() -> tuple[Any, ...]:
    """On page load: the job list and the job to follow (the newest running, else queued, else the newest)."""
    return records(service.list_jobs(), JOB_COLUMNS), service.job_to_follow() or 0, 0


@guarded
def initial_form(preset: str, model: str) -> tuple[Any, ...]:
    """On page load: the followed job's settings when there is one (the form mirrors the job on screen), else the
    preset's. Returns dataset, model, preset, run name, YAML and the fields."""
    job_id = service.job_to_follow()
    form = service.job_form(job_id) if job_id else None
    if form is None:
        return (gr.skip(), gr.skip(), gr.skip(), gr.skip(), *load_preset(preset, model), gr.skip())
    known = {key for _, key in service.preset_choices()}
    return (gr.update(value=form["dataset"]), form["model"], form["preset"] if form["preset"] in known else gr.skip(),
            form["run_name"], form["yaml"], *form["fields"].values(),
            status.note(f"The form shows the settings of job #{form['job_id']} ({form['status']})."))


def _fields() -> list[gr.components.Component]:
    fields = []
    for key in service.FORM_FIELDS:
        label = FIELD_LABELS[key]
        if key == "training.method":
            fields.append(gr.Dropdown(["lora", "qlora", "full"], label=label))
        elif key == "training.scheduler":
            fields.append(gr.Dropdown(["linear", "cosine", "constant", "constant_with_warmup", "polynomial"],
                                      label=label))
        else:
            integer = key not in ("training.epochs", "training.learning_rate", "lora.alpha")
            step = {"training.learning_rate": 0.00001, "training.epochs": 0.5}.get(key, 1)
            fields.append(gr.Number(label=label, precision=0 if integer else None, step=step,
                                    minimum=0 if key == "training.learning_rate" else None,
                                    elem_id="field-" + key.replace(".", "-").replace("_", "-")))
    return fields


def build() -> dict[str, Any]:
    """The Train tab; returns its components for the page-load re-attach."""
    with gr.Tab("Train", id="train"):
        gr.Markdown(INTRO)
        with gr.Row():
            dataset = Choice(service.list_datasets(), label="Dataset", elem_id="train-dataset")
            model = gr.Dropdown(service.model_choices(), value=service.DEFAULT_MODEL, label="Model",
                                elem_id="train-model")
            preset = gr.Dropdown(service.preset_choices(), value=service.DEFAULT_PRESET, label="Preset",
                                 elem_id="train-preset")
        memory_md = gr.Markdown(elem_id="memory-verdict", label="memory verdict")
        with gr.Row(equal_height=True):
            fields = _fields()
        check_md = gr.Markdown(elem_id="config-check", label="config check")
        with gr.Accordion("Config YAML (import / export)", open=False):
            text = gr.Code("", language="yaml", label="config.yaml", lines=16, interactive=True)
            with gr.Row():
                upload = gr.File(label="Import YAML", file_types=[".yaml", ".yml"], type="filepath")
                download_btn = gr.Button("Export YAML")
                download = gr.File(label="config.yaml", interactive=False)
        memory_json = gr.JSON(visible=False, label="memory estimate")
        with gr.Row():
            run_name = gr.Textbox("", label="Run name (optional)", scale=2, elem_id="run-name")
            start_btn = gr.Button("Start training", variant="primary", elem_id="start-training", scale=1)
        start_status = status.line("start-status")
        with gr.Row():
            job_id = gr.Number(0, precision=0, label="Job id", elem_id="job-id")
            from_seq = gr.Number(0, precision=0, label="Last event seq (resume the stream from here)")
            watch_btn = gr.Button("Watch")
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-job", interactive=False)
            resume_btn = gr.Button("Resume", elem_id="resume-job", interactive=False)
        job_status = status.line("job-status")
        progress = gr.HTML(job_view.progress_html(None), elem_id="train-progress-box", label="progress")
        stats = gr.Markdown(elem_id="train-stats", label="stats")
        with gr.Row():
            loss_plot = gr.Plot(label="Loss", elem_id="loss-plot")
            lr_plot = gr.Plot(label="Learning rate", elem_id="lr-plot")
        log_tail = gr.Textbox(label="Log tail", lines=8, max_lines=12, interactive=False)
        with gr.Accordion("Job and latest event (JSON)", open=False):
            job_json = gr.JSON(label="Job")
            view_json = gr.JSON(label="Latest event")
        jobs = gr.Dataframe(headers=JOB_COLUMNS, label="Jobs (queued ones show their queue position)",
                            interactive=False, elem_id="jobs-table")
        jobs_btn = gr.Button("Refresh jobs")

    watch_out = [view_json, progress, stats, loss_plot, lr_plot, log_tail, from_seq]
    # public names first: private duplicates get suffixes
    jobs_btn.click(list_jobs, None, jobs, api_name="list_jobs", **CHEAP_EVENT)
    config_out = [text, *fields]
    for trigger in (preset.input, model.input):  # user choices only: an imported YAML sets the model itself
        trigger(load_preset, [preset, model], config_out, api_visibility="private")
    gr.on([f.input for f in fields], apply_fields, [text, model, *fields], text, api_visibility="private")
    gr.on([text.change, dataset.change], estimate_memory, [model, preset, text, dataset],
          [memory_json, memory_md, check_md], api_name="estimate_memory", trigger_mode="always_last", **CHEAP_EVENT)
    upload.upload(import_yaml, upload, [text, model, *fields], api_visibility="private")
    download_btn.click(export_yaml, [text, model], download, api_visibility="private")
    hidden = status.hidden_button()
    watch = hidden.click(watch_job, [job_id, from_seq], watch_out, api_name="watch_job", concurrency_limit=None)
    ui_out = [*watch_out, jobs, cancel_btn, resume_btn, job_status]
    follow = {"fn": watch_ui, "inputs": [job_id, from_seq], "outputs": ui_out, "concurrency_limit": None,
              "api_visibility": "private"}
    watching = watch_btn.click(**follow)
    follow["cancels"] = [watch, watching]
    max_steps = fields[service.FORM_FIELDS.index("training.max_steps")]
    started = status.action(start_btn.click, start_training, [dataset, model, preset, text, max_steps, run_name],
                            [job_json, job_id, from_seq], start_status, api_name="start_training", what="Start",
                            summary=start_summary)
    started.then(**follow)
    status.action(cancel_btn.click, cancel_job, job_id, [job_json], job_status, api_name="cancel_job",
                  what="Cancel", summary=lambda job: f"Job #{job['job_id']}: {job['status']} (a running job stops "
                                                     "at its next step and saves a checkpoint).")
    resumed = status.action(resume_btn.click, resume_job, job_id, [job_json, from_seq], job_status,
                            api_name="resume_job", what="Resume",
                            summary=lambda job, _seq: f"Job #{job['job_id']} queued again: {job['status']}.")
    resumed.then(**follow)
    form_out = [dataset, model, preset, run_name, text, *fields, start_status]
    return {"dataset": dataset, "preset": preset, "model": model, "config_out": config_out, "jobs": jobs,
            "job_id": job_id, "from_seq": from_seq, "follow": follow, "load_preset": load_preset,
            "form_out": form_out}
