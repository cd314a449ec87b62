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
import tempfile
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
MAX_YAML_BYTES = 64 * 1024
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
    from .quality import is_dataset

    path = home_dir("datasets") / check_name(name, "dataset")
    if not is_dataset(path):
        raise UserError(f"no converted dataset named {name!r} (convert an export first)")
    return path


def list_datasets() -> list[str]:
    """Names of the converted datasets, newest first."""
    folders = [p for p in home_dir("datasets").iterdir() if (p / "dataset.json").is_file()]
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
                   overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Convert uploads (or the sample) into STUDIO_HOME/datasets/<name>; names typed in the editor win."""
    from .commands.convert import resolve_convention
    from .ingest import convert

    name = check_name(name, "dataset name")
    out = home_dir("datasets") / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"a dataset named {name!r} already exists: choose another name or tick 'replace'")
    with staged_inputs(files, sample, progress) as inputs:
        names = {**inputs.labels, **(labels or {})}
        summary = convert(inputs.annotations, out, video=inputs.videos, images=inputs.images, labels=names or None,
                          convention=resolve_convention(family or DEFAULT_MODEL), tasks=list(tasks or DEFAULT_TASKS),
                          every=int(every or 1), max_frames=int(max_frames) if max_frames else None,
                          progress=progress, overwrite=overwrite, family=family or DEFAULT_MODEL)
    return {"dataset": name, "frames": summary.frames, "objects": summary.objects, "labels": summary.labels,
            "videos": summary.videos, "issues": summary.issues, "warnings": summary.warnings[:20],
            "files": summary.files}


# -- Quality & Split tab ---------------------------------------------------------------------------------------
def validate_dataset(name: str) -> dict[str, Any]:
    """Run the quality rules on a dataset; report files in STUDIO_HOME/reports/<name>/ (replaced on each run)."""
    from .quality import run_rules, write_report

    report = write_report(run_rules(dataset_dir(name)), home_dir("reports") / name, overwrite=True)
    folder = home_dir("reports") / name
    text = (folder / "report.md").read_text(encoding="utf-8")
    return {"dataset": name, "passed": report.passed, "summary": report.summary,
            "findings": [{"rule": f.rule, "severity": f.severity, "message": f.message, "records": len(f.records)}
                         for f in report.findings],
            "markdown": text.split("\n## Plots")[0],
            "plots": [str(p) for p in sorted(folder.glob("*.png"))],
            "files": [str(folder / "report.md"), str(folder / "report.json")]}


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
    """A TrainConfig from YAML text (else the preset) for `model`; data and output paths are the studio's own."""
    from .config import config_from_dict, set_field
    from .presets import get_preset

    if text and text.strip():
        if len(text.encode("utf-8")) > MAX_YAML_BYTES:
            raise UserError(f"config YAML is over {MAX_YAML_BYTES // 1024} KiB")
        cfg = config_from_dict(_yaml_mapping(text), "config YAML")
        if model:
            set_field(cfg, "model.name", model)
    else:
        cfg = get_preset(preset or DEFAULT_PRESET, model=model or None)
    cfg.data.path = str(dataset_dir(dataset)) if dataset else ""
    cfg.training.output_dir = ""  # runs always go to STUDIO_HOME/runs/<run id>
    if max_steps:
        set_field(cfg, "training.max_steps", int(max_steps))
    return cfg


def _yaml_mapping(text: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError("config YAML is not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if data is not None and not isinstance(data, dict):
        raise UserError("config YAML must be a mapping with model/data/training/lora/hardware sections")
    return data or {}


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
    from .config import planning_hardware, resolve_device
    from .memory import estimate_memory as estimate
    from .memory import fits

    cfg = training_config(dataset or None, model, preset, text)
    hw = hardware()
    planned = planning_hardware(cfg, hw)
    device = resolve_device(cfg, planned)
    result = estimate(cfg, hardware=hw)
    capacity = planned.gpu_memory if device == "cuda" else hw.ram
    return {"model": cfg.model.name, "method": cfg.training.method, "device": device,
            "total_gib": round(result.total / 2**30, 3), "parts_gib": result.gib(),
            "capacity_gib": round(capacity / 2**30, 1), "verdict": fits(result, capacity) if capacity else "unknown",
            "hardware": hw.summary()}


def check_training(dataset: str | None, model: str, preset: str, text: str, max_steps: int | None = None,
                   ) -> dict[str, Any]:
    """Errors and warnings of a training config (every message names its field) plus the memory estimate."""
    from .config import validate_config

    try:
        cfg = training_config(dataset or None, model, preset, text, max_steps)
    except UserError as exc:
        return {"errors": [str(exc)], "warnings": [], "memory": None}
    errors, warnings = validate_config(cfg, hardware())
    if not dataset:
        errors.insert(0, "data: pick a converted dataset (Data tab)")
    memory = None
    if not any(e.startswith(("model.", "data.max_length")) for e in errors):
        memory = estimate_memory(model, preset, config_yaml(cfg))
    return {"errors": errors, "warnings": warnings, "memory": memory}


# -- jobs ------------------------------------------------------------------------------------------------------
def start_training(dataset: str, model: str = DEFAULT_MODEL, preset: str = DEFAULT_PRESET, text: str = "",
                   max_steps: int | None = None, name: str | None = None) -> dict[str, Any]:
    """Validate, write RUN/config.yaml and queue a training job; returns at once with the job id."""
    from .config import save_config
    from .jobs import prepare_train
    from .rundir import config_path

    if not dataset:
        raise UserError("pick a converted dataset to train on (Data tab)")
    cfg = training_config(dataset, model, preset, text, max_steps)
    with tempfile.TemporaryDirectory(dir=home_dir("cache")) as tmp:
        spec = prepare_train(config=save_config(cfg, config_path(tmp)),
                             name=check_name(name, "run name") if name else None)
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
    jobs = backend().list()
    for status in ("running", "queued"):
        ids = [j.id for j in jobs if j.status == status]
        if ids:
            return max(ids)
    return max((j.id for j in jobs), default=None)


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
                   family: str = DEFAULT_MODEL, every: int = 1, overwrite: bool = False) -> dict[str, Any]:
    """Queue a conversion job (uploads are copied into its folder); returns the job at once."""
    from .steps import prepare_step

    name = check_name(name, "dataset name")
    out = home_dir("datasets") / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"a dataset named {name!r} already exists: choose another name or tick 'replace'")
    if not sample and not [f for f in files or [] if f]:
        raise UserError("upload an export (ZIP, JSON, JSONL, with its video or frames) or pick the built-in sample")
    params = {"files": [str(f) for f in files or [] if f], "name": name, "sample": bool(sample),
              "labels": {str(k): v for k, v in (labels or {}).items()}, "tasks": list(tasks or DEFAULT_TASKS),
              "family": family or DEFAULT_MODEL, "every": int(every or 1), "overwrite": bool(overwrite)}
    params["sample_options"] = sample_options() if sample else None  # the job generates it the app's way
    return _submit(prepare_step("convert", params, name=f"convert {name}"))


def submit_validate(name: str) -> dict[str, Any]:
    """Queue the quality report of a dataset; returns the job at once."""
    from .steps import prepare_step

    dataset_dir(name)  # refuse an unknown dataset now, not in the job
    return _submit(prepare_step("validate", {"dataset": name.strip()}, name=f"validate {name}"))


def submit_evaluate(run_id: str, checkpoint: str = "best", split_name: str = "test",
                    limit: int | None = 32) -> dict[str, Any]:
    """Queue the evaluation of a run's checkpoint; returns the job at once."""
    from .steps import prepare_step

    run_id = (run_id or "").strip()
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

    return [(f"{e.name} · {e.status}", e.run_id) for e in list_experiments(store=backend().store)]


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


def evaluate(run_id: str, checkpoint: str = "best", split_name: str = "test", limit: int | None = 32,
             ) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """Score a run's checkpoint against its base model and the mean-box baseline; (metrics, gallery worst-first)."""
    info = evaluate_folder(_run_dir(run_id), run_id, checkpoint, split_name, limit)
    return info, _gallery(Path(info["gallery"]))


def evaluate_folder(run: Path, run_id: str, checkpoint: str = "best", split_name: str = "test",
                    limit: int | None = 32) -> dict[str, Any]:
    """`evaluate` on a run folder; the info dict names the folder of the worst examples (`gallery`)."""
    from .eval_score import METRIC_KEYS
    from .evaluate import evaluate_run

    result = evaluate_run(run, split=split_name or "test", limit=int(limit) if limit else None,
                          checkpoint=checkpoint or "best", batch_size=8)
    roles = list(result.comparison)  # model (fine-tuned), base, baseline
    names = getattr(result, "names", None) or {}
    rows = [[key, *[_round(result.comparison[r].get(key)) for r in roles]] for key in METRIC_KEYS
            if any(result.comparison[r].get(key) is not None for r in roles)]
    return {"run_id": run_id, "checkpoint": checkpoint, "split": split_name,
            "columns": ["metric", *[names.get(r, r) for r in roles]],
            "rows": rows, "metrics": {k: _round(v) for k, v in result.metrics.items() if _plain(v)},
            "notes": result.notes, "gallery": str(Path(result.out) / "gallery" / "worst")}


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
            "files": result.files, "notes": result.notes, "parity": (result.parity or {}).get("all_match"),
            "zip": str(result.zip_path), "card": card.read_text(encoding="utf-8") if card.is_file() else ""}


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
                      "seconds", "created"]


def list_experiments(status: str | None = None, model: str | None = None, where: str = "",
                     sort: str = "created", descending: bool | None = None) -> list[dict[str, Any]]:
    """Experiments as flat rows; `where` holds conditions such as `lora.r=16, final_loss<1` (comma or newline)."""
    import time

    from .experiments import list_experiments as query

    conditions = [c.strip() for c in re.split(r"[,\n]", where or "") if c.strip()]
    rows = []
    for exp in query(status=status or None, model=model or None, where=conditions, sort=sort or "created",
                     descending=descending, store=backend().store):
        summary = exp.summary or {}
        rows.append({"run_id": exp.run_id, "name": exp.name, "status": exp.status, "model": exp.model,
                     "method": (exp.config.get("training") or {}).get("method"), "steps": summary.get("steps"),
                     "final_loss": _round(summary.get("final_loss")), "best_metric": _round(summary.get("best_metric")),
                     "seconds": _round(summary.get("seconds")),
                     "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(exp.created_at))})
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
