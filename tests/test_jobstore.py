"""SQLite store: WAL + migrations, concurrent writers without 'database is locked', compare-and-set, no secrets."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.jobs.store import MIGRATIONS, Experiment, JobStore, is_secret_key, scrub, scrub_argv


def make_store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "studio.db")


def add_run(store: JobStore, run_id: str, **fields) -> Experiment:
    return store.add_experiment(Experiment(run_id=run_id, name=run_id, created_at=time.time(),
                                           run_dir=f"/runs/{run_id}", **fields))


def test_schema_is_versioned_wal_and_reopening_migrates_nothing(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.schema_version() == len(MIGRATIONS) >= 1
    assert store.conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn().execute("PRAGMA busy_timeout").fetchone()[0] == 60000
    add_run(store, "r1")
    again = JobStore(tmp_path / "studio.db")
    assert again.schema_version() == len(MIGRATIONS) and again.get_experiment("r1").name == "r1"
    tables = {r[0] for r in again.conn().execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"experiments", "jobs", "job_transitions"} <= tables


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "studio.db")
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(UserError, match="newer version"):
        make_store(tmp_path)


def test_many_threads_submitting_and_updating_at_once(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    errors: list[BaseException] = []
    per_thread, threads = 25, 8

    def worker(index: int) -> None:
        try:
            for n in range(per_thread):
                run_id = f"t{index}-{n}"
                add_run(store, run_id)
                job = store.add_job(run_id, "train", ["python", "-m", "pipeline", "train"], "/", "/runs")
                assert store.transition(job.id, "queued", "running", pid=1000 + n, heartbeat=time.time())
                assert store.update_job(job.id, "running", heartbeat=time.time())
                store.update_experiment(run_id, summary={"steps": n})
                assert store.transition(job.id, "running", "succeeded", exit_code=0)
        except BaseException as exc:  # collected and checked by the main thread
            errors.append(exc)
        finally:
            store.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    jobs = store.list_jobs()
    assert len(jobs) == per_thread * threads and {j.status for j in jobs} == {"succeeded"}
    assert len(store.list_experiments()) == per_thread * threads
    assert all(e.status == "succeeded" for e in store.list_experiments())
    assert all(len(store.transitions(j.id)) == 3 for j in jobs[:20])


def test_status_changes_are_compare_and_set(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    add_run(store, "r")
    jobs = [store.add_job("r", "train", ["x"], "/", "/r") for _ in range(30)]
    wins: list[int] = []
    barrier = threading.Barrier(4)

    def racer() -> None:
        barrier.wait()
        for job in jobs:
            if store.transition(job.id, "queued", "running") is not None:
                wins.append(job.id)
        store.close()

    pool = [threading.Thread(target=racer) for _ in range(4)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert sorted(wins) == [j.id for j in jobs]  # every job started exactly once
    assert store.transition(jobs[0].id, "queued", "cancelled") is None
    assert store.transition(jobs[0].id, "running", "cancelled", expect_attempt=2) is None
    assert store.transition(jobs[0].id, "running", "cancelled", expect_attempt=1).status == "cancelled"
    assert store.get_experiment("r").status == "cancelled"  # a train job's status is mirrored on its run


def test_queue_is_fifo_with_visible_positions(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    add_run(store, "r")
    a, b, c = (store.add_job("r", "train", ["x"], "/", "/r") for _ in range(3))
    assert [(j.id, j.position) for j in store.queue()] == [(a.id, 1), (b.id, 2), (c.id, 3)]
    store.transition(a.id, "queued", "running")
    assert store.get_job(c.id).position == 2 and store.get_job(a.id).position is None
    assert {j.id: j.position for j in store.list_jobs()} == {a.id: None, b.id: 1, c.id: 2}
    with pytest.raises(UserError, match="unknown job kind"):
        store.add_job("r", "dance", ["x"], "/", "/r")


def test_no_secret_is_ever_stored(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    token = "hf_" + "A1b2C3d4E5" * 3
    config = {"model": {"name": "m", "hub_token": token}, "hub": {"password": "pw-123456", "api_key": "k-98765"},
              "data": {"pad_token": "<pad>", "max_new_tokens": 64, "note": f"pushed with {token}"},
              "tokenizer": "t", "author": "me"}
    add_run(store, "r", config=config)
    store.add_job("r", "export", ["python", "-m", "pipeline", "push", "--hf-token", token, "--password=pw-123456",
                                  "--repo", "me/x"], "/", "/r")
    exp = store.get_experiment("r")
    assert exp.config == {"model": {"name": "m"}, "hub": {}, "tokenizer": "t", "author": "me",
                          "data": {"pad_token": "<pad>", "max_new_tokens": 64, "note": "pushed with ***"}}
    assert store.list_jobs()[0].argv == ["python", "-m", "pipeline", "push", "--repo", "me/x"]
    store.update_experiment("r", config={"secret": "s3cr3t-value"}, summary={"token": "zz-top-secret"})
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("studio.db*"))
    for secret in (token.encode(), b"pw-123456", b"k-98765", b"s3cr3t-value", b"zz-top-secret"):
        assert secret not in raw


def test_secret_key_names() -> None:
    assert all(is_secret_key(k) for k in ("token", "hf_token", "HF-TOKEN", "--hub-token", "password", "db_passwd",
                                          "client_secret", "api_key", "apikey", "aws_credentials", "auth"))
    assert not any(is_secret_key(k) for k in ("pad_token", "eos_token", "max_new_tokens", "tokenizer", "author",
                                              "image_token_id", "lora_r"))
    assert scrub_argv(["--token=abc", "--x", "1", "--secret", "s", "--y"]) == ["--x", "1", "--y"]
    assert scrub([{"token": 1, "ok": 2}]) == [{"ok": 2}]


def test_delete_refuses_an_active_job_and_removes_its_history(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    add_run(store, "r")
    job = store.add_job("r", "train", ["x"], "/", "/r")
    store.transition(job.id, "queued", "running")
    with pytest.raises(UserError, match=f"job {job.id} of this run is running; cancel it first"):
        store.delete_experiment_rows("r")
    store.transition(job.id, "running", "cancelled")
    store.delete_experiment_rows("r")
    assert store.list_experiments() == [] and store.list_jobs() == [] and store.transitions(job.id) == []


def test_experiment_ids_can_be_shortened_to_a_unique_prefix(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    add_run(store, "20250101-120000-ab12")
    add_run(store, "20250101-120000-cd34")
    assert store.find_experiment("20250101-120000-c").run_id == "20250101-120000-cd34"
    with pytest.raises(UserError, match="ambiguous"):
        store.find_experiment("20250101")
    with pytest.raises(UserError, match="no experiment"):
        store.find_experiment("1999")


def test_a_duplicate_run_id_is_a_clear_error_and_new_ids_do_not_clash(tmp_path: Path) -> None:
    """Run ids carry 8 random hex digits: 2,000 made in the same second are all distinct; a clash is a UserError."""
    from pipeline.jobs.spec import new_run_id

    store = make_store(tmp_path)
    add_run(store, "20250101-120000-ab12cd34")
    with pytest.raises(UserError, match="run id '20250101-120000-ab12cd34' already exists"):
        add_run(store, "20250101-120000-ab12cd34")
    assert len(store.list_experiments()) == 1
    ids = [new_run_id() for _ in range(2000)]
    assert len(set(ids)) == 2000 and all(len(i.rsplit("-", 1)[1]) == 8 for i in ids)
