"""Several gradio_client users on one live app at once: convert, submit, watch, cancel, resume (real tiny training).

User 0 trains on its dataset; users 1 and 2 submit behind it (one slot: they queue), every user watches job 1, users
1 and 2 cancel their queued jobs, user 0 cancels its running job after step 2 and resumes it to the end. A monitor
polls the job list throughout. Everything each user saw is recorded for the tests to check.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .appserver import AppServer
from .hostile import Sample

USERS = 3
MAX_STEPS = 16
CANCEL_AT = 2
LABELS = {"headers": ["object id", "label in export", "name"], "data": [], "metadata": None}


@dataclass
class Watch:
    """One user's stream of /watch_job views of a job."""

    views: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    error: str | None = None


@dataclass
class Scenario:
    """What the users did and saw."""

    converted: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    submitted: list[dict[str, Any]] = field(default_factory=list)
    watches: list[Watch] = field(default_factory=list)
    cancelled_queued: list[dict[str, Any]] = field(default_factory=list)
    cancel_running: dict[str, Any] = field(default_factory=dict)
    resumed: dict[str, Any] = field(default_factory=dict)
    resume_watch: Watch = field(default_factory=Watch)
    running_counts: list[int] = field(default_factory=list)
    checkpoints_when_cancelled: dict[str, str | None] = field(default_factory=dict)
    job_rows: list[list[Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.submitted[0]["run_id"]


def convert(client: Any, sample: Sample, name: str) -> dict[str, Any]:
    """Upload the demo export and its video, convert them into STUDIO_HOME/datasets/<name>."""
    from gradio_client import handle_file

    files = [handle_file(str(sample.demo_zip)), handle_file(str(sample.demo_video))]
    return client.predict(files, False, name, LABELS, ["grounding"], "tiny-smolvlm", 1, False, api_name="/convert")


def config_text() -> str:
    """quick_test with 16 micro-batches per optimizer step: steps slow enough for a cancel to land mid-run."""
    from pipeline.config import config_to_yaml, set_field
    from pipeline.presets import get_preset

    cfg = get_preset("quick_test", model="tiny-smolvlm")
    for key, value in {"training.grad_accum": 16, "training.max_steps": MAX_STEPS, "training.save_steps": 100,
                       "data.max_length": 160}.items():
        set_field(cfg, key, value)
    return config_to_yaml(cfg)


def start(client: Any, dataset: str, name: str) -> dict[str, Any]:
    job, _, _ = client.predict(dataset, "tiny-smolvlm", "quick_test", config_text(), MAX_STEPS, name,
                               api_name="/start_training")
    return job


def watch(client: Any, job_id: int, from_seq: int = 0, reached: threading.Event | None = None) -> Watch:
    """Follow a job until its stream ends: every view and the last seq; sets `reached` once step CANCEL_AT shows."""
    seen = Watch(last_seq=from_seq)
    try:
        for output in client.submit(job_id, from_seq, api_name="/watch_job"):
            view, seq = output[0], output[-1]
            if isinstance(view, dict):
                seen.views.append({**view, "received": time.time()})
                seen.last_seq = int(seq or seen.last_seq)
                if reached is not None and (view.get("step") or 0) >= CANCEL_AT:
                    reached.set()
    except Exception as exc:  # noqa: BLE001 - recorded for the test to report
        seen.error = f"{type(exc).__name__}: {exc}"
    return seen


def _monitor(client: Any, scenario: Scenario, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            rows = client.predict(api_name="/list_jobs")["data"]
            scenario.running_counts.append(sum(1 for row in rows if "running" in row))
        except Exception as exc:  # noqa: BLE001
            scenario.errors.append(f"list_jobs: {exc}")
        stop.wait(0.5)


def run(server: AppServer, sample: Sample) -> Scenario:
    """The whole multi-user session; returns what was seen (errors are recorded, not raised)."""
    scenario = Scenario()
    clients = [server.client() for _ in range(USERS)]
    with ThreadPoolExecutor(USERS) as pool:
        scenario.converted = list(pool.map(lambda k: convert(clients[k], sample, f"user{k}"), range(USERS)))
    stop = threading.Event()
    monitor = threading.Thread(target=_monitor, args=(server.client(), scenario, stop), daemon=True)
    monitor.start()
    try:
        scenario.submitted.append(start(clients[0], "user0", "user0-run"))
        with ThreadPoolExecutor(USERS) as pool:
            queued = [pool.submit(start, clients[k], f"user{k}", f"user{k}-run") for k in range(1, USERS)]
            scenario.submitted += [f.result() for f in queued]
            job0, reached = scenario.submitted[0]["job_id"], threading.Event()
            watchers = [pool.submit(watch, clients[k], job0, 0, reached if k == 0 else None) for k in range(USERS)]
            if not reached.wait(600):
                raise AssertionError(f"job {job0} never reached step {CANCEL_AT}")
            # the queued jobs first: once job 1 stops, its slot must not go to them
            scenario.cancelled_queued = [clients[k].predict(scenario.submitted[k]["job_id"], api_name="/cancel_job")
                                         for k in range(1, USERS)]
            scenario.cancel_running = {"asked": time.time(), **clients[0].predict(job0, api_name="/cancel_job")}
            scenario.watches = [w.result(timeout=600) for w in watchers]
        scenario.checkpoints_when_cancelled = _checkpoints(server.home / "runs" / scenario.run_id)
        scenario.resumed, _ = clients[0].predict(job0, api_name="/resume_job")
        scenario.resume_watch = watch(clients[0], job0, scenario.watches[0].last_seq)
        scenario.job_rows = clients[0].predict(api_name="/list_jobs")["data"]
    finally:
        stop.set()
        monitor.join(timeout=10)
    return scenario


def _checkpoints(run: Any) -> dict[str, str | None]:
    """checkpoint-N folder -> what is wrong with it (None: complete and valid)."""
    from pipeline.rundir import check_manifest

    return {path.name: check_manifest(path) for path in sorted(run.glob("checkpoint-*"))}
