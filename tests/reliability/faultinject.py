"""Run `python -m pipeline train ...` with one fault injected at an exact point of the real trainer.

    python faultinject.py kill-in-step N   -- train --config RUN/config.yaml [--resume]
    python faultinject.py kill-in-save N   -- train ...
    python faultinject.py disk-full-after N [tmpfs|rlimit] -- train ...

kill-in-step N: SIGKILL itself inside the training step that follows optimizer step N (mid forward/backward).
kill-in-save N: SIGKILL itself while checkpoint-N is being saved: its files are written, its manifest is not.
disk-full-after N: once checkpoint-N is complete, the disk becomes full: `tmpfs` fills the file system holding the
run folder (leaving 96 KiB), `rlimit` caps the size of any file this process writes at 64 KiB (RLIMIT_FSIZE, EFBIG).
Nothing else is changed: the trainer, its callbacks and the CLI run as shipped.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from pathlib import Path

HEADROOM = 96 * 1024
FILE_CAP = 64 * 1024


def _fill(folder: Path) -> None:
    """Write a filler file beside the run folder until ENOSPC, then give back HEADROOM bytes."""
    filler = folder / "filler.bin"
    block = b"\0" * 65536
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError:
            pass
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - HEADROOM))


def _after_save(step: int, action) -> None:
    from pipeline import callbacks

    original = callbacks.write_manifest

    def write_manifest(checkpoint, at_step, extra=None):
        if at_step == step and action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(checkpoint, at_step, extra)
        if at_step == step and action != "kill":
            action(Path(checkpoint))
        return result

    callbacks.write_manifest = write_manifest


def _in_step(step: int) -> None:
    from transformers import Trainer

    original = Trainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args, **kwargs)

    Trainer.training_step = training_step


def main(argv: list[str]) -> int:
    split = argv.index("--")
    mode, step, rest = argv[0], int(argv[1]), argv[split + 1:]
    if mode == "kill-in-step":
        _in_step(step)
    elif mode == "kill-in-save":
        _after_save(step, "kill")
    elif mode == "disk-full-after":
        how = argv[2]
        if how == "tmpfs":
            _after_save(step, lambda checkpoint: _fill(checkpoint.parent.parent))
        else:
            _after_save(step, lambda checkpoint: resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_CAP, FILE_CAP)))
    else:
        raise SystemExit(f"unknown fault {mode!r}")
    from pipeline.cli import main as cli_main

    return cli_main(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
