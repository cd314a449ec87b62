"""SQLite store for experiments and jobs: WAL, one connection per thread, BEGIN IMMEDIATE writes, compare-and-set.

`open_store()` gives the studio database of a data home (one JobStore per process and home). Opening it never
changes a job: settling jobs whose process is gone is `pipeline.jobs.recover(store)`, called by the scheduler,
the app's startup and the CLI.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..home import studio_home

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
RESUMABLE = frozenset({"failed", "cancelled", "interrupted"})
KINDS = ("train", "evaluate", "export", "convert", "validate")
STEP_KINDS = frozenset({"convert", "validate", "evaluate", "export"})  # heavy steps: `python -m pipeline step JOBDIR`
STANDALONE = frozenset({"convert", "validate"})  # kinds whose jobs belong to no experiment (run_id: the job folder)
DB_FILE = "studio.db"

# Each entry moves the schema one version up; never edit an entry once released, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE experiments (
        run_id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL, config TEXT NOT NULL DEFAULT '{}',
        model TEXT, dataset_fingerprint TEXT, status TEXT NOT NULL DEFAULT 'queued', summary TEXT NOT NULL DEFAULT '{}',
        run_dir TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]', notes TEXT NOT NULL DEFAULT '', updated_at REAL);
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES experiments(run_id),
        kind TEXT NOT NULL, status TEXT NOT NULL, argv TEXT NOT NULL, cwd TEXT NOT NULL, run_dir TEXT NOT NULL,
        slots INTEGER NOT NULL DEFAULT 1, mem_bytes INTEGER, gpu_ids TEXT NOT NULL DEFAULT '[]',
        pid INTEGER, pid_started REAL, boot_id TEXT, owner_pid INTEGER, owner_started REAL,
        attempt INTEGER NOT NULL DEFAULT 1, heartbeat REAL, exit_code INTEGER, error TEXT,
        cancel_requested REAL, progress_offset INTEGER NOT NULL DEFAULT 0, queue_reason TEXT,
        created_at REAL NOT NULL, queued_at REAL NOT NULL, started_at REAL, ended_at REAL, updated_at REAL NOT NULL);
    CREATE INDEX jobs_status ON jobs(status, queued_at, id);
    CREATE INDEX jobs_run ON jobs(run_id);
    CREATE TABLE job_transitions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL, at REAL NOT NULL, attempt INTEGER NOT NULL,
        from_status TEXT, to_status TEXT NOT NULL, detail TEXT);
    CREATE INDEX transitions_job ON job_transitions(job_id, id);
    """,
    # 2: jobs of a dataset (convert, validate) belong to no experiment: run_id no longer references experiments
    """
    CREATE TABLE jobs_v2 (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
        kind TEXT NOT NULL, status TEXT NOT NULL, argv TEXT NOT NULL, cwd TEXT NOT NULL, run_dir TEXT NOT NULL,
        slots INTEGER NOT NULL DEFAULT 1, mem_bytes INTEGER, gpu_ids TEXT NOT NULL DEFAULT '[]',
        pid INTEGER, pid_started REAL, boot_id TEXT, owner_pid INTEGER, owner_started REAL,
        attempt INTEGER NOT NULL DEFAULT 1, heartbeat REAL, exit_code INTEGER, error TEXT,
        cancel_requested REAL, progress_offset INTEGER NOT NULL DEFAULT 0, queue_reason TEXT,
        created_at REAL NOT NULL, queued_at REAL NOT NULL, started_at REAL, ended_at REAL, updated_at REAL NOT NULL);
    INSERT INTO jobs_v2 SELECT * FROM jobs;
    DROP TABLE jobs;
    ALTER TABLE jobs_v2 RENAME TO jobs;
    CREATE INDEX jobs_status ON jobs(status, queued_at, id);
    CREATE INDEX jobs_run ON jobs(run_id);
    """,
]

_SECRET_KEY = re.compile(r"token|passw|secret|api_?key|credential|private_?key|auth", re.I)
_NOT_SECRET_KEY = re.compile(
    r"tokeniz|tokens|token_ids?$|token_id$|(pad|eos|bos|unk|sep|cls|mask|image|video|special)_token|author", re.I
)
_SECRET_VALUE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,})\b")


def is_secret_key(key: str) -> bool:
    """True for names that look like credentials (hf_token, password, api_key), not tokenizer settings."""
    name = key.lstrip("-").replace("-", "_")
    return bool(_SECRET_KEY.search(name)) and not _NOT_SECRET_KEY.search(name)


def scrub(value: Any) -> Any:
    """Drop secret-looking keys from nested dicts/lists and redact token-looking strings."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not is_secret_key(str(k))}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub("***", value)
    return value


def scrub_argv(argv: Iterable[str]) -> list[str]:
    """Remove `--token X` / `--password=X` style options (flag and value) from a command line."""
    out: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        flag = arg.split("=", 1)[0]
        if arg.startswith("-") and is_secret_key(flag):
            skip_next = "=" not in arg
            continue
        out.append(_SECRET_VALUE.sub("***", arg))
    return out


@dataclass
class Job:
    """One row of the jobs table (`position` is the place in the FIFO queue, 1-based, for queued jobs)."""

    id: int
    run_id: str
    kind: str
    status: str
    argv: list[str]
    cwd: str
    run_dir: str
    slots: int = 1
    mem_bytes: int | None = None
    gpu_ids: list[int] = field(default_factory=list)
    pid: int | None = None
    pid_started: float | None = None
    boot_id: str | None = None
    owner_pid: int | None = None
    owner_started: float | None = None
    attempt: int = 1
    heartbeat: float | None = None
    exit_code: int | None = None
    error: str | None = None
    cancel_requested: float | None = None
    progress_offset: int = 0
    queue_reason: str | None = None
    created_at: float = 0.0
    queued_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    updated_at: float = 0.0
    position: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Experiment:
    """One row of the experiments table: a run folder and what is known about it."""

    run_id: str
    name: str
    created_at: float
    run_dir: str
    config: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    dataset_fingerprint: str | None = None
    status: str = "queued"
    summary: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    updated_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_JSON_JOB = ("argv", "gpu_ids")
_JSON_EXP = ("config", "summary", "tags")


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    for key in _JSON_JOB:
        data[key] = json.loads(data[key])
    return Job(**data)


def _experiment(row: sqlite3.Row) -> Experiment:
    data = dict(row)
    for key in _JSON_EXP:
        data[key] = json.loads(data[key])
    return Experiment(**data)


def _encode(key: str, value: Any) -> Any:
    if key in ("config", "summary"):
        return json.dumps(scrub(value), sort_keys=True, default=str)
    if key == "argv":
        return json.dumps(scrub_argv(value))
    if key in ("tags", "gpu_ids"):
        return json.dumps(list(value))
    return value


class JobStore:
    """The studio database: call methods from any thread; each thread gets its own connection."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._migrate()

    # -- connections and transactions ------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode; writes go through `write()`)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            except sqlite3.Error as exc:
                raise UserError(f"cannot open the studio database ({exc})", self.path) from exc
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken with BEGIN IMMEDIATE, so writers queue on the busy timeout, never deadlock."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def schema_version(self) -> int:
        return int(self.conn().execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        if self.schema_version() > len(MIGRATIONS):
            raise UserError("the studio database was written by a newer version of the studio", self.path)
        while self.schema_version() < len(MIGRATIONS):
            with self.write() as conn:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if version >= len(MIGRATIONS):
                    break  # another process migrated while we waited for the lock
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={version + 1}")

    # -- experiments -----------------------------------------------------------------------------
    def add_experiment(self, exp: Experiment) -> Experiment:
        """Insert a new experiment row (secrets are scrubbed from its config)."""
        data = {k: _encode(k, v) for k, v in exp.to_dict().items()}
        data["updated_at"] = time.time()
        cols = ", ".join(data)
        try:
            with self.write() as conn:
                conn.execute(f"INSERT INTO experiments ({cols}) VALUES ({', '.join('?' * len(data))})",
                             list(data.values()))
        except sqlite3.IntegrityError as exc:
            raise UserError(f"an experiment with run id {exp.run_id!r} already exists") from exc
        return self.get_experiment(exp.run_id)

    def get_experiment(self, run_id: str) -> Experiment:
        row = self.conn().execute("SELECT * FROM experiments WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise UserError(f"no experiment with id {run_id!r}")
        return _experiment(row)

    def find_experiment(self, prefix: str) -> Experiment:
        """The experiment whose run id is `prefix` or uniquely starts with it."""
        rows = self.conn().execute(
            "SELECT * FROM experiments WHERE run_id=? OR run_id LIKE ? ESCAPE '\\' ORDER BY run_id",
            (prefix, prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"),
        ).fetchall()
        exact = [r for r in rows if r["run_id"] == prefix]
        if exact or len(rows) == 1:
            return _experiment((exact or rows)[0])
        if not rows:
            raise UserError(f"no experiment with id {prefix!r}")
        raise UserError(f"experiment id {prefix!r} is ambiguous ({len(rows)} runs start with it)")

    def list_experiments(self) -> list[Experiment]:
        rows = self.conn().execute("SELECT * FROM experiments ORDER BY created_at, run_id").fetchall()
        return [_experiment(r) for r in rows]

    def update_experiment(self, run_id: str, **fields: Any) -> None:
        """Set columns of one experiment (config and summary are scrubbed)."""
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.write() as conn:
            conn.execute(f"UPDATE experiments SET {sets} WHERE run_id=?", [_encode(k, v) for k, v in fields.items()]
                         + [run_id])

    def delete_experiment_rows(self, run_id: str) -> None:
        """Delete an experiment with its jobs and their history; refuses while one of its jobs is active."""
        with self.write() as conn:
            active = conn.execute(
                "SELECT id, status FROM jobs WHERE run_id=? AND status IN ('queued', 'running')", (run_id,)
            ).fetchone()
            if active is not None:
                raise UserError(f"job {active['id']} of this run is {active['status']}; cancel it first", run_id)
            conn.execute("DELETE FROM job_transitions WHERE job_id IN (SELECT id FROM jobs WHERE run_id=?)", (run_id,))
            conn.execute("DELETE FROM jobs WHERE run_id=?", (run_id,))
            conn.execute("DELETE FROM experiments WHERE run_id=?", (run_id,))

    # -- jobs ------------------------------------------------------------------------------------
    def add_job(self, run_id: str, kind: str, argv: list[str], cwd: str, run_dir: str, slots: int = 1,
                mem_bytes: int | None = None) -> Job:
        """Queue a new job (status queued, attempt 1)."""
        if kind not in KINDS:
            raise UserError(f"unknown job kind {kind!r} (expected one of {', '.join(KINDS)})")
        now = time.time()
        with self.write() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (run_id, kind, status, argv, cwd, run_dir, slots, mem_bytes, created_at, queued_at,"
                " updated_at) VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, kind, _encode("argv", argv), cwd, run_dir, slots, mem_bytes, now, now, now),
            )
            job_id = int(cur.lastrowid or 0)
            conn.execute("INSERT INTO job_transitions (job_id, at, attempt, from_status, to_status) "
                         "VALUES (?, ?, 1, NULL, 'queued')", (job_id, now))
        return self.get_job(job_id)

    def get_job(self, job_id: int) -> Job:
        row = self.conn().execute("SELECT * FROM jobs WHERE id=?", (int(job_id),)).fetchone()
        if row is None:
            raise UserError(f"no job with id {job_id}")
        job = _job(row)
        if job.status == "queued":
            job.position = self._position(job)
        return job

    def _position(self, job: Job) -> int:
        row = self.conn().execute(
            "SELECT COUNT(*) FROM jobs WHERE status='queued' AND (queued_at < ? OR (queued_at = ? AND id <= ?))",
            (job.queued_at, job.queued_at, job.id),
        ).fetchone()
        return int(row[0])

    def list_jobs(self, status: str | Iterable[str] | None = None, run_id: str | None = None) -> list[Job]:
        """Jobs, oldest first; queued ones carry their queue position."""
        sql, params = "SELECT * FROM jobs WHERE 1=1", []
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            sql += f" AND status IN ({', '.join('?' * len(wanted))})"
            params += wanted
        if run_id is not None:
            sql += " AND run_id=?"
            params.append(run_id)
        jobs = [_job(r) for r in self.conn().execute(sql + " ORDER BY id", params).fetchall()]
        ranks = {job.id: job.position for job in self.queue()}
        for job in jobs:
            job.position = ranks.get(job.id)
        return jobs

    def queue(self) -> list[Job]:
        """Queued jobs in FIFO order (first in line first)."""
        rows = self.conn().execute("SELECT * FROM jobs WHERE status='queued' ORDER BY queued_at, id").fetchall()
        jobs = [_job(r) for r in rows]
        for i, job in enumerate(jobs):
            job.position = i + 1
        return jobs

    def transition(self, job_id: int, expect: str | Iterable[str], to: str, detail: str | None = None,
                   expect_attempt: int | None = None, experiment_summary: dict[str, Any] | None = None,
                   **fields: Any) -> Job | None:
        """Compare-and-set the status (and other columns); returns the new row, or None if the status had moved.

        A train job's experiment takes the new status too, and `experiment_summary` when given, in the same
        transaction.
        """
        if to not in STATUSES:
            raise ValueError(f"unknown status {to!r}")
        expected = [expect] if isinstance(expect, str) else list(expect)
        now = time.time()
        fields.update(status=to, updated_at=now)
        sets = ", ".join(f"{k}=?" for k in fields)
        sql = f"UPDATE jobs SET {sets} WHERE id=? AND status IN ({', '.join('?' * len(expected))})"
        params = [_encode(k, v) for k, v in fields.items()] + [int(job_id)] + expected
        if expect_attempt is not None:
            sql += " AND attempt=?"
            params.append(expect_attempt)
        with self.write() as conn:
            before = conn.execute("SELECT status, kind, run_id FROM jobs WHERE id=?", (int(job_id),)).fetchone()
            if before is None or conn.execute(sql, params).rowcount != 1:
                return None
            new_attempt = conn.execute("SELECT attempt FROM jobs WHERE id=?", (int(job_id),)).fetchone()[0]
            conn.execute(
                "INSERT INTO job_transitions (job_id, at, attempt, from_status, to_status, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)", (int(job_id), now, new_attempt, before["status"], to, detail))
            if before["kind"] == "train":
                conn.execute("UPDATE experiments SET status=?, updated_at=? WHERE run_id=?",
                             (to, now, before["run_id"]))
                if experiment_summary is not None:
                    conn.execute("UPDATE experiments SET summary=? WHERE run_id=?",
                                 (_encode("summary", experiment_summary), before["run_id"]))
        return self.get_job(job_id)

    def update_job(self, job_id: int, expect: str | Iterable[str], **fields: Any) -> bool:
        """Set columns of a job only while it is in one of the `expect` statuses (no status change)."""
        expected = [expect] if isinstance(expect, str) else list(expect)
        fields["updated_at"] = time.time()
        sets = ", ".join(f"{k}=?" for k in fields)
        params = [_encode(k, v) for k, v in fields.items()] + [int(job_id)] + expected
        with self.write() as conn:
            cur = conn.execute(f"UPDATE jobs SET {sets} WHERE id=? AND status IN ({', '.join('?' * len(expected))})",
                               params)
            return cur.rowcount == 1

    def transitions(self, job_id: int, after_id: int = 0) -> list[dict[str, Any]]:
        """The status history of a job (each row: id, at, attempt, from_status, to_status, detail)."""
        rows = self.conn().execute(
            "SELECT id, at, attempt, from_status, to_status, detail FROM job_transitions "
            "WHERE job_id=? AND id>? ORDER BY id", (int(job_id), after_id)).fetchall()
        return [dict(r) for r in rows]


_STORES: dict[Path, JobStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(home: str | Path | None = None) -> JobStore:
    """The studio database of a data home (one JobStore per process); no side effects beyond creating it."""
    path = (Path(home).expanduser().resolve() if home else studio_home()) / DB_FILE
    with _STORES_LOCK:
        store = _STORES.get(path)
        if store is None:
            store = _STORES[path] = JobStore(path)
    return store
