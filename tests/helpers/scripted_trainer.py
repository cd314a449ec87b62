"""A small real training-like process for runner tests: follows the trainer's run-folder contract.

    python scripted_trainer.py --config RUN/config.yaml [--resume]

config.yaml (YAML/JSON): total_steps, step_seconds, save_every, crash_at_step (exit 1 with an error event),
ignore_sigterm (keeps running after SIGTERM/STOP, to exercise the kill after the grace period).
Writes RUN/progress.jsonl (seq from 1, continuing across attempts), RUN/checkpoint-N/{state.json, manifest.json
last, with sizes and sha256 as pipeline.rundir validates them}, RUN/best.json, RUN/adapter/; stops on SIGTERM or
RUN/STOP with a checkpoint and an end event "cancelled".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import yaml

STOP_REQUESTED = False


def _on_sigterm(signum: int, frame: object) -> None:
    global STOP_REQUESTED
    STOP_REQUESTED = True


def last_seq(progress: Path) -> int:
    if not progress.is_file():
        return 0
    seq = 0
    for line in progress.read_text(encoding="utf-8").splitlines():
        try:
            seq = max(seq, int(json.loads(line).get("seq", 0)))
        except ValueError:
            continue
    return seq


def newest_checkpoint(run: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if (p / "manifest.json").is_file()]
    return max(steps, default=0)


def save_checkpoint(run: Path, step: int) -> None:
    folder = run / f"checkpoint-{step}"
    folder.mkdir(exist_ok=True)
    state = json.dumps({"step": step}).encode()
    (folder / "state.json").write_bytes(state)
    files = {"state.json": {"size": len(state), "sha256": hashlib.sha256(state).hexdigest()}}
    (folder / "manifest.json").write_text(json.dumps({"step": step, "files": files}), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    config_path = Path(args.config)
    cfg = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    run = config_path.parent
    total = int(cfg.get("total_steps", 5))
    step_seconds = float(cfg.get("step_seconds", 0.05))
    save_every = int(cfg.get("save_every", 2))
    crash_at = cfg.get("crash_at_step")
    if not cfg.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, _on_sigterm)
    else:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    progress = run / "progress.jsonl"
    seq = last_seq(progress) + 1
    start = newest_checkpoint(run) if args.resume else 0
    began = time.time()

    def emit(handle, **event) -> None:
        nonlocal seq
        handle.write(json.dumps({"seq": seq, "time": time.time(), **event}) + "\n")
        handle.flush()
        seq += 1

    with open(progress, "a", encoding="utf-8") as handle:
        emit(handle, event="resume" if args.resume else "start", step=start, total_steps=total, pid=os.getpid(),
             pgid=os.getpgid(0))
        print(f"training from step {start} to {total}", flush=True)
        for step in range(start + 1, total + 1):
            if STOP_REQUESTED or ((run / "STOP").exists() and not cfg.get("ignore_sigterm")):
                save_checkpoint(run, step - 1)
                emit(handle, event="end", status="cancelled", step=step - 1, total_steps=total)
                return 0
            time.sleep(step_seconds)
            if crash_at is not None and step == int(crash_at):
                emit(handle, event="error", message=f"scripted crash at step {step}", step=step)
                print("Traceback (most recent call last):\nRuntimeError: scripted crash", file=sys.stderr, flush=True)
                return 1
            loss = 2.0 * math.exp(-step / 4)
            emit(handle, event="log", step=step, total_steps=total, loss=round(loss, 5), lr=1e-3,
                 elapsed_s=round(time.time() - began, 3))
            if step % save_every == 0 or step == total:
                save_checkpoint(run, step)
                emit(handle, event="eval", step=step, eval_loss=round(loss * 1.1, 5))
        (run / "best.json").write_text(json.dumps({"metric": "eval_loss", "value": round(2.2 * math.exp(-total / 4), 5),
                                                  "checkpoint": f"checkpoint-{total}"}), encoding="utf-8")
        (run / "adapter").mkdir(exist_ok=True)
        emit(handle, event="end", status="succeeded", step=total, total_steps=total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
