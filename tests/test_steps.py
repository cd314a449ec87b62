"""Step jobs (convert, validate, evaluate, export): real `python -m pipeline step` processes under the local scheduler.

Each test has its own data home; what is asserted is on disk and in the store: job rows and their history, the
job folder's progress events and result.json, the output folders (never half-written).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_celery import make_dataset, wait_for

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = Path(__file__).parent / "helpers" / "scripted_trainer.py"


def events(job: Any) -> list[dict[str, Any]]:
    from pipeline.rundir import run_events

    return run_events(job.run_dir)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data home with the dataset `shapes`; the service's backend of it is dropped afterwards."""
    from pipeline import service

    home = tmp_path / "home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("STUDIO_JOBS", raising=False)
    make_dataset(home / "datasets" / "shapes")
    yield home
    found = service._BACKENDS.pop((home.resolve(), "local"), None)
    if found is not None:
        found.stop()
        for job in found.list(status="running"):
            if job.pid:
                try:
                    os.killpg(job.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def scheduled(home: Path, **limits: Any) -> tuple[Any, Any]:
    """(backend without a scheduler of its own, a Scheduler the test ticks) for the data home."""
    from pipeline.jobs import LocalBackend, Resources
    from pipeline.jobs.launch import StepLimits
    from pipeline.jobs.scheduler import Scheduler

    backend = LocalBackend(home, scheduler="none")
    steps = StepLimits(slots=limits.get("slots", 1), memory_bytes=limits.get("memory", 8 * 2**30))
    return backend, Scheduler(backend.store, home, Resources(slots=1), poll=0.1, steps=steps)


def run_until(scheduler: Any, check: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    def tick() -> Any:
        scheduler.tick()
        return check()
    return wait_for(tick, what, timeout)


def test_validate_job_from_the_service_writes_its_report_result_and_events(home: Path) -> None:
    from pipeline import service
    from pipeline.steps import read_result

    service.start_scheduler()
    try:
        job = service.submit_validate("shapes")
        assert (job["kind"], job["status"]) == ("validate", "queued") and job["run_id"].startswith("validate-")
        views = list(service.watch_job(job["job_id"], poll=0.1))
        assert views[-1].status == "succeeded"
        info, result = service.step_outcome(job["job_id"])
        assert info["status"] == "succeeded" and info["kind"] == "validate"
        done = service.backend().get(job["job_id"])
        assert read_result(done.run_dir) == result and result["dataset"] == "shapes"
        report = home / "reports" / "shapes"
        assert (report / "report.md").is_file() and result["files"] == [str(report / "report.md"),
                                                                          str(report / "report.json")]
        assert not list(report.parent.glob(".shapes.tmp-*"))
        kinds = [e["event"] for e in events(done)]
        assert kinds[0] == "start" and kinds[-1] == "end" and "progress" in kinds
        counted = [e for e in events(done) if e["event"] == "progress" and e["total"]]
        assert counted and counted[-1]["done"] == counted[-1]["total"] == 8 and "eta_s" in counted[-1]
        assert [e["seq"] for e in events(done)] == list(range(1, len(kinds) + 1))
        assert service.list_experiments() == []  # a dataset's job is no experiment
        from studio_app import quality_tab  # a reloaded page: the newest validation's report, read from disk

        loaded = list(quality_tab.reattach())  # the dataset first, then the report, the status and job lines
        assert loaded[0][0]["value"] == "shapes"
        _, shown, markdown, plots, files, status_line, line = loaded[-1]
        assert shown["dataset"] == "shapes" and markdown == result["markdown"] and files == result["files"]
        assert line == f"validate job {done.id} · **succeeded**" and len(plots) == len(result["plots"])
        assert "status-ok" in status_line and "Quality report of <b>shapes</b>" in status_line
        assert [h["to_status"] for h in service.backend().store.transitions(done.id)] == [
            "queued", "running", "succeeded"]
    finally:
        service.backend().stop()


def test_convert_job_copies_the_uploads_and_writes_the_dataset(home: Path, sample_dir: Path) -> None:
    from pipeline import service

    service.start_scheduler()
    try:
        uploads = [sorted(sample_dir.glob("sam2_export_*.zip"))[0], sorted(sample_dir.glob("session_*.mp4"))[0]]
        job = service.submit_convert([str(p) for p in uploads], "converted", tasks=["grounding"])
        views = list(service.watch_job(job["job_id"], poll=0.1))
        assert views[-1].status == "succeeded", views[-1].error
        _, result = service.step_outcome(job["job_id"])
        assert result["dataset"] == "converted" and result["frames"] > 0
        assert "converted" in service.list_datasets() and (home / "datasets" / "converted" / "dataset.json").is_file()
        done = service.backend().get(job["job_id"])
        staged = sorted(p.name for p in (Path(done.run_dir) / "inputs").rglob("*") if p.is_file())
        assert staged == sorted(p.name for p in uploads)  # the job reads its own copies, not the app's temp files
        assert done.mem_bytes and done.mem_bytes > sum(p.stat().st_size for p in uploads)
        stages = {e.get("stage") for e in events(done) if e["event"] == "progress"}
        assert "convert" in stages
        from studio_app import data_tab

        summary, status_line, line = list(data_tab.reattach())[-1]
        assert summary == result and line == f"convert job {done.id} · **succeeded**"
        assert "status-ok" in status_line and "Converted dataset <b>converted</b>" in status_line
    finally:
        service.backend().stop()


def test_cancel_stops_a_step_before_it_writes_anything(home: Path) -> None:
    from pipeline import service
    from pipeline.step_runner import output_lock

    backend, scheduler = scheduled(home)
    with output_lock(home / "reports" / "shapes"):  # the job waits for this output: running, nothing written
        job = backend.submit(_validate_spec())
        running = run_until(scheduler, lambda: (j := backend.get(job.id)).pid and any(
            e["event"] == "start" for e in events(j)) and j, "the step to start")
        backend.cancel(running.id)
        ended = run_until(scheduler, lambda: (j := backend.get(job.id)).status != "running" and j, "the cancel")
    assert (ended.status, ended.exit_code) == ("cancelled", 0)
    assert [e for e in events(ended) if e["event"] == "end"][-1]["status"] == "cancelled"
    assert not (home / "reports" / "shapes").exists() and service.step_outcome(job.id)[1] is None


def _validate_spec() -> Any:
    from pipeline.steps import prepare_step

    return prepare_step("validate", {"dataset": "shapes"})


def test_a_restart_marks_a_step_interrupted_and_it_runs_again(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.jobs import recover
    from pipeline.step_runner import output_lock
    from pipeline.steps import read_result

    monkeypatch.setenv("STUDIO_HEARTBEAT_STALE", "0.5")
    backend, scheduler = scheduled(home)
    leftover = home / "reports" / ".shapes.tmp-killed"  # what a step killed mid-write leaves
    leftover.mkdir(parents=True)
    with output_lock(home / "reports" / "shapes"):
        job = backend.submit(_validate_spec())
        running = run_until(scheduler, lambda: (j := backend.get(job.id)).pid and j, "the step to start")
        os.killpg(running.pid, signal.SIGKILL)  # the machine goes down with the job
        wait_for(lambda: scheduler.procs[job.id].poll() is not None, "the process to die")
    scheduler.procs.clear()  # ... and the scheduler with it: nobody reaps the job
    time.sleep(1.0)
    settled = recover(backend.store)
    assert [(j.id, j.status) for j in settled] == [(job.id, "interrupted")]
    again = backend.resume(job.id)
    assert (again.status, again.attempt, again.argv) == ("queued", 2, running.argv)
    done = run_until(scheduler, lambda: (j := backend.get(job.id)).status not in ("queued", "running") and j,
                     "the second attempt")
    assert done.status == "succeeded" and read_result(done.run_dir)["dataset"] == "shapes"
    assert not leftover.exists() and (home / "reports" / "shapes" / "report.md").is_file()
    seqs = [e["seq"] for e in events(done)]
    assert seqs == list(range(1, len(seqs) + 1))  # the second attempt's events continue the first's


def test_step_pool_limits_and_training_never_blocks_a_step(home: Path) -> None:
    from pipeline.jobs import JobSpec
    from pipeline.steps import prepare_step

    backend, scheduler = scheduled(home, slots=1, memory=int(1.5 * 2**30))
    run = home / "runs" / "slow"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(json.dumps({"total_steps": 400, "step_seconds": 0.05}), encoding="utf-8")
    train = backend.submit(JobSpec(argv=[sys.executable, str(SCRIPTED), "--config", str(run / "config.yaml")],
                                   run_dir=str(run), name="slow"))
    first = backend.submit(prepare_step("validate", {"dataset": "shapes"}))
    second = backend.submit(prepare_step("validate", {"dataset": "shapes"}))
    scheduler.tick()
    assert backend.get(train.id).status == "running"  # the only training slot
    assert backend.get(first.id).status == "running"  # beside it, in the step pool
    waiting = backend.get(second.id)
    assert waiting.status == "queued" and "step slot (1 of 1" in (waiting.queue_reason or "")
    run_until(scheduler, lambda: backend.get(second.id).status == "succeeded", "both validations")
    assert backend.get(first.id).status == "succeeded" and backend.get(train.id).status == "running"
    backend.cancel(train.id)

    scheduler.steps.slots = 2  # two slots, but two 1 GiB conversions do not fit 1.5 GiB
    big = [backend.submit(prepare_step("validate", {"dataset": "shapes"}, mem_bytes=2**30)) for _ in range(2)]
    scheduler.tick()
    assert backend.get(big[0].id).status == "running"
    assert "waiting for memory" in (backend.get(big[1].id).queue_reason or "")
    run_until(scheduler, lambda: all(backend.get(j.id).status == "succeeded" for j in big) and
              backend.get(train.id).status != "running", "the memory-bound jobs")


def test_step_slots_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.errors import UserError
    from pipeline.jobs.launch import StepLimits

    monkeypatch.delenv("STUDIO_STEP_SLOTS", raising=False)
    assert StepLimits.detect().slots == max(1, (os.cpu_count() or 2) // 2)
    monkeypatch.setenv("STUDIO_STEP_SLOTS", "3")
    monkeypatch.setenv("STUDIO_STEP_MEMORY_GB", "2")
    assert (StepLimits.detect().slots, StepLimits.detect().memory_bytes) == (3, 2 * 2**30)
    monkeypatch.setenv("STUDIO_STEP_SLOTS", "0")
    with pytest.raises(UserError, match="STUDIO_STEP_SLOTS"):
        StepLimits.detect()


def test_cli_runs_in_the_foreground_and_submit_queues_a_job(home: Path, tmp_path: Path) -> None:
    from pipeline.jobs import LocalBackend
    from pipeline.steps import read_result

    env = {**os.environ, "STUDIO_HOME": str(home)}
    fg = subprocess.run([sys.executable, "-m", "pipeline", "validate", str(home / "datasets" / "shapes"), "--out",
                         "fg-report"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert fg.returncode == 0 and "PASSED" in fg.stdout and (tmp_path / "fg-report" / "report.md").is_file()
    assert not (home / "studio.db").exists() or not LocalBackend(home, scheduler="none").list()
    queued = subprocess.run([sys.executable, "-m", "pipeline", "validate", "../home/datasets/shapes", "--out",
                             "bg-report", "--submit"], cwd=tmp_path / "fg-report", env=env, capture_output=True,
                            text=True, timeout=300)
    assert queued.returncode == 0 and queued.stdout.startswith("job "), queued.stderr
    backend = LocalBackend(home, scheduler="none")
    job = backend.list()[-1]
    assert job.kind == "validate" and job.argv[-2:] == ["step", job.run_dir]
    done = wait_for(lambda: (j := backend.get(job.id)).status not in ("queued", "running") and j, "the CLI job")
    assert done.status == "succeeded", done.error
    assert read_result(done.run_dir)["exit_code"] == 0
    assert (tmp_path / "fg-report" / "bg-report" / "report.md").is_file()  # relative paths: the submitter's folder


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling on this kernel")
def test_a_step_in_its_own_session_lowers_the_sessions_priority_too() -> None:
    """Jobs run in a session of their own (setsid); with autogroup scheduling only the session's nice ranks it
    against the app, so a step lowers both its own nice and its session's."""
    code = ("import os; from pipeline.step_runner import _lower_priority; _lower_priority(); "
            "print(os.nice(0)); print(open('/proc/self/autogroup').read().split()[-1])")
    for env_nice, expected in (("10", ["10", "10"]), ("0", ["0", "0"])):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, start_new_session=True,
                             env={**os.environ, "STUDIO_STEP_NICE": env_nice}, check=True, cwd=ROOT).stdout
        assert out.split() == expected
