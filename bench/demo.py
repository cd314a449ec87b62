"""Benchmark: the full offline demo (`python -m pipeline demo`) against its goals, on the machine at hand.

    python bench/demo.py [--out DIR] [--steps N] [--keep]

Runs the demo exactly as a user would (a child process running the CLI, its output streamed), then reads
DIR/summary.json. Goals (2 CPU cores): held-out mIoU >= 0.5, >= 3x the mean-box baseline, whole demo <= 300 s wall.
Wall time depends on what else the machine runs, so the child's CPU seconds (user + system, from os.wait4) are
printed too. The last line is `finetuned_miou=.. base_miou=.. baseline_miou=.. ratio=.. steps=.. seconds=..
cpu_seconds=.. goals=met|missed`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOALS = {"miou": 0.5, "ratio": 3.0, "seconds": 300.0}


def run_child(out: Path, steps: int | None, model: str | None = None) -> tuple[int, float, float]:
    """(exit code, wall seconds, CPU seconds) of `python -m pipeline demo --out OUT [--model KEY]`."""
    command = [sys.executable, "-m", "pipeline", "demo", "--out", str(out)] + (["--model", model] if model else [])
    if steps is not None:
        command += ["--steps", str(steps)]
    started = time.monotonic()
    child = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.monotonic() - started, usage.ru_utime + usage.ru_stime


def verdict(summary: dict) -> list[str]:
    """The goals the summary misses (empty when every goal is met)."""
    missed = []
    miou, baseline, seconds = summary.get("finetuned_miou"), summary.get("baseline_miou"), summary.get("seconds")
    if miou is None or miou < GOALS["miou"]:
        missed.append(f"held-out mIoU {miou} < {GOALS['miou']}")
    if miou is None or not baseline or miou / baseline < GOALS["ratio"]:
        missed.append(f"mIoU {miou} is not {GOALS['ratio']}x the baseline {baseline}")
    if seconds is None or seconds > GOALS["seconds"]:
        missed.append(f"demo took {seconds} s > {GOALS['seconds']} s")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="demo folder (default: a temporary folder, removed unless --keep)")
    parser.add_argument("--steps", type=int, help="training steps (default: the cpu_demo preset's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary demo folder")
    parser.add_argument("--model", help="offline tiny model (default: the demo's, tiny-smolvlm)")
    args = parser.parse_args()
    tmp = None if args.out else Path(tempfile.mkdtemp(prefix="bench-demo-"))
    out = Path(args.out) if args.out else tmp / "demo"
    try:
        load_before = os.getloadavg()[0]
        code, wall, cpu = run_child(out, args.steps, args.model)
        load = f"{load_before:.1f}/{os.getloadavg()[0]:.1f}"  # 1-min load before/after: timings under load are slow
        if code != 0:
            print(f"demo failed with exit code {code}", file=sys.stderr)
            return 1
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        print()
        print((out / "summary.md").read_text(encoding="utf-8"))
        missed = verdict(summary)
        for line in missed:
            print(f"goal missed: {line}")
        ratio = summary.get("ratio_to_baseline")
        print(f"finetuned_miou={summary['finetuned_miou']:.3f} base_miou={summary['base_miou']:.3f} "
              f"baseline_miou={summary['baseline_miou']:.3f} ratio={ratio:.2f} steps={summary['steps']} "
              f"seconds={summary['seconds']:.0f} wall_with_startup={wall:.0f} cpu_seconds={cpu:.0f} "
              f"cores={os.cpu_count()} load={load} model={summary.get('model')} "
              f"convention={summary.get('convention')} goals={'missed' if missed else 'met'}")
        return 0
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
