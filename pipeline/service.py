"""The app's facade: plain functions the Gradio handlers call (no gradio here), returning JSON-able dicts, paths,
PIL images and plotly figures. Everything is addressed by name inside STUDIO_HOME (datasets/<name>, runs by run id,
exports/<name>), so a remote caller can never point the studio at an arbitrary path. A thin facade: uploads live
in uploads.py, drawing in gallery.py; this module re-exports what the handlers call.

    from pipeline import service
    service.convert_inputs([], "demo", sample=True)           # built-in sample -> STUDIO_HOME/datasets/demo
    service.split("demo", "random", "0.8,0.1,0.1", 42)
    job = service.start_training("demo", preset="quick_test", max_steps=3)
    for view in service.watch_job(job["job_id"]): print(view.status, view.step, view.total_steps)
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .gallery import PALETTE, draw_objects  # noqa: F401
from .home import home_dir, studio_home
from .job_view import WatchView
from .uploads import (  # noqa: F401
    SAMPLE_NAME,
    SAMPLE_OPTIONS,
    Inputs,
    detect_inputs,
    ensure_sample,
    labels_from_rows,
    sample_inputs,
    sample_options,
    staged_inputs,
)

if TYPE_CHECKING:
    from .jobs import JobBackend

DEFAULT_MODEL = "tiny-smolvlm"
DEFAULT_PRESET = "cpu_demo"
DEFAULT_TASKS = ("grounding",)
FORM_FIELDS = ("training.method", "training.max_steps", "training.epochs", "training.batch_size",
               "training.grad_accum", "training.learning_rate", "training.scheduler", "lora.r", "lora.alpha",
               "data.max_length", "training.save_steps", "training.logging_steps")
MAX_YAML_BYTES = 64 * 1024  # what plan.yaml_mapping accepts (plan.MAX_YAML_BYTES; a test keeps them equal)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LOCK = threading.Lock()  # the backends table
_HARDWARE_LOCK = threading.Lock()
_BACKENDS: dict[tuple[Path, str], JobBackend] = {}  # by (data home, STUDIO_JOBS)
_MODE = {"scheduler": "process"}
_HARDWARE: dict[str, Any] = {}


# -- names, homes, the jobs backend ----------------------------------------------------------------------------
def check_name(name: str, what: str = "name") -> str:
    """A folder name of letters, digits, '_', '.', '-' (at most 64, no '..'); UserError otherwise."""
    name = (name or "").strip()
    if not _NAME.fullmatch(name) or ".." in name:
        raise UserError(f"{what} {name!r}: use letters, digits, '_', '.', '-' (at most 64 characters)")
    return name


def dataset_dir(name: str) -> Path:
    """The folder of a converted dataset in STUDIO_HOME/datasets; UserError when there is none."""
    from .dataset import is_dataset

    path = home_dir("datasets") / check_name(name, "dataset")
    if not is_dataset(path):
        raise UserError(f"no converted dataset named {name!r} (convert an export first)")
    return path


def list_datasets() -> list[str]:
    """Names of the converted datasets, newest first."""
    from .dataset import is_dataset

    folders = [p for p in home_dir("datasets").iterdir() if is_dataset(p)]
    return [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


def on_space() -> bool:
    """True when running as a Hugging Face Space (SPACE_ID is set)."""
    return bool(os.environ.get("SPACE_ID"))


def require_user(username: str | None, action: str) -> None:
    """On a Space only signed-in users may start jobs or push; UserError otherwise."""
    if on_space() and not username:
        raise UserError(f"sign in with Hugging Face (button at the top) to {action}")


def backend() -> JobBackend:
    """The jobs backend of the current STUDIO_HOME and STUDIO_JOBS (one per data home, backend and process).

    `local`: this machine's scheduler; `celery`: the fleet of workers (Start, Watch, Cancel, Resume and the jobs
    table then all go through Redis). Jobs whose process or worker is gone are settled when it is first made.
    """
    from .jobs import backend_name, get_backend

    key = (studio_home(), backend_name())
    with _LOCK:
        found = _BACKENDS.get(key)
        if found is None:
            found = _BACKENDS[key] = get_backend(key[0], scheduler=_MODE["scheduler"])
            found.recover()
        return found


def start_scheduler() -> JobBackend:
    """The app's job side: settles jobs whose process is gone, then runs the local scheduler in a daemon thread
    (with STUDIO_JOBS=celery there is nothing to run here: the workers run the jobs)."""
    _MODE["scheduler"] = "thread"
    found = backend()
    found.start()
    return found


def hardware() -> Any:
    """The detected training hardware (probed once per process; importing torch takes a few seconds)."""
    with _HARDWARE_LOCK:
        if "hw" not in _HARDWARE:
            from .hardware import detect_hardware

            _HARDWARE["hw"] = detect_hardware()
        return _HARDWARE["hw"]


# -- inputs: the built-in sample and uploads -------------------------------------------------------------------
# -- Data tab ---------------------------------------------------------------------------------------------------
def convert_inputs(files: Sequence[str | Path] | None, name: str, *, sample: bool = False,
                   labels: dict[int, str] | None = None, tasks: Sequence[str] = DEFAULT_TASKS,
                   family: str = DEFAULT_MODEL, every: int = 1, max_frames: int | None = None,
                   overwrite: bool = False, progress: bool = False, allow_overlay_frames: bool = False,
                   include_auto: bool = False, seed: int = 0) -> dict[str, Any]:
    """Convert uploads (or the sample) into STUDIO_HOME/datasets/<name>; names typed in the editor win (every
    option of `python -m pipeline convert` is a keyword here)."""
    from .ingest import convert
    from .registry import resolve_convention

    name = check_name(name, "dataset name")
    out = home_dir("datasets") / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"a dataset named {name!r} already exists: choose another name or tick 'replace'")
    with staged_inputs(files, sample, progress) as inputs:
        names = {**inputs.labels, **(labels or {})}
        summary = convert(inputs.annotations, out, video=inputs.videos, images=inputs.images, labels=names or None,
                          convention=resolve_convention(family or DEFAULT_MODEL), tasks=list(tasks or DEFAULT_TASKS),
                          every=int(every or 1), max_frames=int(max_frames) if max_frames else None,
                          progress=progress, overwrite=overwrite, family=family or DEFAULT_MODEL,
                          allow_overlay_frames=bool(allow_overlay_frames), include_auto=bool(include_auto),
                          seed=int(seed or 0))
    return {"dataset": name, "frames": summary.frames, "objects": summary.objects, "labels": summary.labels,
            "videos": summary.videos, "issues": summary.issues, "warnings": summary.warnings[:20],
            "files": summary.files}


# -- Quality & Split tab ---------------------------------------------------------------------------------------
def validate_dataset(name: str) -> dict[str, Any]:
    """Run the quality rules on a dataset; report files in STUDIO_HOME/reports/<name>/ (replaced on each run)."""
    from .quality import run_rules, write_report

    write_report(run_rules(dataset_dir(name)), home_dir("reports") / name, overwrite=True)
    return _report_view(name)


def _report_view(name: str) -> dict[str, Any]:
    """The saved quality report of a dataset as the app shows it: counts and the findings table (no record ids),
    plots and the report files; every server path replaced by the dataset's name."""
    import json

    folder = home_dir("reports") / name
    saved = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    text = (folder / "report.md").read_text(encoding="utf-8").replace(str(dataset_dir(name)), name)
    concise = text.split("\n## Errors")[0].split("\n## Plots")[0].rstrip()  # counts and the findings table
    summary = {**saved.get("summary", {}), "dataset": name}  # a name, never the server folder
    findings = saved.get("findings") or []
    return {"dataset": name, "passed": bool(summary.get("passed")), "summary": summary,
            "findings": [{"rule": f.get("rule"), "severity": f.get("severity"), "message": f.get("message"),
                          "records": len(f.get("records") or [])} for f in findings],
            "markdown": concise + "\n\nThe record ids of each finding and how to fix it: report.md (download below).",
            "plots": [str(p) for p in sorted(folder.glob("*.png"))],
            "files": [str(folder / "report.md"), str(folder / "report.json")]}


def saved_dataset_state(name: str) -> dict[str, Any]:
    """What is on disk for a dataset: {"report": as validate_dataset returns it or None, "split": as split returns
    it or None} (re-shown after a reload or when the dataset is picked again)."""
    from .viewer import saved_split

    root = dataset_dir(name)
    report = _report_view(name) if (home_dir("reports") / name / "report.json").is_file() else None
    return {"report": report, "split": saved_split(root)}


def browse_dataset(name: str, split_name: str = "all", task: str = "all", label: str = "all", start: int = 0,
                   count: int = 12) -> dict[str, Any]:
    """A page of a dataset's training examples (image with boxes, prompt, target answer); see viewer.browse."""
    from .viewer import browse

    return browse(dataset_dir(name), split_name, task, label, int(start or 0), int(count or 12))


def dataset_options(name: str) -> dict[str, list[str]]:
    """The splits, tasks and labels a dataset's viewer filters by."""
    from .viewer import options

    return options(dataset_dir(name))


def split(name: str, strategy: str = "temporal", ratios: str | Sequence[float] = "0.8,0.1,0.1",
          seed: int = 42) -> dict[str, Any]:
    """Split a dataset (writes splits/ and split.yaml into it); the counts, shares and notes."""
    from .split import split_dataset

    result = split_dataset(dataset_dir(name), strategy=strategy, ratios=ratios, seed=int(seed))
    return {"dataset": name, "strategy": result.strategy, "ratios": list(result.ratios), "seed": result.seed,
            "guard": result.guard, "counts": result.counts, "objects": result.objects,
            "label_shares": result.label_shares, "max_share_deviation": round(result.max_deviation, 4),
            "videos": result.videos, "notes": result.notes, "digest": result.digest}


def split_figure(result: dict[str, Any]) -> Any:
    """Frames per split and each label's share per split, as one grouped bar chart."""
    import plotly.graph_objects as go

    shares = {k: v for k, v in result.get("label_shares", {}).items() if k != "overall"}
    labels = sorted({label for per in shares.values() for label in per})
    counts = result.get("counts", {})
    fig = go.Figure([go.Bar(x=labels, y=[100 * per.get(label, 0.0) for label in labels],
                            name=f"{split} ({counts.get(split, 0)} frames)") for split, per in shares.items()])
    fig.update_layout(title="Label share per split (% of the split's objects)", barmode="group", height=320,
                      template="plotly_white", margin={"t": 50, "b": 30, "l": 40, "r": 10})
    return fig


# -- Train tab: config, validation, memory ---------------------------------------------------------------------
def model_choices() -> list[tuple[str, str]]:
    """(label, key) of every registry model; disabled ones say why."""
    from .registry import list_specs

    return [(f"{s.key} · {s.gpu_memory_class or s.family}" + ("" if s.enabled else " (disabled)"), s.key)
            for s in list_specs()]


def preset_choices() -> list[tuple[str, str]]:
    """(label, name) of every preset."""
    from .presets import describe_preset, list_presets

    return [(f"{name}: {describe_preset(name)}", name) for name in list_presets()]


def training_config(dataset: str | None = None, model: str | None = DEFAULT_MODEL, preset: str = DEFAULT_PRESET,
                    text: str = "", max_steps: int | None = None) -> Any:
    """A TrainConfig from YAML text (else the preset) for `model`; data and output paths are the studio's own.

    Built by `pipeline.plan.build_config`, the builder the CLI uses too.
    """
    from .plan import build_config

    cfg = build_config(preset=preset or DEFAULT_PRESET, model=model or None, yaml_text=text or None,
                       data=dataset_dir(dataset) if dataset else None,
                       overrides={"training.max_steps": int(max_steps) if max_steps else None})
    if not dataset:
        cfg.data.path = ""
    cfg.training.output_dir = ""  # runs always go to STUDIO_HOME/runs/<run id>
    return cfg


def config_yaml(cfg: Any) -> str:
    """YAML text of a config without the machine-specific paths (what the editor shows and downloads)."""
    from .config import config_to_yaml

    shown = cfg.model_copy(deep=True)
    shown.data.path, shown.training.output_dir = "", ""
    return config_to_yaml(shown)


def form_values(cfg: Any) -> dict[str, Any]:
    """The hyperparameters the Train tab shows as fields ({dotted key: value})."""
    from .config import get_field

    return {key: get_field(cfg, key) for key in FORM_FIELDS}


def apply_form(text: str, values: dict[str, Any], model: str | None = None) -> str:
    """The YAML text with the form's values set (each validated by the schema)."""
    from .config import set_field

    cfg = training_config(None, model, DEFAULT_PRESET, text)
    for key, value in values.items():
        if value is not None and value != "":
            set_field(cfg, key, value)
    return config_yaml(cfg)


def estimate_memory(model: str = DEFAULT_MODEL, preset: str = DEFAULT_PRESET, text: str = "",
                    dataset: str | None = None) -> dict[str, Any]:
    """Peak training memory of the config against the detected hardware: fits / tight / won't fit."""
    from .plan import memory_estimate

    cfg = training_config(dataset or None, model, preset, text)
    return _memory_view(cfg, memory_estimate(cfg, hardware()))


def _memory_view(cfg: Any, result: Any) -> dict[str, Any]:
    from .memory import fits
    from .plan import planning_hardware, resolve_device

    hw = hardware()
    planned = planning_hardware(cfg, hw)
    device = resolve_device(cfg, planned)
    capacity = planned.gpu_memory if device == "cuda" else hw.ram
    return {"model": cfg.model.name, "method": cfg.training.method, "device": device,
            "total_gib": round(result.total / 2**30, 3), "parts_gib": result.gib(),
            "capacity_gib": round(capacity / 2**30, 1), "verdict": fits(result, capacity) if capacity else "unknown",
            "hardware": hw.summary()}


def check_training(dataset: str | None, model: str, preset: str, text: str, max_steps: int | None = None,
                   ) -> dict[str, Any]:
    """Errors and warnings of a training config (every message names its field) plus the memory estimate."""
    from .plan import check

    try:
        cfg = training_config(dataset or None, model, preset, text, max_steps)
    except UserError as exc:
        return {"errors": [str(exc)], "warnings": [], "memory": None}
    plan = check(cfg, hardware())
    errors, warnings = list(plan.errors), list(plan.warnings)
    if not dataset:
        errors.insert(0, "data: pick a converted dataset (Data tab)")
    problem = model_unavailable(cfg.model.name)
    if problem:
        errors.insert(0, problem)
    rate = cfg.training.learning_rate
    if rate and rate > 0.01:
        warnings.insert(0, f"training.learning_rate: {rate:g} is far above the usual 1e-5 to 5e-4 (LoRA): "
                           "training will likely diverge")
    dataset_note = _split_warning(dataset)
    if dataset_note:
        warnings.insert(0, dataset_note)
    memory = _memory_view(cfg, plan.memory) if plan.memory is not None else None
    return {"errors": errors, "warnings": warnings, "memory": memory}


def _split_warning(dataset: str | None) -> str | None:
    if not dataset:
        return None
    from .dataset import open_dataset

    try:
        names = open_dataset(dataset_dir(dataset)).split_names()
    except UserError:
        return None
    if names:
        return None
    return (f"data: {dataset!r} has no splits: training uses every frame and Evaluate would score training data "
            "(split it in the Quality & Split tab)")


_AVAILABLE: dict[str, tuple[float, str | None]] = {}


def model_unavailable(model: str, ttl: float = 300.0) -> str | None:
    """Why a model's weights cannot be loaded here (neither in the Hugging Face cache nor reachable on the Hub),
    or None. Tiny models and local folders are always available; the answer is kept for `ttl` seconds."""
    import time

    from .models import find_spec

    spec = find_spec(model)
    if spec is None or spec.tiny or Path(model).expanduser().is_dir():
        return None
    cached = _AVAILABLE.get(spec.hub_id)
    if cached and time.monotonic() - cached[0] < ttl:
        return cached[1]
    problem = None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(spec.hub_id, "config.json")
    except Exception:  # noqa: BLE001 - a cache that cannot be read counts as empty
        hit = None
    if not isinstance(hit, str):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
            os.environ.get("TRANSFORMERS_OFFLINE", "").lower() in ("1", "true", "yes")
        if offline:
            problem = (f"model.name: {spec.hub_id} is not in the Hugging Face cache and this machine is offline "
                       "(HF_HUB_OFFLINE): download it first, or pick a tiny-* model")
        else:
            try:
                from huggingface_hub import HfApi

                HfApi().model_info(spec.hub_id, timeout=5)
            except Exception as exc:  # noqa: BLE001 - any failure means the weights cannot be fetched
                problem = (f"model.name: {spec.hub_id} is not in the Hugging Face cache and the Hub cannot be "
                           f"reached ({type(exc).__name__}): download it first, or pick a tiny-* model")
    _AVAILABLE[spec.hub_id] = (time.monotonic(), problem)
    return problem


# -- jobs ------------------------------------------------------------------------------------------------------
def start_training(dataset: str, model: str = DEFAULT_MODEL, preset: str = DEFAULT_PRESET, text: str = "",
                   max_steps: int | None = None, name: str | None = None) -> dict[str, Any]:
    """Validate (once), write RUN/config.yaml and queue a training job; returns at once with the job id."""
    from .jobs import prepare_train

    if not dataset:
        raise UserError("pick a converted dataset to train on (Data tab)")
    cfg = training_config(dataset, model, preset, text, max_steps)
    spec = prepare_train(train_config=cfg, name=check_name(name, "run name") if name else None,
                         tags=[f"preset:{preset or DEFAULT_PRESET}"])
    job = backend().submit(spec)
    return {"job_id": job.id, "run_id": job.run_id, "status": job.status, "position": job.position,
            "model": cfg.model.name, "max_steps": cfg.training.max_steps}


def job_info(job: Any) -> dict[str, Any]:
    """The JSON-able fields of a job that the UI shows."""
    return {"job_id": job.id, "run_id": job.run_id, "kind": job.kind, "status": job.status, "position": job.position,
            "attempt": job.attempt, "error": job.error, "created_at": job.created_at, "started_at": job.started_at,
            "ended_at": job.ended_at, "worker": getattr(job, "worker", None)}  # worker: the Celery node running it


def list_jobs(status: str | None = None) -> list[dict[str, Any]]:
    """Every job, newest first (queued ones carry their queue position)."""
    jobs = backend().list(status=status or None)
    return [job_info(j) for j in sorted(jobs, key=lambda j: j.id, reverse=True)]


def job_to_follow() -> int | None:
    """The job a freshly loaded page follows: the newest running, else queued, else the newest of any status.

    A job that ended while the page was reloading still shows its final state instead of "no job followed".
    """
    from .jobs.store import STEP_KINDS

    jobs = [j for j in backend().list() if j.kind not in STEP_KINDS]  # training: step jobs re-attach in their tab
    for status in ("running", "queued"):
        ids = [j.id for j in jobs if j.status == status]
        if ids:
            return max(ids)
    return max((j.id for j in jobs), default=None)


def job_form(job_id: int) -> dict[str, Any] | None:
    """The Train form of a job's run (RUN/config.yaml): {"dataset", "model", "preset", "yaml", "fields", "run_name",
    "max_steps"}; None when the job or its config is gone (a reloaded page then keeps the preset's form)."""
    from .config import load_config
    from .experiments import get_experiment
    from .rundir import config_path

    try:
        job = backend().get(int(job_id))
        cfg = load_config(config_path(job.run_dir))
    except Exception:  # noqa: BLE001 - a job without a readable config keeps the default form
        return None
    try:
        exp = get_experiment(job.run_id, store=backend().store)
        name, preset = exp.name, _preset_of(exp)
    except Exception:  # noqa: BLE001 - the experiment row is optional here
        name, preset = "", None
    dataset = Path(cfg.data.path).name if cfg.data.path else None
    return {"dataset": dataset, "model": cfg.model.name, "preset": preset, "yaml": config_yaml(cfg),
            "fields": form_values(cfg), "run_name": "" if name == f"{cfg.model.name}-{job.run_id}" else name,
            "job_id": job.id, "status": job.status}


def cancel_job(job_id: int) -> dict[str, Any]:
    """Cancel a queued job at once, or ask a running one to stop (it saves a checkpoint first)."""
    return job_info(backend().cancel(int(job_id)))


def resume_job(job_id: int) -> dict[str, Any]:
    """Queue a failed / cancelled / interrupted job again; it resumes from its newest checkpoint."""
    return job_info(backend().resume(int(job_id)))


def watch_job(job_id: int, from_seq: int = 0, poll: float = 0.5) -> Iterator[WatchView]:
    """Follow a job until it ends: one view per event with seq > from_seq (curves hold the whole run so far).

    The generator only reads the job store and the run folder, so closing it (a client leaving) never touches the
    job; call again with the last seq seen to resume exactly where the stream stopped.
    """
    from .jobs import TERMINAL as TERMINAL_STATUSES
    from .rundir import log_path, log_tail, run_events

    job = backend().get(int(job_id))
    view = WatchView(job_id=job.id, run_id=job.run_id, status=job.status, attempt=job.attempt,
                     position=job.position, run_dir=job.run_dir)
    for event in run_events(job.run_dir):
        if isinstance(event.get("seq"), int) and event["seq"] <= from_seq:
            view.add(event)  # history before the reconnect: curves and counters, not re-sent
    view.seq = max(view.seq, int(from_seq or 0))

    def ready(events: list[dict[str, Any]]) -> WatchView:
        view.events, view.log_tail = events, log_tail(log_path(job.run_dir), lines=12)
        return view

    held: list[dict[str, Any]] = []
    for event in backend().watch(job.id, from_seq=int(from_seq or 0), poll=poll):
        view.add(event)
        held.append(event)
        if view.status not in TERMINAL_STATUSES:
            yield ready(held)
            held = []
        # else: a job that ended before (or while) we attached; its progress lines still follow the status, and a
        # view saying "succeeded" at step 0 would be final for a client that stops at the first terminal status.
    if held:
        yield ready(held)


# -- step jobs: convert, validate, evaluate and export off the request path ------------------------------------
def submit_convert(files: Sequence[str | Path] | None, name: str, *, sample: bool = False,
                   labels: dict[int, str] | None = None, tasks: Sequence[str] = DEFAULT_TASKS,
                   family: str = DEFAULT_MODEL, every: int = 1, overwrite: bool = False,
                   max_frames: int | None = None, seed: int = 0, include_auto: bool = False,
                   allow_overlay_frames: bool = False) -> dict[str, Any]:
    """Queue a conversion job (uploads are copied into its folder; the options are `convert_inputs`'); returns the
    job at once."""
    from .steps import prepare_step

    name = check_name(name, "dataset name")
    out = home_dir("datasets") / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"a dataset named {name!r} already exists: choose another name or tick 'replace'")
    if not sample and not [f for f in files or [] if f]:
        raise UserError("upload an export (ZIP, JSON, JSONL, with its video or frames) or pick the built-in sample")
    params = {"files": [str(f) for f in files or [] if f], "name": name, "sample": bool(sample),
              "labels": {str(k): v for k, v in (labels or {}).items()}, "tasks": list(tasks or DEFAULT_TASKS),
              "family": family or DEFAULT_MODEL, "every": int(every or 1), "overwrite": bool(overwrite),
              "max_frames": int(max_frames) if max_frames else None, "seed": int(seed or 0),
              "include_auto": bool(include_auto), "allow_overlay_frames": bool(allow_overlay_frames)}
    params["sample_options"] = sample_options() if sample else None  # the job generates it the app's way
    return _submit(prepare_step("convert", params, name=f"convert {name}"))


def submit_validate(name: str) -> dict[str, Any]:
    """Queue the quality report of a dataset; returns the job at once."""
    from .steps import prepare_step

    dataset_dir(name)  # refuse an unknown dataset now, not in the job
    return _submit(prepare_step("validate", {"dataset": name.strip()}, name=f"validate {name}"))


def submit_evaluate(run_id: str, checkpoint: str = "best", split_name: str = "test",
                    limit: int | None = 32, allow_no_split: bool = True) -> dict[str, Any]:
    """Queue the evaluation of a run's checkpoint; returns the job at once (allow_no_split: as `evaluate`)."""
    from .steps import prepare_step

    run_id = (run_id or "").strip()
    refuse_no_split(run_id, allow_no_split)  # refused now, not in the job
    params = {"run_id": run_id, "run_dir": str(_run_dir(run_id)), "checkpoint": checkpoint or "best",
              "split": split_name or "test", "limit": int(limit) if limit else None}
    return _submit(prepare_step("evaluate", params, experiment=run_id, name=f"evaluate {run_id}"))


def submit_export(run_id: str, mode: str = "adapter", checkpoint: str = "best") -> dict[str, Any]:
    """Queue the export of a run; returns the job at once."""
    from .steps import prepare_step

    run_id = (run_id or "").strip()
    if mode not in ("adapter", "merged"):
        raise UserError(f"export mode {mode!r}: use adapter or merged")
    params = {"run_id": run_id, "run_dir": str(_run_dir(run_id)), "mode": mode, "checkpoint": checkpoint or "best"}
    return _submit(prepare_step("export", params, experiment=run_id, name=f"export {run_id}"))


def _submit(spec: Any) -> dict[str, Any]:
    """Submit a prepared step job; its folder is removed again when the submit fails (nothing was queued)."""
    import shutil

    try:
        return job_info(backend().submit(spec))
    except BaseException:
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        raise


def step_outcome(job_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the job, its result read from JOB/result.json or None): what a result view shows, after any reload."""
    from .steps import read_result

    job = backend().get(int(job_id))
    return job_info(job), read_result(job.run_dir) if job.status == "succeeded" else None


def step_params(job_id: int) -> dict[str, Any]:
    """What a step job was asked to do (its request's parameters: dataset, run_id, split, mode...); {} for a CLI job."""
    from .steps import read_request

    try:
        return dict(read_request(backend().get(int(job_id)).run_dir).get("params") or {})
    except UserError:
        return {}


def latest_step(kind: str) -> int | None:
    """The newest job of a step kind (running or queued first), for a page that re-attaches after a reload."""
    jobs = [j for j in backend().list() if j.kind == kind]
    active = [j.id for j in jobs if j.status in ("running", "queued")]
    return max(active or [j.id for j in jobs], default=None)


def step_gallery(result: dict[str, Any]) -> list[tuple[Any, str]]:
    """The worst examples of an evaluation result (read from its gallery folder)."""
    return _gallery(Path(result["gallery"])) if result.get("gallery") else []


# -- runs: Evaluate and Export tabs ----------------------------------------------------------------------------
def run_choices() -> list[tuple[str, str]]:
    """(label, run id) of the experiments, newest first."""
    from .experiments import list_experiments

    return [(f"{e.name} · {e.status}" + (" · smoke test" if _preset_of(e) == "quick_test" else ""), e.run_id)
            for e in list_experiments(store=backend().store)]


def _run_dir(run_id: str) -> Path:
    from .experiments import get_experiment

    if not (run_id or "").strip():
        raise UserError("pick a run (train one in the Train tab first)")
    return Path(get_experiment(run_id.strip(), store=backend().store).run_dir)


def checkpoint_choices(run_id: str) -> list[str]:
    """best, last and every checkpoint step still in the run folder."""
    if not run_id:
        return ["best", "last"]
    from .rundir import list_checkpoints

    return ["best", "last", *(str(step) for step, _ in list_checkpoints(_run_dir(run_id)))]


def run_dataset(run_id: str) -> dict[str, Any]:
    """The dataset a run trained on: {"name", "splits", "exists"} (names only, never the server folder)."""
    import json

    from .dataset import is_dataset, open_dataset
    from .rundir import studio_path

    run = _run_dir(run_id)
    try:
        info = json.loads(studio_path(run).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    folder = info.get("dataset") or ""
    if not folder:
        from .config import load_config
        from .rundir import config_path

        folder = load_config(config_path(run)).data.path if config_path(run).is_file() else ""
    exists = bool(folder) and is_dataset(folder)
    return {"name": Path(folder).name if folder else None, "exists": exists,
            "splits": open_dataset(folder).split_names() if exists else [], "folder": folder}


def is_smoke_test(run_id: str) -> bool:
    """True for a run trained with the quick_test preset (a smoke test: its metrics mean nothing)."""
    from .experiments import get_experiment

    exp = get_experiment(run_id.strip(), store=backend().store)
    return _preset_of(exp) == "quick_test"


def _preset_of(exp: Any) -> str | None:
    """The preset a run was started from (the app tags its runs `preset:NAME`); None when unknown."""
    return next((t.split(":", 1)[1] for t in exp.tags or [] if t.startswith("preset:")), None)


NO_SPLIT = ("the run's dataset has no splits: evaluating would score frames the model trained on. Split it in the "
            "Quality & Split tab, or tick 'evaluate on the training data anyway'")


def evaluate(run_id: str, checkpoint: str = "best", split_name: str = "test", limit: int | None = 32,
             allow_no_split: bool = True) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """Score a run's checkpoint against its base model and the mean-box baseline; (metrics, gallery worst-first).

    With allow_no_split=False a run whose dataset has no splits is refused (it would score the training data)."""
    refuse_no_split(run_id, allow_no_split)
    info = evaluate_run_folder(_run_dir(run_id), run_id, checkpoint, split_name, limit)
    return public_evaluation(info), step_gallery(info)


def refuse_no_split(run_id: str, allow_no_split: bool) -> None:
    """UserError when allow_no_split is False and the run's dataset has no splits (it would score training data)."""
    if not allow_no_split:
        data = run_dataset(run_id)
        if data["exists"] and not data["splits"]:
            raise UserError(NO_SPLIT)


def public_evaluation(info: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's info as the app shows it: without the server path of its gallery folder."""
    return {k: v for k, v in info.items() if k != "gallery"}


def evaluate_run_folder(run: Path, run_id: str, checkpoint: str = "best", split_name: str = "test",
                        limit: int | None = 32) -> dict[str, Any]:
    """`evaluate` on a run folder (what an evaluate job runs): the saved evaluation's info (JSON-able), plus
    `gallery`, the folder of the worst examples (a server path: `public_evaluation` drops it)."""
    from .evaluate import evaluate_run

    result = evaluate_run(run, split=split_name or "test", limit=int(limit) if limit else None,
                          checkpoint=checkpoint or "best", batch_size=8)
    saved = saved_evaluation(run_id, split_name or "test", checkpoint)
    return {**(saved[0] if saved else {}), "gallery": str(Path(result.out) / "gallery" / "worst")}


def saved_evaluation(run_id: str, split_name: str = "test", checkpoint: str | None = None,
                     ) -> tuple[dict[str, Any], list[tuple[Any, str]]] | None:
    """The evaluation of a run's split saved on disk (RUN/eval/<split>/comparison.json), as `evaluate` returns it;
    None when the split was never evaluated."""
    import json

    from .eval_score import METRIC_KEYS
    from .rundir import eval_path

    folder = eval_path(_run_dir(run_id), split_name or "test")
    try:
        saved = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    metrics, names, meta = saved.get("metrics") or {}, saved.get("names") or {}, saved.get("meta") or {}
    roles = list(metrics)
    rows = [[key, *[_round(metrics[r].get(key)) for r in roles]] for key in METRIC_KEYS
            if any(metrics[r].get(key) is not None for r in roles)]
    smoke = is_smoke_test(run_id)
    notes = list(meta.get("notes") or [])
    if smoke:
        notes.insert(0, "smoke test (quick_test preset): a few steps on a tiny model; these metrics are expected "
                        "to be near zero and say nothing about the data")
    info = {"run_id": run_id, "checkpoint": checkpoint or meta.get("checkpoint"), "split": split_name,
            "step": meta.get("step"), "examples": (metrics.get("model") or {}).get("n"),
            "columns": ["metric", *[names.get(r, r) for r in roles]], "rows": rows,
            "metrics": {k: _round(v) for k, v in (metrics.get("model") or {}).items() if _plain(v)},
            "notes": [public_note(n) for n in notes], "smoke_test": smoke}
    return info, _gallery(folder / "gallery" / "worst")


def public_note(text: str) -> str:
    """A message with the studio's own folders shown by name (STUDIO_HOME/x/y -> y)."""
    home = str(studio_home())
    return re.sub(re.escape(home.rstrip("/")) + r"/(?:[^\s/]+/)*([^\s/:'\"]+)", r"\1", text)


def _eval_view(result: Any, head: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """(metrics table as JSON, gallery worst-first) of an EvalResult."""
    from .eval_score import METRIC_KEYS

    roles = list(result.comparison)  # model (fine-tuned), base, baseline
    names = getattr(result, "names", None) or {}
    rows = [[key, *[_round(result.comparison[r].get(key)) for r in roles]] for key in METRIC_KEYS
            if any(result.comparison[r].get(key) is not None for r in roles)]
    info = {**head, "columns": ["metric", *[names.get(r, r) for r in roles]],
            "rows": rows, "metrics": {k: _round(v) for k, v in result.metrics.items() if _plain(v)},
            "notes": result.notes}
    return info, _gallery(Path(result.out) / "gallery" / "worst")


# -- models trained elsewhere: any Hugging Face VLM folder in STUDIO_HOME/models -----------------------------------
def model_folder_choices() -> list[str]:
    """Names of the model folders (with a config.json) in STUDIO_HOME/models."""
    root = home_dir("models")
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / "config.json").is_file())


def import_model_zip(path: str | Path, name: str | None = None) -> str:
    """Unpack an uploaded ZIP of a model folder (config.json at its top or in its one folder) into
    STUDIO_HOME/models/<name>; returns the name."""
    import shutil

    from .safezip import extracted_zip

    name = check_name(name or Path(path).stem, "model")
    dest = home_dir("models") / name
    if dest.exists():
        raise UserError(f"a model named {name!r} already exists in the models folder")
    with extracted_zip(path, tmp_dir=home_dir("cache")) as folder:
        tops = [p for p in folder.iterdir() if not p.name.startswith(".")]
        top = tops[0] if len(tops) == 1 and tops[0].is_dir() else folder
        if not (top / "config.json").is_file():
            raise UserError("the ZIP holds no model folder (no config.json at its top)", path)
        shutil.move(str(top), str(dest))
    return name


def evaluate_folder(model_name: str, dataset: str, split_name: str = "test", limit: int | None = 32,
                    convention: str | None = None) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """Score STUDIO_HOME/models/<model_name> (trained anywhere) on a dataset split; convention None: inferred."""
    from .evaluate import evaluate_model

    folder = home_dir("models") / check_name(model_name, "model")
    if not (folder / "config.json").is_file():
        raise UserError(f"no model folder named {model_name!r} (with a config.json) in the models folder")
    result = evaluate_model(str(folder), dataset=dataset_dir(dataset), split=split_name or "test",
                            limit=int(limit) if limit else None, batch_size=8, convention=convention or None)
    return _eval_view(result, {"model": model_name, "dataset": dataset, "split": split_name})


def _plain(value: Any) -> bool:
    return isinstance(value, int | float | str) or value is None


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _gallery(folder: Path, limit: int = 12) -> list[tuple[Any, str]]:
    """Images of a gallery folder (NN_<id>.png) loaded into memory, in file order (worst first)."""
    from PIL import Image

    shots = []
    for path in sorted(folder.glob("*.png"))[:limit]:
        with Image.open(path) as image:
            shots.append((image.convert("RGB"), path.stem.split("_", 1)[-1]))
    return shots


def export(run_id: str, mode: str = "adapter", checkpoint: str = "best", progress: bool = False) -> dict[str, Any]:
    """Export a run into STUDIO_HOME/exports/<run id>-<mode> (+ .zip beside it); replaces an earlier export."""
    return export_folder(_run_dir((run_id or "").strip()), mode, checkpoint, progress)


def export_dir(run: Path, mode: str) -> Path:
    """STUDIO_HOME/exports/<run folder name>-<mode>."""
    return home_dir("exports") / check_name(f"{run.name}-{mode}", "export name")


def export_folder(run: Path, mode: str = "adapter", checkpoint: str = "best", progress: bool = False,
                  ) -> dict[str, Any]:
    """`export` of a run folder."""
    from .export import export_run

    out = export_dir(run, mode)
    result = export_run(run, out, mode=mode, checkpoint=checkpoint or "best", overwrite=True, progress=progress)
    card = result.out_dir / "README.md"
    return {"export": out.name, "mode": result.mode, "source": result.source, "step": result.step,
            "files": result.files,
            "notes": [public_note(str(n)) for n in result.notes or []],
            "parity": (result.parity or {}).get("all_match"), "zip": Path(result.zip_path).name,
            "zip_path": str(result.zip_path), "card": card.read_text(encoding="utf-8") if card.is_file() else ""}


def saved_export(run_id: str) -> dict[str, Any] | None:
    """The newest export of a run still on disk: {"export", "mode", "zip", "zip_path", "card"}; None."""
    run = _run_dir(run_id)
    found = [home_dir("exports") / f"{run.name}-{mode}" for mode in ("adapter", "merged")]
    found = [f for f in found if (f / "README.md").is_file()]
    if not found:
        return None
    folder = max(found, key=lambda f: f.stat().st_mtime)
    archive = folder.with_suffix(".zip") if folder.with_suffix(".zip").is_file() else None
    return {"export": folder.name, "mode": folder.name.rsplit("-", 1)[-1], "zip": archive.name if archive else None,
            "zip_path": str(archive) if archive else None, "card": (folder / "README.md").read_text(encoding="utf-8")}


# -- Try tab ---------------------------------------------------------------------------------------------------
def held_out_frames(run_id: str) -> list[dict[str, Any]]:
    """Held-out frames (test, else val) of the run's dataset with their truth boxes."""
    from .try_model import held_out_frames as frames

    data = run_dataset(run_id)
    if not data["exists"]:
        raise UserError(f"the run's dataset {data['name']!r} is no longer there: upload an image instead")
    return frames(data["folder"])


def try_model(run_id: str, image: str | Path | None, prompt: str, truth: list[dict[str, Any]] | None = None,
              checkpoint: str = "best", with_base: bool = True) -> tuple[dict[str, Any], Any, Any]:
    """(result {"answer", "boxes", "parse_ok", "base": {...}, "truth"}, the image with the fine-tuned answer drawn,
    the image with the base model's answer drawn (None for a full fine-tune))."""
    from .try_model import draw, truth_for, try_run

    if not image:
        raise UserError("upload an image or pick a held-out frame")
    result = try_run(_run_dir(run_id), image, prompt, checkpoint or "best", with_base=with_base)
    shown = truth_for(truth, prompt) if truth else None
    result["truth"] = shown
    result["notes"] = [public_note(str(n)) for n in result.get("notes") or []]
    fine = draw(image, result, shown, "fine-tuned")
    base = draw(image, result["base"], shown, f"base ({result.get('model')})") if result.get("base") else None
    return result, fine, base


def list_exports() -> list[str]:
    """Names of the export folders, newest first."""
    folders = [p for p in home_dir("exports").iterdir() if p.is_dir() and (p / "README.md").is_file()]
    return [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


def push(export_name: str, repo_id: str, token: str, private: bool = True) -> dict[str, Any]:
    """Push an export folder to the Hub with this call's token (never stored, logged or returned)."""
    from .hub import push_to_hub

    folder = home_dir("exports") / check_name(export_name, "export")
    url = push_to_hub(folder, repo_id, token, private=bool(private))
    return {"export": export_name, "repo": repo_id.strip(), "private": bool(private), "url": url}


# -- Experiments tab -------------------------------------------------------------------------------------------
EXPERIMENT_COLUMNS = ["run_id", "name", "status", "model", "method", "steps", "final_loss", "best_metric",
                      "seconds", "created", "metric", "preset", "learning_rate", "lora_r", "batch_size", "max_steps"]
EXPERIMENT_HEADERS = {"best_metric": "best value of the metric", "metric": "metric (best checkpoint by)",
                      "final_loss": "final train loss"}


def _check_conditions(conditions: list[str], store: Any) -> None:
    """A malformed filter is refused with a reason instead of silently emptying the table."""
    from .experiments import _MISSING, lookup, parse_condition
    from .experiments import list_experiments as query

    everything = query(store=store)
    for text in conditions:
        key, _op, value = parse_condition(text)
        if value == "" or value is None:
            raise UserError(f"condition {text!r} has no value after the operator")
        if everything and all(lookup(exp, key) is _MISSING for exp in everything):
            raise UserError(f"condition {text!r}: no experiment has a field {key!r} (try lora.r, "
                            "training.learning_rate, model.name, final_loss, steps)")


def list_experiments(status: str | None = None, model: str | None = None, where: str = "",
                     sort: str = "created", descending: bool | None = None) -> list[dict[str, Any]]:
    """Experiments as flat rows; `where` holds conditions such as `lora.r=16, final_loss<1` (comma or newline)."""
    import time

    from .experiments import list_experiments as query

    conditions = [c.strip() for c in re.split(r"[,\n]", where or "") if c.strip()]
    _check_conditions(conditions, backend().store)
    rows = []
    for exp in query(status=status or None, model=model or None, where=conditions, sort=sort or "created",
                     descending=descending, store=backend().store):
        summary, config = exp.summary or {}, exp.config or {}
        training, lora = config.get("training") or {}, config.get("lora") or {}
        rows.append({"run_id": exp.run_id, "name": exp.name, "status": exp.status, "model": exp.model,
                     "method": training.get("method"), "steps": summary.get("steps"),
                     "final_loss": _round(summary.get("final_loss")), "best_metric": _round(summary.get("best_metric")),
                     "seconds": _round(summary.get("seconds")),
                     "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(exp.created_at)),
                     "metric": summary.get("best_metric_name") or training.get("best_metric"),
                     "preset": _preset_of(exp), "learning_rate": training.get("learning_rate"),
                     "lora_r": lora.get("r") if training.get("method") != "full" else None,
                     "batch_size": training.get("batch_size"), "max_steps": training.get("max_steps")})
    return rows


def compare_experiments(run_ids: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config diff and summaries, {metric: plotly figure with one line per run})."""
    from .experiments import compare, comparison_figures

    comparison = compare([r for r in run_ids or [] if r], store=backend().store)
    info = {"runs": [r.run_id for r in comparison.runs], "diff": comparison.diff, "table": comparison.table()}
    return info, comparison_figures(comparison)


def delete_experiment(run_id: str) -> dict[str, Any]:
    """Delete an experiment's records and run folder (refused while one of its jobs is queued or running)."""
    from .experiments import delete_experiment as delete

    if not (run_id or "").strip():
        raise UserError("pick an experiment to delete")
    folder = delete(run_id.strip(), store=backend().store)
    return {"deleted": run_id.strip(), "folder_removed": folder is not None}


def blocked_paths() -> list[str]:
    """What the web server must never serve: the database, the run folders, models, logs, uploads in staging."""
    home = studio_home()
    names = ("studio.db", "studio.db-wal", "studio.db-shm", "scheduler.lock", "runs", "models", "logs", "cache", "jobs")
    return [str(home / n) for n in names]


def download_paths() -> list[str]:
    """The only folders downloads are served from: export zips and quality reports."""
    return [str(home_dir("exports")), str(home_dir("reports"))]
