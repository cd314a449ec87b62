"""`python -m pipeline train`: fine-tune a VLM (LoRA, QLoRA or full) on a converted dataset into a run folder."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UserError
from ..rundir import log_path

HELP = "fine-tune a VLM (LoRA, QLoRA or full) on a converted dataset, or GRPO-refine a run (--from RUN)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `train` verb: the shared training options plus --resume and --check."""
    from .train_options import add_train_options

    add_train_options(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN from its newest complete checkpoint (optimizer, scheduler, RNG, step)")
    parser.add_argument("--check", action="store_true",
                        help="validate and print the memory estimate, then exit without training")


def _check(cfg: Any) -> int:
    from ..plan import check

    plan = check(cfg)
    for line in plan.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if plan.errors:
        more = f" (+{len(plan.errors) - 1} more: {'; '.join(plan.errors[1:])})" if len(plan.errors) > 1 else ""
        raise UserError(plan.errors[0] + more)
    print(plan.hardware.summary())
    if plan.memory is not None:
        print(plan.memory.table())
    return 0


def run(args: argparse.Namespace) -> int:
    """Validate, train, print one summary line per rank; exit 0 for succeeded and cancelled runs."""
    from .train_options import config_from_args

    cfg = config_from_args(args)
    if args.check:
        return _check(cfg)
    return _train(cfg, args.resume)


def _train(cfg: Any, resume: bool) -> int:
    from ..grpo import run_grpo
    from ..train import dist_info, run_training

    rank, world = dist_info()
    runner = run_grpo if cfg.training.method == "grpo" else run_training
    try:
        result = runner(cfg, resume=resume)
    except UserError as exc:
        lines = str(exc).splitlines()
        if len(lines) > 1:  # e.g. a loader's OSError text: keep the one-line contract
            raise UserError(lines[0]) from None
        raise
    except Exception as exc:  # once training started, the traceback is in RUN/train.log
        text = str(exc).splitlines()[0] if str(exc) else ""
        hint = "; out of memory: lower batch size or max length, or use qlora" if "out of memory" in str(exc) else ""
        log = log_path(cfg.training.output_dir)
        where = f"; see {log}" if log.is_file() else ""
        print(f"error: training failed: {type(exc).__name__}: {text}{hint}{where}", file=sys.stderr)
        return 1
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    print(f"rank {rank}/{world}: {result.status} step={result.step}/{result.total_steps} loss={loss} "
          f"weights={result.weights_sha} output={result.output or '-'}")
    return 0
