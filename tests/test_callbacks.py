"""Run-folder callbacks on their own: progress JSONL, manifests, best/pruning, early stopping, cancel."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from transformers import TrainerControl, TrainerState

from pipeline.callbacks import (
    CancelCallback,
    CheckpointCallback,
    EarlyStopping,
    ProgressWriter,
    set_adapter_base,
)
from pipeline.rundir import (
    BEST_FILE,
    check_manifest,
    newest_valid_checkpoint,
    prune_checkpoints,
    read_best,
    write_manifest,
)


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]


def _checkpoint(run: Path, step: int, complete: bool = True, payload: bytes = b"weights") -> Path:
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "adapter_model.safetensors").write_bytes(payload * step)
    (folder / "sub").mkdir()
    (folder / "sub" / "rng.pth").write_bytes(b"rng")
    if complete:
        write_manifest(folder, step)
    return folder


def test_progress_writer_sequences_and_cleans_values(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path)
    writer.emit({"event": "start"})
    writer.emit({"event": "log", "step": 1, "loss": float("nan"), "grad_norm": float("inf")})
    writer.close()
    again = ProgressWriter(tmp_path)  # a resumed run continues the sequence
    again.emit({"event": "log", "step": 2, "loss": 1.5, "elapsed_s": 3.0})
    again.close()
    events = _events(tmp_path)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert events[1]["loss"] is None and events[1]["grad_norm"] is None
    assert events[2]["loss"] == 1.5 and all("time" in e for e in events)
    assert ProgressWriter(tmp_path).previous_elapsed == 3.0
    silent = ProgressWriter(tmp_path / "other", enabled=False)  # ranks other than 0
    silent.emit({"event": "log"})
    silent.close()
    assert not (tmp_path / "other").exists()


def test_manifest_detects_missing_resized_and_altered_files(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path, 3)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"adapter_model.safetensors", "sub/rng.pth"}
    assert manifest["step"] == 3 and manifest["total_bytes"] == 21 + 3
    assert check_manifest(folder) is None
    (folder / "sub" / "rng.pth").write_bytes(b"RNG")  # same size, other bytes
    assert check_manifest(folder) == "sub/rng.pth has the wrong sha256"
    (folder / "sub" / "rng.pth").write_bytes(b"rng!")
    assert check_manifest(folder) == "sub/rng.pth has the wrong size"
    (folder / "sub" / "rng.pth").unlink()
    assert check_manifest(folder) == "sub/rng.pth is missing"
    (folder / "manifest.json").unlink()
    assert check_manifest(folder) == "no manifest.json (incomplete)"


def test_newest_valid_checkpoint_skips_incomplete_and_corrupt(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 2)
    _checkpoint(tmp_path, 4)
    corrupt = _checkpoint(tmp_path, 6)
    (corrupt / "adapter_model.safetensors").write_bytes(b"x")
    _checkpoint(tmp_path, 10, complete=False)
    best, skipped = newest_valid_checkpoint(tmp_path)
    assert best is not None and best.name == "checkpoint-4"
    assert skipped == [("checkpoint-10", "no manifest.json (incomplete)"),
                       ("checkpoint-6", "adapter_model.safetensors has the wrong size")]
    assert newest_valid_checkpoint(tmp_path / "empty") == (None, [])


def test_prune_keeps_newest_and_best(tmp_path: Path) -> None:
    for step in (2, 4, 6, 8):
        _checkpoint(tmp_path, step)
    _checkpoint(tmp_path, 10, complete=False)  # being written right now: never touched
    (tmp_path / BEST_FILE).write_text(json.dumps({"checkpoint": "checkpoint-2", "value": 0.1}))
    removed = prune_checkpoints(tmp_path, keep=1, current_step=8)
    assert sorted(removed) == ["checkpoint-4", "checkpoint-6"]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-10", "checkpoint-2", "checkpoint-8"]


def _state(step: int) -> TrainerState:
    state = TrainerState()
    state.global_step = step
    return state


@pytest.mark.parametrize(("mode", "values", "best_step"), [("min", [3.0, 2.0, 2.5], 4), ("max", [0.2, 0.5, 0.4], 4)])
def test_checkpoint_callback_tracks_best(tmp_path: Path, mode: str, values: list[float], best_step: int) -> None:
    writer = ProgressWriter(tmp_path)
    cb = CheckpointCallback(tmp_path, writer, keep=1, metric="eval_miou" if mode == "max" else "eval_loss",
                            mode=mode, base_model="org/base-model")
    for step, value in zip((2, 4, 6), values, strict=True):
        folder = _checkpoint(tmp_path, step, complete=False)
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/local/path"}))
        cb.on_evaluate(None, _state(step), TrainerControl(), metrics={cb.metric: value})
        cb.on_save(None, _state(step), TrainerControl())
        assert check_manifest(folder) is None
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "org/base-model"
    writer.close()
    best = read_best(tmp_path)
    assert best == {"checkpoint": f"checkpoint-{best_step}", "step": best_step, "metric": cb.metric,
                    "value": values[1], "mode": mode}
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]
    saves = [e for e in _events(tmp_path) if e["event"] == "checkpoint"]
    assert [e["pruned"] for e in saves] == [[], ["checkpoint-2"], []]
    assert saves[1]["best_checkpoint"] == "checkpoint-4" and "best_checkpoint" not in saves[2]


def test_free_disk_check_skips_the_save(tmp_path: Path) -> None:
    writer = ProgressWriter(tmp_path)
    cb = CheckpointCallback(tmp_path, writer, min_free_bytes=1 << 60)  # an exabyte is never free
    control = TrainerControl()
    control.should_save = True
    cb.on_step_end(None, _state(5), control)
    writer.close()
    assert control.should_save is False
    warning = _events(tmp_path)[-1]
    assert warning["event"] == "warning" and warning["message"].startswith("checkpoint skipped:")


def test_early_stopping_patience_and_threshold() -> None:
    cb = EarlyStopping("eval_loss", "min", patience=2, threshold=0.05)
    control = TrainerControl()
    for step, loss in enumerate([1.0, 0.9, 0.88, 0.87], start=1):  # 0.88 and 0.87 improve by < 0.05
        cb.on_evaluate(None, _state(step), control, metrics={"eval_loss": loss})
    assert control.should_training_stop and cb.stopped_at == 4 and cb.best == 0.9
    restored = EarlyStopping("eval_loss", "min", patience=2)
    restored.load(cb.state())
    assert (restored.best, restored.bad_evals) == (0.9, 2)


def test_cancel_by_stop_file_and_sigterm(tmp_path: Path) -> None:
    cb = CancelCallback(tmp_path)
    control = TrainerControl()
    cb.on_step_end(None, _state(1), control)
    assert not control.should_training_stop
    (tmp_path / "STOP").write_text("")
    cb.on_step_end(None, _state(2), control)
    assert control.should_training_stop and control.should_save and cb.cancelled_at == 2

    previous = signal.getsignal(signal.SIGTERM)
    by_signal = CancelCallback(tmp_path / "elsewhere")
    try:
        by_signal.install_signal()
        os.kill(os.getpid(), signal.SIGTERM)
        control = TrainerControl()
        by_signal.on_step_end(None, _state(7), control)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert by_signal.requested and control.should_training_stop and by_signal.cancelled_at == 7


def test_set_adapter_base(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/home/x/models/m", "r": 8}))
    set_adapter_base(tmp_path, "tiny-smolvlm")
    assert json.loads((tmp_path / "adapter_config.json").read_text()) == {
        "base_model_name_or_path": "tiny-smolvlm", "r": 8}
