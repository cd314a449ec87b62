"""`python -m pipeline step JOB`: run a step job (convert, validate, evaluate, export) from its folder.

The job runners start this; you never need to. JOB/request.json says what to run; progress goes to
JOB/progress.jsonl and the result to JOB/result.json (see `pipeline.step_runner`).
"""

from __future__ import annotations

import argparse

HELP = "run a queued convert / validate / evaluate / export job from its folder (the job runners start it)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_dir", metavar="JOB", help="the job's folder (STUDIO_HOME/jobs/<kind>-<id>)")


def run(args: argparse.Namespace) -> int:
    from ..step_runner import run_step

    return run_step(args.job_dir)
