"""What a job is before it runs (`JobSpec`), what every backend offers (`JobBackend`) and run ids."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .store import Job, JobStore

Jobs = list[Job]  # an alias: inside JobBackend, `list` is the method


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
    """What every jobs backend offers: the local SQLite scheduler (`local`) and Celery workers (`celery`).

    `store` holds the experiments (STUDIO_HOME/studio.db) in both; `start`/`stop` run or stop whatever this process
    contributes (the local scheduler thread; nothing for Celery); `recover` settles jobs whose process or worker
    is gone and returns them.
    """

    home: Path
    store: JobStore

    def submit(self, spec: JobSpec) -> Job: ...
    def get(self, job_id: int) -> Job: ...
    def list(self, status: str | Iterable[str] | None = None) -> list[Job]: ...
    def cancel(self, job_id: int) -> Job: ...
    def resume(self, job_id: int) -> Job: ...
    def watch(self, job_id: int, from_seq: int = 0, poll: float = 0.5,
              timeout: float | None = None) -> Iterator[dict[str, Any]]: ...
    def recover(self) -> Jobs: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


def new_run_id() -> str:
    """A sortable, unique run id: UTC date-time plus 8 random hex digits.

    Four digits collided about once in a hundred runs of the store contention test (80 runs within a few seconds);
    eight make a clash within one second a one-in-a-billion event."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)
