"""What the tabs share for step jobs (convert, validate, evaluate, export): follow a job, read its result from disk.

A button handler queues the job (`service.submit_*`), follows its progress events into the progress bar (counts,
stage and ETA), and when the job ends reads JOB/result.json: the result view comes from disk, so a reload shows it
again (`reattach`). The handlers only wait on the job (another process does the work), so their events run under
their own concurrency id without a limit (`STEP_EVENT`), never in the shared default slot; cheap endpoints get
their own ids too (`CHEAP_EVENT`), so they never wait behind heavy work.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from pipeline import job_view, service

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


def reattach(kind: str, progress: gr.Progress | None = None) -> tuple[dict[str, Any] | None, str]:
    """After a page load: the newest job of a kind, followed to its end when active; (result or None, status line)."""
    job_id = service.latest_step(kind)
    if not job_id:
        return None, ""
    try:
        result = follow(job_id, kind, progress)
    except gr.Error:
        result = None
    return result, status_line(kind, job_id)
