"""Concurrency: several gradio_client users at once on the live app (scenario.py), the job store under thread
contention with a scheduler launching real processes, and GPU slots that two jobs never share.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .scenario import CANCEL_AT, USERS


# -- many users on the live app ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_users_convert_at_the_same_time(app_scenario: Any, live_app: Any) -> None:
    """Three users convert the same upload into three datasets at once: identical counts, no error."""
    assert app_scenario.errors == []
    assert [c["dataset"] for c in app_scenario.converted] == [f"user{k}" for k in range(USERS)]
    assert {(c["frames"], c["objects"]) for c in app_scenario.converted} == {(5, 15)}
    for k in range(USERS):
        assert (live_app.home / "datasets" / f"user{k}" / "records.jsonl").is_file()


@pytest.mark.slow
def test_users_submit_and_watch_at_the_same_time(app_scenario: Any) -> None:
    """Three jobs submitted at once all queue (with positions); three watchers of job 1 see the same ordered events
    up to its cancellation."""
    assert [j["status"] for j in app_scenario.submitted] == ["queued"] * USERS
    assert all(j["position"] >= 1 for j in app_scenario.submitted)
    streams = []
    for watch in app_scenario.watches:
        assert watch.error is None
        seqs = [v["seq"] for v in watch.views]
        assert seqs == sorted(seqs) and watch.views[-1]["status"] == "cancelled"
        assert max(v["step"] for v in watch.views) >= CANCEL_AT
        streams.append(seqs[-1])
    assert len(set(streams)) == 1, "every watcher saw the stream to its last event"


@pytest.mark.slow
def test_one_cpu_slot_never_runs_two_jobs(app_scenario: Any, live_app: Any) -> None:
    """With one slot, the job list never shows two running jobs; the queued jobs cancelled by their users never
    started (no progress file, attempt 1)."""
    assert app_scenario.running_counts and max(app_scenario.running_counts) == 1
    for job in app_scenario.cancelled_queued:
        assert (job["status"], job["attempt"], job["started_at"]) == ("cancelled", 1, None)
        assert not (live_app.home / "runs" / job["run_id"] / "progress.jsonl").exists()


# -- the store under contention -------------------------------------------------------------------------------------
def _spans(store: Any, job_id: int) -> list[tuple[float, float]]:
    """(start, end) of each running period of a job, from its status history."""
    spans, start = [], None
    for row in store.transitions(job_id):
        if row["to_status"] == "running":
            start = row["at"]
        elif row["from_status"] == "running" and start is not None:
            spans.append((start, row["at"]))
            start = None
    return spans


def _max_overlap(spans: list[tuple[float, float, int]]) -> int:
    edges = sorted([(a, 1, w) for a, _, w in spans] + [(b, -1, w) for _, b, w in spans], key=lambda e: (e[0], e[1]))
    busy = peak = 0
    for _, sign, width in edges:
        busy += sign * width
        peak = max(peak, busy)
    return peak


def _run_scheduler(store: Any, home: Path, resources: Any, done: threading.Event) -> None:
    from pipeline.jobs.scheduler import Scheduler

    scheduler = Scheduler(store, home, resources, poll=0.05)
    while not done.is_set() or scheduler.tick() or scheduler.procs:
        scheduler.tick()
        time.sleep(0.05)


def test_store_under_thread_contention(tmp_path: Path) -> None:
    """Eight threads submit, list, cancel and resume 80 jobs while a scheduler launches them (2 slots): no error, every
    history is a legal chain ending in a final status, never more than 2 running."""
    from pipeline.jobs import JobSpec, LocalBackend
    from pipeline.jobs.launch import Resources
    from pipeline.jobs.store import TERMINAL

    home = tmp_path / "home"
    backend = LocalBackend(home, scheduler="none")
    errors: list[str] = []
    done = threading.Event()
    scheduler = threading.Thread(target=_run_scheduler, args=(backend.store, home, Resources(slots=2), done))
    scheduler.start()

    def user(k: int) -> None:
        rng = random.Random(k)
        try:
            for n in range(10):
                run = tmp_path / "runs" / f"u{k}-{n}"
                backend.submit(JobSpec(argv=["true"], run_dir=str(run), name=f"u{k}-{n}"))
                backend.list()
                queued = backend.list(status="queued")
                if queued and rng.random() < 0.3:
                    try:
                        backend.cancel(rng.choice(queued).id)
                    except Exception as exc:  # noqa: BLE001 - a job that just started is refused with a UserError
                        if "only queued or running" not in str(exc):
                            raise
                cancelled = backend.list(status="cancelled")
                if cancelled and rng.random() < 0.3:
                    try:
                        backend.resume(rng.choice(cancelled).id)
                    except Exception as exc:  # noqa: BLE001 - two users resuming the same job: one wins
                        if "changed while resuming" not in str(exc) and "nothing to resume" not in str(exc):
                            raise
        except Exception as exc:  # noqa: BLE001
            errors.append(f"user {k}: {type(exc).__name__}: {exc}")

    users = [threading.Thread(target=user, args=(k,)) for k in range(8)]
    for thread in users:
        thread.start()
    for thread in users:
        thread.join(timeout=300)
    done.set()
    scheduler.join(timeout=300)
    assert errors == []
    jobs = backend.list()
    assert len(jobs) == 80 and all(job.status in TERMINAL for job in jobs)
    for job in jobs:
        history = backend.store.transitions(job.id)
        assert history[0]["from_status"] is None and history[0]["to_status"] == "queued"
        assert all(a["to_status"] == b["from_status"] for a, b in zip(history, history[1:], strict=False)), history
    spans = [(a, b, 1) for job in jobs for a, b in _spans(backend.store, job.id)]
    assert spans and _max_overlap(spans) <= 2


def test_two_jobs_never_share_a_gpu_slot(tmp_path: Path) -> None:
    """Two GPU slots (physical ids 3 and 5), seven jobs of 1 or 2 GPUs: running jobs never overlap on a slot, and
    each process sees exactly its slots in CUDA_VISIBLE_DEVICES."""
    from pipeline.jobs import JobSpec, LocalBackend
    from pipeline.jobs.launch import Resources

    home = tmp_path / "home"
    backend = LocalBackend(home, scheduler="none")
    resources = Resources(slots=2, device="cuda", physical_ids=["3", "5"], probe=lambda physical: None)
    code = "import os, time; print('CVD=' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'), flush=True); time.sleep(0.3)"
    widths = [1, 2, 1, 1, 2, 1, 1]
    jobs = [backend.submit(JobSpec(argv=[sys.executable, "-c", code], run_dir=str(tmp_path / f"run{i}"), slots=w))
            for i, w in enumerate(widths)]
    samples: list[list[list[int]]] = []
    done = threading.Event()
    scheduler = threading.Thread(target=_run_scheduler, args=(backend.store, home, resources, done))
    scheduler.start()
    done.set()
    while scheduler.is_alive():
        samples.append([job.gpu_ids for job in backend.list(status="running")])
        time.sleep(0.02)
    for running in samples:
        taken = [slot for ids in running for slot in ids]
        assert len(taken) == len(set(taken)) <= 2, running
    for job in (backend.get(j.id) for j in jobs):
        assert job.status == "succeeded" and len(job.gpu_ids) == job.slots
        seen = (Path(job.run_dir) / "train.log").read_text().split("CVD=")[-1].split()[0]  # after the command line
        assert seen == ",".join(resources.physical_ids[s] for s in job.gpu_ids)
    spans = [(a, b, 1) for job in jobs for slot in backend.get(job.id).gpu_ids for a, b in _spans(backend.store, job.id)
             if slot == 0]
    assert _max_overlap(spans) == 1, "slot 0 never held two jobs at once"
