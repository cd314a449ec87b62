"""What the tabs share for step jobs (convert, validate, evaluate, export): follow a job, read its result from disk.

Each heavy endpoint has two handlers over the same job. The public API endpoint (on a hidden button) queues the job
(`service.submit_*`), follows its progress events into gradio's progress bar and returns the result. The button the
user clicks runs a generator through `status.with_status`: it queues the job, yields `status.Running` lines (stage,
done/total, ETA) into the status line beside the button (`stream`), then the outputs, read from JOB/result.json when
the job ends (`outcome`). The result view comes from disk, so a reload shows it again (`reattach`).

The handlers only wait on the job (another process does the work), so their events (the hidden API button's and
the visible button's) run under their own concurrency id without a limit (`STEP_EVENT`), never in the shared
default slot; cheap endpoints get their own ids too (`CHEAP_EVENT`), so they never wait behind heavy work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from pipeline import job_view, service

from . import status

ACTIVE = ("queued", "running")

STEP_EVENT: dict[str, Any] = {"concurrency_id": "step-jobs", "concurrency_limit": None}
CHEAP_EVENT: dict[str, Any] = {"concurrency_id": "cheap", "concurrency_limit": 8}  # lists, estimates, status
DETECT_EVENT: dict[str, Any] = {"concurrency_id": "detect", "concurrency_limit": 2}  # reads uploads, draws previews


def _describe(view: Any, kind: str) -> str:
    stage = next((e.get("stage") for e in reversed(view.events) if e.get("stage")), None) or kind
    if view.status == "queued":
        return f"{kind} job {view.job_id}: queued" + (f" (position {view.position})" if view.position else "")
    count = f" {view.step}/{view.total_steps}" if view.total_steps else ""
    eta = f" · ETA {job_view._duration(view.eta_s)}" if view.eta_s is not None else ""
    return f"{kind} job {view.job_id}: {stage}{count}{eta}"


def follow(job_id: int, kind: str, progress: gr.Progress | None = None) -> dict[str, Any]:
    """Follow a step job to its end (progress bar: stage, done/total, ETA); its result, or gr.Error when it failed."""
    for view in service.watch_job(int(job_id)):
        if progress is not None:
            fraction = view.step / view.total_steps if view.total_steps else None
            progress(fraction, desc=_describe(view, kind))
    return outcome(job_id, kind)


def stream(job_id: int, kind: str) -> Iterator[status.Running]:
    """Follow a step job to its end: a `status.Running` line per progress event while it is queued or running."""
    for view in service.watch_job(int(job_id)):
        if view.status in ACTIVE:
            yield status.Running(_describe(view, kind), view.step / view.total_steps if view.total_steps else None)


def outcome(job_id: int, kind: str) -> dict[str, Any]:
    """The result of an ended step job (read from disk), or gr.Error saying how it ended."""
    job, result = service.step_outcome(int(job_id))
    if result is None:
        raise gr.Error(f"{kind} job {job_id} {job['status']}" + (f": {job['error']}" if job.get("error") else ""),
                       print_exception=False)
    return result


def status_line(kind: str, job_id: int | None = None) -> str:
    """'kind job N · status' of the given (else the newest) job of a kind, for the line under a tab's button."""
    job_id = job_id or service.latest_step(kind)
    if not job_id:
        return ""
    job, _ = service.step_outcome(job_id)
    error = f" · {job['error']}" if job.get("error") and job["status"] != "succeeded" else ""
    worker = f" · on {job['worker']}" if job.get("worker") else ""
    return f"{kind} job {job['job_id']} · **{job['status']}**{worker}{error}"


def reattach(kind: str, shown: Callable[[dict[str, Any]], tuple[Any, ...]], count: int,
             summary: Callable[..., str], select: Callable[[dict[str, Any]], tuple[Any, ...]] | None = None,
             selects: int = 0) -> Iterator[tuple[Any, ...]]:
    """After a page load: the newest job of a kind. Yields (*selection, *outputs, status line, job line) tuples:

    - first the selection (`select(params)`: the dataset or run the job works on, `selects` updates), so the tab
      shows what the job is about;
    - while the job is queued or running, its progress in the status line;
    - at its end, its outputs read from disk (`shown(result)`, `count` of them) with `summary` in the status line,
      and the job line (`status_line`). A failed job leaves the outputs as they were; the job line says why.
    """
    skips: tuple[Any, ...] = (gr.skip(),) * count
    job_id = service.latest_step(kind)
    if not job_id:
        yield (*(gr.skip(),) * selects, *skips, gr.skip(), "")
        return
    picked = select(service.step_params(job_id)) if select else ()
    yield (*picked, *skips, gr.skip(), gr.skip())
    for line in stream(job_id, kind):
        yield (*(gr.skip(),) * selects, *skips, status.running(line, line.fraction), gr.skip())
    job, result = service.step_outcome(job_id)
    if result is None:
        yield (*(gr.skip(),) * selects, *skips, gr.skip(), status_line(kind, job_id))
        return
    out = shown(result)
    done = status.ok(f"(saved, job {job_id}) {summary(*out)}")
    yield (*(gr.skip(),) * selects, *out, done, status_line(kind, job_id))
