"""The end of a local attempt and restart recovery: record the final status with the experiment summary, and settle
running jobs whose process is gone (a dead pid, another boot, a stale heartbeat).

Opening the store never does this; `recover(store)` is called by the scheduler when it starts, by the app's
startup and by the CLI (`LocalBackend.recover()`).
"""

from __future__ import annotations

import time
from typing import Any

from ..watch import summarize_run
from .launch import decide_status
from .process import boot_id, heartbeat_stale_s, process_alive
from .store import Job, JobStore


def finish(store: JobStore, job: Job, rc: int | None, note: str | None = None) -> Job | None:
    """Record the end of an attempt (compare-and-set from running) together with the experiment summary.

    Both land in one transaction, so whoever sees the job ended also sees its final metrics.
    """
    status, error = decide_status(job, rc)
    now = time.time()
    summary = None
    if job.kind == "train":
        ended = now if rc is not None else (job.heartbeat or now)  # a process found dead ended by its last beat
        summary = final_summary(store, job, wall=max(0.0, ended - (job.started_at or ended)))
    return store.transition(job.id, "running", status, detail=note, expect_attempt=job.attempt,
                            experiment_summary=summary, exit_code=rc,
                            error=error if status != "succeeded" else None, ended_at=now, heartbeat=now)


def final_summary(store: JobStore, job: Job, wall: float = 0.0) -> dict[str, Any]:
    """Summary metrics of the job's run folder for its experiment row (wall seconds add up over attempts)."""
    old = store.get_experiment(job.run_id).summary
    summary = summarize_run(job.run_dir)
    summary["wall_seconds"] = round(float(old.get("wall_seconds", 0.0)) + wall, 3)
    summary.setdefault("seconds", summary["wall_seconds"])
    return summary


def orphan_outcome(store: JobStore, job: Job, now: float | None = None) -> str | None:
    """What to do with a running job nobody may be supervising: None (leave), 'adopt' or 'finish'."""
    now = now or time.time()
    if job.boot_id and job.boot_id != boot_id():
        return "finish"
    owner_alive = process_alive(job.owner_pid, job.owner_started)
    stale = job.heartbeat is None or now - job.heartbeat > heartbeat_stale_s()
    if job.pid is None:  # between launch bookkeeping and Popen
        return "finish" if (not owner_alive or stale) else None
    if process_alive(job.pid, job.pid_started):
        return "adopt" if not owner_alive else None
    return None if owner_alive and not stale else "finish"


def recover(store: JobStore) -> list[Job]:
    """Settle running jobs whose process is gone (dead pid, other boot, stale heartbeat); returns the changed jobs."""
    changed = []
    for job in store.list_jobs(status="running"):
        if orphan_outcome(store, job) == "finish":
            done = finish(store, job, None, note="recovered: its process is gone")
            if done is not None:
                changed.append(done)
    return changed
