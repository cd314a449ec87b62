"""Processes of jobs: pids that survive reuse (pid + start time + boot id), process-group signals, the child
environment, and the timing settings (cancel grace, heartbeat staleness) both backends share."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `pipeline/`, for `python -m pipeline`


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError as exc:
        raise UserError(f"{name} must be a number, got {os.environ[name]!r}") from exc


def cancel_grace_s() -> float:
    """Seconds between the graceful stop request and killing the process group (STUDIO_CANCEL_GRACE, 60)."""
    return _env_float("STUDIO_CANCEL_GRACE", 60.0)


def heartbeat_stale_s() -> float:
    """Age after which a heartbeat means nobody supervises the job (STUDIO_HEARTBEAT_STALE, 60)."""
    return _env_float("STUDIO_HEARTBEAT_STALE", 60.0)


def cpu_slots() -> int:
    """Concurrent jobs on a CPU-only machine (STUDIO_CPU_SLOTS, default 1)."""
    slots = int(_env_float("STUDIO_CPU_SLOTS", 1))
    if slots < 1:
        raise UserError(f"STUDIO_CPU_SLOTS must be at least 1, got {slots}")
    return slots


def step_slots() -> int:
    """Step jobs (convert, validate, evaluate, export) at once (STUDIO_STEP_SLOTS, default half the cores, >= 1)."""
    default = max(1, (os.cpu_count() or 2) // 2)
    slots = int(_env_float("STUDIO_STEP_SLOTS", default))
    if slots < 1:
        raise UserError(f"STUDIO_STEP_SLOTS must be at least 1, got {slots}")
    return slots


def step_memory_bytes() -> int:
    """Memory the running step jobs may take together (STUDIO_STEP_MEMORY_GB, default half the RAM)."""
    import psutil

    default = psutil.virtual_memory().total / 2**30 / 2
    gib = _env_float("STUDIO_STEP_MEMORY_GB", default)
    if gib <= 0:
        raise UserError(f"STUDIO_STEP_MEMORY_GB must be positive, got {gib}")
    return int(gib * 2**30)


def boot_id() -> str:
    """The kernel's id of the current boot (a pid from another boot means nothing)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        import psutil

        return f"boot-{psutil.boot_time():.0f}"


def process_started(pid: int) -> float | None:
    """Start time of a process (guards against pid reuse), None when it does not exist."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def process_alive(pid: int | None, started: float | None) -> bool:
    """True while the process with this pid and start time runs (a zombie counts as gone)."""
    import psutil

    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def signal_group(pid: int | None, started: float | None, sig: int) -> bool:
    """Send a signal to the process group a job leads; False when it is gone."""
    if not process_alive(pid, started):
        return False
    try:
        os.killpg(int(pid or 0), sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_group_after_exit(pgid: int) -> None:
    """Kill what is left of a job's process group after its leader exited abnormally (e.g. stray workers)."""
    import signal

    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def child_env(home: str | Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a child process: STUDIO_HOME pinned, `python -m pipeline` importable, unbuffered output."""
    env = dict(os.environ)
    env["STUDIO_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env
