"""The Celery + Redis jobs backend (STUDIO_JOBS=celery): the same submit/get/list/cancel/resume/watch as the local one.

Jobs live in Redis (`pipeline.jobs.redis_progress`) and run on a fleet of workers (`python -m pipeline worker`); the app
keeps the experiments in its SQLite store (STUDIO_HOME/studio.db) and records there what the workers report
(status and summary metrics) whenever it looks at a job. Run folders live under a STUDIO_HOME every worker mounts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..home import studio_home
from ..rundir import progress_path
from ..watch import fold_summary, summarize_run
from .celery_app import TASK_NAME, make_app, queue_for
from .launch import plan_resume, write_stop_file
from .redis_progress import RedisJobs
from .spec import JobSpec, new_run_id
from .store import KINDS, STEP_KINDS, TERMINAL, Experiment, Job, open_store, scrub, scrub_argv

_JOB_FIELDS = {f.name for f in fields(Job)}
REDIS_PATIENCE_S = 120.0
Rows = list[dict[str, Any]]  # an alias: inside the class, `list` is the backend method


@dataclass
class CeleryJob(Job):
    """A job of the Celery backend: the local Job plus where it runs."""

    worker: str | None = None
    queue: str | None = None
    task_id: str | None = None
    retries: int = 0
    max_retries: int = 0


def job_retries() -> int:
    """Automatic retries of a resumable failure per job (STUDIO_JOB_RETRIES, default 2)."""
    raw = os.environ.get("STUDIO_JOB_RETRIES", "2")
    try:
        return max(0, int(raw))
    except ValueError:
        raise UserError(f"STUDIO_JOB_RETRIES must be a whole number, got {raw!r}") from None


def to_job(data: dict[str, Any], position: int | None = None) -> CeleryJob:
    """A decoded job hash as a CeleryJob."""
    extra = {"worker", "queue", "task_id", "retries", "max_retries"}
    values = {k: v for k, v in data.items() if (k in _JOB_FIELDS or k in extra) and v is not None}
    values.setdefault("argv", [])
    values.setdefault("cwd", "")
    values.setdefault("run_id", "")
    values.setdefault("kind", "train")
    return CeleryJob(**values, position=position)


class CeleryBackend:
    """Jobs on Celery workers via Redis; experiments in the local store. `start`/`stop` exist for the app only."""

    def __init__(self, home: str | Path | None = None, redis_url: str | None = None, prefix: str | None = None,
                 **_local_options: Any) -> None:
        self.home = Path(home).expanduser().resolve() if home else studio_home()
        self.home.mkdir(parents=True, exist_ok=True)
        self.store = open_store(self.home)
        self.jobs = RedisJobs(redis_url, prefix)
        self.jobs.ping()

    def recover(self) -> list[Job]:
        """Settle running jobs whose worker stopped beating (interrupted) and record them; returns them."""
        settled = [to_job(data) for data in self.jobs.sweep()]
        for job in settled:
            self.record(job)
        return list(settled)

    def start(self) -> None:
        """Nothing to start here: workers run the jobs."""

    def stop(self) -> None:
        """Nothing to stop here."""

    def _app(self) -> Any:
        return make_app(self.jobs.url, self.jobs.prefix)

    def _send(self, job_id: int, attempt: int, queue: str) -> None:
        """Publish the task of a queued attempt; a job whose message cannot be sent fails instead of waiting forever."""
        from kombu.exceptions import OperationalError

        try:
            task_id = self._app().send_task(TASK_NAME, args=[job_id, attempt], queue=queue).id
        except OperationalError as exc:
            self.jobs.cas(job_id, "queued", "failed", expect_attempt=attempt, ended_at=time.time(),
                          error=f"could not queue the job on {queue}: {exc}")
            raise UserError(f"could not queue job {job_id} ({exc})") from None
        self.jobs.cas(job_id, ("queued", "running", *TERMINAL), task_id=str(task_id))

    # -- the backend interface ---------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> Job:
        """Record the experiment (new run), create the job in Redis and queue its task; returns it at once."""
        if spec.kind not in KINDS:
            raise UserError(f"unknown job kind {spec.kind!r} (expected one of {', '.join(KINDS)})")
        run_id = spec.run_id or new_run_id()
        name = spec.name or run_id
        if spec.new_run:
            self.store.add_experiment(Experiment(
                run_id=run_id, name=name, created_at=time.time(), run_dir=spec.run_dir, config=spec.config,
                model=spec.model, dataset_fingerprint=spec.dataset_fingerprint, tags=list(spec.tags)))
        elif spec.kind not in STEP_KINDS:  # a step job may name a run (evaluate, export) but needs no row
            self.store.get_experiment(run_id)
        queue = queue_for(spec.kind, spec.slots)
        job_id = self.jobs.create({
            "run_id": run_id, "kind": spec.kind, "argv": scrub_argv(spec.argv), "cwd": spec.cwd or os.getcwd(),
            "run_dir": spec.run_dir, "slots": spec.slots, "mem_bytes": spec.mem_bytes, "queue": queue,
            "retries": 0, "max_retries": job_retries(), "name": name, "model": spec.model,
            "config": scrub(spec.config), "dataset_fingerprint": spec.dataset_fingerprint, "tags": list(spec.tags)})
        self._send(job_id, 1, queue)
        return self.get(job_id)

    def get(self, job_id: int) -> Job:
        """The job as the workers last reported it (a running job without heartbeat becomes interrupted)."""
        return self._get(job_id)

    def _get(self, job_id: int) -> CeleryJob:
        data = self._load(job_id)
        job = to_job(data, self._positions().get(job_id) if data["status"] == "queued" else None)
        self.record(job)
        return job

    def list(self, status: str | Iterable[str] | None = None) -> list[Job]:
        """Jobs, oldest first; queued ones carry their position in their queue."""
        wanted = None if status is None else ({status} if isinstance(status, str) else set(status))
        datas = self.jobs.get_many(self.jobs.ids())
        datas = [self.jobs.settle_lost(d) or d if d.get("status") == "running" else d for d in datas]
        positions = _positions(datas)
        experiments = {exp.run_id: exp for exp in self.store.list_experiments()}
        out: list[Job] = []
        for data in datas:
            job = to_job(data, positions.get(data["id"]))
            self.record(job, experiments.get(job.run_id))
            if wanted is None or job.status in wanted:
                out.append(job)
        return out

    def cancel(self, job_id: int) -> Job:
        """Queued: cancelled at once (and its task revoked). Running: the worker writes RUN/STOP and sends SIGTERM."""
        job = self._get(job_id)
        if job.status == "queued":
            done = self.jobs.cas(job_id, "queued", "cancelled", expect_attempt=job.attempt, ended_at=time.time(),
                                 detail="cancelled while queued")
            if done is not None:
                if job.task_id:
                    self._app().control.revoke(job.task_id)
                return self.get(job_id)
            job = self._get(job_id)
        if job.status != "running":
            raise UserError(f"job {job.id} is {job.status}; only queued or running jobs can be cancelled")
        if job.cancel_requested is None:
            self.jobs.cas(job_id, "running", expect_attempt=job.attempt, cancel_requested=time.time())
        if Path(job.run_dir).is_dir():
            write_stop_file(job)  # shared storage: the trainer sees it at its next step; the worker signals too
        return self.get(job_id)

    def resume(self, job_id: int) -> Job:
        """Queue an interrupted/failed/cancelled job again (attempt + 1, `--resume`) for any worker to pick up."""
        job = self._get(job_id)
        argv, detail = plan_resume(job)
        done = self.jobs.cas(job_id, job.status, "queued", expect_attempt=job.attempt, detail=detail, argv=argv,
                             attempt=job.attempt + 1, retries=0, queued_at=time.time(), cancel_requested=None,
                             pid=None, exit_code=None, error=None, gpu_ids=[], ended_at=None, worker=None)
        if done is None:
            raise UserError(f"job {job.id} changed while resuming it; try again")
        self._send(job_id, job.attempt + 1, job.queue or queue_for(job.kind, job.slots))
        return self.get(job_id)

    def watch(self, job_id: int, from_seq: int = 0, poll: float = 0.5,
              timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield what `pipeline.jobs.watch.watch` yields (status, progress lines with seq > from_seq, final status).

        Read from the job's Redis stream: XREAD blocks up to `poll` s for new entries; a dropped Redis connection
        is retried for REDIS_PATIENCE_S and the generator carries on from the last entry it saw.
        """
        import redis

        snapshot = _stream_id(self.jobs.last_id(job_id))
        job = self.get(job_id)
        yield _status(job, job.error, job.position)
        deadline = None if timeout is None else time.monotonic() + timeout
        fetched, outage, saved = "0-0", None, 0.0
        pending: list[tuple[str, dict[str, Any]]] = []
        summary: dict[str, Any] = {}
        while True:
            try:
                job = self.get(job_id)  # the status before the stream: lines written before an end are all there
                entries = pending + self.jobs.read_all(job_id, fetched)
                outage = None
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                outage = outage or time.monotonic()
                if time.monotonic() - outage > REDIS_PATIENCE_S:
                    raise UserError(f"lost the connection to Redis at {self.jobs.url} ({exc})") from None
                time.sleep(poll)
                continue
            pending = []
            for entry_id, event in entries:
                fetched = entry_id
                if event.get("event") == "status":
                    if _stream_id(entry_id) > snapshot and event.get("status") not in TERMINAL:
                        yield _status(job, None, None, event)
                elif not isinstance(event.get("seq"), int) or event["seq"] > from_seq:
                    fold_summary(summary, event)
                    yield event
            if summary and job.status == "running" and time.monotonic() - saved > 2.0:
                saved = time.monotonic()
                self._save_summary(job, summary)
            if job.status in TERMINAL:
                yield _status(job, job.error, None)
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                pending = self.jobs.read(job_id, fetched, block_ms=int(poll * 1000))
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(poll)
            fetched = pending[-1][0] if pending else fetched

    def _save_summary(self, job: Job, summary: dict[str, Any]) -> None:
        if job.kind == "train" and job.run_id:
            merged = {**self.store.get_experiment(job.run_id).summary, **summary}
            self.store.update_experiment(job.run_id, summary=merged)

    # -- extras -----------------------------------------------------------------------------------------------
    def history(self, job_id: int) -> Rows:
        """Status changes of a job (rows like JobStore.transitions: id, at, attempt, from/to status, detail)."""
        self._load(job_id)
        rows = []
        for index, (_entry_id, event) in enumerate(self.jobs.read_all(job_id)):
            if event.get("event") == "status":
                rows.append({"id": index + 1, "at": event.get("at"), "attempt": event.get("attempt"),
                             "from_status": event.get("from_status"), "to_status": event.get("status"),
                             "detail": event.get("detail")})
        return rows

    def workers(self) -> Rows:
        """Live workers (name, host, device, gpus, slots, queues) from their adverts in Redis."""
        return self.jobs.workers()

    def _load(self, job_id: int) -> dict[str, Any]:
        data = self.jobs.get(job_id)
        if data is None:
            raise UserError(f"no job with id {job_id}")
        return self.jobs.settle_lost(data) or data if data["status"] == "running" else data

    def _positions(self) -> dict[int, int]:
        return _positions(self.jobs.get_many(self.jobs.ids(active=True)))

    # -- the system of record ---------------------------------------------------------------------------------
    def record(self, job: Job, exp: Experiment | None = None) -> None:
        """Mirror a train job's status (and, once it ends, its summary) into its experiment row."""
        if job.kind != "train" or not job.run_id:
            return
        if exp is None:
            try:
                exp = self.store.get_experiment(job.run_id)
            except UserError:
                exp = self._adopt(job)
        if exp.status == job.status:
            return
        summary = self.summary(job) if job.status in TERMINAL else exp.summary
        self.store.update_experiment(job.run_id, status=job.status, summary=summary)

    def _adopt(self, job: Job) -> Experiment:
        """An experiment row for a job submitted from another host (from what its Redis hash holds)."""
        data = self._load(job.id)
        return self.store.add_experiment(Experiment(
            run_id=job.run_id, name=str(data.get("name") or job.run_id), created_at=job.created_at or time.time(),
            run_dir=job.run_dir, config=data.get("config") or {}, model=data.get("model"),
            dataset_fingerprint=data.get("dataset_fingerprint"), tags=list(data.get("tags") or [])))

    def summary(self, job: Job) -> dict[str, Any]:
        """Summary metrics folded from the job's stream (plus best.json when the run folder is visible here)."""
        summary: dict[str, Any] = {}
        for _entry_id, event in self.jobs.read_all(job.id):
            if event.get("event") != "status":
                fold_summary(summary, event)
        if progress_path(job.run_dir).is_file():
            summary.update({k: v for k, v in summarize_run(job.run_dir).items() if k.startswith("best")})
        data = self.jobs.get(job.id) or {}
        summary["wall_seconds"] = float(data.get("wall_seconds") or 0.0)
        summary.setdefault("seconds", summary["wall_seconds"])
        return summary


def _positions(datas: list[dict[str, Any]]) -> dict[int, int]:
    """1-based FIFO place of each queued job within its queue."""
    queued = sorted((d for d in datas if d.get("status") == "queued"), key=lambda d: (d.get("queued_at") or 0, d["id"]))
    seen: dict[str, int] = {}
    out = {}
    for data in queued:
        queue = str(data.get("queue"))
        seen[queue] = seen.get(queue, 0) + 1
        out[int(data["id"])] = seen[queue]
    return out


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _status(job: Job, error: str | None, position: int | None,
            change: dict[str, Any] | None = None) -> dict[str, Any]:
    """A status event shaped like the local watcher's (`change`: a status entry of the stream)."""
    event: dict[str, Any] = {"event": "status", "job_id": job.id, "status": (change or {}).get("status", job.status),
                             "attempt": (change or {}).get("attempt", job.attempt)}
    if error:
        event["error"] = error
    if position is not None:
        event["position"] = position
    return event
