"""Jobs: submit, list, watch, cancel and resume training (and evaluation/export) jobs on this machine or a fleet.

    from pipeline.jobs import get_backend, submit_train
    backend = get_backend()                      # STUDIO_JOBS: local (default) or celery
    backend.recover()                            # settle jobs whose process or worker is gone (explicit)
    job = submit_train(backend, preset="quick_test", model="tiny-smolvlm", data="studio_data/datasets/demo")
    for event in backend.watch(job.id): ...

Modules (each imports only those above it; `backend` is the only one that knows both backends):

    store           SQLite store (experiments, jobs, history), open_store()
    process         pids, process groups, signals, the child environment, timing settings
    launch          Resources, start a process, cancel escalation, final status, resume plan (both backends)
    recovery        finish an attempt, settle jobs whose process is gone (local)
    scheduler       the local scheduler (FIFO, slots), its lock, the detached process and the app's thread
    watch           a local job's event stream
    spec            JobSpec, the JobBackend protocol, run ids
    local           LocalBackend
    redis_progress  job state in Redis (Celery backend)
    celery_app      the Celery app, its task and the worker-side supervisor
    worker          starting a Celery worker
    celery_backend  CeleryBackend
    backend         get_backend()
    submit          training jobs: prepare_train, submit_train
"""

from __future__ import annotations

from .backend import backend_name, get_backend
from .launch import Resources
from .local import LocalBackend
from .recovery import recover
from .spec import JobBackend, JobSpec, new_run_id
from .store import (
    KINDS,
    RESUMABLE,
    STATUSES,
    TERMINAL,
    Experiment,
    Job,
    JobStore,
    open_store,
)
from .submit import dataset_fingerprint, job_json, prepare_train, submit_train, train_command

__all__ = [
    "KINDS", "RESUMABLE", "STATUSES", "TERMINAL", "Experiment", "Job", "JobBackend", "JobSpec", "JobStore",
    "LocalBackend", "Resources", "backend_name", "dataset_fingerprint", "get_backend", "job_json", "new_run_id",
    "open_store", "prepare_train", "recover", "submit_train", "train_command",
]
