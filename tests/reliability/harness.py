"""Running `python -m pipeline ...` as a user would, in a case folder whose every byte is accounted for afterwards.

Each case gets ROOT/{in, work, tmp, home}: inputs in `in/`, the process runs in `work/` (its --out goes there),
TMPDIR is `tmp/` and STUDIO_HOME is `home/`. A clean failure leaves ROOT exactly as it was before the run.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_PROGRESS = re.compile(r"^\s*[\w ()/]+:\s+(\d+%\||\d+\w* \[)")  # tqdm lines of a run cut short


def child_env(home: Path, tmp: Path, **extra: str) -> dict[str, str]:
    """The environment of a pipeline subprocess: private TMPDIR and STUDIO_HOME, offline, one thread."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STUDIO_HOME": str(home), "TMPDIR": str(tmp),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "0"}
    env.update(extra)
    return env


@dataclass
class CaseFolder:
    """The four folders of one case."""

    root: Path

    @property
    def inputs(self) -> Path:
        return self.root / "in"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @classmethod
    def make(cls, root: Path) -> CaseFolder:
        for name in ("in", "work", "tmp", "home"):
            (root / name).mkdir(parents=True, exist_ok=True)
        return cls(root)


@dataclass
class CliResult:
    """What one CLI run left: exit code, output, and the state of its case folder before and after."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    before: dict[str, int]
    after: dict[str, int]

    def error_lines(self) -> list[str]:
        """Non-empty stderr lines that are not progress bars."""
        lines = self.stderr.replace("\r", "\n").splitlines()
        return [line for line in lines if line.strip() and not _PROGRESS.match(line)]

    def describe(self) -> str:
        return f"argv={self.argv}\nrc={self.returncode}\nstderr={self.stderr[-1500:]}\nstdout={self.stdout[-500:]}"


def snapshot(root: Path) -> dict[str, int]:
    """Every path under `root` with its size (folders -1)."""
    return {str(p.relative_to(root)): (-1 if p.is_dir() else p.stat().st_size) for p in sorted(root.rglob("*"))}


def file_size_limit(limit: int | None) -> Callable[[], None] | None:
    """A preexec function capping every file the child writes at `limit` bytes (RLIMIT_FSIZE: writes fail EFBIG)."""
    if limit is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def run_cli(case: CaseFolder, verb: str, args: list[str], timeout: float = 240, max_file_bytes: int | None = None,
            **env: str) -> CliResult:
    """`python -m pipeline VERB ARGS --out work/out` (train: --out work/run) with the case's TMPDIR and home."""
    out = ["--out", str(case.work / ("run" if verb == "train" else "out"))]
    argv = [sys.executable, "-m", "pipeline", verb, *args, *out]
    before = snapshot(case.root)
    proc = subprocess.run(argv, cwd=case.work, env=child_env(case.home, case.tmp, **env), capture_output=True,
                          text=True, timeout=timeout, preexec_fn=file_size_limit(max_file_bytes))
    return CliResult([verb, *args], proc.returncode, proc.stdout, proc.stderr, before, snapshot(case.root))


@contextmanager
def small_disk(folder: Path, size: str = "2m") -> Iterator[str]:
    """Mount a tmpfs of `size` on `folder` and yield "tmpfs"; where mounting is not permitted yield "rlimit" (the
    caller then caps file sizes with RLIMIT_FSIZE instead). The tmpfs is unmounted afterwards.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mounted = False
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount"):
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                              capture_output=True)
        mounted = done.returncode == 0
    try:
        yield "tmpfs" if mounted else "rlimit"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def clean_failure_problems(result: CliResult, fragment: str) -> list[str]:
    """Everything wrong with a failed run: exit code, the one `error:` line, tracebacks, files left anywhere."""
    problems = []
    lines = result.error_lines()
    if result.returncode != 2:
        problems.append(f"exit code {result.returncode}, expected 2")
    if len(lines) != 1 or not lines[0].startswith("error: "):
        problems.append(f"expected one 'error:' line, got {lines[:6]}")
    elif fragment not in lines[0]:
        problems.append(f"{fragment!r} not in {lines[0]!r}")
    if "Traceback" in result.stderr:
        problems.append("a traceback reached the user")
    new = sorted(set(result.after) - set(result.before))
    changed = sorted(k for k in result.before if result.after.get(k) != result.before[k])
    if new or changed:
        problems.append(f"files written or changed: new {new[:8]}, changed {changed[:8]}")
    return problems
