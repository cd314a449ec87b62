"""The run-folder contract (pipeline/rundir.py): one rule for the newest checkpoint, best.json, STOP, the tailer."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline import rundir
from pipeline.errors import UserError


def _checkpoint(run: Path, step: int, payload: bytes = b"weights") -> Path:
    folder = rundir.checkpoint_path(run, step)
    (folder / "sub").mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(payload * step)
    (folder / "sub" / "rng.pth").write_bytes(b"rng")
    rundir.write_manifest(folder, step)
    return folder


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """checkpoint-2 complete; 4, 6, 8 and 10 each broken a different way (newest first: all must be skipped)."""
    run = tmp_path / "run"
    _checkpoint(run, 2)
    (_checkpoint(run, 4) / rundir.MANIFEST_FILE).write_text("{not json")  # corrupt manifest
    (_checkpoint(run, 6) / rundir.MANIFEST_FILE).unlink()  # killed before the manifest
    (_checkpoint(run, 8) / "adapter_model.safetensors").write_bytes(b"W" * 56)  # same size (7 * 8), other bytes
    broken = _checkpoint(run, 10)
    (broken / rundir.MANIFEST_FILE).write_text(json.dumps({"step": 10, "files": ["adapter_model.safetensors"]}))
    (run / "checkpoint-notanumber").mkdir()
    (run / "checkpoint-12").write_text("a file, not a checkpoint folder")
    return run


def test_names_and_paths() -> None:
    assert rundir.checkpoint_name(7) == "checkpoint-7" and rundir.checkpoint_step("RUN/checkpoint-7") == 7
    assert rundir.checkpoint_step("checkpoint-x") is None and rundir.checkpoint_step("checkpoint-7-tmp") is None
    assert rundir.progress_path("R") == Path("R/progress.jsonl") and rundir.log_path("R") == Path("R/train.log")
    assert rundir.config_path("R") == Path("R/config.yaml") and rundir.stop_path("R") == Path("R/STOP")
    assert rundir.output_path("R", "full") == Path("R/model") and rundir.output_path("R", "lora") == Path("R/adapter")
    assert set(rundir.RUN_FILE_NAMES) >= {rundir.CONFIG_FILE, rundir.LOG_FILE, rundir.STOP_FILE}


def test_newest_valid_checkpoint_skips_every_broken_one(run: Path) -> None:
    assert [step for step, _ in rundir.list_checkpoints(run)] == [2, 4, 6, 8, 10]
    newest, skipped = rundir.newest_valid_checkpoint(run)
    assert newest == run / "checkpoint-2" and rundir.newest_checkpoint(run) == newest
    assert skipped == [("checkpoint-10", "unreadable manifest.json"),
                       ("checkpoint-8", "adapter_model.safetensors has the wrong sha256"),
                       ("checkpoint-6", "no manifest.json (incomplete)"),
                       ("checkpoint-4", "unreadable manifest.json")]
    assert rundir.check_manifest(run / "checkpoint-8", verify_hashes=False) is None  # only the hash tells
    assert rundir.newest_valid_checkpoint(run.parent / "nothing") == (None, [])


def test_resume_runner_celery_evaluate_and_export_agree_on_the_newest_checkpoint(run: Path, tmp_path: Path) -> None:
    from pipeline import train
    from pipeline.evaluate import resolve_checkpoint
    from pipeline.export import RunInfo, select_checkpoint
    from pipeline.jobs import Experiment, JobStore, launch, local

    assert train.newest_valid_checkpoint is rundir.newest_valid_checkpoint  # what --resume starts from
    store = JobStore(tmp_path / "studio.db")
    store.add_experiment(Experiment(run_id="r", name="r", created_at=time.time(), run_dir=str(run)))
    job = store.add_job("r", "train", ["python", "-m", "pipeline", "train"], str(tmp_path), str(run))
    assert store.transition(job.id, "queued", "running") and store.transition(job.id, "running", "interrupted")
    local.request_resume(store, job.id)
    assert store.transitions(job.id)[-1]["detail"] == "resume from checkpoint-2"
    assert resolve_checkpoint(run, "last")[:2] == (run / "checkpoint-2", 2)
    info = RunInfo(run, SimpleNamespace(training=SimpleNamespace(method="lora")), {}, None)
    folder, label, step, notes = select_checkpoint(info, "last")
    assert (folder, label, step) == (run / "checkpoint-2", "checkpoint-2", 2) and "checkpoint-2" in notes[0]
    with pytest.raises(UserError, match="checkpoint-8 is not usable: .* wrong sha256"):
        select_checkpoint(info, 8)
    assert launch.newest_checkpoint is rundir.newest_checkpoint  # the local scheduler's and Celery's resume note


def test_best_json_round_trip_and_the_best_checkpoint(run: Path) -> None:
    assert rundir.read_best(run) is None and rundir.best_checkpoint(run) is None
    rundir.write_best(run, {"checkpoint": "checkpoint-2", "step": 2, "metric": "eval_loss", "value": 0.5})
    assert rundir.read_best(run) == {"checkpoint": "checkpoint-2", "step": 2, "metric": "eval_loss", "value": 0.5}
    assert rundir.best_checkpoint(run) == run / "checkpoint-2"
    rundir.write_best(run, {"checkpoint": "checkpoint-8"})
    assert rundir.best_checkpoint(run) is None  # its manifest does not validate
    assert rundir.best_checkpoint(run, verify=False) == run / "checkpoint-8"
    (run / rundir.BEST_FILE).write_text("[1, 2]")
    assert rundir.read_best(run) is None
    (run / rundir.BEST_FILE).write_text("{torn")
    assert rundir.read_best(run) is None
    rundir.remove_best(run)
    rundir.remove_best(run)  # absent: nothing to do
    assert not (run / rundir.BEST_FILE).exists()


def test_pruning_keeps_the_best_and_the_newest_complete(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (1, 2, 3, 4, 5):
        _checkpoint(run, step)
    rundir.write_best(run, {"checkpoint": "checkpoint-1"})
    assert rundir.prune_checkpoints(run, keep=2, current_step=5) == ["checkpoint-2", "checkpoint-3"]
    assert [s for s, _ in rundir.list_checkpoints(run)] == [1, 4, 5]


def test_stop_file(tmp_path: Path) -> None:
    assert not rundir.stop_requested(tmp_path)
    rundir.request_stop(tmp_path, "cancel requested for job 3")
    assert rundir.stop_requested(tmp_path)
    assert rundir.stop_path(tmp_path).read_text() == "cancel requested for job 3\n"
    rundir.clear_stale_stop(tmp_path, started=time.time() - 3600)  # written after that start: a new cancel
    assert rundir.stop_requested(tmp_path)
    rundir.clear_stale_stop(tmp_path, started=time.time() + 3600)  # older than the process: stale
    assert not rundir.stop_requested(tmp_path)
    rundir.clear_stale_stop(tmp_path, started=time.time())
    rundir.request_stop(tmp_path, "again")
    rundir.clear_stop(tmp_path)
    rundir.clear_stop(tmp_path)
    assert not rundir.stop_requested(tmp_path)
    with pytest.raises(OSError):
        rundir.request_stop(tmp_path / "gone", "no run folder")


def test_checkpoint_state_and_leftovers(tmp_path: Path) -> None:
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    assert rundir.read_checkpoint_state(folder) == {}
    rundir.write_checkpoint_state(folder, {"early_stopping": {"best": 0.5, "bad_evals": 1}})
    assert rundir.read_checkpoint_state(folder) == {"early_stopping": {"best": 0.5, "bad_evals": 1}}
    for name in (rundir.CONFIG_FILE, rundir.LOG_FILE, rundir.STOP_FILE, ".hidden"):
        (tmp_path / name).write_text("x")
    assert rundir.leftovers(tmp_path) == ["checkpoint-3"]
    assert rundir.looks_like_run(tmp_path) and not rundir.looks_like_run(folder)


def test_tail_reads_complete_lines_once_and_survives_torn_and_truncated_files(tmp_path: Path) -> None:
    path = rundir.progress_path(tmp_path)
    tail = rundir.ProgressTail(path)
    assert tail.read() == [] and rundir.file_size(path) == 0 and rundir.last_event(path) == {}
    path.write_text('{"seq": 1}\n{"seq": 2')
    assert tail.read() == [{"seq": 1}]  # the partial line waits for its newline
    with open(path, "a") as handle:
        handle.write('}\nnot json\n[1]\n{"seq": 3}\n')
    assert tail.read() == [{"seq": 2}, {"seq": 3}] and tail.read() == []
    assert tail.offset == rundir.file_size(path) == os.path.getsize(path)
    assert rundir.read_events(path, offset=len('{"seq": 1}\n')) == [{"seq": 2}, {"seq": 3}]
    assert rundir.run_events(tmp_path) == [{"seq": 1}, {"seq": 2}, {"seq": 3}]
    assert rundir.last_event(path) == {"seq": 3}
    path.write_text('{"seq": 9}\n')  # replaced by a shorter file: start over
    assert tail.read() == [{"seq": 9}]


def test_run_outcome_and_log_tail(tmp_path: Path) -> None:
    events = [{"event": "start"}, {"event": "error", "message": "boom"}, {"event": "end", "status": "failed"}]
    rundir.progress_path(tmp_path).write_text("".join(json.dumps(e) + "\n" for e in events))
    assert rundir.run_outcome(tmp_path) == ("failed", "boom")
    offset = rundir.file_size(rundir.progress_path(tmp_path))
    with open(rundir.progress_path(tmp_path), "a") as handle:
        handle.write(json.dumps({"event": "end", "status": "succeeded"}) + "\n")
    assert rundir.run_outcome(tmp_path, offset) == ("succeeded", None)  # only this attempt's events count
    rundir.log_path(tmp_path).write_text("".join(f"line {i}\n" for i in range(50)))
    assert rundir.log_tail(rundir.log_path(tmp_path), lines=2) == "line 48\nline 49"
    assert rundir.log_tail(tmp_path / "absent.log") == ""
