"""The training options `train` and `jobs submit` share, defined once, and the config they build."""

from __future__ import annotations

import argparse
from typing import Any


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """--config/--preset/--model/--data/--out/--method/--max-steps/--save-steps/--set (the same for every verb)."""
    from ..plan import DEFAULT_PRESET

    parser.add_argument("--config", metavar="FILE", help="a TrainConfig YAML file (e.g. RUN/config.yaml)")
    parser.add_argument("--preset", metavar="P", help=f"built-in or saved preset (default {DEFAULT_PRESET}; "
                        "quick_test, cpu_demo, balanced, production, ultra_low_memory_8gb)")
    parser.add_argument("--model", metavar="M", help="registry key or Hub id (default tiny-smolvlm)")
    parser.add_argument("--data", metavar="DIR", help="converted dataset folder (its splits/ when present)")
    parser.add_argument("--out", metavar="RUN", help="run folder to write (training.output_dir)")
    parser.add_argument("--method", choices=["lora", "qlora", "full", "grpo"],
                        help="overrides training.method; grpo refines a finished run (--from RUN)")
    parser.add_argument("--from", dest="from_run", metavar="RUN",
                        help="GRPO: the finished run to continue from (its model, data and weights; implies "
                             "--method grpo; --preset then names a GRPO preset: grpo, grpo_cpu_demo)")
    parser.add_argument("--max-steps", type=int, metavar="N", help="overrides training.max_steps")
    parser.add_argument("--save-steps", type=int, metavar="N", help="overrides training.save_steps")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override any config field, e.g. --set lora.r=8 (repeatable)")


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig of the shared options (through `pipeline.plan.build_config`, the one builder)."""
    from ..errors import UserError
    from ..plan import build_config

    from_run = getattr(args, "from_run", None)
    if from_run and args.method not in (None, "grpo"):
        raise UserError(f"--from RUN starts a GRPO run; --method {args.method} cannot go with it")
    return build_config(config=args.config, preset=args.preset, model=args.model, data=args.data, out=args.out,
                        overrides={"training.method": args.method, "training.max_steps": args.max_steps,
                                   "training.save_steps": args.save_steps},
                        sets=args.set, resume=bool(getattr(args, "resume", False)), from_run=from_run)
