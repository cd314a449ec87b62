"""The local backend: jobs as processes of this machine, state in STUDIO_HOME/studio.db, run by the scheduler
(`jobs.scheduler`): a detached process the CLI starts on demand, or a daemon thread of the app."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..home import studio_home
from .launch import Resources, ask_to_stop, plan_resume
from .process import process_alive
from .recovery import recover
from .scheduler import SchedulerLock, ensure_scheduler, start_scheduler_thread
from .spec import JobSpec, new_run_id
from .store import STEP_KINDS, Experiment, Job, JobStore, open_store
from .watch import watch as _watch


def request_cancel(store: JobStore, job_id: int) -> Job:
    """Queued: cancelled at once. Running: STOP file + SIGTERM now, the scheduler kills the group after the grace."""
    job = store.get_job(job_id)
    if job.status == "queued":
        done = store.transition(job.id, "queued", "cancelled", detail="cancelled while queued", ended_at=time.time())
        if done is not None:
            return done
        job = store.get_job(job_id)
    if job.status != "running":
        raise UserError(f"job {job.id} is {job.status}; only queued or running jobs can be cancelled")
    if job.cancel_requested is None:
        store.update_job(job.id, "running", cancel_requested=time.time())
    ask_to_stop(job, job.pid, job.pid_started)
    return store.get_job(job_id)


def request_resume(store: JobStore, job_id: int) -> Job:
    """Queue an interrupted/failed/cancelled job again as a new attempt that resumes from its newest checkpoint."""
    job = store.get_job(job_id)
    argv, detail = plan_resume(job)
    done = store.transition(job.id, job.status, "queued", detail=detail, expect_attempt=job.attempt, argv=argv,
                            attempt=job.attempt + 1, queued_at=time.time(), cancel_requested=None, pid=None,
                            pid_started=None, exit_code=None, error=None, gpu_ids=[], ended_at=None)
    if done is None:
        raise UserError(f"job {job.id} changed while resuming it; try again")
    return done


class LocalBackend:
    """Jobs as local processes, state in STUDIO_HOME/studio.db.

    scheduler="process": a detached `python -m pipeline jobs scheduler` is started on demand (CLI);
    "thread": `start()` runs the scheduler loop in a daemon thread of this process (the app);
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

    def recover(self) -> list[Job]:
        """Settle running jobs whose process is gone (the CLI and the app call this when they start)."""
        return recover(self.store)

    def start(self) -> None:
        """Run the scheduler in a daemon thread of this process (waits for the lock if a detached one runs)."""
        self.mode = "thread"
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
        elif spec.kind not in STEP_KINDS:  # a step job may name a run (evaluate, export) but needs no row
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
        """Progress and status events of a job until it ends (see `pipeline.jobs.watch.watch`)."""
        self.wake()
        return _watch(job_id, from_seq=from_seq, poll=poll, timeout=timeout, store=self.store)

    def scheduler_pid(self) -> int | None:
        """Pid of the process holding the scheduler lock (None when no scheduler runs)."""
        return SchedulerLock(self.home).holder()
