"""`python -m pipeline experiments list|show|compare|delete|note|tag`."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="exp_command", metavar="COMMAND", required=True)
    listing = sub.add_parser("list", help="experiments, filtered and sorted")
    listing.add_argument("--status", action="append", help="only this status (repeatable)")
    listing.add_argument("--model", help="only this model")
    listing.add_argument("--tag", help="only experiments with this tag")
    listing.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                         help="config/metric condition (repeatable): lora.r=16, final_loss<0.5, model.name!=x")
    listing.add_argument("--sort", default="created",
                         help="created (default), updated, name, status, model, or a metric/config key")
    order = listing.add_mutually_exclusive_group()
    order.add_argument("--asc", action="store_true", help="ascending order")
    order.add_argument("--desc", action="store_true", help="descending order")
    listing.add_argument("--limit", type=int)
    listing.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one experiment with its config and summary")
    show.add_argument("run_id")
    show.add_argument("--json", action="store_true")
    comp = sub.add_parser("compare", help="config diff and metric curves of several runs")
    comp.add_argument("run_ids", nargs="+")
    comp.add_argument("--html", help="also write the table and curves as an HTML page")
    comp.add_argument("--json", action="store_true")
    delete = sub.add_parser("delete", help="delete an experiment's records and run folder (not while it runs)")
    delete.add_argument("run_id")
    note = sub.add_parser("note", help="set an experiment's notes")
    note.add_argument("run_id")
    note.add_argument("text")
    note.add_argument("--append", action="store_true", help="add a line instead of replacing")
    tag = sub.add_parser("tag", help="tag an experiment")
    tag.add_argument("run_id")
    tag.add_argument("tag")
    tag.add_argument("--remove", action="store_true")


def _line(exp: Any) -> str:
    loss = exp.summary.get("final_loss")
    best = exp.summary.get("best_metric")
    metrics = f"loss {loss:.4g}" if isinstance(loss, float) else "loss -"
    if isinstance(best, float):
        metrics += f"  best {best:.4g}"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(exp.created_at))
    tags = f"  [{', '.join(exp.tags)}]" if exp.tags else ""
    return f"{exp.run_id}  {when}  {exp.status:<11} {exp.model or '-':<16} {metrics}  {exp.name}{tags}"


def run(args: argparse.Namespace) -> int:
    from .. import experiments as ex
    from ..jobs import open_store, recover

    recover(open_store())  # a run whose process is gone shows as interrupted, not running
    command = args.exp_command
    if command == "list":
        descending = True if args.desc else False if args.asc else None
        rows = ex.list_experiments(status=args.status, model=args.model, tag=args.tag, where=args.where,
                                   sort=args.sort, descending=descending, limit=args.limit)
        if args.json:
            print(json.dumps([r.to_dict() for r in rows], sort_keys=True))
        else:
            for row in rows:
                print(_line(row))
        return 0
    if command == "show":
        exp = ex.get_experiment(args.run_id)
        if args.json:
            print(json.dumps(exp.to_dict(), sort_keys=True))
        else:
            print(_line(exp))
            print(f"  run_dir: {exp.run_dir}\n  dataset: {exp.dataset_fingerprint or '-'}")
            print(f"  summary: {json.dumps(exp.summary, sort_keys=True)}")
            if exp.notes:
                print("  notes: " + exp.notes.replace("\n", "\n         "))
        return 0
    if command == "compare":
        comparison = ex.compare(args.run_ids)
        if args.json:
            print(json.dumps({"runs": [r.run_id for r in comparison.runs], "diff": comparison.diff,
                              "curves": comparison.curves}, sort_keys=True))
        else:
            print(comparison.table())
        if args.html:
            print(f"wrote {ex.write_comparison_html(comparison, args.html)}")
        return 0
    if command == "delete":
        folder = ex.delete_experiment(args.run_id)
        print(f"deleted {args.run_id}" + (f" and {folder}" if folder else " (run folder left in place)"))
        return 0
    if command == "note":
        ex.set_note(args.run_id, args.text, append=args.append)
        return 0
    ex.tag(args.run_id, args.tag, remove=args.remove)
    return 0
