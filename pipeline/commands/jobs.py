"""`python -m pipeline jobs submit|list|show|watch|cancel|resume|scheduler`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .train_options import add_train_options, config_from_args

SUBCOMMANDS = ("submit", "list", "show", "watch", "cancel", "resume", "scheduler")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="jobs_command", metavar="COMMAND", required=True)
    submit = sub.add_parser("submit", help="queue a training run; prints the job id and returns while it runs")
    add_train_options(submit)  # the same options as `train`
    submit.add_argument("--gpus", type=int, default=1, help="GPUs for this job (more than 1: accelerate launch)")
    submit.add_argument("--name", help="experiment name")
    submit.add_argument("--tag", action="append", default=[], help="experiment tag (repeatable)")
    submit.add_argument("--json", action="store_true", help="print the job as JSON")
    listing = sub.add_parser("list", help="jobs with status and queue position")
    listing.add_argument("--status", action="append", help="only this status (repeatable)")
    listing.add_argument("--json", action="store_true")
    for name, text in (("show", "one job: status, pid, run_dir, history"), ("cancel", "stop a queued/running job"),
                       ("resume", "run an interrupted/failed/cancelled job again from its newest checkpoint")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("job_id", type=int)
        cmd.add_argument("--json", action="store_true")
    watch = sub.add_parser("watch", help="follow a job's progress until it ends")
    watch.add_argument("job_id", type=int)
    watch.add_argument("--from-seq", type=int, default=0, help="replay events from this seq (after a reconnect)")
    watch.add_argument("--timeout", type=float, help="stop watching after this many seconds")
    watch.add_argument("--json", action="store_true", help="print every event as a JSON line")
    sub.add_parser("scheduler", help="run the job scheduler in the foreground until the queue is empty")


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _job_line(job: Any) -> str:
    where = f"#{job.position}" if job.position else (f"pid {job.pid}" if job.pid and job.status == "running" else "")
    return f"{job.id:>5}  {job.status:<11} {where:<10} {job.kind:<8} try {job.attempt}  {job.run_id}  {job.run_dir}"


def _print_job(job: Any, as_json: bool, history: list[dict] | None = None) -> None:
    if as_json:
        data = job.to_dict()
        if history is not None:
            data["history"] = history
        print(json.dumps(data, sort_keys=True))
        return
    print(f"job {job.id}: {job.status}" + (f" (queue position {job.position})" if job.position else ""))
    for key in ("kind", "run_id", "run_dir", "attempt", "pid", "gpu_ids", "exit_code", "queue_reason"):
        value = getattr(job, key)
        if value not in (None, [], ""):
            print(f"  {key}: {value}")
    print(f"  created: {_age(job.created_at)}  started: {_age(job.started_at)}  ended: {_age(job.ended_at)}")
    if job.error:
        print("  error: " + job.error.replace("\n", "\n         "))
    for row in history or []:
        detail = f" ({row['detail']})" if row["detail"] else ""
        print(f"  {_age(row['at'])}  {row['from_status'] or '-'} -> {row['to_status']}  try {row['attempt']}{detail}")


def _watch(backend: Any, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    bar = None
    final = None
    try:
        for event in backend.watch(args.job_id, from_seq=args.from_seq, timeout=args.timeout):
            if args.json:
                print(json.dumps(event, sort_keys=True), flush=True)
            if event.get("event") == "status":
                if not args.json and (final is None or final["status"] != event["status"]):
                    tqdm.write(f"job {event['job_id']}: {event['status']}", file=sys.stderr)
                final = event
                continue
            if args.json or not isinstance(event.get("step"), int):
                continue
            if bar is None:
                bar = tqdm(total=event.get("total_steps"), desc=f"job {args.job_id}", unit="step", file=sys.stderr)
            if event.get("stage") and event.get("total_steps") != bar.total:  # a step job's next stage (its own bar)
                bar.reset(total=event.get("total_steps"))
                bar.set_description(f"job {args.job_id} {event['stage']}", refresh=False)
            bar.n = event["step"]
            if "loss" in event:
                bar.set_postfix(loss=event["loss"], refresh=False)
            bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    if final is not None and final.get("error") and not args.json:
        print(f"error: {final['error'].splitlines()[-1] if final['error'] else ''}", file=sys.stderr)
    return 0 if final is None or final["status"] in ("succeeded", "queued", "running") else 1


def run(args: argparse.Namespace) -> int:
    from ..jobs import get_backend, open_store, submit_train

    if args.jobs_command == "scheduler":
        from ..home import studio_home
        from ..jobs.scheduler import serve

        return serve(open_store(), studio_home())  # settles jobs whose process is gone before it starts
    backend = get_backend()
    backend.recover()  # jobs whose process (or worker) is gone are shown as interrupted, not running
    command = args.jobs_command
    if command == "submit":
        job = submit_train(backend, train_config=config_from_args(args), config=args.config, name=args.name,
                           gpus=args.gpus, tags=args.tag)
        if args.json:
            print(json.dumps(job.to_dict(), sort_keys=True))
        else:
            print(job.id)
        return 0
    if command == "list":
        jobs = backend.list(status=args.status)
        if args.json:
            print(json.dumps([job.to_dict() for job in jobs], sort_keys=True))
        else:
            for job in jobs:
                print(_job_line(job))
        return 0
    if command == "watch":
        return _watch(backend, args)
    job = {"show": backend.get, "cancel": backend.cancel, "resume": backend.resume}[command](args.job_id)
    history = None
    if command == "show":  # the Celery backend keeps a job's history in Redis
        history = backend.history(job.id) if hasattr(backend, "history") else open_store().transitions(job.id)
    _print_job(job, args.json, history)
    return 0
