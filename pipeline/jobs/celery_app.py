"""The Celery app of the distributed job backend (Redis broker and result backend) and its one task.

`studio.run_job(job_id, attempt)` runs a job's command line (`python -m pipeline train --config RUN/config.yaml`
for training) as a subprocess on the worker, exactly like the local scheduler (`jobs.launch`), and reports through Redis
(`pipeline.jobs.redis_progress`): it claims the job, beats its heartbeat, XADDs every progress.jsonl line, turns a
cancel request into RUN/STOP + SIGTERM (SIGKILL after the grace), and records the final status. A trainer killed
by a signal while the worker survives is retried from its newest complete checkpoint (max_retries per job).
Starting the process, the cancel escalation and the final status are `jobs.launch`, shared with the local scheduler;
starting a worker is `jobs.worker`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..errors import UserError
from ..rundir import ProgressTail, file_size, progress_path
from .launch import CancelEscalation, Resources, decide_status, prepare_run_dir, resume_argv, resume_note, start_process
from .process import signal_group_after_exit
from .redis_progress import RedisJobs, heartbeat_ttl_s, key_prefix, redis_url
from .store import STEP_KINDS, Job

TASK_NAME = "studio.run_job"
QUEUES = ("training", "preprocessing")
log = logging.getLogger("pipeline.celery")


def queue_for(kind: str, slots: int = 1) -> str:
    """Training goes to `training` (`training-Ngpu` for N-GPU jobs); evaluation and export to `preprocessing`."""
    if kind != "train":
        return "preprocessing"
    return "training" if slots <= 1 else f"training-{slots}gpu"


def worker_queues(queues: list[str], gpus_per_job: int) -> list[str]:
    """The queues a worker consumes: `training` means `training-Kgpu` for a worker giving K GPUs to each job."""
    return [f"training-{gpus_per_job}gpu" if q == "training" and gpus_per_job > 1 else q for q in queues]


@lru_cache(maxsize=8)
def make_app(url: str | None = None, prefix: str | None = None) -> Any:
    """The Celery app for a Redis URL and key prefix (STUDIO_REDIS_URL / STUDIO_REDIS_PREFIX by default)."""
    from celery import Celery

    url, prefix = url or redis_url(), prefix if prefix is not None else key_prefix()
    options = {"global_keyprefix": prefix}
    app = Celery("studio", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"], task_default_queue="training",
        # a job is acknowledged when it ends: a message held by a dead worker comes back (and is skipped, because
        # the job hash is no longer queued with that attempt); workers fetch only when a slot is free
        task_acks_late=True, task_reject_on_worker_lost=False, worker_prefetch_multiplier=1,
        worker_disable_prefetch=True, broker_connection_retry_on_startup=True, result_expires=7 * 86400,
        broker_transport_options={**options, "visibility_timeout": _visibility_timeout()},
        result_backend_transport_options=options, worker_hijack_root_logger=False, task_track_started=True)
    import redis

    # Redis unreachable before the job started: Celery sends the message again later (the claim makes it idempotent)
    app.task(name=TASK_NAME, bind=True, autoretry_for=(redis.ConnectionError, redis.TimeoutError), retry_backoff=True,
             retry_backoff_max=60, max_retries=30)(_run_job_task)
    return app


def _visibility_timeout() -> int:
    raw = os.environ.get("STUDIO_CELERY_VISIBILITY_TIMEOUT", "3600")
    try:
        return max(60, int(float(raw)))
    except ValueError:
        raise UserError(f"STUDIO_CELERY_VISIBILITY_TIMEOUT must be seconds, got {raw!r}") from None


def send_job(job_id: int, attempt: int, queue: str) -> str:
    """Queue a `run_job` message for this attempt; returns the Celery task id."""
    return str(make_app().send_task(TASK_NAME, args=[int(job_id), int(attempt)], queue=queue).id)


def _run_job_task(task: Any, job_id: int, attempt: int) -> dict[str, Any]:
    hostname = str(getattr(task.request, "hostname", None) or f"pid-{os.getpid()}")
    return JobSupervisor(RedisJobs(), int(job_id), int(attempt), hostname).run()


# -- slots ------------------------------------------------------------------------------------------------
def slot_resources() -> tuple[Resources, list[int]]:
    """This pool process's GPUs: pool child i of a worker with K GPUs per job owns GPUs i*K .. i*K+K-1."""
    from celery.utils.log import current_process_index

    ids = [v for v in os.environ.get("STUDIO_WORKER_GPUS", "0").split(",") if v.strip()]
    per_job = max(1, int(os.environ.get("STUDIO_WORKER_GPUS_PER_JOB", "1")))
    index = current_process_index(base=0) or 0
    slots = [index * per_job + i for i in range(per_job)]
    device = os.environ.get("STUDIO_WORKER_DEVICE", "cpu")
    if slots[-1] >= len(ids):
        raise RuntimeError(f"pool process {index} has no GPUs left (GPUs {ids}, {per_job} per job)")
    return Resources(slots=len(ids), device=device, physical_ids=ids), slots


# -- the task body ------------------------------------------------------------------------------------------
class JobSupervisor:
    """Claim one attempt of a job, run its command, forward progress, honour cancel, record the outcome."""

    def __init__(self, jobs: RedisJobs, job_id: int, attempt: int, worker: str, poll: float = 0.25) -> None:
        self.jobs, self.job_id, self.attempt, self.worker, self.poll = jobs, job_id, attempt, worker, poll
        self.ttl = heartbeat_ttl_s()
        self.beat_every = max(0.2, min(2.0, self.ttl / 3))
        self.pending: list[dict[str, Any]] = []
        self.seq_floor = 0

    def run(self) -> dict[str, Any]:
        """The whole attempt; returns what happened (also the Celery result)."""
        resources, slots = slot_resources()
        job = self._claim(slots)
        if job is None:
            return {"job_id": self.job_id, "attempt": self.attempt, "skipped": True}
        if int(job.get("slots") or 1) > len(slots):
            return self._end(job, "failed", None, f"asks for {job['slots']} GPUs, this worker gives {len(slots)}")
        # a step job's estimate is host memory, not GPU memory: the worker's slots (STUDIO_STEP_SLOTS) bound them
        problem = None if job.get("kind") in STEP_KINDS else resources.memory_problem(_as_job(job), slots)
        if problem is not None and problem[1]:  # more than the GPU holds in total: no worker of this kind can run it
            return self._end(job, "failed", None, problem[0])
        try:
            proc = self._launch(job, resources, slots)
        except OSError as exc:
            return self._end(job, "failed", None, f"could not start {job['argv'][0]}: {exc}")
        rc, fenced = self._supervise(job, proc)
        if rc != 0:
            signal_group_after_exit(proc.pid)
        return self._retrying(lambda: self._report(job, rc, fenced))

    def _report(self, job: dict[str, Any], rc: int, fenced: bool) -> dict[str, Any]:
        """Send the last lines, then the final status (or queue a retry of a resumable failure)."""
        self._forward(None, strict=True)
        if fenced:  # someone settled this attempt meanwhile (lost heartbeat): its outcome is no longer ours
            return {"job_id": self.job_id, "attempt": self.attempt, "fenced": True, "exit_code": rc}
        final = self.jobs.get(self.job_id) or job
        status, error = decide_status(_as_job(final), rc)
        if status == "interrupted" and final.get("cancel_requested") is None and \
                int(final.get("retries") or 0) < int(final.get("max_retries") or 0):
            return self._retry(final, error)
        return self._end(final, status, rc, error)

    def _retrying(self, call: Callable[[], Any], patience: float = 120.0) -> Any:
        """Run `call`, retrying while Redis is unreachable (the trainer has ended: only its report is left)."""
        import redis

        end = time.monotonic() + patience
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if time.monotonic() > end:
                    raise
                log.warning("job %s: Redis unreachable (%s); retrying the report", self.job_id, exc)
                time.sleep(1.0)

    def _claim(self, slots: list[int]) -> dict[str, Any] | None:
        job = self.jobs.get(self.job_id)
        if job is None:
            return None
        if job["status"] == "running":
            self.jobs.settle_lost(job)  # a message delivered again: settles the job only if its worker is gone
        now = time.time()
        return self.jobs.cas(self.job_id, "queued", "running", expect_attempt=self.attempt, detail=f"on {self.worker}",
                             alive=f"{max(1, round(self.ttl))}:{self.worker}", worker=self.worker, gpu_ids=slots,
                             started_at=now, heartbeat=now, pid=None, exit_code=None, error=None, ended_at=None,
                             queue_reason=None, progress_offset=file_size(progress_path(job["run_dir"])))

    def _launch(self, job: dict[str, Any], resources: Resources, slots: list[int]) -> subprocess.Popen[bytes]:
        run_dir = prepare_run_dir(job["run_dir"])
        home = os.environ.get("STUDIO_HOME") or str(run_dir.parent)
        # this worker's interpreter, not the submitter's; the trainer dies with this pool process
        proc = start_process(_as_job(job), resources, slots, home, where=self.worker, own_python=True,
                             die_with_parent=True)
        self._safe(lambda: self.jobs.cas(self.job_id, "running", expect_attempt=self.attempt, pid=proc.pid), None)
        return proc

    def _supervise(self, job: dict[str, Any], proc: subprocess.Popen[bytes]) -> tuple[int, bool]:
        """Poll until the process exits; returns (exit code, fenced)."""
        import redis

        tail = ProgressTail(progress_path(job["run_dir"]))
        self.seq_floor = self._safe(lambda: self.jobs.last_seq(self.job_id), 0)
        cancel: CancelEscalation | None = None
        fenced = False
        next_beat = 0.0
        while True:
            rc = proc.poll()
            self._forward(tail)
            now = time.monotonic()
            if now >= next_beat and rc is None:
                next_beat = now + self.beat_every
                try:
                    self.jobs.beat(self.job_id, self.worker, self.ttl)
                    current = self.jobs.get(self.job_id) or {}
                except redis.RedisError as exc:
                    log.warning("job %s: Redis unreachable (%s); training goes on", self.job_id, exc)
                    current = {"status": "running", "attempt": self.attempt}
                fenced = fenced or current.get("status") != "running" or current.get("attempt") != self.attempt
                if cancel is None and (fenced or current.get("cancel_requested") is not None):
                    cancel = CancelEscalation()  # RUN/STOP + SIGTERM now, SIGKILL after the grace
            if cancel is not None and rc is None:
                cancel.step(_as_job(job), proc.pid, None, now, now)
            if rc is not None:
                self._forward(tail)
                return rc, fenced
            time.sleep(self.poll)

    def _forward(self, tail: ProgressTail | None, strict: bool = False) -> None:
        """XADD the new progress lines (those above the stream's last seq); keeps them while Redis is down."""
        import redis

        for event in tail.read() if tail is not None else []:
            if not isinstance(event.get("seq"), int) or event["seq"] > self.seq_floor:
                self.pending.append(event)
        if not self.pending:
            return
        try:
            self.jobs.append(self.job_id, self.pending)
        except redis.RedisError as exc:
            if strict:
                raise
            log.warning("job %s: could not forward progress (%s); will retry", self.job_id, exc)
            return
        seqs = [e["seq"] for e in self.pending if isinstance(e.get("seq"), int)]
        self.seq_floor = max([self.seq_floor, *seqs])
        self.pending = []

    def _safe(self, call: Callable[[], Any], default: Any) -> Any:
        import redis

        try:
            return call()
        except redis.RedisError:
            return default

    def _wall(self, job: dict[str, Any]) -> float:
        started = job.get("started_at") or time.time()
        return round(float(job.get("wall_seconds") or 0.0) + max(0.0, time.time() - started), 3)

    def _end(self, job: dict[str, Any], status: str, rc: int | None, error: str | None) -> dict[str, Any]:
        done = self.jobs.cas(self.job_id, "running", status, expect_attempt=self.attempt, exit_code=rc,
                             error=error if status != "succeeded" else None, ended_at=time.time(),
                             wall_seconds=self._wall(job), alive="del")
        return {"job_id": self.job_id, "attempt": self.attempt, "status": status, "exit_code": rc,
                "recorded": done is not None}

    def _retry(self, job: dict[str, Any], error: str | None) -> dict[str, Any]:
        """A resumable failure: the same job, next attempt, `--resume` from its newest complete checkpoint."""
        argv = resume_argv(list(job["argv"]), str(job.get("kind") or "train"))
        retries = int(job.get("retries") or 0) + 1
        detail = (f"retry {retries}/{job.get('max_retries')} after: {error}; "
                  + (resume_note(job["run_dir"]) or "no complete checkpoint: from the start"))
        queued = self.jobs.cas(self.job_id, "running", "queued", expect_attempt=self.attempt, detail=detail,
                               argv=argv, attempt=self.attempt + 1, retries=retries, queued_at=time.time(),
                               wall_seconds=self._wall(job), cancel_requested=None, alive="del")
        if queued is not None:
            task_id = send_job(self.job_id, self.attempt + 1, job.get("queue") or queue_for(job.get("kind", "train")))
            self.jobs.cas(self.job_id, ("queued", "running"), task_id=task_id)
        return {"job_id": self.job_id, "attempt": self.attempt, "status": "retried", "recorded": queued is not None}


def _as_job(data: dict[str, Any]) -> Job:
    """A job hash as the local store's Job (what the shared `jobs.launch` helpers take)."""
    return Job(id=int(data["id"]), run_id=str(data.get("run_id") or ""), kind=str(data.get("kind") or "train"),
               status=str(data.get("status") or "running"), argv=list(data.get("argv") or []),
               cwd=str(data.get("cwd") or ""), run_dir=str(data["run_dir"]), slots=int(data.get("slots") or 1),
               mem_bytes=data.get("mem_bytes"),
               attempt=int(data.get("attempt") or 1), progress_offset=int(data.get("progress_offset") or 0),
               cancel_requested=data.get("cancel_requested"), heartbeat=data.get("heartbeat"),
               started_at=data.get("started_at"))
