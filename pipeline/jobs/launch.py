"""Launch, cancel and resume of one job attempt, written once for both backends.

The local scheduler (`jobs.scheduler`) and the Celery worker (`jobs.celery_app`) differ only in where a job's state
lives (SQLite or Redis) and in how they claim it. Everything that touches the job's process and run folder is here:
slots and GPU memory (`Resources`), the command line (`launch_argv`), starting the process (`start_process`),
the cancel escalation (RUN/STOP + SIGTERM, SIGKILL after the grace), the final status of an attempt
(`decide_status`), and what a resume runs (`plan_resume`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..rundir import clear_stop, log_path, log_tail, newest_checkpoint, request_stop, run_outcome
from .process import cancel_grace_s, child_env, cpu_slots, signal_group, step_memory_bytes, step_slots
from .store import RESUMABLE, Job


# -- resources -----------------------------------------------------------------------------------------
def _gpu_memory(physical_id: str) -> tuple[int, int] | None:
    """(free, total) bytes of one GPU from nvidia-smi (no CUDA context in this long-lived process)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "-i", physical_id, "--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True).stdout
        free, total = (int(float(v)) * 2**20 for v in out.strip().splitlines()[0].split(","))
        return free, total
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass
class Resources:
    """Slots a scheduler hands out: one per visible GPU, or STUDIO_CPU_SLOTS concurrent jobs on CPU."""

    slots: int
    device: str = "cpu"
    physical_ids: list[str] = field(default_factory=list)
    probe: Callable[[str], tuple[int, int] | None] = _gpu_memory  # (free, total) bytes of a GPU by physical id

    @classmethod
    def detect(cls) -> Resources:
        """GPU slots from torch.cuda when a driver is present, else STUDIO_CPU_SLOTS (default 1)."""
        if os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia"):
            import torch

            if torch.cuda.is_available() and torch.cuda.device_count() > 0:
                count = torch.cuda.device_count()
                visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
                ids = visible[:count] if len(visible) >= count else [str(i) for i in range(count)]
                return cls(slots=count, device="cuda", physical_ids=ids)
        return cls(slots=cpu_slots())

    def allocate(self, wanted: int, used: set[int]) -> list[int] | None:
        """The lowest free slot indices, or None when fewer than `wanted` are free."""
        free = [i for i in range(self.slots) if i not in used]
        return free[:wanted] if len(free) >= wanted else None

    def memory_problem(self, job: Job, slots: list[int]) -> tuple[str, bool] | None:
        """(reason, hopeless) when the job's memory estimate does not fit the free memory of its GPUs."""
        if self.device != "cuda" or not job.mem_bytes:
            return None
        for slot in slots:
            info = self.probe(self.physical_ids[slot])
            if info is None:
                continue
            free, total = info
            need = f"needs about {job.mem_bytes / 2**30:.1f} GiB per GPU"
            if job.mem_bytes > total:
                return f"{need}, GPU {slot} has {total / 2**30:.1f} GiB in total", True
            if job.mem_bytes > free:
                return f"{need}, GPU {slot} has {free / 2**30:.1f} GiB free", False
        return None

    def child_env(self, slots: list[int]) -> dict[str, str]:
        """Environment entries that confine a job to its slots."""
        if self.device != "cuda":
            return {}
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.physical_ids[s] for s in slots)}


@dataclass
class StepLimits:
    """How many step jobs (convert, validate, evaluate, export) run at once, and within how much memory.

    Step jobs have their own pool beside the training slots, so a validation never waits for a training run; each
    carries its peak-memory estimate (`mem_bytes`) and they start while the estimates of the running ones plus
    theirs fit the budget (a job larger than the whole budget runs alone).
    """

    slots: int
    memory_bytes: int

    @classmethod
    def detect(cls) -> StepLimits:
        """STUDIO_STEP_SLOTS (default half the cores) and STUDIO_STEP_MEMORY_GB (default half the RAM)."""
        return cls(slots=step_slots(), memory_bytes=step_memory_bytes())

    def refuse(self, job: Job, running: list[Job]) -> str | None:
        """Why the job must wait for the running step jobs, or None when it may start now."""
        if len(running) >= self.slots:
            return f"waiting for a free step slot ({len(running)} of {self.slots} in use)"
        need, used = job.mem_bytes or 0, sum(r.mem_bytes or 0 for r in running)
        if running and used + need > self.memory_bytes:
            return (f"waiting for memory: needs about {need / 2**30:.1f} GiB, {used / 2**30:.1f} of "
                    f"{self.memory_bytes / 2**30:.1f} GiB in use by step jobs")
        return None


# -- launch ---------------------------------------------------------------------------------------------
def launch_argv(job: Job, resources: Resources) -> list[str]:
    """The command to start: `python -m pipeline ...` becomes `accelerate launch` when the job takes several GPUs."""
    argv = list(job.argv)
    if job.slots > 1 and resources.device == "cuda" and argv[1:3] == ["-m", "pipeline"]:
        return [argv[0], "-m", "accelerate.commands.launch", "--num_processes", str(job.slots), *argv[1:]]
    return argv


def prepare_run_dir(run_dir: str | Path) -> Path:
    """Create the run folder and drop a STOP left by an earlier cancel (it would end a resume at once)."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    clear_stop(folder)
    return folder


def _die_with_parent() -> Callable[[], None]:
    """A preexec function: own session (the job's process group) and SIGKILL when the parent process dies."""
    parent = os.getpid()
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def setup() -> None:
        os.setsid()
        if prctl is not None:
            prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: no orphan training after kill -9 of the worker
        if os.getppid() != parent:
            os._exit(1)

    return setup


def start_process(job: Job, resources: Resources, slots: list[int], home: str | Path, where: str = "",
                  own_python: bool = False, die_with_parent: bool = False) -> subprocess.Popen[bytes]:
    """Start one attempt of a job as the leader of its own process group, output appended to RUN/train.log.

    `where` names the host in the log line (a worker); `own_python` runs `python -m pipeline` with this
    interpreter rather than the submitter's; `die_with_parent` kills the job when the launching process dies
    (a Celery pool process: its job must not outlive it). Raises OSError when the command cannot start.
    """
    run_dir = Path(job.run_dir)
    if own_python and job.argv[1:3] == ["-m", "pipeline"]:
        job = Job(**{**job.to_dict(), "argv": [sys.executable, *job.argv[1:]]})
    argv = launch_argv(job, resources)
    env = child_env(home, {"STUDIO_JOB_ID": str(job.id), "STUDIO_JOB_ATTEMPT": str(job.attempt),
                           **resources.child_env(slots)})
    cwd = job.cwd if job.cwd and Path(job.cwd).is_dir() else str(run_dir)
    on = f"{where} slots {slots}" if where else f"slots {slots}"
    with open(log_path(run_dir), "ab") as log:
        log.write(f"[studio] job {job.id} attempt {job.attempt} on {on}: {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, close_fds=True, start_new_session=not die_with_parent,
                                preexec_fn=_die_with_parent() if die_with_parent else None)


# -- cancel ---------------------------------------------------------------------------------------------
def write_stop_file(job: Job) -> None:
    """RUN/STOP: the trainer's own cancel path (it checks the file at every step)."""
    try:
        request_stop(job.run_dir, f"cancel requested for job {job.id}")
    except OSError:
        pass  # the run folder is gone; the signals still reach the process


def ask_to_stop(job: Job, pid: int | None, started: float | None) -> None:
    """The graceful stop: RUN/STOP (the trainer saves a checkpoint and ends) and SIGTERM to the job's group."""
    write_stop_file(job)
    signal_group(pid, started, signal.SIGTERM)


class CancelEscalation:
    """A supervisor's side of a cancel: ask to stop once, SIGKILL the group when the grace has passed."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.killed = False

    def step(self, job: Job, pid: int | None, started: float | None, requested_at: float, now: float) -> None:
        """Call at every supervision round while a cancel is requested (`requested_at` and `now` on one clock)."""
        if self.since is None:
            ask_to_stop(job, pid, started)
            self.since = requested_at
        elif not self.killed and now - self.since >= cancel_grace_s():
            signal_group(pid, started, signal.SIGKILL)
            self.killed = True


# -- the end of an attempt, and resume -----------------------------------------------------------------------
def decide_status(job: Job, rc: int | None) -> tuple[str, str | None]:
    """Final (status, error) from the exit code (None when unknown) and the end/error events of this attempt."""
    end_status, error = run_outcome(job.run_dir, job.progress_offset)
    cancelled = job.cancel_requested is not None
    if rc is None:  # the process was not ours to wait for: the run folder is all we have
        status = end_status or ("cancelled" if cancelled else "failed" if error else "interrupted")
    elif rc == 0:
        status = end_status if end_status in ("succeeded", "failed", "cancelled") else (
            "cancelled" if cancelled else "succeeded")
    elif rc < 0:  # killed; an attempt that had already written its successful end keeps it
        status = "succeeded" if end_status == "succeeded" else "cancelled" if cancelled else "interrupted"
    else:
        status = "cancelled" if cancelled else "failed"
    if status == "failed" and not error:
        error = log_tail(log_path(job.run_dir)) or f"exited with code {rc}"
    if status == "interrupted" and not error:
        error = f"killed by {_signal_name(-rc)}" if rc is not None and rc < 0 else "the process is gone"
    return status, error


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def resume_argv(argv: list[str], kind: str) -> list[str]:
    """A train job's command line with `--resume` (once); other kinds run again as they were."""
    return list(argv) if "--resume" in argv or kind != "train" else [*argv, "--resume"]


def resume_note(run_dir: str | Path) -> str | None:
    """"resume from checkpoint-N" for the newest complete checkpoint, None when there is none."""
    checkpoint = newest_checkpoint(run_dir)
    return f"resume from {checkpoint.name}" if checkpoint else None


def plan_resume(job: Job) -> tuple[list[str], str]:
    """(argv, history detail) of the next attempt of a job a user resumes; UserError when it cannot resume."""
    if job.status not in RESUMABLE:
        what = "it finished" if job.status == "succeeded" else "it is still active"
        raise UserError(f"job {job.id} is {job.status}: {what}, nothing to resume")
    note = resume_note(job.run_dir) or "resume (no complete checkpoint: from the start)"
    return resume_argv(job.argv, job.kind), note
