"""The local scheduler: launches queued jobs in FIFO order within the free slots, supervises and reaps them.

One scheduler per data home holds STUDIO_HOME/scheduler.lock: a detached `python -m pipeline jobs scheduler`
process (the CLI starts one on demand) or a daemon thread of the app. Launch, cancel and the final status come from
`jobs.launch`, shared with the Celery worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..rundir import ProgressTail, file_size, progress_path
from ..watch import fold_summary
from .launch import CancelEscalation, Resources, StepLimits, prepare_run_dir, start_process
from .process import boot_id, child_env, process_alive, process_started, signal_group_after_exit
from .recovery import finish, orphan_outcome, recover
from .store import STEP_KINDS, Job, JobStore

LOCK_FILE = "scheduler.lock"


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


class Scheduler:
    """Launches queued jobs in FIFO order within the free slots, supervises and reaps them; call `tick()` often."""

    def __init__(self, store: JobStore, home: str | Path, resources: Resources | None = None,
                 poll: float = 0.5, heartbeat_s: float = 2.0, steps: StepLimits | None = None) -> None:
        self.store, self.home = store, Path(home)
        self.resources = resources or Resources.detect()
        self.steps = steps or StepLimits.detect()  # step jobs: a pool of their own beside the training slots
        self.poll, self.heartbeat_s = poll, heartbeat_s
        self.me = (os.getpid(), process_started(os.getpid()))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.adopted: set[int] = set()
        self.tails: dict[int, tuple[ProgressTail, dict]] = {}
        self.cancels: dict[int, CancelEscalation] = {}
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
        self.cancels.pop(job_id, None)
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
        escalation = self.cancels.setdefault(job.id, CancelEscalation())
        escalation.step(job, job.pid, job.pid_started, job.cancel_requested or now, now)

    def _refresh_summary(self, job: Job) -> None:
        if job.kind != "train":
            return
        tail, summary = self.tails.setdefault(job.id, (ProgressTail(progress_path(job.run_dir)), {}))
        events = tail.read()
        if events:
            for event in events:
                fold_summary(summary, event)
            merged = {**self.store.get_experiment(job.run_id).summary, **summary}
            self.store.update_experiment(job.run_id, summary=merged)

    def _launch(self) -> None:
        running = self.store.list_jobs(status="running")
        used = {slot for job in running if job.kind not in STEP_KINDS for slot in job.gpu_ids}
        steps = [job for job in running if job.kind in STEP_KINDS]
        train_blocked = step_blocked = False  # strict FIFO within each pool: nobody overtakes its head
        for job in self.store.queue():
            if job.kind in STEP_KINDS:
                if step_blocked:
                    continue
                reason = self.steps.refuse(job, steps)
                if reason is not None:
                    self._wait(job, reason)
                    step_blocked = True
                elif self._start(job, [], Resources(slots=1)):  # no GPU confinement: evaluate may use them all
                    steps.append(job)
                continue
            if train_blocked:
                continue
            if job.slots > self.resources.slots:
                self.store.transition(job.id, "queued", "failed", ended_at=time.time(), error=(
                    f"asks for {job.slots} slots, this machine has {self.resources.slots}"))
                continue
            slots = self.resources.allocate(job.slots, used)
            if slots is None:
                self._wait(job, f"waiting for {job.slots} free slot(s)")
                train_blocked = True
                continue
            problem = self.resources.memory_problem(job, slots)
            if problem is not None:
                reason, hopeless = problem
                if hopeless or not used:
                    self.store.transition(job.id, "queued", "failed", ended_at=time.time(), error=reason)
                    continue
                self._wait(job, f"waiting for GPU memory: {reason}")
                train_blocked = True
                continue
            if self._start(job, slots):
                used.update(slots)

    def _wait(self, job: Job, reason: str) -> None:
        if job.queue_reason != reason:
            self.store.update_job(job.id, "queued", queue_reason=reason)

    def _start(self, job: Job, slots: list[int], resources: Resources | None = None) -> bool:
        run_dir = prepare_run_dir(job.run_dir)
        now = time.time()
        started = self.store.transition(
            job.id, "queued", "running", detail=f"slots {slots}", expect_attempt=job.attempt, gpu_ids=slots,
            owner_pid=self.me[0], owner_started=self.me[1], boot_id=boot_id(), heartbeat=now, started_at=now,
            pid=None, pid_started=None, progress_offset=file_size(progress_path(run_dir)), queue_reason=None)
        if started is None:
            return False  # cancelled meanwhile
        try:
            proc = start_process(started, resources or self.resources, slots, self.home)
        except OSError as exc:
            self.store.transition(job.id, "running", "failed", ended_at=time.time(),
                                  error=f"could not start {started.argv[0]}: {exc}")
            return False
        self.procs[job.id] = proc
        self.store.update_job(job.id, "running", pid=proc.pid, pid_started=process_started(proc.pid))
        return True


def serve(store: JobStore, home: str | Path, resources: Resources | None = None) -> int:
    """The detached scheduler process: hold the lock, run until idle, re-check after unlocking (no lost wake-ups)."""
    lock = SchedulerLock(home)
    if not lock.acquire():
        return 0
    recover(store)
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
                    recover(store)
                    Scheduler(store, home, resources).run(stop, exit_when_idle=False)
                finally:
                    lock.release()
            stop.wait(2.0)

    thread = threading.Thread(target=loop, name="studio-scheduler", daemon=True)
    thread.start()
    return thread
