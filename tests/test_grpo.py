"""GRPO refinement (issue 22): rewards on known answers, config validation, a few real GRPO steps on a tiny SFT run
(progress events with reward stats, checkpoints with valid manifests), and a resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.coords import get_convention
from pipeline.errors import UserError
from pipeline.masks import encode_rle
from pipeline.rewards import GeometryReward, RewardWeights, answer_reward
from pipeline.tasks import Example

ROOT = Path(__file__).resolve().parents[1]
CONV = get_convention("json")  # tiny-smolvlm's convention
W = RewardWeights()


def _example(task: str, truth: dict, width: int = 64, height: int = 64) -> Example:
    return Example(f"ex-{task}", "rec", task, "images/x.jpg", "prompt", "answer", width, height, truth)


# -- rewards ---------------------------------------------------------------------------------------------------
def test_box_reward_is_iou_with_the_truth() -> None:
    ex = _example("grounding", {"label": "circle", "boxes": [[0, 0, 32, 32]]})
    exact = CONV.encode_boxes([("circle", [0, 0, 32, 32])], 64, 64)
    half = CONV.encode_boxes([("circle", [0, 0, 32, 16])], 64, 64)
    far = CONV.encode_boxes([("circle", [40, 40, 60, 60])], 64, 64)
    assert answer_reward(ex, exact, CONV, W) == pytest.approx(1.0)
    assert answer_reward(ex, half, CONV, W) == pytest.approx(0.5)
    assert answer_reward(ex, far, CONV, W) == pytest.approx(0.0)
    assert answer_reward(ex, half, CONV, RewardWeights(box=2.0)) == pytest.approx(1.0)  # the weight scales it


def test_unparseable_answer_gets_the_small_penalty() -> None:
    ex = _example("grounding", {"label": "circle", "boxes": [[0, 0, 32, 32]]})
    assert answer_reward(ex, '[{"label": "circle", "box": [1, 2', CONV, W) == pytest.approx(-0.1)
    assert answer_reward(ex, "@@ garbage {", CONV, RewardWeights(parse_failure=-0.3)) == pytest.approx(-0.3)


def test_negative_rewards_a_correct_none() -> None:
    ex = _example("negative", {"label": "square", "boxes": []})
    assert answer_reward(ex, CONV.none_answer, CONV, W) == pytest.approx(1.0)
    assert answer_reward(ex, CONV.encode_boxes([("square", [0, 0, 8, 8])], 64, 64), CONV, W) == pytest.approx(0.0)


def test_count_reward_exact_and_near() -> None:
    ex = _example("counting", {"label": "circle", "count": 3})
    assert answer_reward(ex, CONV.encode_count(3), CONV, W) == pytest.approx(1.0)
    assert answer_reward(ex, CONV.encode_count(4), CONV, W) == pytest.approx(0.5)
    assert answer_reward(ex, CONV.encode_count(2), CONV, W) == pytest.approx(0.5)
    assert answer_reward(ex, CONV.encode_count(6), CONV, W) == pytest.approx(0.0)


def test_polygon_reward_is_mask_iou() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[0:32, 0:32] = 1
    ex = _example("polygon", {"label": "circle", "rle": encode_rle(mask)})
    full = CONV.encode_polygon("circle", [0, 0, 32, 0, 32, 32, 0, 32], 64, 64)
    left = CONV.encode_polygon("circle", [0, 0, 16, 0, 16, 32, 0, 32], 64, 64)
    assert answer_reward(ex, full, CONV, W) > 0.9
    assert 0.4 < answer_reward(ex, left, CONV, W) < 0.6


def test_trl_reward_function_reads_conversational_completions() -> None:
    ex = _example("grounding", {"label": "circle", "boxes": [[0, 0, 32, 32]]})
    reward = GeometryReward([ex], "json", W)
    exact = CONV.encode_boxes([("circle", [0, 0, 32, 32])], 64, 64)
    completions = [[{"role": "assistant", "content": " " + exact}], [{"role": "assistant", "content": "??"}]]
    assert reward([[], []], completions, example_id=[ex.id, ex.id]) == pytest.approx([1.0, -0.1])


# -- config ----------------------------------------------------------------------------------------------------
def test_grpo_validation_errors_name_the_field(tmp_path: Path) -> None:
    from pipeline.config import TrainConfig, config_from_dict
    from pipeline.plan import build_config, check

    with pytest.raises(UserError, match=r"grpo\.parent: not a run folder"):
        build_config(from_run=tmp_path / "missing", out=tmp_path / "r")
    with pytest.raises(UserError, match=r"^grpo\.beta"):
        config_from_dict({"grpo": {"beta": "lots"}})
    with pytest.raises(UserError, match=r"^grpo\.loss_type"):
        config_from_dict({"grpo": {"loss_type": "ppo"}})
    cfg = TrainConfig()
    cfg.training.method = "grpo"
    cfg.grpo.num_generations = 3
    cfg.grpo.beta = -1.0
    errors = check(cfg).errors
    assert any(e.startswith("grpo.parent: required") for e in errors), errors
    assert any(e.startswith("grpo.num_generations: 3 must divide") for e in errors), errors
    assert any(e.startswith("grpo.beta: must be at least 0") for e in errors), errors
    cfg.grpo.num_generations = 1
    assert any(e.startswith("grpo.num_generations: must be at least 2") for e in check(cfg).errors)
    plain = TrainConfig()
    plain.grpo.parent = str(tmp_path)
    assert any(e.startswith("grpo.parent: only a GRPO run") for e in check(plain).errors)


def test_grpo_memory_estimate_adds_generations_and_reference() -> None:
    from pipeline.config import TrainConfig
    from pipeline.hardware import GpuInfo, Hardware
    from pipeline.plan import memory_estimate

    hw = Hardware("cuda", [GpuInfo("gpu", 80 * 2**30, 80 * 2**30)], True, "12.4", 8, 64 * 2**30)
    cfg = TrainConfig()
    cfg.model.name = "qwen2-vl-2b"
    cfg.training.method, cfg.grpo.weights, cfg.grpo.beta = "grpo", "lora", 0.0
    no_ref = memory_estimate(cfg, hw)
    assert "generation_kv_cache" in no_ref.parts and "reference_adapter" not in no_ref.parts
    cfg.grpo.beta = 0.04
    assert "reference_adapter" in memory_estimate(cfg, hw).parts
    cfg.grpo.weights = "full"
    full = memory_estimate(cfg, hw)
    assert full.parts["reference_model"] > 0
    cfg.training.batch_size *= 2  # more completions per step, more memory
    assert memory_estimate(cfg, hw).total > full.total


# -- real runs -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers.export_runs import base_dir, trained_run

    return trained_run(base_dir(tmp_path_factory), "lora")


SMALL = ["training.batch_size=4", "grpo.num_generations=4", "grpo.max_completion_length=6",
         "training.geometry_eval_samples=2", "training.logging_steps=1", "training.keep_checkpoints=2",
         "data.max_train_samples=8"]


def _grpo_config(parent: Path, out: Path, steps: int, save: int) -> object:
    from pipeline.plan import build_config

    return build_config(from_run=parent, out=out, overrides={"training.max_steps": steps,
                                                             "training.save_steps": save,
                                                             "training.eval_steps": save}, sets=SMALL)


def test_a_few_grpo_steps_write_reward_events_and_checkpoints(sft_run: Path, tmp_path: Path) -> None:
    from pipeline import rundir
    from pipeline.evaluate import run_target
    from pipeline.grpo import run_grpo

    run = tmp_path / "grpo"
    cfg = _grpo_config(sft_run, run, steps=2, save=1)
    result = run_grpo(cfg)  # type: ignore[arg-type]
    assert result.status == "succeeded" and result.step == 2
    events = rundir.run_events(run)
    logs = [e for e in events if e["event"] == "log"]
    assert logs and all({"reward", "reward_std", "kl", "completion_length"} <= set(e) for e in logs), logs
    assert all(isinstance(e["reward"], float) and e["completion_length"] <= 6 for e in logs)
    assert events[0]["event"] == "start" and events[0]["method"] == "grpo"
    assert any(e["event"] == "eval" and "eval_miou" in e for e in events)
    checkpoints = rundir.list_checkpoints(run)
    assert [step for step, _ in checkpoints] == [1, 2]
    assert all(rundir.check_manifest(path) is None for _, path in checkpoints)
    assert (rundir.read_best(run) or {}).get("metric") == "eval_miou"
    studio = json.loads(rundir.studio_path(run).read_text())
    assert studio["method"] == "lora" and studio["objective"] == "grpo" and studio["parent_run"] == str(sft_run)
    assert result.output and Path(result.output).name == rundir.ADAPTER_DIR
    assert run_target(run).parent_run == str(sft_run)  # evaluation shows the parent beside the refined run


def _wait_for_checkpoint(run: Path, proc: subprocess.Popen, timeout: float = 600) -> int:
    from pipeline import rundir

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        saved = [e["step"] for e in rundir.run_events(run) if e.get("event") == "checkpoint"]
        if saved:
            os.killpg(proc.pid, signal.SIGSTOP)  # frozen at once: a quiet machine could otherwise finish the run
            return rundir.checkpoint_step(rundir.newest_checkpoint(run))
        if proc.poll() is not None:
            raise AssertionError(f"training ended before a checkpoint: {rundir.log_tail(rundir.log_path(run))}")
        time.sleep(0.5)
    raise AssertionError("no checkpoint in time")


def test_killed_grpo_run_resumes_from_its_newest_complete_checkpoint(sft_run: Path, tmp_path: Path) -> None:
    from pipeline import rundir

    run = tmp_path / "grpo-kill"
    argv = [sys.executable, "-m", "pipeline", "train", "--from", str(sft_run), "--out", str(run),
            "--max-steps", "12", "--save-steps", "2", "--set", "training.eval_steps=2"]
    for item in SMALL:
        argv += ["--set", item]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        saved = _wait_for_checkpoint(run, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # kill -9, mid-way: no end event, no final output
        proc.wait()
    assert saved in range(2, 12, 2)
    assert rundir.final_output(run) is None
    assert rundir.newest_checkpoint(run) == rundir.checkpoint_path(run, saved)
    done = subprocess.run([sys.executable, "-m", "pipeline", "train", "--resume", "--out", str(run)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    events = rundir.run_events(run)
    resume = [e for e in events if e["event"] == "resume"]
    assert resume and resume[-1]["resumed_from"] == saved, events
    assert events[-1]["event"] == "end" and events[-1]["status"] == "succeeded" and events[-1]["step"] == 12
    assert all(rundir.check_manifest(path) is None for _, path in rundir.list_checkpoints(run))
    assert rundir.final_output(run) is not None


def test_jobs_submit_links_a_grpo_run_to_its_parent(sft_run: Path, tmp_path: Path) -> None:
    from pipeline import rundir
    from pipeline.config import load_config
    from pipeline.experiments import parent_run_dir
    from pipeline.jobs.submit import prepare_train
    from pipeline.plan import build_config

    spec = prepare_train(train_config=build_config(from_run=sft_run, out=tmp_path / "job-grpo", sets=SMALL))
    assert "grpo" in spec.tags and f"parent:{sft_run.name}" in spec.tags  # the parent ran outside the store
    assert parent_run_dir(spec.config) == str(sft_run)
    saved = load_config(rundir.config_path(spec.run_dir))
    assert saved.training.method == "grpo" and saved.grpo.weights == "lora" and saved.grpo.parent == str(sft_run)
    assert spec.argv[-2:] == ["--config", str(rundir.config_path(spec.run_dir))]


def test_demo_summary_reads_sft_and_rl_miou_from_one_evaluation() -> None:
    from pipeline.demo import DemoSummary, _take_metrics

    summary = DemoSummary(out="/tmp/x", rl=True)
    _take_metrics(summary, {"model": {"miou": 0.6, "n": 200}, "parent": {"miou": 0.55, "n": 200},
                            "base": {"miou": 0.0, "n": 200}, "baseline": {"miou": 0.2, "n": 200}})
    assert (summary.sft_miou, summary.rl_miou, summary.finetuned_miou) == (0.55, 0.6, 0.55)
    assert summary.metrics["rl"]["miou"] == 0.6 and summary.metrics["model"]["miou"] == 0.55
    data = summary.to_dict()
    assert {"sft_miou", "rl_miou", "rl_seconds"} <= set(data)
    assert "SFT + GRPO" in summary.table()
