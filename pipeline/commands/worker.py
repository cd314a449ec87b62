"""`python -m pipeline worker`: a Celery worker of the distributed job backend (STUDIO_JOBS=celery)."""

from __future__ import annotations

import argparse
import json
import time

HELP = "start a Celery worker for the distributed job backend"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `worker` verb."""
    parser.add_argument("--queues", default="training,preprocessing", metavar="Q[,Q]",
                        help="queues to consume: training, preprocessing (default both)")
    parser.add_argument("--gpus", type=int, metavar="N",
                        help="GPUs (job slots on a CPU machine) this worker offers; default: every visible GPU, or 1")
    parser.add_argument("--gpus-per-job", type=int, default=1, metavar="K",
                        help="GPUs each job gets; concurrency = N // K (default 1)")
    parser.add_argument("--name", help="worker node name (default studio-<pid>@<host>; %%h is the host name)")
    parser.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--list", action="store_true", help="list the live workers and exit")
    parser.add_argument("--json", action="store_true", help="with --list: one JSON list")


def run(args: argparse.Namespace) -> int:
    """Start the worker (blocks until it is stopped), or list the live workers."""
    if args.list:
        return _list(args.json)
    from ..jobs.worker import start_worker

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    return start_worker(queues, gpus=args.gpus, gpus_per_job=args.gpus_per_job, name=args.name,
                        loglevel=args.loglevel)


def _list(as_json: bool) -> int:
    from ..jobs.redis_progress import RedisJobs

    jobs = RedisJobs()
    jobs.ping()
    workers = jobs.workers()
    running = [j for j in jobs.get_many(jobs.ids(active=True)) if j.get("status") == "running"]
    for worker in workers:
        worker["running_jobs"] = sorted(j["id"] for j in running if j.get("worker") == worker["name"])
    if as_json:
        print(json.dumps(workers, sort_keys=True))
        return 0
    if not workers:
        print("no live workers (start one with `python -m pipeline worker`)")
    for w in workers:
        age = time.time() - float(w.get("seen") or 0)
        print(f"{w['name']:<32} {w['device']:<4} gpus {','.join(w['gpus']):<8} slots {w['slots']} "
              f"busy {len(w['running_jobs'])}  queues {','.join(w['queues'])}  seen {age:.0f}s ago")
    return 0
