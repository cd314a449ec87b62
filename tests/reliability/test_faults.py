"""Faults: kill -9 mid-step and mid-save, disk full while saving and while extracting, the app dying with jobs queued
and running, a training that dies on its first step. Real processes, real signals, a real full file system.

The training chain (slow) runs one run folder through four attempts of the real trainer, each fault injected at an
exact point by faultinject.py: SIGKILL inside step 4, SIGKILL while checkpoint-4 is saved, disk full once
checkpoint-4 is complete, then a clean resume to the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .harness import ROOT, CaseFolder, child_env, clean_failure_problems, run_cli, small_disk
from .hostile import Sample, zip_bytes

HERE = Path(__file__).resolve().parent
SCRIPTED = ROOT / "tests" / "helpers" / "scripted_trainer.py"


def events(run: Path) -> list[dict[str, Any]]:
    """The complete lines of RUN/progress.jsonl ([] before the first one)."""
    path = run / "progress.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def logged_steps_after(run: Path, seq: int) -> list[int]:
    return [e["step"] for e in events(run) if e["event"] == "log" and e["seq"] > seq]


# -- the training chain -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, studio_home: Path) -> Any:
    """Four attempts on one run folder (on a 16 MiB tmpfs when mountable); what each left behind."""
    from helpers.export_runs import make_dataset

    from pipeline.config import load_config, save_config, set_field
    from pipeline.presets import get_preset
    from pipeline.rundir import newest_valid_checkpoint

    base = tmp_path_factory.mktemp("fault_chain")
    data = make_dataset(base / "data")
    disk = base / "disk"
    with small_disk(disk, "16m") as how:
        run = disk / "run"
        cfg = get_preset("quick_test", data=str(data), out=str(run))
        for key, value in {"training.max_steps": 6, "training.save_steps": 2, "training.eval_steps": 0,
                           "training.keep_checkpoints": 5, "training.batch_size": 2, "data.max_length": 128,
                           "hardware.min_free_disk_gb": 0}.items():
            set_field(cfg, key, value)
        config = save_config(cfg, base / "config.yaml")
        env = child_env(studio_home, base)  # the session's data home: the tiny model is built once
        record: dict[str, Any] = {"how": how, "run": run, "attempts": []}

        def attempt(*fault: str, resume: bool = True) -> None:
            argv = [sys.executable, str(HERE / "faultinject.py"), *fault, "--", "train", "--config", str(config)]
            proc = subprocess.run(argv + (["--resume"] if resume else []), cwd=base, env=env, capture_output=True,
                                  text=True, timeout=600)
            valid, skipped = newest_valid_checkpoint(run)
            record["attempts"].append({"rc": proc.returncode, "stderr": proc.stderr, "events": len(events(run)),
                                       "valid": valid.name if valid else None, "skipped": skipped,
                                       "folders": sorted(p.name for p in run.iterdir())})

        attempt("kill-in-step", "3", resume=False)
        attempt("kill-in-save", "4")
        attempt("disk-full-after", "4", how)
        (disk / "filler.bin").unlink(missing_ok=True)  # space freed: the user cleaned up, resumes in-process
        from pipeline.train import run_training

        record["final"] = run_training(load_config(config), resume=True)
        record["events"] = events(run)
        record["checkpoints"] = {p.name: p for p in run.glob("checkpoint-*")}
        from pipeline.rundir import check_manifest

        record["manifest_problems"] = {name: check_manifest(p) for name, p in record["checkpoints"].items()}
        yield record


@pytest.mark.slow
def test_kill9_during_a_training_step_keeps_the_last_checkpoint(chain: Any) -> None:
    """SIGKILL inside step 4 (after checkpoint-2): exit -9, checkpoint-2 complete and valid, no end event written."""
    first = chain["attempts"][0]
    assert first["rc"] == -signal.SIGKILL
    assert first["valid"] == "checkpoint-2" and first["skipped"] == []
    assert "checkpoint-4" not in first["folders"]
    seen = chain["events"][: first["events"]]
    assert [e["step"] for e in seen if e["event"] == "log"] == [1, 2, 3] and seen[-1]["event"] != "end"


@pytest.mark.slow
def test_kill9_during_a_checkpoint_save_leaves_it_incomplete(chain: Any) -> None:
    """SIGKILL while checkpoint-4 is saved: its files exist without manifest.json, so it is not taken as complete."""
    second = chain["attempts"][1]
    assert second["rc"] == -signal.SIGKILL
    assert second["valid"] == "checkpoint-2"
    assert second["skipped"] == [("checkpoint-4", "no manifest.json (incomplete)")]


@pytest.mark.slow
def test_resume_takes_the_newest_complete_checkpoint_and_reports_the_broken_one(chain: Any) -> None:
    """Each resume starts right after the newest complete checkpoint; the broken checkpoint-4 is named, with why."""
    resumes = [e for e in chain["events"] if e["event"] == "resume"]
    assert [r["resumed_from"] for r in resumes] == [2, 2, 4]
    assert resumes[1]["skipped"] == [{"checkpoint": "checkpoint-4", "reason": "no manifest.json (incomplete)"}]
    for resume in resumes:
        steps = logged_steps_after(chain["run"], resume["seq"])
        assert steps[0] == resume["resumed_from"] + 1, "training continues right after the checkpoint"


@pytest.mark.slow
def test_disk_full_while_saving_fails_cleanly_and_keeps_earlier_checkpoints(chain: Any,
                                                                             record_property: Any) -> None:
    """Disk full once checkpoint-4 is complete: exit 1, one `error: training failed` line, no traceback, checkpoint-4
    still valid, no half-written output left."""
    third = chain["attempts"][2]
    record_property("note", "simulated with a 16 MiB tmpfs filled to 96 KiB free (ENOSPC)" if chain["how"] == "tmpfs"
                    else "simulated with RLIMIT_FSIZE 64 KiB (EFBIG): mounting a tmpfs is not permitted here")
    errors = [line for line in third["stderr"].splitlines() if line.startswith("error:")]
    reason = "No space left on device" if chain["how"] == "tmpfs" else "File too large"
    assert third["rc"] == 1 and len(errors) == 1 and errors[0].startswith("error: training failed: "), third["stderr"]
    assert reason in errors[0] and "Traceback" not in third["stderr"]
    assert third["valid"] == "checkpoint-4" and ".output.tmp" not in third["folders"]
    end = chain["events"][third["events"] - 1]
    assert (end["event"], end["status"]) == ("end", "failed") and reason in end["error"]


@pytest.mark.slow
def test_the_run_finishes_after_every_fault(chain: Any) -> None:
    """A last resume reaches step 6: adapter written, every checkpoint left validates, each step 1..6 was trained."""
    final = chain["final"]
    assert (final.status, final.step) == ("succeeded", 6) and Path(final.output).name == "adapter"
    assert all(problem is None for problem in chain["manifest_problems"].values()), chain["manifest_problems"]
    steps = {e["step"] for e in chain["events"] if e["event"] == "log"}
    assert steps == {1, 2, 3, 4, 5, 6} and chain["events"][-1]["status"] == "succeeded"


# -- disk full while extracting -------------------------------------------------------------------------------------
def test_disk_full_while_extracting_fails_cleanly(sample: Sample, tmp_path: Path, record_property: Any) -> None:
    """convert with TMPDIR on a 2 MiB disk and a 3 MiB member: one error line naming the member, TMPDIR left empty."""
    folder = CaseFolder.make(tmp_path / "case")
    payload = os.urandom(3 << 20)  # incompressible: fills the disk, not the ratio limit
    archive = folder.inputs / "export.zip"
    archive.write_bytes(zip_bytes([*sample.demo_members(), ("extra/payload.bin", payload)]))
    shutil.rmtree(folder.tmp)
    with small_disk(folder.tmp, "2m") as how:
        limit = None if how == "tmpfs" else 1 << 20
        result = run_cli(folder, "convert", [str(archive), "--video", str(sample.demo_video)], max_file_bytes=limit)
        left = list(folder.tmp.iterdir())
    record_property("note", "TMPDIR on a 2 MiB tmpfs (ENOSPC)" if how == "tmpfs"
                    else "RLIMIT_FSIZE 1 MiB (EFBIG): mounting a tmpfs is not permitted here")
    expect = "disk full while extracting member 'extra/payload.bin'" if how == "tmpfs" else \
        "member 'extra/payload.bin': cannot write it (File too large)"
    assert clean_failure_problems(result, expect) == [], result.describe()
    assert left == [], "the partial extraction was removed"


# -- the app dies with jobs queued and running ----------------------------------------------------------------------
APP_PROCESS = "from pipeline import service; import time; service.start_scheduler(); time.sleep(3600)"


def _scripted_job(backend: Any, home: Path, name: str, **settings: Any) -> Any:
    from pipeline.jobs import JobSpec

    run = home / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(json.dumps({"step_seconds": 0.1, "save_every": 5, **settings}))
    return backend.submit(JobSpec(argv=[sys.executable, str(SCRIPTED), "--config", str(run / "config.yaml")],
                                  run_dir=str(run), name=name))


def _app_process(home: Path) -> subprocess.Popen[bytes]:
    """The app's job side: `service.start_scheduler()` as studio_app.launch.main calls it (no UI needed)."""
    env = child_env(home, home, STUDIO_CPU_SLOTS="1")
    return subprocess.Popen([sys.executable, "-c", APP_PROCESS], cwd=home, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def _until(predicate: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _starts(job: Any) -> int:
    return sum(1 for e in events(Path(job.run_dir)) if e["event"] in ("start", "resume"))


@pytest.fixture()
def jobs_home(tmp_path: Path) -> Any:
    from pipeline.jobs import LocalBackend

    home = tmp_path / "home"
    home.mkdir()
    return home, LocalBackend(home, scheduler="none")


def test_app_restart_adopts_the_running_job_and_runs_the_queued_one_once(jobs_home: Any) -> None:
    """kill -9 of the app while job 1 runs and job 2 waits: the training survives, the restarted app adopts it (never
    starts it twice) and then runs job 2 exactly once; nothing is left running."""
    home, backend = jobs_home
    first = _scripted_job(backend, home, "long", total_steps=80)
    second = _scripted_job(backend, home, "queued", total_steps=3)
    app = _app_process(home)
    try:
        running = _until(lambda: (j := backend.get(first.id)).pid and j.status == "running" and j, "job 1 to run")
        _until(lambda: _starts(running) == 1, "job 1 to log its start")
        _kill(app)
        from pipeline.jobs.process import process_alive

        assert process_alive(running.pid, running.pid_started), "the training outlives the app"
        assert backend.get(second.id).status == "queued"
        app = _app_process(home)
        _until(lambda: backend.get(second.id).status in ("succeeded", "failed"), "job 2 to finish", 180)
    finally:
        _kill(app)
    done = [backend.get(first.id), backend.get(second.id)]
    assert [(j.status, j.attempt) for j in done] == [("succeeded", 1), ("succeeded", 1)]
    assert [_starts(j) for j in done] == [1, 1], "each job's process started exactly once"
    assert [t["to_status"] for t in backend.store.transitions(first.id)] == ["queued", "running", "succeeded"]
    assert backend.list(status="running") == []


def test_app_and_training_killed_together_leave_nothing_running(jobs_home: Any) -> None:
    """kill -9 of the app and of job 1 (power loss): the restarted app marks job 1 interrupted (not running), runs
    queued job 2 once, and resuming job 1 continues from its checkpoint."""
    home, backend = jobs_home
    first = _scripted_job(backend, home, "long", total_steps=60)
    second = _scripted_job(backend, home, "queued", total_steps=3)
    app = _app_process(home)
    try:
        running = _until(lambda: (j := backend.get(first.id)).pid and j.status == "running" and j, "job 1 to run")
        _until(lambda: (Path(running.run_dir) / "checkpoint-5" / "manifest.json").is_file(), "checkpoint-5")
        _kill(app)
        os.killpg(running.pid, signal.SIGKILL)
        app = _app_process(home)
        _until(lambda: backend.get(second.id).status == "succeeded", "job 2 to finish", 180)
        interrupted = backend.get(first.id)
        assert (interrupted.status, interrupted.error) == ("interrupted", "the process is gone")
        backend.resume(first.id)
        finished = _until(lambda: (j := backend.get(first.id)).status in ("succeeded", "failed") and j, "resume", 180)
    finally:
        _kill(app)
    assert (finished.status, finished.attempt) == ("succeeded", 2)
    assert _starts(backend.get(second.id)) == 1
    resumed = [e for e in events(Path(finished.run_dir)) if e["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0]["step"] >= 5, "resumed from its checkpoint, not from step 0"
    assert any("resume from checkpoint-" in (t["detail"] or "") for t in backend.store.transitions(first.id))
    assert backend.list(status="running") == []


# -- a training that dies on its first step ---------------------------------------------------------------------------
@pytest.mark.slow
def test_training_that_dies_on_its_first_step_is_failed_with_its_error(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real trainer as a job, every frame a truncated JPEG: the job is failed, its stored error names the image,
    no step was logged and the run folder holds no checkpoint."""
    from helpers.export_runs import make_dataset

    from pipeline.jobs import LocalBackend, prepare_train
    from pipeline.jobs.launch import Resources
    from pipeline.jobs.scheduler import Scheduler

    data = make_dataset(tmp_path / "data")
    for image in (data / "images" / "vid").iterdir():
        image.write_bytes(image.read_bytes()[:200])
    home = Path(os.environ["STUDIO_HOME"])  # the session's data home (the tiny model is built there once)
    backend = LocalBackend(home, scheduler="none")
    spec = prepare_train(preset="quick_test", data=data, max_steps=3, overrides=["data.max_length=128"])
    job = backend.submit(spec)
    scheduler = Scheduler(backend.store, home, Resources(slots=1), poll=0.2)
    _until(lambda: not scheduler.tick() and not scheduler.procs, "the job to end", 300)
    failed = backend.get(job.id)
    assert failed.status == "failed" and failed.exit_code == 2
    assert re.search(r"cannot read image \S+/images/vid/\d{6}\.jpg", failed.error) and "\n" not in failed.error
    run = Path(failed.run_dir)
    # the frames are read when the text is tokenized, before the loop: the run may end before its start event
    assert [e["event"] for e in events(run)] in (["start", "error", "end"], ["error", "end"])
    assert not list(run.glob("checkpoint-*")) and not (run / "adapter").exists()


# -- cancel then resume, through the app ----------------------------------------------------------------------------
@pytest.mark.slow
def test_cancel_then_resume_through_the_app(app_scenario: Any, live_app: Any) -> None:
    """A user cancels a running job after step 2 (it stops with a valid checkpoint, status cancelled), resumes it
    (attempt 2) and watches from the last seq seen: training continues right after that checkpoint to the end."""
    from .scenario import CANCEL_AT, MAX_STEPS

    run = live_app.home / "runs" / app_scenario.run_id
    ev = events(run)
    stopped = next(e for e in ev if e["event"] == "end")
    assert app_scenario.cancel_running["status"] == "running" and stopped["status"] == "cancelled"
    assert CANCEL_AT <= stopped["step"] < MAX_STEPS
    assert app_scenario.checkpoints_when_cancelled == {f"checkpoint-{stopped['step']}": None}
    assert (app_scenario.resumed["status"], app_scenario.resumed["attempt"]) == ("queued", 2)
    follow = app_scenario.resume_watch
    assert follow.error is None and follow.views[-1]["status"] == "succeeded" and follow.views[-1]["attempt"] == 2
    assert min(v["seq"] for v in follow.views) > app_scenario.watches[0].last_seq - 1, "the stream went on, no replay"
    resume = next(e for e in ev if e["event"] == "resume")
    assert resume["resumed_from"] == stopped["step"]
    assert logged_steps_after(run, resume["seq"]) == list(range(stopped["step"] + 1, MAX_STEPS + 1))
    assert ev[-1]["status"] == "succeeded" and ev[-1]["step"] == MAX_STEPS
