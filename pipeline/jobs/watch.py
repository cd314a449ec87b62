"""Follow a job of the local backend: its progress events (tailed from RUN/progress.jsonl by byte offset) and its
status changes (from the store's history), until it ends. The Celery backend reads the same events from Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ..rundir import ProgressTail, progress_path
from .store import TERMINAL, JobStore, open_store


def watch(job_id: int, from_seq: int = 0, poll: float = 0.5, timeout: float | None = None,
          store: JobStore | None = None) -> Iterator[dict[str, Any]]:
    """Yield progress events with seq > from_seq and {"event": "status", ...} changes until the job ends.

    Seqs start at 1, so the default replays everything; reconnect after a dropped stream with
    `from_seq=<last seq seen>` to get exactly what was missed. The file is tailed from a byte offset, never re-read.
    """
    if store is None:
        store = open_store()
    job = store.get_job(job_id)
    tail = ProgressTail(progress_path(job.run_dir))
    history = store.transitions(job_id)
    last_transition = history[-1]["id"] if history else 0
    yield status_event(job.id, job.status, job.attempt, job.error, job.position)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = store.get_job(job_id)  # read the status before the file: events written before an end are drained
        for change in store.transitions(job_id, after_id=last_transition):
            last_transition = change["id"]
            if change["to_status"] not in TERMINAL:
                yield status_event(job.id, change["to_status"], change["attempt"], None, None)
        for event in tail.read():
            if not isinstance(event.get("seq"), int) or event["seq"] > from_seq:
                yield event
        if job.status in TERMINAL:
            yield status_event(job.id, job.status, job.attempt, job.error, None)
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        time.sleep(poll)


def status_event(job_id: int, status: str, attempt: int, error: str | None, position: int | None) -> dict[str, Any]:
    """A status event as `watch` yields it (both backends)."""
    event: dict[str, Any] = {"event": "status", "job_id": job_id, "status": status, "attempt": attempt}
    if error:
        event["error"] = error
    if position is not None:
        event["position"] = position
    return event
