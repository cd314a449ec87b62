"""Runner: real child processes (tests/helpers/scripted_trainer.py), slots, cancel, kill -9 recovery, resume, watch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from pipeline.errors import UserError
from pipeline.jobs import TERMINAL, JobSpec, JobStore, LocalBackend, Resources, open_store, recover
from pipeline.jobs.launch import launch_argv
from pipeline.jobs.process import process_alive, process_started
from pipeline.jobs.scheduler import Scheduler, SchedulerLock
from pipeline.rundir import ProgressTail, newest_checkpoint

HELPER = Path(__file__).parent / "helpers" / "scripted_trainer.py"


def wait_for(check: Callable[[], bool], what: str, timeout: float = 240.0) -> None:
    """Poll until `check()` holds (the timeout only guards against a hang on 2 busy cores; nothing asserts on
    durations)."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def end_processes(home: Path) -> None:
    """Kill what a test left running in its data home: job process groups and the scheduler, by pid."""
    db = home / "studio.db"
    if db.exists():
        store = JobStore(db)
        for job in store.list_jobs(status="running"):
            if process_alive(job.pid, job.pid_started):
                os.killpg(job.pid, signal.SIGKILL)
        store.close()
    holder = SchedulerLock(home).holder() if home.exists() else None
    if holder and holder > 0 and holder != os.getpid():
        os.kill(holder, signal.SIGKILL)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("STUDIO_CANCEL_GRACE", "5")
    yield home
    end_processes(home)


@pytest.fixture
def threaded(home: Path):
    """A backend whose scheduler runs in a thread of this process, with one slot."""
    backend = LocalBackend(home, scheduler="thread", resources=Resources(slots=1))
    backend.start()
    yield backend
    backend.stop()


def scripted(home: Path, name: str, **cfg: object) -> JobSpec:
    run = home / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    argv = [sys.executable, str(HELPER), "--config", str(run / "config.yaml")]
    return JobSpec(argv=argv, run_dir=str(run), name=name, config={"scripted": cfg})


def events(run_dir: str | Path) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "progress.jsonl").read_text().splitlines()]


def finished(backend: LocalBackend, job_id: int) -> Callable[[], bool]:
    return lambda: backend.get(job_id).status in TERMINAL


def test_job_runs_in_its_own_process_group_and_updates_its_experiment(threaded: LocalBackend) -> None:
    job = threaded.submit(scripted(threaded.home, "ok", total_steps=4, step_seconds=0.01))
    wait_for(finished(threaded, job.id), "job end")
    job = threaded.get(job.id)
    assert (job.status, job.exit_code, job.error) == ("succeeded", 0, None)
    evs = events(job.run_dir)
    start = evs[0]
    assert start["event"] == "start" and start["pgid"] == start["pid"] == job.pid != os.getpgid(0)
    assert [e["step"] for e in evs if e.get("event") == "log"] == [1, 2, 3, 4]
    log = (Path(job.run_dir) / "train.log").read_text()
    assert f"[studio] job {job.id} attempt 1" in log and "training from step 0 to 4" in log
    exp = threaded.store.get_experiment(job.run_id)
    last_loss = [e["loss"] for e in evs if e.get("event") == "log"][-1]
    assert exp.status == "succeeded"
    assert exp.summary["final_loss"] == last_loss and exp.summary["steps"] == 4
    assert exp.summary["best_metric"] == pytest.approx(2.2 * 2.718281828 ** -1, rel=1e-3)
    history = [(t["from_status"], t["to_status"]) for t in threaded.store.transitions(job.id)]
    assert history == [(None, "queued"), ("queued", "running"), ("running", "succeeded")]


def test_crash_is_failed_with_the_error_event_stored(threaded: LocalBackend) -> None:
    job = threaded.submit(scripted(threaded.home, "crash", total_steps=6, step_seconds=0.01, crash_at_step=3))
    wait_for(finished(threaded, job.id), "job end")
    job = threaded.get(job.id)
    assert (job.status, job.exit_code) == ("failed", 1)
    assert job.error == "scripted crash at step 3"
    with pytest.raises(UserError, match="still active|nothing to resume"):
        threaded.resume(threaded.submit(scripted(threaded.home, "q", total_steps=1)).id)


def test_kill9_with_its_scheduler_alive_is_interrupted(threaded: LocalBackend) -> None:
    job = threaded.submit(scripted(threaded.home, "k", total_steps=400, step_seconds=0.05))
    wait_for(lambda: threaded.get(job.id).pid is not None and (Path(job.run_dir) / "progress.jsonl").exists(), "start")
    os.kill(threaded.get(job.id).pid, signal.SIGKILL)
    wait_for(finished(threaded, job.id), "job end")
    job = threaded.get(job.id)
    assert (job.status, job.exit_code, job.error) == ("interrupted", -9, "killed by SIGKILL")
    with pytest.raises(UserError, match="only queued or running"):
        threaded.cancel(job.id)


def test_kill9_then_store_open_marks_interrupted_and_resume_finishes(home: Path) -> None:
    backend = LocalBackend(home)  # a detached scheduler process, as for the CLI
    job = backend.submit(scripted(home, "resume", total_steps=12, step_seconds=0.1, save_every=3))
    run = Path(job.run_dir)
    wait_for(lambda: (run / "checkpoint-3" / "manifest.json").exists(), "first checkpoint")
    os.killpg(backend.get(job.id).pid, signal.SIGSTOP)  # frozen mid-run, however fast or slow this machine is
    scheduler_pid = backend.scheduler_pid()
    running = backend.get(job.id)
    assert running.status == "running" and scheduler_pid and scheduler_pid != os.getpid()
    os.kill(scheduler_pid, signal.SIGKILL)  # the owner dies first, so nobody reaps the trainer's exit code
    os.killpg(running.pid, signal.SIGKILL)
    wait_for(lambda: not process_alive(running.pid, running.pid_started), "trainer gone")
    wait_for(lambda: backend.scheduler_pid() is None, "scheduler lock released")
    assert JobStore(home / "studio.db").get_job(job.id).status == "running"  # a bare open does not recover
    store = open_store(home)
    assert store.get_job(job.id).status == "running"  # nor does open_store: it has no side effects

    assert [j.id for j in recover(store)] == [job.id]  # what the CLI, the app and the scheduler call when they start
    job = store.get_job(job.id)
    assert job.status == "interrupted" and job.exit_code is None and job.error == "the process is gone"
    kept = newest_checkpoint(run)
    assert kept is not None
    resumed = backend.resume(job.id)
    assert (resumed.status, resumed.attempt) == ("queued", 2) and resumed.argv[-1] == "--resume"
    wait_for(finished(backend, job.id), "resumed job end")
    job = backend.get(job.id)
    assert (job.status, job.attempt) == ("succeeded", 2)
    evs = events(run)
    at = next(i for i, e in enumerate(evs) if e.get("event") == "resume")
    resumed_from = evs[at]["step"]
    assert resumed_from == int(kept.name.split("-")[1]) >= 3
    steps_after = [e["step"] for e in evs[at:] if e.get("event") == "log"]
    assert steps_after == list(range(resumed_from + 1, 13))  # nothing finished is redone
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))  # nothing recorded is lost
    details = [t["detail"] for t in store.transitions(job.id)]
    assert f"resume from checkpoint-{resumed_from}" in details


def test_cancel_stops_gracefully_frees_the_slot_and_the_next_job_starts(threaded: LocalBackend) -> None:
    first = threaded.submit(scripted(threaded.home, "long", total_steps=500, step_seconds=0.05, save_every=2))
    second = threaded.submit(scripted(threaded.home, "next", total_steps=2, step_seconds=0.01))
    wait_for(lambda: (Path(first.run_dir) / "checkpoint-2" / "manifest.json").exists(), "first checkpoint")
    wait_for(lambda: threaded.get(second.id).queue_reason is not None, "the scheduler to look at the queue")
    queued = threaded.get(second.id)
    assert (queued.status, queued.position, queued.queue_reason) == ("queued", 1, "waiting for 1 free slot(s)")
    threaded.cancel(first.id)
    wait_for(finished(threaded, second.id), "second job end")
    first, second = threaded.get(first.id), threaded.get(second.id)
    assert (first.status, first.exit_code) == ("cancelled", 0)
    assert events(first.run_dir)[-1]["event"] == "end" and events(first.run_dir)[-1]["status"] == "cancelled"
    assert newest_checkpoint(first.run_dir) is not None  # checkpoints kept
    assert second.status == "succeeded" and second.gpu_ids == [0]
    order = [(t["id"], t["to_status"]) for j in (first, second) for t in threaded.store.transitions(j.id)]
    cancelled_at = next(i for i, s in order if s == "cancelled")
    second_started = [i for i, s in order if s == "running"][-1]
    assert second_started > cancelled_at


def test_cancel_kills_the_group_when_the_trainer_ignores_it(threaded: LocalBackend,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_CANCEL_GRACE", "0.5")
    job = threaded.submit(scripted(threaded.home, "stubborn", total_steps=500, step_seconds=0.05,
                                   ignore_sigterm=True))
    wait_for(lambda: (Path(job.run_dir) / "progress.jsonl").exists(), "start")
    threaded.cancel(job.id)
    assert (Path(job.run_dir) / "STOP").exists()
    wait_for(finished(threaded, job.id), "job end")
    job = threaded.get(job.id)
    assert (job.status, job.exit_code) == ("cancelled", -9)


def test_cancel_of_a_queued_job_never_starts_it(home: Path) -> None:
    backend = LocalBackend(home, scheduler="none")
    job = backend.submit(scripted(home, "never", total_steps=2))
    assert backend.cancel(job.id).status == "cancelled"
    Scheduler(backend.store, home, Resources(slots=1)).tick()
    assert backend.get(job.id).pid is None and not (Path(job.run_dir) / "progress.jsonl").exists()


def test_two_slots_never_run_three_jobs(home: Path) -> None:
    backend = LocalBackend(home, scheduler="none")
    jobs = [backend.submit(scripted(home, f"s{i}", total_steps=3, step_seconds=0.05)) for i in range(4)]
    scheduler = Scheduler(backend.store, home, Resources(slots=2), poll=0.05)
    scheduler.tick()
    states = [backend.get(j.id) for j in jobs]
    assert [s.status for s in states] == ["running", "running", "queued", "queued"]
    assert sorted(s.gpu_ids[0] for s in states[:2]) == [0, 1]
    assert (states[2].position, states[2].queue_reason) == (1, "waiting for 1 free slot(s)")
    while scheduler.tick():
        running = backend.list(status="running")
        assert len(running) <= 2 and len({s for j in running for s in j.gpu_ids}) == len(running)
        time.sleep(0.05)
    assert all(backend.get(j.id).status == "succeeded" for j in jobs)
    spans = []  # the processes' own start/end times: never three alive at once
    for job in jobs:
        evs = events(job.run_dir)
        spans += [(evs[0]["time"], 1), (evs[-1]["time"], -1)]
    alive = peak = 0
    for _, delta in sorted(spans):
        alive += delta
        peak = max(peak, alive)
    assert peak <= 2


def test_a_job_wider_than_the_machine_fails_instead_of_waiting(home: Path) -> None:
    backend = LocalBackend(home, scheduler="none")
    spec = scripted(home, "wide", total_steps=1)
    spec.slots = 3
    job = backend.submit(spec)
    Scheduler(backend.store, home, Resources(slots=2)).tick()
    job = backend.get(job.id)
    assert (job.status, job.error) == ("failed", "asks for 3 slots, this machine has 2")


def test_watch_replays_what_was_missed_after_a_reconnect(threaded: LocalBackend) -> None:
    job = threaded.submit(scripted(threaded.home, "w", total_steps=8, step_seconds=0.05))
    first: list[dict] = []
    for event in threaded.watch(job.id, poll=0.05):
        first.append(event)
        if event.get("seq") == 4:
            break  # the browser went away
    wait_for(finished(threaded, job.id), "job end")
    second = list(threaded.watch(job.id, from_seq=4, poll=0.05))
    seqs = [e["seq"] for e in first + second if "seq" in e]
    assert seqs == list(range(1, len(events(job.run_dir)) + 1))
    assert [e["seq"] for e in second if "seq" in e][0] == 5
    assert first[0]["event"] == "status" and first[0]["status"] in ("queued", "running")
    assert second[-1]["event"] == "status" and second[-1]["status"] == "succeeded"
    assert second[-2]["event"] == "end"


def test_progress_tail_reads_each_byte_once_and_waits_for_a_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "progress.jsonl"
    path.write_bytes(b'{"seq": 1}\n{"seq": 2, "lo')
    tail = ProgressTail(path)
    assert tail.read() == [{"seq": 1}] and tail.offset == len(b'{"seq": 1}\n')
    assert tail.read() == []
    with open(path, "ab") as handle:
        handle.write(b'ss": 0.5}\n{"seq": 3}\n')
    assert tail.read() == [{"seq": 2, "loss": 0.5}, {"seq": 3}]
    assert tail.offset == path.stat().st_size
    path.write_bytes(b'{"seq": 9}\n')  # replaced by a shorter file: start over
    assert tail.read() == [{"seq": 9}]


def test_recovery_settles_jobs_from_another_boot_stale_launches_and_finished_orphans(home: Path,
                                                                                      monkeypatch) -> None:
    store = JobStore(home / "studio.db")
    backend = LocalBackend(home, scheduler="none")
    other_boot = backend.submit(scripted(home, "boot", total_steps=1))
    stale = backend.submit(scripted(home, "stale", total_steps=1))
    done = backend.submit(scripted(home, "done", total_steps=1))
    alive = backend.submit(scripted(home, "alive", total_steps=1))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        me, my_start = os.getpid(), process_started(os.getpid())
        store.transition(other_boot.id, "queued", "running", boot_id="another-boot", pid=os.getpid(),
                         pid_started=my_start, heartbeat=time.time())
        store.transition(stale.id, "queued", "running", pid=None, owner_pid=me, owner_started=my_start,
                         heartbeat=time.time() - 3600)
        Path(done.run_dir, "progress.jsonl").write_text('{"seq": 1, "event": "end", "status": "succeeded"}\n')
        store.transition(done.id, "queued", "running", pid=999_999_999, owner_pid=999_999_998, heartbeat=time.time())
        store.transition(alive.id, "queued", "running", pid=sleeper.pid, pid_started=process_started(sleeper.pid),
                         owner_pid=me, owner_started=my_start, heartbeat=time.time())
        changed = {job.id: job.status for job in recover(store)}
        assert changed == {other_boot.id: "interrupted", stale.id: "interrupted", done.id: "succeeded"}
        assert store.get_job(alive.id).status == "running"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_launch_argv_uses_accelerate_for_several_gpus(home: Path) -> None:
    backend = LocalBackend(home, scheduler="none")
    spec = JobSpec(argv=[sys.executable, "-m", "pipeline", "train", "--config", "c.yaml"], run_dir=str(home / "r"),
                   slots=2)
    job = backend.submit(spec)
    gpus = Resources(slots=2, device="cuda", physical_ids=["3", "5"])
    assert launch_argv(job, gpus) == [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2",
                                      "-m", "pipeline", "train", "--config", "c.yaml"]
    assert gpus.child_env([1]) == {"CUDA_VISIBLE_DEVICES": "5"}
    assert launch_argv(job, Resources(slots=2)) == spec.argv  # CPU slots: never accelerate


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m pipeline ...` as its own process, as a user would."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd or root, env={**os.environ, "PYTHONPATH": str(root)})


def test_jobs_cli_list_cancel_resume_watch_show(home: Path) -> None:
    job = LocalBackend(home, scheduler="none").submit(scripted(home, "cli", total_steps=3, step_seconds=0.01))
    lock = SchedulerLock(home)
    assert lock.acquire()  # stands in for a busy scheduler: the CLI must not start another one
    try:
        listed = json.loads(cli("jobs", "list", "--json").stdout)
        assert [(j["id"], j["status"], j["position"]) for j in listed] == [(job.id, "queued", 1)]
        assert json.loads(cli("jobs", "cancel", str(job.id), "--json").stdout)["status"] == "cancelled"
    finally:
        lock.release()
    resumed = json.loads(cli("jobs", "resume", str(job.id), "--json").stdout)  # starts the detached scheduler
    assert (resumed["status"], resumed["attempt"]) == ("queued", 2)
    watched = cli("jobs", "watch", str(job.id), "--json")
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert lines[-1] == {"event": "status", "job_id": job.id, "status": "succeeded", "attempt": 2}
    assert [e["step"] for e in lines if e.get("event") == "log"] == [1, 2, 3]
    shown = json.loads(cli("jobs", "show", str(job.id), "--json").stdout)
    assert (shown["status"], shown["exit_code"], shown["run_dir"]) == ("succeeded", 0, job.run_dir)
    assert isinstance(shown["pid"], int)
    assert [h["to_status"] for h in shown["history"]] == ["queued", "cancelled", "queued", "running", "succeeded"]
    missing = cli("jobs", "show", "999")
    assert missing.returncode == 2 and missing.stderr.strip() == "error: no job with id 999"


@pytest.mark.slow
def test_cli_submit_returns_while_real_training_runs_then_succeeds(studio_home: Path, sample_dir: Path,
                                                                   tmp_path: Path) -> None:
    pytest.importorskip("pipeline.train")
    from pipeline.ingest import convert

    demo = json.loads((sample_dir / "sample_truth.json").read_text())["sam2_demo_zip"][0]
    dataset = tmp_path / "ds"
    convert([sample_dir / demo["file"]], dataset, labels=sample_dir / "labels.json", max_frames=8)
    try:
        submitted = cli("jobs", "submit", "--preset", "quick_test", "--model", "tiny-smolvlm", "--data", str(dataset),
                        "--max-steps", "4", "--set", "training.save_steps=2", "--name", "real", "--json")
        assert submitted.returncode == 0, submitted.stderr
        job = json.loads(submitted.stdout)
        assert job["status"] == "queued" and job["argv"][1:4] == ["-m", "pipeline", "train"]
        backend = LocalBackend(studio_home, scheduler="none")
        wait_for(finished(backend, job["id"]), "real training to end", timeout=600)
        shown = json.loads(cli("jobs", "show", str(job["id"]), "--json").stdout)
        assert (shown["status"], shown["exit_code"]) == ("succeeded", 0), shown["error"]
        run = Path(shown["run_dir"])
        assert run.parent == studio_home / "runs" and (run / "adapter").is_dir()
        evs = events(run)
        assert evs[-1]["event"] == "end" and evs[-1]["status"] == "succeeded"
        assert max(e["step"] for e in evs if e.get("event") == "log") == 4
        exp = backend.store.get_experiment(job["run_id"])
        assert (exp.status, exp.model, exp.name, exp.summary["steps"]) == ("succeeded", "tiny-smolvlm", "real", 4)
        assert exp.config["lora"]["r"] == 8 and exp.dataset_fingerprint
    finally:
        end_processes(studio_home)


def test_submit_refuses_a_bad_config_without_leaving_anything(home: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    dataset = tmp_path / "ds"
    dataset.mkdir()
    code = main(["jobs", "submit", "--preset", "quick_test", "--data", str(dataset), "--set", "lora.r=0"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: lora.r: must be at least 1")
    assert main(["jobs", "submit", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["jobs", "submit", "--preset", "quick_test"]) == 2
    assert capsys.readouterr().err == "error: data.path: no dataset given (--data DIR, or data.path in the config)\n"
    assert open_store(home).list_jobs() == [] and not (home / "runs").exists()


def test_gpu_memory_estimates_are_checked_against_free_memory_before_launch(home: Path) -> None:
    gib = 2**30
    backend = LocalBackend(home, scheduler="none")
    first = backend.submit(scripted(home, "small", total_steps=200, step_seconds=0.05))
    big, huge = scripted(home, "big", total_steps=1), scripted(home, "huge", total_steps=1)
    big.mem_bytes, huge.mem_bytes = 4 * gib, 16 * gib
    big_job = backend.submit(big)
    gpus = Resources(slots=2, device="cuda", physical_ids=["0", "1"], probe=lambda _: (2 * gib, 8 * gib))
    scheduler = Scheduler(backend.store, home, gpus)
    scheduler.tick()
    assert backend.get(first.id).status == "running"  # no estimate: nothing to check
    waiting = backend.get(big_job.id)
    assert waiting.status == "queued"  # our own job holds memory that will come back
    assert waiting.queue_reason == "waiting for GPU memory: needs about 4.0 GiB per GPU, GPU 1 has 2.0 GiB free"
    backend.cancel(first.id)
    wait_for(lambda: not scheduler.tick() or backend.get(big_job.id).status != "queued", "the queue to settle")
    refused = backend.get(big_job.id)
    assert (refused.status, refused.error) == ("failed", "needs about 4.0 GiB per GPU, GPU 0 has 2.0 GiB free")
    huge_job = backend.submit(huge)
    scheduler.tick()
    refused = backend.get(huge_job.id)
    assert (refused.status, refused.error) == ("failed", "needs about 16.0 GiB per GPU, GPU 0 has 8.0 GiB in total")
