"""Local job runner: processes in their own group, slots, FIFO scheduling, cancel, resume and restart recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .jobstore import RESUMABLE, Job, JobStore
from .watch import LOG_FILE, PROGRESS_FILE, ProgressTail, file_size, fold_summary, log_tail, run_outcome, summarize_run

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding `pipeline/`, for `python -m pipeline`
STOP_FILE = "STOP"
LOCK_FILE = "scheduler.lock"


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


# -- processes ---------------------------------------------------------------------------------------
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
        slots = int(_env_float("STUDIO_CPU_SLOTS", 1))
        if slots < 1:
            raise UserError(f"STUDIO_CPU_SLOTS must be at least 1, got {slots}")
        return cls(slots=slots)

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


def launch_argv(job: Job, resources: Resources) -> list[str]:
    """The command to start: `python -m pipeline ...` becomes `accelerate launch` when the job takes several GPUs."""
    argv = list(job.argv)
    if job.slots > 1 and resources.device == "cuda" and argv[1:3] == ["-m", "pipeline"]:
        return [argv[0], "-m", "accelerate.commands.launch", "--num_processes", str(job.slots), *argv[1:]]
    return argv


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint-N folder with the highest N whose manifest.json exists (written last, so it is complete)."""
    best: tuple[int, Path] | None = None
    for path in Path(run_dir).glob("checkpoint-*"):
        suffix = path.name.split("-", 1)[1]
        if suffix.isdigit() and (path / "manifest.json").is_file() and (best is None or int(suffix) > best[0]):
            best = (int(suffix), path)
    return best[1] if best else None


# -- final status ---------------------------------------------------------------------------------------
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
        error = log_tail(Path(job.run_dir) / LOG_FILE) or f"exited with code {rc}"
    if status == "interrupted" and not error:
        error = f"killed by {_signal_name(-rc)}" if rc is not None and rc < 0 else "the process is gone"
    return status, error


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def finish(store: JobStore, job: Job, rc: int | None, note: str | None = None) -> Job | None:
    """Record the end of an attempt (compare-and-set from running) together with the experiment summary.

    Both land in one transaction, so whoever sees the job ended also sees its final metrics.
    """
    status, error = decide_status(job, rc)
    now = time.time()
    summary = None
    if job.kind == "train":
        ended = now if rc is not None else (job.heartbeat or now)  # a process found dead ended by its last beat
        summary = final_summary(store, job, wall=max(0.0, ended - (job.started_at or ended)))
    return store.transition(job.id, "running", status, detail=note, expect_attempt=job.attempt,
                            experiment_summary=summary, exit_code=rc,
                            error=error if status != "succeeded" else None, ended_at=now, heartbeat=now)


def final_summary(store: JobStore, job: Job, wall: float = 0.0) -> dict[str, Any]:
    """Summary metrics of the job's run folder for its experiment row (wall seconds add up over attempts)."""
    old = store.get_experiment(job.run_id).summary
    summary = summarize_run(job.run_dir)
    summary["wall_seconds"] = round(float(old.get("wall_seconds", 0.0)) + wall, 3)
    summary.setdefault("seconds", summary["wall_seconds"])
    return summary


# -- recovery -----------------------------------------------------------------------------------------
def orphan_outcome(store: JobStore, job: Job, now: float | None = None) -> str | None:
    """What to do with a running job nobody may be supervising: None (leave), 'adopt' or 'finish'."""
    now = now or time.time()
    if job.boot_id and job.boot_id != boot_id():
        return "finish"
    owner_alive = process_alive(job.owner_pid, job.owner_started)
    stale = job.heartbeat is None or now - job.heartbeat > heartbeat_stale_s()
    if job.pid is None:  # between launch bookkeeping and Popen
        return "finish" if (not owner_alive or stale) else None
    if process_alive(job.pid, job.pid_started):
        return "adopt" if not owner_alive else None
    return None if owner_alive and not stale else "finish"


def recover(store: JobStore) -> list[Job]:
    """Settle running jobs whose process is gone (dead pid, other boot, stale heartbeat); returns the changed jobs."""
    changed = []
    for job in store.list_jobs(status="running"):
        if orphan_outcome(store, job) == "finish":
            done = finish(store, job, None, note="recovered: its process is gone")
            if done is not None:
                changed.append(done)
    return changed


# -- cancel and resume -----------------------------------------------------------------------------------
def write_stop_file(job: Job) -> None:
    """RUN/STOP: the trainer's own cancel path (it checks the file at every step)."""
    try:
        (Path(job.run_dir) / STOP_FILE).write_text(f"cancel requested for job {job.id}\n", encoding="utf-8")
    except OSError:
        pass  # the run folder is gone; the signals still reach the process


def request_cancel(store: JobStore, job_id: int) -> Job:
    """Queued: cancelled at once. Running: STOP file + SIGTERM now, the scheduler kills the group after the grace."""
    job = store.get_job(job_id)
    if job.status == "queued":
        done = store.transition(job.id, "queued", "cancelled", detail="cancelled while queued", ended_at=time.time())
        if done is not None:
            return done
        job = store.get_job(job_id)
    if job.status != "running":
        raise UserError(f"job {job.id} is {job.status}; only queued or running jobs can be cancelled")
    if job.cancel_requested is None:
        store.update_job(job.id, "running", cancel_requested=time.time())
    write_stop_file(job)
    signal_group(job.pid, job.pid_started, signal.SIGTERM)
    return store.get_job(job_id)


def request_resume(store: JobStore, job_id: int) -> Job:
    """Queue an interrupted/failed/cancelled job again as a new attempt that resumes from its newest checkpoint."""
    job = store.get_job(job_id)
    if job.status not in RESUMABLE:
        what = "it finished" if job.status == "succeeded" else "it is still active"
        raise UserError(f"job {job.id} is {job.status}: {what}, nothing to resume")
    argv = job.argv if "--resume" in job.argv or job.kind != "train" else [*job.argv, "--resume"]
    checkpoint = newest_checkpoint(job.run_dir)
    detail = f"resume from {checkpoint.name}" if checkpoint else "resume (no complete checkpoint: from the start)"
    done = store.transition(job.id, job.status, "queued", detail=detail, expect_attempt=job.attempt, argv=argv,
                            attempt=job.attempt + 1, queued_at=time.time(), cancel_requested=None, pid=None,
                            pid_started=None, exit_code=None, error=None, gpu_ids=[], ended_at=None)
    if done is None:
        raise UserError(f"job {job.id} changed while resuming it; try again")
    return done


# -- the scheduler ----------------------------------------------------------------------------------------
class SchedulerLock:
    """An flock on STUDIO_HOME/scheduler.lock: one scheduler per data home, released when its process dies."""

    def __init__(self, home: str | Path) -> None:
        self.path = Path(home) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "boot_id": boot_id()}).encode())
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def holder(self) -> int | None:
        """Pid written by the current holder (None when free)."""
        if self.acquire():
            self.release()
            return None
        try:
            return int(json.loads(self.path.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            return -1


def child_env(home: str | Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of a child process: STUDIO_HOME pinned, `python -m pipeline` importable, unbuffered output."""
    env = dict(os.environ)
    env["STUDIO_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


class Scheduler:
    """Launches queued jobs in FIFO order within the free slots, supervises and reaps them; call `tick()` often."""

    def __init__(self, store: JobStore, home: str | Path, resources: Resources | None = None,
                 poll: float = 0.5, heartbeat_s: float = 2.0) -> None:
        self.store, self.home = store, Path(home)
        self.resources = resources or Resources.detect()
        self.poll, self.heartbeat_s = poll, heartbeat_s
        self.me = (os.getpid(), process_started(os.getpid()))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.adopted: set[int] = set()
        self.tails: dict[int, tuple[ProgressTail, dict]] = {}
        self.signalled: dict[int, int] = {}
        self._beat: dict[int, float] = {}

    def tick(self) -> bool:
        """One round: reap, supervise, launch. Returns True while jobs are queued or running."""
        self._reap()
        running = self.store.list_jobs(status="running")
        for job in running:
            self._supervise(job)
        self._launch()
        return bool(self.store.list_jobs(status=("queued", "running")))

    def run(self, stop: threading.Event | None = None, exit_when_idle: bool = True) -> None:
        """Tick until stopped (or, with exit_when_idle, until nothing is queued or running)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            if not self.tick() and exit_when_idle and not self.procs:
                return
            stop.wait(self.poll)

    def _reap(self) -> None:
        for job_id, proc in list(self.procs.items()):
            rc = proc.poll()
            if rc is None:
                continue
            del self.procs[job_id]
            job = self.store.get_job(job_id)
            self._forget(job_id)
            if job.status == "running":
                if rc != 0:
                    signal_group_after_exit(proc.pid)
                finish(self.store, job, rc)

    def _forget(self, job_id: int) -> None:
        self.adopted.discard(job_id)
        self.tails.pop(job_id, None)
        self.signalled.pop(job_id, None)
        self._beat.pop(job_id, None)

    def _supervise(self, job: Job) -> None:
        mine = job.id in self.procs or job.id in self.adopted
        if not mine:
            action = orphan_outcome(self.store, job)
            if action == "finish":
                finish(self.store, job, None, note="recovered: its process is gone")
                return
            if action != "adopt" or not self.store.update_job(job.id, "running", owner_pid=self.me[0],
                                                               owner_started=self.me[1]):
                return
            self.adopted.add(job.id)
        if job.id in self.adopted and not process_alive(job.pid, job.pid_started):
            self._forget(job.id)
            finish(self.store, job, None, note="adopted job ended")
            return
        now = time.time()
        if now - self._beat.get(job.id, 0.0) >= self.heartbeat_s:
            self._beat[job.id] = now
            self.store.update_job(job.id, "running", heartbeat=now)
            self._refresh_summary(job)
        if job.cancel_requested is not None:
            self._escalate_cancel(job, now)

    def _escalate_cancel(self, job: Job, now: float) -> None:
        stage = self.signalled.get(job.id, 0)
        if stage == 0:
            write_stop_file(job)
            signal_group(job.pid, job.pid_started, signal.SIGTERM)
            self.signalled[job.id] = 1
        elif stage == 1 and now - (job.cancel_requested or now) >= cancel_grace_s():
            signal_group(job.pid, job.pid_started, signal.SIGKILL)
            self.signalled[job.id] = 2

    def _refresh_summary(self, job: Job) -> None:
        if job.kind != "train":
            return
        tail, summary = self.tails.setdefault(job.id, (ProgressTail(Path(job.run_dir) / PROGRESS_FILE), {}))
        events = tail.read()
        if events:
            for event in events:
                fold_summary(summary, event)
            merged = {**self.store.get_experiment(job.run_id).summary, **summary}
            self.store.update_experiment(job.run_id, summary=merged)

    def _launch(self) -> None:
        used = {slot for job in self.store.list_jobs(status="running") for slot in job.gpu_ids}
        for job in self.store.queue():
            if job.slots > self.resources.slots:
                self.store.transition(job.id, "queued", "failed", ended_at=time.time(), error=(
                    f"asks for {job.slots} slots, this machine has {self.resources.slots}"))
                continue
            slots = self.resources.allocate(job.slots, used)
            if slots is None:
                self._wait(job, f"waiting for {job.slots} free slot(s)")
                return  # strict FIFO: nobody overtakes the head of the queue
            problem = self.resources.memory_problem(job, slots)
            if problem is not None:
                reason, hopeless = problem
                if hopeless or not used:
                    self.store.transition(job.id, "queued", "failed", ended_at=time.time(), error=reason)
                    continue
                self._wait(job, f"waiting for GPU memory: {reason}")
                return
            if self._start(job, slots):
                used.update(slots)

    def _wait(self, job: Job, reason: str) -> None:
        if job.queue_reason != reason:
            self.store.update_job(job.id, "queued", queue_reason=reason)

    def _start(self, job: Job, slots: list[int]) -> bool:
        run_dir = Path(job.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / STOP_FILE).unlink(missing_ok=True)  # a STOP left by an earlier cancel would end a resume at once
        now = time.time()
        started = self.store.transition(
            job.id, "queued", "running", detail=f"slots {slots}", expect_attempt=job.attempt, gpu_ids=slots,
            owner_pid=self.me[0], owner_started=self.me[1], boot_id=boot_id(), heartbeat=now, started_at=now,
            pid=None, pid_started=None, progress_offset=file_size(run_dir / PROGRESS_FILE), queue_reason=None)
        if started is None:
            return False  # cancelled meanwhile
        argv = launch_argv(started, self.resources)
        env = child_env(self.home, {"STUDIO_JOB_ID": str(job.id), **self.resources.child_env(slots)})
        cwd = job.cwd if Path(job.cwd).is_dir() else str(run_dir)
        with open(run_dir / LOG_FILE, "ab") as log:
            log.write(f"[studio] job {job.id} attempt {job.attempt} on slots {slots}: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
            except OSError as exc:
                self.store.transition(job.id, "running", "failed", ended_at=time.time(),
                                      error=f"could not start {argv[0]}: {exc}")
                return False
        self.procs[job.id] = proc
        self.store.update_job(job.id, "running", pid=proc.pid, pid_started=process_started(proc.pid))
        return True


def signal_group_after_exit(pgid: int) -> None:
    """Kill what is left of a job's process group after its leader exited abnormally (e.g. stray workers)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def serve(store: JobStore, home: str | Path, resources: Resources | None = None) -> int:
    """The detached scheduler process: hold the lock, run until idle, re-check after unlocking (no lost wake-ups)."""
    lock = SchedulerLock(home)
    if not lock.acquire():
        return 0
    scheduler = Scheduler(store, home, resources)
    while True:
        scheduler.run(exit_when_idle=True)
        lock.release()
        # a submitter that saw the lock held before we released it is caught by this re-check
        if not store.list_jobs(status=("queued", "running")) or not lock.acquire():
            return 0


def ensure_scheduler(home: str | Path) -> int | None:
    """Start the detached scheduler (`python -m pipeline jobs scheduler`) unless one holds the lock; its pid."""
    holder = SchedulerLock(home).holder()
    if holder is not None:
        return holder
    logs = Path(home) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "scheduler.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "jobs", "scheduler"], cwd=str(home),
                                env=child_env(home), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    return proc.pid


def start_scheduler_thread(store: JobStore, home: str | Path, stop: threading.Event,
                           resources: Resources | None = None) -> threading.Thread:
    """The app's scheduler: a daemon thread that takes the lock when free and then runs until `stop` is set."""

    def loop() -> None:
        lock = SchedulerLock(home)
        while not stop.is_set():
            if lock.acquire():
                try:
                    Scheduler(store, home, resources).run(stop, exit_when_idle=False)
                finally:
                    lock.release()
            stop.wait(2.0)

    thread = threading.Thread(target=loop, name="studio-scheduler", daemon=True)
    thread.start()
    return thread
