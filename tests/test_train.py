"""Real training runs on the tiny models (CPU, 64 px frames, a handful of steps): LoRA, QLoRA, full, resume after
kill -9, cancel, early stopping, best checkpoint kept through pruning, and a 2-process gloo run."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from pipeline.cli import main as cli_main
from pipeline.config import TrainConfig, load_config, save_config, set_field
from pipeline.errors import UserError
from pipeline.masks import encode_rle
from pipeline.presets import get_preset
from pipeline.records import FrameRecord, ObjectAnn, write_records
from pipeline.rundir import check_manifest, list_checkpoints
from pipeline.train import run_training

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230)}
LOG_KEYS = {"seq", "step", "total_steps", "epoch", "loss", "lr", "grad_norm", "samples_per_s", "tokens_per_s",
            "eta_s", "elapsed_s", "memory"}


def make_dataset(root: Path, frames: int = 8, val: int = 2, size: int = 64, seed: int = 0) -> Path:
    """A converted dataset folder: 64 px frames with one coloured square each, split into train/val."""
    rng = random.Random(seed)
    (root / "images" / "v0").mkdir(parents=True)
    records = []
    for i in range(frames):
        label = list(COLOURS)[i % len(COLOURS)]
        side = rng.randint(12, 24)
        x, y = rng.randint(0, size - side), rng.randint(0, size - side)
        image = Image.new("RGB", (size, size), (235, 235, 235))
        ImageDraw.Draw(image).rectangle([x, y, x + side - 1, y + side - 1], fill=COLOURS[label])
        rel = f"images/v0/{i:06d}.jpg"
        image.save(root / rel)
        mask = np.zeros((size, size), np.uint8)
        mask[y:y + side, x:x + side] = 1
        records.append(FrameRecord(f"v0-{i}", "shapes", "v0", i, rel, size, size,
                                   [ObjectAnn(0, label, [x, y, x + side, y + side], side * side, encode_rle(mask))]))
    write_records(records, root / "records.jsonl")
    if val:
        (root / "splits").mkdir()
        write_records(records[val:], root / "splits" / "train.jsonl")
        write_records(records[:val], root / "splits" / "val.jsonl")
    labels = {label: sum(r.labels.count(label) for r in records) for label in COLOURS}
    meta = {"tool_version": "test", "frames": frames, "objects": frames, "labels": labels, "family": "json",
            "tasks": ["grounding"], "seed": seed, "warnings": [], "sources": []}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """Tiny models gain nothing from a second thread; on a shared 2-core machine it mostly waits for the first."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("shapes") / "data")


def config(dataset: Path, out: Path, model: str = "tiny-smolvlm", **fields: Any) -> TrainConfig:
    """quick_test on `model`, with section.field overrides written as section__field=value."""
    cfg = get_preset("quick_test", model=model, data=str(dataset), out=str(out))
    base = {"training.batch_size": 2, "training.max_steps": 6, "training.save_steps": 3, "training.eval_steps": 0,
            "training.learning_rate": 5e-3, "training.logging_steps": 1, "data.max_length": 128}
    for key, value in {**base, **{k.replace("__", "."): v for k, v in fields.items()}}.items():
        set_field(cfg, key, value)
    return cfg


def events(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "progress.jsonl").read_text().splitlines()]


def losses(run: Path) -> list[float]:
    return [e["loss"] for e in events(run) if e["event"] == "log"]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli_main(["train", *argv])
    return code, capsys.readouterr().err


def test_bad_inputs_fail_with_one_line_before_writing(dataset: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    not_converted = tmp_path / "raw"
    not_converted.mkdir()
    cases = [
        (["--data", str(tmp_path / "missing")], "error: data.path: "),
        (["--data", str(dataset), "--model", "no-such-model"], "error: model.name: unknown model 'no-such-model'"),
        (["--data", str(dataset), "--set", "training.learning_rate=-1"], "error: training.learning_rate: must be"),
        (["--data", str(not_converted)], f"error: data.path: {not_converted} is not a converted dataset (needs "),
        (["--data", str(dataset), "--set", "data.tasks=[telepathy]"], "error: unknown task(s) telepathy"),
        (["--config", str(tmp_path / "nope.yaml")], "error: "),
    ]
    for argv, expected in cases:
        code, err = _cli(capsys, "--preset", "quick_test", "--out", str(out), *argv) if "--config" not in argv \
            else _cli(capsys, *argv)
        assert code == 2 and err.startswith(expected) and err.count("\n") == 1, (argv, err)
        assert not out.exists(), argv
    (out / "checkpoint-3").mkdir(parents=True)
    code, err = _cli(capsys, "--preset", "quick_test", "--data", str(dataset), "--out", str(out))
    assert code == 2 and "run folder already holds a run (checkpoint-3); use --resume" in err


def test_check_prints_the_memory_estimate(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["train", "--preset", "ultra_low_memory_8gb", "--model", "qwen2-vl-2b", "--data", str(dataset),
                     "--out", str(tmp_path / "run"), "--check"])
    out = capsys.readouterr().out
    assert code == 0 and "| weights |" in out and "| **total** |" in out
    assert not (tmp_path / "run").exists()


def test_lora_run_writes_the_whole_run_folder(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = config(dataset, run, training__eval_steps=3, training__histogram_steps=3)
    result = run_training(cfg)
    assert (result.status, result.step, result.total_steps) == ("succeeded", 6, 6)
    loss = losses(run)
    assert len(loss) == 6 and loss[-1] < loss[0]

    adapter = run / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-smolvlm"
    assert {"adapter_model.safetensors", "processor_config.json", "tokenizer.json", "studio.json"} <= {
        p.name for p in adapter.iterdir()}
    studio = json.loads((run / "studio.json").read_text())
    assert studio["convention"] == "json" and studio["tasks"] == ["grounding"] and studio["method"] == "lora"
    assert studio["label_map"] == {"red": 3, "green": 3, "blue": 2} and len(studio["dataset_fingerprint"]) == 16
    assert studio["prompt_templates"]["grounding"] and studio["train_examples"] == 6
    assert load_config(run / "config.yaml") == cfg

    ev = events(run)
    assert ev[0]["event"] == "start" and ev[-1]["event"] == "end" and ev[-1]["status"] == "succeeded"
    assert [e["seq"] for e in ev] == list(range(1, len(ev) + 1))
    logs = [e for e in ev if e["event"] == "log"]
    assert all(LOG_KEYS <= set(e) and e["memory"]["rss"] > 0 and e["tokens_per_s"] > 0 for e in logs)
    assert [e["step"] for e in logs] == [1, 2, 3, 4, 5, 6] and logs[-1]["eta_s"] == 0
    assert [e["step"] for e in ev if e["event"] == "eval"] == [3, 6]

    best = json.loads((run / "best.json").read_text())
    assert best["metric"] == "eval_loss" and (run / best["checkpoint"]).is_dir()
    assert ev[-1]["best_checkpoint"] == best["checkpoint"] and ev[-1]["weights_sha"] == result.weights_sha
    for _, folder in list_checkpoints(run):
        assert check_manifest(folder) is None
    assert "Running training" in (run / "train.log").read_text()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(run / "tb"), size_guidance={"histograms": 0}).Reload()
    assert {"train/loss", "train/learning_rate", "eval/loss"} <= set(tb.Tags()["scalars"])
    histograms = tb.Tags()["histograms"]
    assert any(t.startswith("weights/") and "lora_A" in t for t in histograms)
    assert any(t.startswith("grads/") for t in histograms)

    from pipeline.models import load_model

    assert type(load_model("tiny-smolvlm", adapter=str(adapter), device="cpu")).__name__.startswith("Peft")


def test_qlora_on_cpu_reduces_loss(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_training(config(dataset, run, training__method="qlora"))
    start = events(run)[0]
    assert result.status == "succeeded" and start["quantization"] == "4bit"
    assert losses(run)[-1] < losses(run)[0]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


def test_full_finetune_reduces_loss_and_saves_the_model(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = run_training(config(dataset, run, training__method="full", training__learning_rate=2e-3))
    assert result.status == "succeeded" and result.output == str(run / "model")
    assert losses(run)[-1] < losses(run)[0]
    assert {"config.json", "model.safetensors", "processor_config.json", "studio.json"} <= {
        p.name for p in (run / "model").iterdir()}
    assert not (run / "adapter").exists()


@pytest.mark.parametrize("model", ["tiny-llava", "tiny-qwen2-vl"])
def test_short_lora_run_on_other_tiny_models(dataset: Path, tmp_path: Path, model: str) -> None:
    run = tmp_path / "run"
    result = run_training(config(dataset, run, model=model, training__max_steps=3, data__max_length=160))
    assert result.status == "succeeded" and result.step == 3
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == model
    assert all(loss is not None and loss > 0 for loss in losses(run))


def test_early_stopping_keeps_the_best_checkpoint_through_pruning(dataset: Path, tmp_path: Path) -> None:
    # 'max' mode on a falling eval loss: the first evaluation stays best, every later one is worse.
    run = tmp_path / "run"
    cfg = config(dataset, run, training__max_steps=20, training__save_steps=2, training__eval_steps=2,
                 training__keep_checkpoints=1, training__best_mode="max", training__early_stopping_patience=2)
    result = run_training(cfg)
    end = events(run)[-1]
    assert result.status == "succeeded" and end["stopped_early"] and result.step == 6
    assert json.loads((run / "best.json").read_text())["checkpoint"] == "checkpoint-2"
    assert [p.name for _, p in list_checkpoints(run)] == ["checkpoint-2", "checkpoint-6"]  # 4 was pruned


def test_geometry_evaluation_during_training_picks_the_best_checkpoint_by_iou(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(UserError, match="geometry_eval_samples"):
        run_training(config(dataset, run, training__best_metric="eval_miou", training__best_mode="max"))
    cfg = config(dataset, run, training__max_steps=4, training__save_steps=2, training__eval_steps=2,
                 training__best_metric="eval_miou", training__best_mode="max", training__geometry_eval_samples=4)
    assert run_training(cfg).status == "succeeded"
    evals = [e for e in events(run) if e["event"] == "eval"]
    assert [e["step"] for e in evals] == [2, 4]
    for e in evals:
        assert 0.0 <= e["eval_miou"] <= 1.0 and 1 <= e["eval_geometry_n"] <= 4 and "eval_parse_failure_rate" in e
    best = json.loads((run / "best.json").read_text())
    top = max(evals, key=lambda e: e["eval_miou"])  # ties keep the first
    assert best["metric"] == "eval_miou" and best["checkpoint"] == f"checkpoint-{top['step']}"


def test_stop_file_cancels_with_a_checkpoint(dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "STOP").write_text("cancel")  # a request that arrives while the run starts
    result = run_training(config(dataset, run))
    end = events(run)[-1]
    assert result.status == "cancelled" and (end["event"], end["status"], end["step"]) == ("end", "cancelled", 1)
    assert check_manifest(run / "checkpoint-1") is None and not (run / "adapter").exists()


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "STUDIO_HOME": str(home), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1"}


def _wait(predicate: Any, proc: subprocess.Popen[bytes], what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited with {proc.returncode} before {what}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _stop_after_step(run: Path, seen: int, step: int, timeout: float = 300) -> None:
    """Write RUN/STOP once a log event at `step` or later appears after the first `seen` events."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(e["event"] == "log" and e["step"] >= step for e in events(run)[seen:]):
                (run / "STOP").write_text("cancel")
                return
        except ValueError:  # caught a line half written: look again
            pass
        time.sleep(0.05)


def _complete_steps(run: Path) -> list[int]:
    return [step for step, folder in list_checkpoints(run) if (folder / "manifest.json").is_file()]


@pytest.mark.slow
def test_kill_9_then_resume_continues_and_never_redoes_steps(dataset: Path, tmp_path: Path,
                                                              studio_home: Path) -> None:
    run = tmp_path / "run"
    cfg_path = save_config(config(dataset, run, training__max_steps=16, training__save_steps=2), tmp_path / "c.yaml")
    argv = [sys.executable, "-m", "pipeline", "train", "--config", str(cfg_path)]
    first = subprocess.Popen(argv, cwd=ROOT, env=_env(studio_home), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    _wait(lambda: any(step >= 4 for step in _complete_steps(run)), first, "checkpoint-4")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    newest = max(_complete_steps(run))
    assert newest < 16, "the run finished before it could be killed"
    partial = run / f"checkpoint-{newest + 1}"  # a save cut short: files without a manifest
    shutil.copytree(run / f"checkpoint-{newest}", partial)
    (partial / "manifest.json").unlink()

    seen = len(events(run))
    watcher = threading.Thread(target=_stop_after_step, args=(run, seen, newest + 2), daemon=True)
    watcher.start()  # plays the job runner: a cancel request while the resumed run trains
    cancelled_run = run_training(load_config(cfg_path), resume=True)
    watcher.join()
    cancelled = events(run)[-1]
    assert cancelled_run.status == "cancelled" and (cancelled["event"], cancelled["status"]) == ("end", "cancelled")
    assert check_manifest(run / f"checkpoint-{cancelled['step']}") is None and not (run / "adapter").exists()

    (run / "STOP").unlink()  # as the job runner does before it resumes a cancelled job
    result = run_training(load_config(cfg_path), resume=True)
    assert result.status == "succeeded" and result.step == 16 and (run / "adapter").is_dir()

    ev = events(run)
    resumes = [e for e in ev if e["event"] == "resume"]
    assert resumes[0]["resumed_from"] == newest and resumes[0]["optimizer_step"] == newest
    skipped = resumes[0]["skipped"]  # ours, plus the save the kill may have cut short
    assert {"checkpoint": partial.name, "reason": "no manifest.json (incomplete)"} in skipped
    assert all(s["reason"] == "no manifest.json (incomplete)" and int(s["checkpoint"].split("-")[1]) > newest
               for s in skipped)
    assert resumes[1]["resumed_from"] == cancelled["step"] == resumes[1]["optimizer_step"]
    for resume in resumes:  # after each resume, logging restarts right after the checkpoint and only moves on
        steps = [e["step"] for e in ev if e["event"] == "log" and e["seq"] > resume["seq"]]
        steps = steps[: next((i for i, s in enumerate(steps) if i and s <= steps[i - 1]), len(steps))]
        assert steps[0] == resume["resumed_from"] + 1 and steps == sorted(set(steps))
    assert ev[-1]["status"] == "succeeded" and ev[-1]["step"] == 16


@pytest.mark.slow
def test_two_process_gloo_run_agrees_and_writes_once(dataset: Path, tmp_path: Path, studio_home: Path) -> None:
    run = tmp_path / "run"
    cfg_path = save_config(config(dataset, run, training__max_steps=4, training__save_steps=2,
                                  training__eval_steps=2), tmp_path / "c.yaml")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "pipeline", "train", "--config", str(cfg_path)], cwd=ROOT, env=_env(studio_home),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # Found anywhere in the output: the two ranks share one stdout pipe, so a line need not start at a line start.
    ranks = sorted(re.findall(r"rank (\d)/2: (\w+) step=\S+ loss=\S+ weights=(\w+)", done.stdout))
    assert [(rank, status) for rank, status, _ in ranks] == [("0", "succeeded"), ("1", "succeeded")], done.stdout
    shas = {sha for _, _, sha in ranks}
    assert len(shas) == 1, ranks  # DDP kept both replicas identical
    ev = events(run)
    assert [e["event"] for e in ev].count("start") == 1 and [e["event"] for e in ev].count("end") == 1
    assert ev[0]["world_size"] == 2 and ev[-1]["weights_sha"] in shas
    assert [e["step"] for e in ev if e["event"] == "log"] == [1, 2, 3, 4]
    assert [e["checkpoint"] for e in ev if e["event"] == "checkpoint"] == ["checkpoint-2", "checkpoint-4"]
    assert all(check_manifest(folder) is None for _, folder in list_checkpoints(run))
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
