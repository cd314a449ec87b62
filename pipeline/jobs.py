"""Jobs facade: the backend interface (submit, get, list, cancel, resume, watch), the local SQLite backend,
training job specs, and `open_store()` (which settles jobs whose process is gone every time it is called).

Pick the backend with STUDIO_JOBS (`local`, the default). The runner starts training as a process
(`python -m pipeline train --config RUN/config.yaml`); it never imports the trainer.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import UserError
from .home import studio_home
from .jobstore import Experiment, Job, JobStore
from .runner import (
    Resources,
    SchedulerLock,
    ensure_scheduler,
    process_alive,
    recover,
    request_cancel,
    request_resume,
    start_scheduler_thread,
)
from .watch import watch as _watch

DB_FILE = "studio.db"
_STORES: dict[Path, JobStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(home: str | Path | None = None) -> JobStore:
    """The studio database of a data home (one JobStore per process), after settling jobs whose process is gone."""
    path = (Path(home).expanduser().resolve() if home else studio_home()) / DB_FILE
    with _STORES_LOCK:
        store = _STORES.get(path)
        if store is None:
            store = _STORES[path] = JobStore(path)
    recover(store)
    return store


@dataclass
class JobSpec:
    """What to run: a command line (the training entry point for train jobs) and the run folder it writes."""

    argv: list[str]
    run_dir: str
    kind: str = "train"
    run_id: str | None = None  # None: a fresh id
    new_run: bool = True  # False: a job for an existing experiment (e.g. evaluating a finished run)
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    dataset_fingerprint: str | None = None
    slots: int = 1
    mem_bytes: int | None = None
    cwd: str | None = None
    tags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # from validation, for the caller to show


class JobBackend(Protocol):
    """What every jobs backend offers (the local SQLite runner now, a Celery+Redis one later)."""

    def submit(self, spec: JobSpec) -> Job: ...
    def get(self, job_id: int) -> Job: ...
    def list(self, status: str | Iterable[str] | None = None) -> list[Job]: ...
    def cancel(self, job_id: int) -> Job: ...
    def resume(self, job_id: int) -> Job: ...
    def watch(self, job_id: int, from_seq: int = 0, poll: float = 0.5,
              timeout: float | None = None) -> Iterator[dict[str, Any]]: ...


def new_run_id() -> str:
    """A sortable, unique run id: UTC date-time plus 4 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(2)


class LocalBackend:
    """Jobs as local processes, state in STUDIO_HOME/studio.db.

    scheduler="process": a detached `python -m pipeline jobs scheduler` is started on demand (CLI);
    "thread": call `start()` to run the scheduler loop in a daemon thread of this process (the app);
    "none": nothing launches jobs from here (tests driving a `Scheduler` themselves).
    """

    def __init__(self, home: str | Path | None = None, scheduler: str = "process",
                 resources: Resources | None = None) -> None:
        if scheduler not in ("process", "thread", "none"):
            raise ValueError(f"unknown scheduler mode {scheduler!r}")
        self.home = Path(home).expanduser().resolve() if home else studio_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.mode, self.resources = scheduler, resources
        self.store = open_store(self.home)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.wake()  # queued jobs left by a reboot, or orphans still running, get a scheduler on any contact

    def start(self) -> None:
        """Run the scheduler in a daemon thread of this process (waits for the lock if a detached one runs)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = start_scheduler_thread(self.store, self.home, self._stop, self.resources)

    def stop(self) -> None:
        """Stop the scheduler thread; running jobs keep running and are adopted by the next scheduler."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wake(self) -> None:
        """Make sure a scheduler will look at the queue (process mode starts one when none holds the lock)."""
        if self.mode == "process" and self._needs_scheduler():
            ensure_scheduler(self.home)

    def _needs_scheduler(self) -> bool:
        if self.store.queue():
            return True
        return any(not process_alive(j.owner_pid, j.owner_started) for j in self.store.list_jobs(status="running"))

    def submit(self, spec: JobSpec) -> Job:
        """Record the experiment (new run) and queue the job; returns it at once."""
        run_id = spec.run_id or new_run_id()
        if spec.new_run:
            self.store.add_experiment(Experiment(
                run_id=run_id, name=spec.name or run_id, created_at=time.time(), run_dir=spec.run_dir,
                config=spec.config, model=spec.model, dataset_fingerprint=spec.dataset_fingerprint,
                tags=list(spec.tags)))
        else:
            self.store.get_experiment(run_id)
        job = self.store.add_job(run_id, spec.kind, spec.argv, spec.cwd or os.getcwd(), spec.run_dir,
                                 slots=spec.slots, mem_bytes=spec.mem_bytes)
        self.wake()
        return self.store.get_job(job.id)

    def get(self, job_id: int) -> Job:
        return self.store.get_job(job_id)

    def list(self, status: str | Iterable[str] | None = None) -> list[Job]:
        return self.store.list_jobs(status=status)

    def cancel(self, job_id: int) -> Job:
        return request_cancel(self.store, job_id)

    def resume(self, job_id: int) -> Job:
        job = request_resume(self.store, job_id)
        self.wake()
        return job

    def watch(self, job_id: int, from_seq: int = 0, poll: float = 0.5,
              timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Progress and status events of a job until it ends (see `pipeline.watch.watch`)."""
        self.wake()
        return _watch(job_id, from_seq=from_seq, poll=poll, timeout=timeout, store=self.store)

    def scheduler_pid(self) -> int | None:
        """Pid of the process holding the scheduler lock (None when no scheduler runs)."""
        return SchedulerLock(self.home).holder()


def get_backend(home: str | Path | None = None, **kwargs: Any) -> JobBackend:
    """The backend named by STUDIO_JOBS: `local` (default) or `celery` (Redis + Celery workers)."""
    name = os.environ.get("STUDIO_JOBS", "local").strip().lower() or "local"
    if name == "local":
        return LocalBackend(home, **kwargs)
    if name == "celery":
        from .celery_backend import CeleryBackend

        return CeleryBackend(home, **kwargs)
    raise UserError(f"STUDIO_JOBS={name!r} is not available in this version (use 'local' or 'celery')")


# -- training jobs -------------------------------------------------------------------------------------
def train_command(config_path: str | Path) -> list[str]:
    """The training entry point for a run's config."""
    return [sys.executable, "-m", "pipeline", "train", "--config", str(config_path)]


def dataset_fingerprint(path: str | Path) -> str | None:
    """A short hash of a converted dataset's records and splits (None when the folder has none)."""
    from .dataset import fingerprint

    return fingerprint(path)


def _load_train_config(config: str | Path | None, preset: str | None, model: str | None) -> Any:
    from .plan import build_config

    if config is None and preset is None:
        raise UserError("give --config FILE, or --preset NAME with --model and --data")
    return build_config(config=config, preset=preset, model=model)


def prepare_train(config: str | Path | None = None, preset: str | None = None, model: str | None = None,
                  data: str | Path | None = None, max_steps: int | None = None,
                  overrides: Iterable[str] = (), name: str | None = None, gpus: int = 1,
                  tags: Iterable[str] = (), *, train_config: Any = None) -> JobSpec:
    """Validate a training config (once), write it to a new run folder (RUN/config.yaml) and describe the job.

    `train_config`: a TrainConfig already built by `pipeline.plan.build_config` (the CLI and the app); otherwise one
    is built here from the other arguments.
    """
    from .config import save_config, set_field
    from .plan import build_config, check

    base = train_config if train_config is not None else _load_train_config(config, preset, model)
    cfg = build_config(base=base, data=data, sets=overrides,
                       overrides={"training.max_steps": int(max_steps) if max_steps is not None else None})
    if gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {gpus}")
    run_id = new_run_id()
    run_dir = Path(cfg.training.output_dir).expanduser() if cfg.training.output_dir else studio_home() / "runs" / run_id
    run_dir = run_dir.resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError("run folder already exists and is not empty (resume its job, or change training.output_dir)",
                        run_dir)
    set_field(cfg, "training.output_dir", str(run_dir))
    if not cfg.data.path:
        raise UserError("data.path: no dataset given (--data DIR, or data.path in the config)", config)
    plan = check(cfg)
    plan.raise_errors(config)
    config_path = save_config(cfg, run_dir / "config.yaml")
    return JobSpec(argv=train_command(config_path), run_dir=str(run_dir), kind="train", run_id=run_id,
                   name=name or f"{cfg.model.name}-{run_id}", config=cfg.model_dump(mode="json"),
                   model=cfg.model.name, dataset_fingerprint=dataset_fingerprint(cfg.data.path),
                   slots=gpus, mem_bytes=plan.memory_bytes(), tags=list(tags), warnings=plan.warnings)


def submit_train(backend: JobBackend | None = None, **kwargs: Any) -> Job:
    """prepare_train(**kwargs) then submit it; returns the queued job (the run keeps going after this returns)."""
    spec = prepare_train(**kwargs)
    for warning in spec.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return (backend or get_backend()).submit(spec)


def job_json(job: Job) -> str:
    """A job as one JSON object (what `jobs show --json` prints)."""
    return json.dumps(job.to_dict(), sort_keys=True)
