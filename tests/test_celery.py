"""Celery + Redis backend: real redis-server, real `python -m pipeline worker` processes, the real trainer.

Two single-slot workers share a private STUDIO_HOME (the fleet's shared storage) and a key prefix of their own in
Redis (STUDIO_REDIS_URL when CI sets it, else a redis-server started here). Every worker and trainer is stopped by
pid at the end, and the prefix's keys are deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = Path(__file__).parent / "helpers" / "scripted_trainer.py"
QUICK = ["training.save_steps=2", "training.eval_steps=0", "training.logging_steps=1", "training.batch_size=1"]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 240.0) -> Any:
    """Poll until `check()` is truthy (the timeout only guards against a hang on 2 busy cores)."""
    end = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def wait_for_job(backend: Any, job_id: int, check: Callable[[Any], Any], what: str, timeout: float = 240.0) -> Any:
    """wait_for(check(job)) that fails at once, with the job's error and log tail, if the job ends first."""

    def step() -> Any:
        job = backend.get(job_id)
        if (value := check(job)):
            return value
        if job.status not in ("queued", "running"):
            log = Path(job.run_dir) / "train.log"
            tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
            raise AssertionError(f"job {job_id} ended {job.status} ({job.error}) while waiting for {what}\n{tail}")
        return None

    return wait_for(step, what, timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pings(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """STUDIO_REDIS_URL when it answers, else a private redis-server on a free loopback port."""
    given = os.environ.get("STUDIO_REDIS_URL")
    if given and _pings(given):
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port, folder = _free_port(), tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_for(lambda: _pings(url), "redis-server", timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def make_dataset(root: Path, frames: int = 8, size: int = 64) -> Path:
    """records.jsonl + 64x64 frames with a red and a green square + dataset.json (no split: no evaluation)."""
    from PIL import Image

    from pipeline.masks import encode_rle
    from pipeline.records import FrameRecord, ObjectAnn, write_records

    (root / "images" / "vid").mkdir(parents=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(frames):
        img = np.full((size, size, 3), 30, np.uint8)
        objects = []
        for oid, (label, colour) in enumerate([("circle", (230, 40, 40)), ("square", (40, 200, 60))]):
            w = int(rng.integers(10, 20))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - w))
            mask = np.zeros((size, size), np.uint8)
            mask[y:y + w, x:x + w] = 1
            img[mask == 1] = colour
            objects.append(ObjectAnn(oid, label, [x, y, x + w, y + w], int(mask.sum()), encode_rle(mask)))
        rel = f"images/vid/{i:06d}.jpg"
        Image.fromarray(img).save(root / rel, quality=95)
        records.append(FrameRecord(f"vid-{i}", "synthetic", "vid", i, rel, size, size, objects))
    write_records(records, root / "records.jsonl")
    meta = {"tool_version": "test", "sources": [], "frames": frames, "objects": 2 * frames,
            "labels": {"circle": frames, "square": frames}, "family": "smolvlm", "tasks": ["grounding"], "seed": 0,
            "warnings": []}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


class Fleet:
    """`python -m pipeline worker` processes, each the leader of its own process group."""

    def __init__(self, home: Path) -> None:
        self.home, self.procs = home, {}
        self.jobs: Any = None

    def start(self, name: str, queues: str = "training,preprocessing") -> str:
        """Start a single-slot worker (both queues by default); returns its node name once it advertises itself."""
        node = f"{name}@{socket.gethostname()}"
        log = open(self.home / f"{name}.log", "ab")
        self.procs[node] = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker", "--queues", queues, "--gpus", "1",
             "--name", node, "--loglevel", "warning"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(lambda: node in {w["name"] for w in self.jobs.workers()}, f"worker {node}")
        return node

    def kill(self, node: str) -> None:
        """kill -9 the worker's whole process group (main process and pool)."""
        proc = self.procs.pop(node)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()  # warm shutdown: nothing is running by now
        for node, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            self.procs.pop(node)


@pytest.fixture(scope="module")
def fleet(redis_url: str, tmp_path_factory: pytest.TempPathFactory,
          studio_home: Path) -> Iterator[tuple[Any, Fleet, Path]]:
    """(backend, fleet of two single-slot workers, dataset) on a private home and Redis key prefix."""
    from pipeline.jobs import get_backend
    from pipeline.jobs.process import process_alive
    from pipeline.jobs.redis_progress import RedisJobs
    from pipeline.tiny import ensure_tiny_model

    models = ensure_tiny_model("tiny-smolvlm").parent  # in the session's home: built once for every test file
    home = tmp_path_factory.mktemp("celery_home")
    (home / "models").symlink_to(models, target_is_directory=True)
    prefix = f"studio-test-{uuid.uuid4().hex[:10]}:"
    env = {"STUDIO_HOME": str(home), "STUDIO_JOBS": "celery", "STUDIO_REDIS_URL": redis_url,
           "STUDIO_REDIS_PREFIX": prefix, "STUDIO_WORKER_HEARTBEAT_TTL": "3", "STUDIO_CANCEL_GRACE": "30",
           "STUDIO_JOB_RETRIES": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        dataset = make_dataset(home / "datasets" / "shapes")
        backend = get_backend()
        workers = Fleet(home)
        workers.jobs = RedisJobs(redis_url, prefix)
        try:
            workers.start("w1")
            workers.start("w2")
            yield backend, workers, dataset
        finally:
            workers.stop_all()
            for data in workers.jobs.get_many(workers.jobs.ids()):
                if data.get("pid") and process_alive(data["pid"], None):
                    os.killpg(data["pid"], signal.SIGKILL)
            workers.jobs.clear()


def submit(backend: Any, dataset: Path, steps: int, *extra: str) -> Any:
    from pipeline.jobs import submit_train

    return submit_train(backend, preset="quick_test", model="tiny-smolvlm", data=dataset, max_steps=steps,
                        overrides=[*QUICK, *extra])


def file_events(run_dir: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "progress.jsonl").read_text().splitlines()]


def follow(backend: Any, job_id: int, **kwargs: Any) -> list[dict]:
    events = list(backend.watch(job_id, poll=0.2, timeout=600, **kwargs))
    assert events[-1]["event"] == "status" and events[-1]["status"] not in ("queued", "running"), events[-1]
    return events


def scripted(home: Path, name: str, **cfg: Any) -> Any:
    from pipeline.jobs import JobSpec

    run = home / "runs" / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return JobSpec(argv=[sys.executable, str(SCRIPTED), "--config", str(run / "config.yaml")], run_dir=str(run),
                   name=name, config={"scripted": cfg})


def test_status_changes_are_compare_and_set_and_a_silent_worker_loses_its_job(redis_url: str) -> None:
    from pipeline.jobs.redis_progress import RedisJobs

    jobs = RedisJobs(redis_url, f"studio-test-{uuid.uuid4().hex[:10]}:")
    try:
        job_id = jobs.create({"run_id": "r", "kind": "train", "argv": ["x"], "run_dir": "/none", "queue": "training"})
        assert jobs.cas(job_id, "queued", "running", expect_attempt=2) is None  # a message for another attempt
        running = jobs.cas(job_id, "queued", "running", expect_attempt=1, worker="w@h", alive="30:w@h", started_at=1.0)
        assert running is not None and running["status"] == "running" and running["worker"] == "w@h"
        assert jobs.cas(job_id, "queued", "running", expect_attempt=1) is None  # a second claim loses
        assert jobs.ids(active=True) == [job_id] and jobs.settle_lost(running) is None  # its heartbeat is alive
        jobs.r.delete(jobs.key(job_id, "alive"))
        lost = jobs.settle_lost(jobs.get(job_id))
        assert lost is not None and lost["status"] == "interrupted" and "w@h stopped sending" in lost["error"]
        assert jobs.ids(active=True) == [] and jobs.settle_lost(lost) is None
        changes = [(e.get("from_status"), e["status"], e["attempt"]) for _, e in jobs.read_all(job_id)]
        assert changes == [(None, "queued", 1), ("queued", "running", 1), ("running", "interrupted", 1)]
        jobs.append(job_id, [{"seq": 1, "event": "start"}, {"seq": 2, "event": "log", "step": 1}])
        assert jobs.last_seq(job_id) == 2 and jobs.read_all(job_id, jobs.read_all(job_id)[2][0])[0][1]["seq"] == 1
    finally:
        jobs.clear()


def test_worker_plan_gives_each_job_its_gpus() -> None:
    from pipeline.errors import UserError
    from pipeline.jobs.celery_app import queue_for
    from pipeline.jobs.worker import worker_plan

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
        plan = worker_plan(["training", "preprocessing"], None, 2)
        assert (plan["device"], plan["gpus"], plan["slots"]) == ("cuda", ["3", "5", "6", "7"], 2)
        assert plan["queues"] == ["training-2gpu", "preprocessing"]
        with pytest.raises(UserError, match="this machine shows 4 GPU"):
            worker_plan(["training"], 8, 1)
        patch.setenv("CUDA_VISIBLE_DEVICES", "")
        assert worker_plan(["preprocessing"], 3, 1)["slots"] == 3  # CPU: --gpus is the number of job slots
        with pytest.raises(UserError, match="unknown queue"):
            worker_plan(["gpu"], 1, 1)
        with pytest.raises(UserError, match="more than the 1 GPU"):
            worker_plan(["training"], 1, 2)
    assert [queue_for("train"), queue_for("train", 2), queue_for("evaluate")] == [
        "training", "training-2gpu", "preprocessing"]


def test_submit_progress_through_redis_to_success(fleet: tuple[Any, Fleet, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    backend, workers, dataset = fleet
    job = submit(backend, dataset, 2)
    assert job.queue == "training" and job.status in ("queued", "running")
    events = follow(backend, job.id)
    done = backend.get(job.id)
    assert events[-1] == {"event": "status", "job_id": job.id, "status": "succeeded", "attempt": 1}
    assert (done.status, done.exit_code, done.attempt) == ("succeeded", 0, 1)
    assert done.worker in workers.procs
    progress = [e for e in events if e.get("event") != "status"]
    assert progress == file_events(done.run_dir)  # every progress.jsonl line arrived through the stream, in order
    assert [e["seq"] for e in progress] == list(range(1, len(progress) + 1))
    assert [e["step"] for e in progress if e["event"] == "log"] == [1, 2]
    assert progress[-1]["event"] == "end" and progress[-1]["status"] == "succeeded"
    again = list(backend.watch(job.id, from_seq=2, poll=0.2, timeout=60))  # a reconnecting client
    assert [e for e in again if "seq" in e] == progress[2:] and again[-1]["status"] == "succeeded"
    exp = backend.store.get_experiment(job.run_id)  # the app's SQLite store records what the worker reported
    losses = [e["loss"] for e in progress if e["event"] == "log"]
    assert exp.status == "succeeded" and exp.summary["steps"] == 2 and exp.summary["final_loss"] == losses[-1]
    assert (Path(done.run_dir) / "adapter" / "adapter_config.json").is_file()
    assert main(["jobs", "show", str(job.id), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "succeeded" and shown["worker"] == done.worker
    assert [(h["from_status"], h["to_status"]) for h in shown["history"]] == [
        (None, "queued"), ("queued", "running"), ("running", "succeeded")]


def test_cancel_a_running_job(fleet: tuple[Any, Fleet, Path]) -> None:
    backend, _, dataset = fleet
    job = submit(backend, dataset, 2000, "training.save_steps=1000")  # far more steps than the cancel takes
    events = []
    for event in backend.watch(job.id, poll=0.2, timeout=600):
        events.append(event)
        if event.get("event") == "log":
            assert backend.cancel(job.id).cancel_requested is not None
    done = backend.get(job.id)
    assert events[-1]["status"] == "cancelled" and done.status == "cancelled" and done.exit_code == 0
    end = file_events(done.run_dir)[-1]
    assert end["event"] == "end" and end["status"] == "cancelled" and end["step"] < 2000
    assert (Path(done.run_dir) / f"checkpoint-{end['step']}" / "manifest.json").is_file()
    assert backend.store.get_experiment(job.run_id).status == "cancelled"


def test_worker_killed_mid_job_is_interrupted_then_resumed_elsewhere(fleet: tuple[Any, Fleet, Path]) -> None:
    from pipeline.jobs.launch import newest_checkpoint
    from pipeline.jobs.process import process_alive

    backend, workers, dataset = fleet
    # keep every checkpoint: with the preset's keep_checkpoints=1, checkpoint-2 is pruned as soon as checkpoint-4 is
    # complete, and a poll that missed that window waited for it forever on a busy machine
    job = submit(backend, dataset, 8, "training.keep_checkpoints=100")
    run = Path(job.run_dir)
    wait_for_job(backend, job.id, lambda j: j.status == "running" and j.pid, "a worker to start the trainer")
    wait_for_job(backend, job.id, lambda _: newest_checkpoint(run), "the first checkpoint")
    running = backend.get(job.id)
    os.killpg(running.pid, signal.SIGSTOP)  # frozen mid-run, however fast or slow this machine is
    assert running.status == "running" and running.pid
    workers.kill(running.worker)
    wait_for(lambda: not process_alive(running.pid, None), "the trainer to die with its worker")
    lost = wait_for(lambda: (j := backend.get(job.id)).status != "running" and j, "the heartbeat to expire")
    assert lost.status == "interrupted" and "stopped sending heartbeats" in lost.error
    assert backend.store.get_experiment(job.run_id).status == "interrupted"
    resumed = backend.resume(job.id)
    assert resumed.attempt == 2 and "--resume" in resumed.argv
    events = follow(backend, job.id)
    done = backend.get(job.id)
    assert (done.status, done.attempt) == ("succeeded", 2) and done.worker in workers.procs
    assert done.worker != running.worker
    workers.start("w3")  # two slots again for the next test
    log_steps = [e["step"] for e in file_events(done.run_dir) if e.get("event") == "log"]
    resume = next(e for e in file_events(done.run_dir) if e["event"] == "resume")
    assert resume["resumed_from"] >= 2 and log_steps[-1] == 8 and set(log_steps) == set(range(1, 9))
    assert [e["step"] for e in events if e.get("event") == "log"] == log_steps
    history = [(h["from_status"], h["to_status"], h["attempt"]) for h in backend.history(job.id)]
    assert ("running", "interrupted", 1) in history and history[-1] == ("running", "succeeded", 2)


def test_two_single_slot_workers_never_run_three_jobs_at_once(fleet: tuple[Any, Fleet, Path]) -> None:
    backend, _, _ = fleet
    # the scripted trainer (the trainer's run-folder contract, no model) keeps this test to seconds of CPU
    jobs = [backend.submit(scripted(backend.home, f"slot-{i}", total_steps=30, step_seconds=0.2)) for i in range(3)]
    extra = backend.submit(scripted(backend.home, "slot-extra", total_steps=30, step_seconds=0.2))
    cancelled = backend.cancel(extra.id)  # three jobs ahead of it and two slots: it is still queued
    assert cancelled.status == "cancelled"
    for job in jobs:
        follow(backend, job.id)
    finished = [backend.get(job.id) for job in jobs]
    assert [j.status for j in finished] == ["succeeded"] * 3
    assert len({j.worker for j in finished}) == 2
    spans = []
    for job in finished:
        history = backend.history(job.id)
        start = next(h["at"] for h in history if h["to_status"] == "running")
        end = next(h["at"] for h in history if h["from_status"] == "running")
        spans.append((start, end))
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    busy = peak = 0
    for _, change in edges:
        busy += change
        peak = max(peak, busy)
    assert peak <= 2
    assert [h["to_status"] for h in backend.history(extra.id)] == ["queued", "cancelled"]
    assert not (Path(extra.run_dir) / "progress.jsonl").exists()


def test_only_resumable_failures_are_retried(fleet: tuple[Any, Fleet, Path]) -> None:
    backend, _, _ = fleet
    crash = backend.submit(scripted(backend.home, "crash", total_steps=4, step_seconds=0.01, crash_at_step=2))
    killed = backend.submit(scripted(backend.home, "killed", total_steps=40, step_seconds=0.1, save_every=3))
    run = Path(killed.run_dir)
    wait_for_job(backend, killed.id, lambda _: (run / "checkpoint-3" / "manifest.json").is_file(), "a checkpoint")
    os.killpg(backend.get(killed.id).pid, signal.SIGKILL)  # e.g. the OOM killer: the worker itself survives
    follow(backend, crash.id)
    follow(backend, killed.id)
    crash, killed = backend.get(crash.id), backend.get(killed.id)
    assert (crash.status, crash.attempt, crash.retries, crash.error) == ("failed", 1, 0, "scripted crash at step 2")
    assert (killed.status, killed.attempt, killed.retries) == ("succeeded", 2, 1) and "--resume" in killed.argv
    retry = [h for h in backend.history(killed.id) if h["from_status"] == "running" and h["to_status"] == "queued"]
    assert len(retry) == 1 and "retry 1/1" in retry[0]["detail"] and "resume from checkpoint-" in retry[0]["detail"]
    steps = [e["step"] for e in file_events(killed.run_dir) if e.get("event") == "log"]
    assert steps[-1] == 40 and len(set(steps)) == 40


def test_the_app_in_celery_mode_runs_its_jobs_on_the_fleet(fleet: tuple[Any, Fleet, Path]) -> None:
    """STUDIO_JOBS=celery: the app's Start, Watch, jobs table, Cancel and Resume all go to the workers."""
    import psutil
    from gradio_client import Client

    from pipeline import service
    from pipeline.config import set_field
    from pipeline.rundir import progress_path, read_events
    from studio_app.launch import serve

    backend, workers, dataset = fleet
    worker_pids = {proc.pid for proc in workers.procs.values()}
    demo, url = serve()  # as `python app.py` starts: service.start_scheduler(), then the UI
    try:
        assert type(service.backend()) is type(backend)  # the fleet, not a local scheduler
        client = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})
        cfg = service.training_config(None, "tiny-smolvlm", "quick_test")
        for item in QUICK:
            key, _, value = item.partition("=")
            set_field(cfg, key, yaml.safe_load(value))
        started, job_id, _ = client.predict(dataset.name, "tiny-smolvlm", "quick_test", service.config_yaml(cfg), 6,
                                            "app-on-fleet", api_name="/start_training")
        # an idle worker may have claimed it already
        assert started["status"] in ("queued", "running") and started["max_steps"] == 6 and job_id == started["job_id"]

        running = wait_for_job(backend, job_id, lambda j: j.pid and j, "a worker to start the trainer")
        assert running.worker in workers.procs
        try:  # the trainer is a child of a worker's pool process (this process started the workers, not the job)
            parents = [p.pid for p in psutil.Process(running.pid).parents()]
            assert parents[0] != os.getpid() and set(parents) & worker_pids, parents
        except psutil.NoSuchProcess:
            pass  # already ended: its worker is recorded above and below
        mine = [" ".join(c.cmdline()) for c in psutil.Process().children()]  # the app's own processes
        assert not [c for c in mine if "pipeline train" in c], mine

        views = [out[0] for out in client.submit(job_id, 0, api_name="/watch_job")]
        assert views[-1]["status"] == "succeeded" and views[-1]["step"] == 6, views[-1]
        assert {"start", "log", "end"} <= {e.get("event") for v in views for e in v["events"]}
        done = backend.get(job_id)
        assert (done.status, done.worker) == ("succeeded", running.worker)
        assert f"on {running.worker} slots" in (Path(done.run_dir) / "train.log").read_text()

        listed = {row["job_id"]: row for row in service.list_jobs()}  # the app's jobs table
        assert (listed[job_id]["status"], listed[job_id]["worker"]) == ("succeeded", running.worker)
        table = client.predict(api_name="/list_jobs")
        assert [job_id, "succeeded"] in [row[:2] for row in table["data"]]
        # the app starts it from the quick_test preset: the run is labelled a smoke test
        assert (done.run_id, "app-on-fleet · succeeded · smoke test") in [(r, label) for label, r in
                                                                          service.run_choices()]
        cli = subprocess.run([sys.executable, "-m", "pipeline", "jobs", "list", "--json"], capture_output=True,
                             text=True, timeout=300, cwd=ROOT, env=dict(os.environ))
        assert cli.returncode == 0, cli.stderr
        shown = {job["id"]: job for job in json.loads(cli.stdout)}
        assert (shown[job_id]["status"], shown[job_id]["worker"]) == ("succeeded", running.worker)
        assert not (backend.home / "scheduler.lock").exists()  # no local scheduler ever ran for this home

        # Cancel and Resume from the app reach the worker (the scripted trainer: seconds of CPU)
        slow = backend.submit(scripted(backend.home, "app-cancel", total_steps=2000, step_seconds=0.05, save_every=5))
        wait_for_job(backend, slow.id, lambda j: (Path(j.run_dir) / "checkpoint-5" / "manifest.json").is_file(),
                     "a checkpoint of the job to cancel")
        assert client.predict(slow.id, api_name="/cancel_job")["job_id"] == slow.id
        cancelled = wait_for(lambda: (j := backend.get(slow.id)).status != "running" and j, "the cancel")
        assert (cancelled.status, cancelled.exit_code) == ("cancelled", 0)
        resumed, _ = client.predict(slow.id, api_name="/resume_job")
        assert resumed["attempt"] == 2 and resumed["status"] in ("queued", "running")
        wait_for_job(backend, slow.id, lambda j: any(e.get("event") == "resume" for e in read_events(
            progress_path(j.run_dir))), "the resumed attempt to start")
        assert service.cancel_job(slow.id)["status"] in ("running", "cancelled")
        again = wait_for(lambda: (j := backend.get(slow.id)).status != "running" and j, "the second cancel")
        assert (again.status, again.attempt) == ("cancelled", 2) and again.worker in workers.procs
        resume = next(e for e in file_events(again.run_dir) if e["event"] == "resume")
        assert resume["step"] >= 5
        assert any(h["detail"] == f"resume from checkpoint-{resume['step']}" for h in backend.history(slow.id))
    finally:
        demo.close()
        service._BACKENDS.pop((backend.home, "celery"), None)


def test_the_app_in_celery_mode_converts_and_validates_on_a_preprocessing_worker(
        fleet: tuple[Any, Fleet, Path], tmp_path: Path) -> None:
    """A conversion and a validation started from the app are jobs on the `preprocessing` queue, run by a CPU worker
    that consumes only that queue (the training workers stop consuming it for this test)."""
    from gradio_client import Client, handle_file

    from pipeline import service
    from pipeline.sample import generate_sample
    from pipeline.steps import read_result
    from studio_app.launch import serve

    backend, workers, dataset = fleet
    cpu = workers.start("cpu", queues="preprocessing")
    trainers = [node for node in workers.procs if node != cpu]
    control = backend._app().control
    control.cancel_consumer("preprocessing", destination=trainers, reply=True, timeout=10)
    demo, url = serve()
    try:
        client = Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 300})
        sample = generate_sample(tmp_path / "session", frames=24, width=64, height=48, export_every=5, seed=1)
        uploads = [handle_file(str(sample.demo_zips[0])), handle_file(str(sample.demo_videos[0]))]
        labels = {"headers": ["object id", "label in export", "name"], "data": []}
        summary = client.predict(uploads, False, "fleet-made", labels, ["grounding"], "tiny-smolvlm", 1, False,
                                 api_name="/convert")
        assert summary["dataset"] == "fleet-made" and summary["frames"] > 0
        report, markdown, plots, files = client.predict(dataset.name, api_name="/validate")
        assert report["dataset"] == dataset.name and markdown.startswith("# Data quality report") and len(files) == 2

        steps = {job.kind: job for job in backend.list() if job.kind in ("convert", "validate")}
        for kind, job in steps.items():
            assert (job.status, job.queue, job.worker) == ("succeeded", "preprocessing", cpu), (kind, job)
            assert read_result(job.run_dir)["kind"] == kind
            assert f"on {cpu}" in (Path(job.run_dir) / "train.log").read_text()
            streamed = [e for _, e in workers.jobs.read_all(job.id) if e.get("event") != "status"]
            assert {"start", "progress", "end"} <= {e["event"] for e in streamed}  # forwarded through Redis
        assert (backend.home / "datasets" / "fleet-made" / "dataset.json").is_file()
        assert (backend.home / "reports" / dataset.name / "report.md").is_file()
        assert not (backend.home / "scheduler.lock").exists()  # the app ran no job itself
    finally:
        demo.close()
        service._BACKENDS.pop((backend.home, "celery"), None)
        control.add_consumer("preprocessing", destination=trainers, reply=True, timeout=10)
