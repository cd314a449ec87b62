"""`python -m pipeline demo [--out DIR] [--model KEY] [--task grounding|track] [--steps N]`: the whole offline
pipeline on generated data."""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError

HELP = "the whole offline pipeline end to end on generated data"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `demo` verb."""
    from ..demo import DEMO_TASKS, EVAL_LIMIT, MODEL, PRESET, SAMPLE_OPTIONS
    from ..tiny import TINY_MODELS

    parser.add_argument("--model", default=MODEL, metavar="KEY",
                        help=f"offline tiny model to train (default {MODEL}; any of {', '.join(TINY_MODELS)})")
    parser.add_argument("--out", metavar="DIR",
                        help="new (or empty) folder for every artifact (default: STUDIO_HOME/demos/demo-<time>)")
    parser.add_argument("--steps", type=int, metavar="N",
                        help=f"training steps (default: the {PRESET} preset's max_steps)")
    parser.add_argument("--task", choices=DEMO_TASKS, default="grounding",
                        help="grounding (default), or track: clips of 3 frames of shapes that leave and re-enter, "
                             "scored against copying the given first-frame box")
    parser.add_argument("--frames", type=int, default=None, metavar="N",
                        help=f"frames per generated video (default {SAMPLE_OPTIONS['frames']}; 16 with --task track)")
    parser.add_argument("--videos", type=int, default=SAMPLE_OPTIONS["videos"], metavar="K",
                        help=f"generated SAM 2 demo sessions, one video each (default {SAMPLE_OPTIONS['videos']})")
    parser.add_argument("--rl", action="store_true",
                        help="after SFT, a GRPO stage (geometry rewards) on the same training split; summary.json "
                             "gets sft_miou, rl_miou and rl_seconds")
    parser.add_argument("--rl-steps", type=int, metavar="N", help="GRPO steps (default: the grpo_cpu_demo preset's)")
    parser.add_argument("--eval-limit", type=int, default=EVAL_LIMIT, metavar="N",
                        help=f"held-out examples scored per model (default {EVAL_LIMIT}; 0: all)")


def run(args: argparse.Namespace) -> int:
    """Run the demo, print the summary table and where everything went."""
    from ..demo import quiet_library_bars, run_demo

    if args.eval_limit < 0:
        raise UserError(f"--eval-limit must be 0 (all) or more (got {args.eval_limit})")
    quiet_library_bars()
    sample = {"videos": args.videos, **({"frames": args.frames} if args.frames is not None else {})}
    summary = run_demo(args.out, steps=args.steps, sample=sample, eval_limit=args.eval_limit or None,
                       progress=sys.stderr.isatty(), model=args.model, task=args.task, rl=args.rl,
                       rl_steps=args.rl_steps)
    print(summary.table())
    print()
    for name in ("summary", "report", "run", "evaluation", "export", "export_zip"):
        print(f"{name + ':':<12} {summary.paths[name]}")
    for note in summary.notes:
        print(f"note: {note}")
    return 0
