"""`python -m pipeline train`: fine-tune a VLM (LoRA, QLoRA or full) on a converted dataset into a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..rundir import config_path, log_path

HELP = "fine-tune a VLM (LoRA, QLoRA or full) on a converted dataset"
DEFAULT_PRESET = "balanced"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `train` verb."""
    parser.add_argument("--config", metavar="FILE", help="a TrainConfig YAML file (e.g. RUN/config.yaml)")
    parser.add_argument("--preset", metavar="P", help=f"built-in or saved preset (default {DEFAULT_PRESET}; "
                        "quick_test, cpu_demo, balanced, production, ultra_low_memory_8gb)")
    parser.add_argument("--model", metavar="M", help="registry key or Hub id (default tiny-smolvlm)")
    parser.add_argument("--data", metavar="DIR", help="converted dataset folder (its splits/ when present)")
    parser.add_argument("--out", metavar="RUN", help="run folder to write (training.output_dir)")
    parser.add_argument("--method", choices=["lora", "qlora", "full"], help="overrides training.method")
    parser.add_argument("--max-steps", type=int, metavar="N", help="overrides training.max_steps")
    parser.add_argument("--save-steps", type=int, metavar="N", help="overrides training.save_steps")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override any config field, e.g. --set lora.r=8 (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="continue RUN from its newest complete checkpoint (optimizer, scheduler, RNG, step)")
    parser.add_argument("--check", action="store_true",
                        help="validate and print the memory estimate, then exit without training")


def build_config(args: argparse.Namespace) -> Any:
    """The TrainConfig from --config / --preset plus the command-line overrides."""
    import yaml

    from ..config import load_config, set_field
    from ..presets import get_preset

    if args.config and args.preset:
        raise UserError("give --config or --preset, not both")
    if args.config:
        cfg = load_config(args.config)
    elif args.resume and args.out and not args.preset and config_path(args.out).is_file():
        cfg = load_config(config_path(args.out))
    else:
        cfg = get_preset(args.preset or DEFAULT_PRESET, model=args.model)
    overrides = {"model.name": args.model, "training.method": args.method, "training.max_steps": args.max_steps,
                 "training.save_steps": args.save_steps,
                 "data.path": str(Path(args.data).expanduser().resolve()) if args.data else None,
                 "training.output_dir": str(Path(args.out).expanduser().resolve()) if args.out else None}
    for key, value in overrides.items():
        if value is not None:
            set_field(cfg, key, value)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected SECTION.FIELD=VALUE")
        set_field(cfg, key.strip(), yaml.safe_load(value))
    return cfg


def _check(cfg: Any) -> int:
    from ..config import validate_config
    from ..hardware import detect_hardware
    from ..memory import estimate_memory

    hw = detect_hardware()
    errors, warnings = validate_config(cfg, hw)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if errors:
        more = f" (+{len(errors) - 1} more: {'; '.join(errors[1:])})" if len(errors) > 1 else ""
        raise UserError(errors[0] + more)
    print(hw.summary())
    print(estimate_memory(cfg, hardware=hw).table())
    return 0


def run(args: argparse.Namespace) -> int:
    """Validate, train, print one summary line per rank; exit 0 for succeeded and cancelled runs."""
    cfg = build_config(args)
    if args.check:
        return _check(cfg)
    return _train(cfg, args.resume)


def _train(cfg: Any, resume: bool) -> int:
    from ..train import dist_info, run_training

    rank, world = dist_info()
    try:
        result = run_training(cfg, resume=resume)
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
