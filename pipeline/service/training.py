"""The app facade: the Train tab (config, checks, memory) and its jobs (start, watch, cancel, resume)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..job_view import WatchView

if TYPE_CHECKING:
    pass
from .common import DEFAULT_MODEL, DEFAULT_PRESET, FORM_FIELDS, _preset_of, backend, check_name, dataset_dir, hardware


# -- Train tab: config, validation, memory ---------------------------------------------------------------------
def model_choices() -> list[tuple[str, str]]:
    """(label, key) of every registry model; disabled ones say why."""
    from ..registry import list_specs

    return [(f"{s.key} · {s.gpu_memory_class or s.family}" + ("" if s.enabled else " (disabled)"), s.key)
            for s in list_specs()]


def preset_choices() -> list[tuple[str, str]]:
    """(label, name) of every preset."""
    from ..presets import describe_preset, list_presets

    return [(f"{name}: {describe_preset(name)}", name) for name in list_presets()]


def training_config(dataset: str | None = None, model: str | None = DEFAULT_MODEL, preset: str = DEFAULT_PRESET,
                    text: str = "", max_steps: int | None = None) -> Any:
    """A TrainConfig from YAML text (else the preset) for `model`; data and output paths are the studio's own.

    Built by `pipeline.plan.build_config`, the builder the CLI uses too.
    """
    from ..plan import build_config

    cfg = build_config(preset=preset or DEFAULT_PRESET, model=model or None, yaml_text=text or None,
                       data=dataset_dir(dataset) if dataset else None,
                       overrides={"training.max_steps": int(max_steps) if max_steps else None})
    if not dataset:
        cfg.data.path = ""
    cfg.training.output_dir = ""  # runs always go to STUDIO_HOME/runs/<run id>
    return cfg


def config_yaml(cfg: Any) -> str:
    """YAML text of a config without the machine-specific paths (what the editor shows and downloads)."""
    from ..config import config_to_yaml

    shown = cfg.model_copy(deep=True)
    shown.data.path, shown.training.output_dir = "", ""
    return config_to_yaml(shown)


def form_values(cfg: Any) -> dict[str, Any]:
    """The hyperparameters the Train tab shows as fields ({dotted key: value})."""
    from ..config import get_field

    return {key: get_field(cfg, key) for key in FORM_FIELDS}


def apply_form(text: str, values: dict[str, Any], model: str | None = None) -> str:
    """The YAML text with the form's values set (each validated by the schema)."""
    from ..config import set_field

    cfg = training_config(None, model, DEFAULT_PRESET, text)
    for key, value in values.items():
        if value is not None and value != "":
            set_field(cfg, key, value)
    return config_yaml(cfg)


def estimate_memory(model: str = DEFAULT_MODEL, preset: str = DEFAULT_PRESET, text: str = "",
                    dataset: str | None = None) -> dict[str, Any]:
    """Peak training memory of the config against the detected hardware: fits / tight / won't fit."""
    from ..plan import memory_estimate

    cfg = training_config(dataset or None, model, preset, text)
    return _memory_view(cfg, memory_estimate(cfg, hardware()))


def _memory_view(cfg: Any, result: Any) -> dict[str, Any]:
    from ..memory import fits
    from ..plan import planning_hardware, resolve_device

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
    from ..plan import check

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
    from ..dataset import open_dataset

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

    from ..models import find_spec

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
    from ..jobs import prepare_train

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
    from ..jobs.store import STEP_KINDS

    jobs = [j for j in backend().list() if j.kind not in STEP_KINDS]  # training: step jobs re-attach in their tab
    for status in ("running", "queued"):
        ids = [j.id for j in jobs if j.status == status]
        if ids:
            return max(ids)
    return max((j.id for j in jobs), default=None)


def job_form(job_id: int) -> dict[str, Any] | None:
    """The Train form of a job's run (RUN/config.yaml): {"dataset", "model", "preset", "yaml", "fields", "run_name",
    "max_steps"}; None when the job or its config is gone (a reloaded page then keeps the preset's form)."""
    from ..config import load_config
    from ..experiments import get_experiment
    from ..rundir import config_path

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
    from ..jobs import TERMINAL as TERMINAL_STATUSES
    from ..rundir import log_path, log_tail, run_events

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




__all__ = [
    'apply_form', 'cancel_job', 'check_training', 'config_yaml', 'estimate_memory', 'form_values', 'job_form',
    'job_info', 'job_to_follow', 'list_jobs', 'model_choices', 'model_unavailable', 'preset_choices',
    'resume_job', 'start_training', 'training_config', 'watch_job',
]
