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
    parser.add_argument("--convention", metavar="NAME",
                        help="with --model or --endpoint: the coordinate convention of the answers (json, llava, "
                             "qwen2_vl, ...); default: studio.json, the registry, or the family in the folder's "
                             "config.json")
    parser.add_argument("--system", metavar="TEXT",
                        help="with --model: a system prompt written before every prompt, as the model trained with "
                             "it (default: LLaMA-Factory's template default for a folder it trained; '' for none)")
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
    endpoint = parser.add_argument_group("an OpenAI-compatible endpoint instead of a local model (docs/SERVING.md)")
    endpoint.add_argument("--endpoint", metavar="URL", help="base URL, e.g. http://127.0.0.1:8000/v1 (needs --data)")
    endpoint.add_argument("--api-model", metavar="NAME", help="model name to request (default: the first listed)")
    endpoint.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    endpoint.add_argument("--concurrency", type=_positive, default=4, metavar="K",
                          help="requests in flight (default 4)")
    endpoint.add_argument("--retries", type=int, default=4, metavar="R",
                          help="retries per request on connection errors, timeouts, 429 and 5xx (default 4)")


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
    if getattr(args, "endpoint", None):
        return _endpoint(args)
    if bool(args.run) == bool(args.model):
        raise UserError("give a RUN folder, --model M or --endpoint URL (one of them)")
    if args.convention and not args.model:
        raise UserError("--convention goes with --model (a RUN already knows its convention)")
    if args.adapter and not args.model:
        raise UserError("--adapter goes with --model (a RUN already knows its adapter)")
    if args.system is not None and not args.model:
        raise UserError("--system goes with --model (a RUN trained with its own prompts)")
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


def _endpoint(args: argparse.Namespace) -> int:
    from ..endpoint_eval import evaluate_endpoint

    if args.run or args.model or args.adapter:
        raise UserError("--endpoint scores the served model: give no RUN, --model or --adapter with it")
    if not args.data:
        raise UserError("--endpoint needs --data DATASET")
    result = evaluate_endpoint(args.endpoint, args.data, split=args.split, limit=args.limit,
                               api_model=args.api_model, api_key_env=args.api_key_env, out=args.out,
                               convention=args.convention, concurrency=args.concurrency, retries=args.retries,
                               max_new_tokens=args.max_new_tokens, with_baseline=not args.no_baseline,
                               overwrite=True if args.overwrite else None)
    _print_summary(result)
    return 0


def _evaluate(args: argparse.Namespace, common: dict[str, Any]) -> Any:
    from ..evaluate import evaluate_model, evaluate_run

    if args.run:
        return evaluate_run(args.run, dataset=args.data, checkpoint=args.checkpoint, **common)
    return evaluate_model(args.model, adapter=args.adapter, dataset=args.data, convention=args.convention,
                          system=args.system, **common)
