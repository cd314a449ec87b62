"""Heavy steps as jobs: convert, validate, evaluate and export run off the caller's path, like training.

A step job is a job of kind `convert`, `validate`, `evaluate` or `export` (store.STEP_KINDS) whose command is
`python -m pipeline step JOB`: JOB is its folder, STUDIO_HOME/jobs/<kind>-<id>, a run folder in the sense of
`pipeline.rundir` (train.log, progress.jsonl, STOP) plus JOB/request.json (what to run) and JOB/result.json (what it
produced, written atomically at the end). The job side lives in `pipeline.step_runner`; this module is the
submitting side (the app through `service`, and the CLI's `--submit`):

    spec = prepare_step("validate", {"dataset": "shapes"})       # writes JOB/request.json
    job = get_backend().submit(spec)                              # local scheduler or Celery `preprocessing`
    read_result(job.run_dir)                                      # JOB/result.json once it succeeded

Resource limits (both the local scheduler and a CPU `preprocessing` worker): STUDIO_STEP_SLOTS step jobs at once
(default: half the cores, at least 1) within STUDIO_STEP_MEMORY_GB of memory (default: half the RAM); each job
carries an estimate of its peak memory (`memory_estimate`), larger for conversions of large videos.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import UserError
from .home import studio_home
from .jobs.spec import JobBackend, JobSpec, new_run_id
from .jobs.store import STANDALONE, STEP_KINDS, Job
from .rundir import read_json, request_path, result_path, write_json

JOBS_DIR = "jobs"  # STUDIO_HOME/jobs/<kind>-<id>: the folders of step jobs
GIB = 2**30
BASE_MEMORY = {"convert": 0.5 * GIB, "validate": 0.5 * GIB, "evaluate": 2 * GIB, "export": 2 * GIB}
VIDEO_MEMORY_FACTOR = 2  # decoded frames in flight per byte of compressed input (a coarse, safe-side heuristic)


def step_command(job_dir: str | Path) -> list[str]:
    """The command of a step job: `python -m pipeline step JOB`."""
    return [sys.executable, "-m", "pipeline", "step", str(job_dir)]


def jobs_root() -> Path:
    """STUDIO_HOME/jobs (created)."""
    folder = studio_home() / JOBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def memory_estimate(kind: str, inputs: Sequence[str | Path] = ()) -> int:
    """Peak memory of a step job in bytes: a base per kind, plus the inputs' size for a conversion (videos decode)."""
    size = 0
    for path in inputs:
        try:
            size += Path(path).stat().st_size
        except OSError:
            continue
    return int(BASE_MEMORY.get(kind, GIB) + (VIDEO_MEMORY_FACTOR * size if kind == "convert" else 0))


def prepare_step(kind: str, params: dict[str, Any] | None = None, *, cli: Sequence[str] | None = None,
                 experiment: str | None = None, name: str | None = None, mem_bytes: int | None = None,
                 inputs: Sequence[str | Path] = ()) -> JobSpec:
    """Create the job folder with JOB/request.json and describe the job (not submitted yet).

    `params` are the keyword arguments of the step's runner (the app's path); `cli` a verb's command line instead
    (`--submit` from the CLI). Evaluate and export name the run's `experiment` (its id), so deleting the run deletes
    them; convert and validate belong to no experiment.
    """
    if kind not in STEP_KINDS:
        raise UserError(f"{kind!r} is not a step job kind (expected one of {', '.join(sorted(STEP_KINDS))})")
    if kind not in STANDALONE and not experiment:
        raise UserError(f"a {kind} job needs the run it works on")
    job_name = f"{kind}-{new_run_id()}"
    folder = jobs_root() / job_name
    folder.mkdir(parents=True)
    params = dict(params or {})
    if params.get("files"):  # uploads live in the app's temp folder: the job (maybe on a worker) gets its own copy
        params["files"] = _stage(params["files"], folder / "inputs")
        inputs = params["files"]
    write_json(request_path(folder), {"kind": kind, "params": params, "cli": list(cli) if cli else None})
    return JobSpec(argv=step_command(folder), run_dir=str(folder), kind=kind,
                   run_id=experiment if kind not in STANDALONE else job_name, new_run=False,
                   name=name or job_name, mem_bytes=mem_bytes or memory_estimate(kind, inputs),
                   cwd=str(folder))


def _stage(files: Sequence[str | Path], folder: Path) -> list[str]:
    """Copy (or hard-link) uploaded files into the job's folder, keeping their names; the copies' paths."""
    staged = []
    for index, source in enumerate(Path(f) for f in files):
        if not source.is_file():
            raise UserError("uploaded file is missing", source.name)
        target = folder / str(index) / source.name
        target.parent.mkdir(parents=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        staged.append(str(target))
    return staged


def submit_step(backend: JobBackend, kind: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Job:
    """prepare_step(...) and submit it; returns the queued job at once."""
    return backend.submit(prepare_step(kind, params, **kwargs))


def read_request(job_dir: str | Path) -> dict[str, Any]:
    """JOB/request.json; UserError when the folder is not a step job's."""
    request = read_json(request_path(job_dir))
    if request is None or request.get("kind") not in STEP_KINDS:
        raise UserError("not a step job folder (no valid request.json)", job_dir)
    return request


def read_result(job_dir: str | Path) -> dict[str, Any] | None:
    """JOB/result.json (None until the step succeeded)."""
    return read_json(result_path(job_dir))


def write_result(job_dir: str | Path, result: dict[str, Any]) -> None:
    """Write JOB/result.json atomically (the last thing a successful step does)."""
    write_json(result_path(job_dir), result)


def submit_cli(kind: str, argv: Sequence[str], backend: JobBackend | None = None) -> Job:
    """`python -m pipeline <verb> ... --submit`: queue the same command line as a step job (paths made absolute).

    Relative paths are resolved against this directory now, so the job finds them wherever it runs (a worker sees
    the same shared storage). Evaluate and export submitted this way belong to no experiment.
    """
    from .jobs.backend import get_backend

    words = [a for a in argv if a != "--submit"]
    absolute: list[str] = []
    after_out = False
    for word in words:
        path = Path(word).expanduser()
        if not word.startswith("-") and (after_out or path.exists()) and not path.is_absolute():
            word = str(path.resolve())
        absolute.append(word)
        after_out = word in ("--out", "--config", "--labels", "--images", "--video", "--dataset")
    if not absolute or absolute[0] != kind:
        absolute = [kind, *absolute]
    spec = prepare_step(kind, cli=absolute, experiment="cli", inputs=[w for w in absolute if os.path.isfile(w)])
    spec.run_id = Path(spec.run_dir).name  # a CLI step belongs to no experiment
    return (backend or get_backend()).submit(spec)


def print_submitted(kind: str, argv: Sequence[str]) -> int:
    """`--submit`: queue the verb's command line as a job and print how to follow it."""
    job = submit_cli(kind, argv)
    print(f"job {job.id} ({kind}) {job.status}: follow it with `python -m pipeline jobs watch {job.id}`; "
          f"its result will be in {result_path(job.run_dir)}")
    return 0
