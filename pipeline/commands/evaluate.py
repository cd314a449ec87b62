"""`python -m pipeline evaluate`: score a run (or a model + adapter) on a split with box/mask geometry."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UserError

HELP = "score a model on a split with box/mask geometry (IoU, mAP)"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `evaluate` verb."""
    parser.add_argument("--submit", action="store_true",
                        help="queue it as a job (local scheduler, or a `preprocessing` worker) and print its id")
    parser.add_argument("run", nargs="?", metavar="RUN", help="a run folder written by `train`")
    parser.add_argument("--model", metavar="M", help="instead of RUN: a registry key, Hub id or model folder")
    parser.add_argument("--adapter", metavar="DIR", help="with --model: a LoRA adapter folder")
    parser.add_argument("--data", metavar="DATASET", help="converted dataset (default: the one RUN trained on)")
    parser.add_argument("--split", default="test", help="split to score: test, val or train (default test)")
    parser.add_argument("--limit", type=_positive, metavar="N", help="score a fixed spread of N examples")
    parser.add_argument("--batch-size", type=_positive, default=8, metavar="B", help="generation batch (default 8)")
    parser.add_argument("--checkpoint", default="best", metavar="best|last|N",
                        help="which weights of RUN: best (best.json; default), last, or a step number")
    parser.add_argument("--out", metavar="DIR", help="output folder (default RUN/eval/<split>)")
    parser.add_argument("--no-base", action="store_true", help="skip the base model (before) evaluation")
    parser.add_argument("--no-baseline", action="store_true", help="skip the mean-box baseline")
    parser.add_argument("--max-new-tokens", type=_positive, metavar="N",
                        help="generation cap (default: longest truth answer + margin)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument("--compare", nargs="+", metavar="EVAL_DIR",
                        help="instead of evaluating: put finished evaluation folders side by side into --out")


def _print_summary(result: Any) -> None:
    from ..eval_report import comparison_markdown

    named = {result.names.get(role, role): metrics for role, metrics in result.comparison.items()}
    table = comparison_markdown(named, "evaluation", per_label=False)
    print("\n".join(table.splitlines()[2:]).rstrip())
    for note in result.notes:
        print(f"note: {note}")
    print(f"wrote {result.out}")


def run(args: argparse.Namespace) -> int:
    """Evaluate RUN or --model (+ --adapter), or compare finished evaluations; print the metric table."""
    if getattr(args, "submit", False):
        from ..steps import print_submitted

        return print_submitted("evaluate", args.raw_argv)
    if args.compare:
        if not args.out:
            raise UserError("--compare needs --out DIR")
        from ..eval_report import compare_evaluations

        files = compare_evaluations(args.compare, args.out, overwrite=args.overwrite)
        print(open(files["comparison"], encoding="utf-8").read().rstrip())
        print(f"wrote {args.out}")
        return 0
    if bool(args.run) == bool(args.model):
        raise UserError("give a RUN folder or --model M (not both)")
    if args.adapter and not args.model:
        raise UserError("--adapter goes with --model (a RUN already knows its adapter)")
    common = {"split": args.split, "limit": args.limit, "batch_size": args.batch_size, "out": args.out,
              "with_base": not args.no_base, "with_baseline": not args.no_baseline,
              "max_new_tokens": args.max_new_tokens, "overwrite": True if args.overwrite else None}
    if args.model and not args.data:
        raise UserError("--model needs --data DATASET")
    try:
        result = _evaluate(args, common)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:  # a model that fails to load or generate: one line, no traceback
        hint = " (out of memory: lower --batch-size)" if "out of memory" in str(exc) else ""
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: evaluation failed: {type(exc).__name__}: {first}{hint}", file=sys.stderr)
        return 1
    _print_summary(result)
    return 0


def _evaluate(args: argparse.Namespace, common: dict[str, Any]) -> Any:
    from ..evaluate import evaluate_model, evaluate_run

    if args.run:
        return evaluate_run(args.run, dataset=args.data, checkpoint=args.checkpoint, **common)
    return evaluate_model(args.model, adapter=args.adapter, dataset=args.data, **common)
