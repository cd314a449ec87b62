"""Starting a Celery worker (`python -m pipeline worker`): what it offers (device, GPUs, job slots, queues), the
worker process itself, and its advert in Redis (which also settles jobs of dead workers when it starts)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from typing import Any

from ..errors import UserError
from .celery_app import QUEUES, log, make_app, worker_queues
from .process import step_slots
from .redis_progress import RedisJobs, heartbeat_ttl_s


def detect_gpus() -> list[str]:
    """Physical ids of this machine's GPUs: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L` (none: [])."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def worker_plan(queues: list[str], gpus: int | None, gpus_per_job: int) -> dict[str, Any]:
    """What a worker offers: device, GPU ids, job slots (= GPUs // GPUs per job) and the queues it consumes."""
    found = detect_gpus()
    device = "cuda" if found else "cpu"
    count = len(found) if gpus is None and found else (gpus if gpus is not None else 1)
    if gpus is None and not found and queues == ["preprocessing"]:
        count = step_slots()  # a CPU `preprocessing` worker: STUDIO_STEP_SLOTS step jobs at once (half the cores)
    if count < 1 or gpus_per_job < 1:
        raise UserError(f"--gpus ({count}) and --gpus-per-job ({gpus_per_job}) must be at least 1")
    if found and count > len(found):
        raise UserError(f"--gpus {count}: this machine shows {len(found)} GPU(s) ({','.join(found)})")
    if gpus_per_job > count:
        raise UserError(f"--gpus-per-job {gpus_per_job} is more than the {count} GPU(s) this worker has")
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        raise UserError(f"unknown queue(s) {', '.join(unknown) or '(none)'}: use {', '.join(QUEUES)}")
    ids = found[:count] if found else [str(i) for i in range(count)]
    return {"device": device, "gpus": ids, "gpus_per_job": gpus_per_job, "slots": count // gpus_per_job,
            "queues": worker_queues(queues, gpus_per_job), "host": socket.gethostname()}


def start_worker(queues: list[str], gpus: int | None = None, gpus_per_job: int = 1, name: str | None = None,
                 loglevel: str = "info") -> int:
    """Run a Celery worker in this process until it is stopped (prefork pool, one process per job slot)."""
    from celery.utils.nodenames import default_nodename, host_format

    plan = worker_plan(queues, gpus, gpus_per_job)
    RedisJobs().ping()
    os.environ.update(STUDIO_WORKER_GPUS=",".join(plan["gpus"]), STUDIO_WORKER_DEVICE=plan["device"],
                      STUDIO_WORKER_GPUS_PER_JOB=str(gpus_per_job))
    nodename = host_format(default_nodename(name or f"studio-{os.getpid()}@%h"))
    _advertise_when_ready(nodename, {**plan, "pid": os.getpid()})
    argv = ["worker", "--queues", ",".join(plan["queues"]), "--concurrency", str(plan["slots"]), "--hostname",
            nodename, "--pool", "prefork", "--loglevel", loglevel, "--without-gossip", "--without-mingle"]
    make_app().worker_main(argv)
    return 0


def _advertise_when_ready(nodename: str, info: dict[str, Any]) -> None:
    """Once the worker is up: settle jobs of dead workers, then keep an advert of this worker alive in Redis."""
    import redis
    from celery.signals import worker_ready, worker_shutdown

    stop = threading.Event()
    ttl = heartbeat_ttl_s()

    def loop() -> None:
        jobs = RedisJobs()
        try:
            jobs.sweep()
        except redis.RedisError as exc:
            log.warning("could not sweep lost jobs: %s", exc)
        while not stop.is_set():
            try:
                jobs.advertise(nodename, info, ttl)
            except redis.RedisError as exc:
                log.warning("could not advertise worker %s: %s", nodename, exc)
            stop.wait(max(0.5, ttl / 3))

    def on_ready(**_: Any) -> None:
        threading.Thread(target=loop, name="studio-advert", daemon=True).start()

    def on_shutdown(**_: Any) -> None:
        stop.set()
        try:
            RedisJobs().retire(nodename)
        except redis.RedisError:
            pass

    worker_ready.connect(on_ready, weak=False)
    worker_shutdown.connect(on_shutdown, weak=False)
