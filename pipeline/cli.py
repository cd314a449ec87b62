"""`python -m pipeline <verb>`: each verb lives in `pipeline/commands/<verb>.py` (HELP, add_arguments, run)."""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from . import __version__, quiet
from .errors import UserError

VERBS: dict[str, str] = {
    "sample": "generate the built-in synthetic SAM 2 session in every input format",
    "convert": "ingest SAM 2 exports into canonical records and training formats",
    "validate": "data quality report for an export or a converted dataset",
    "split": "leakage-free train/val/test splits of a converted dataset",
    "train": "fine-tune a VLM (LoRA, QLoRA or full) on a converted dataset",
    "evaluate": "score a model on a split with box/mask geometry (IoU, mAP)",
    "export": "export an adapter or merged model with its model card",
    "push": "push an export folder to the Hugging Face Hub",
    "serve": "serve an export over the OpenAI API (transformers serve or vLLM)",
    "demo": "the whole offline pipeline end to end on generated data",
    "jobs": "submit, list, watch, cancel and resume background jobs",
    "experiments": "list, compare and delete experiments",
    "worker": "start a Celery worker for the distributed job backend",
    "step": "run a queued convert / validate / evaluate / export job from its folder (job runners start it)",
}


def _command_module(verb: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"pipeline.commands.{verb}")
    except ModuleNotFoundError as exc:
        if exc.name == f"pipeline.commands.{verb}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="SAM2 VLM Studio command line.")
    parser.add_argument("--version", action="version", version=f"sam2-vlm-studio {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, help_text in VERBS.items():
        verb_parser = sub.add_parser(verb, help=help_text, description=help_text)
        module = _command_module(verb)
        if module is not None:
            module.add_arguments(verb_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the verb; bad input becomes one `error:` line and exit code 2."""
    quiet.install()
    args = build_parser().parse_args(argv)
    if not args.verb:
        build_parser().print_help()
        return 2
    module = _command_module(args.verb)
    if module is None:
        print(f"error: '{args.verb}' is not implemented yet in this version", file=sys.stderr)
        return 2
    args.raw_argv = list(sys.argv[1:] if argv is None else argv)  # what `--submit` queues as a job
    try:
        return int(module.run(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
