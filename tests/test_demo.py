"""The offline demo: a shortened run end to end (every artifact exists and parses), plus its CLI and error paths."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pipeline import cli
from pipeline.demo import DemoSummary, follow_progress, progress_line, run_demo, summary_table
from pipeline.errors import UserError

# Small enough for the suite: 4 short videos (2 train, 1 val, 1 test), a few steps, a few held-out examples.
SHORT = {"frames": 24, "videos": 4}


@pytest.fixture(scope="module")
def short_demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary, list[str]]:
    out = tmp_path_factory.mktemp("demo") / "out"
    lines: list[str] = []
    summary = run_demo(out, steps=4, sample=SHORT, eval_limit=6, echo=lines.append, progress=False)
    return out, summary, lines


@pytest.mark.slow
def test_short_demo_writes_every_artifact(short_demo):
    out, summary, _ = short_demo
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for key in ("finetuned_miou", "base_miou", "baseline_miou"):
        assert isinstance(data[key], float) and 0.0 <= data[key] <= 1.0, key
    assert data["seconds"] > 0 and data["steps"] == 4 and data["model"] == "tiny-smolvlm"
    assert data["convention"] == "json"
    assert set(data["stage_seconds"]) == {"sample", "convert", "validate", "split", "train", "evaluate", "export"}
    for key in ("report", "run", "evaluation", "export", "export_zip", "summary"):
        assert Path(data[key]).exists() and Path(data[key]).is_relative_to(out), key
    assert (out / "summary.md").read_text(encoding="utf-8").count("|") > 10
    # each artifact parses: quality report, split files, run progress, evaluation metrics, export, zip
    assert json.loads((out / "report" / "report.json").read_text(encoding="utf-8"))["summary"]["errors"] == 0
    split_sizes = {s: len((out / "dataset" / "splits" / f"{s}.jsonl").read_text().splitlines())
                   for s in ("train", "val", "test")}
    assert all(split_sizes.values()), split_sizes
    events = [json.loads(line) for line in (out / "run" / "progress.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "end" and events[-1]["status"] == "succeeded" and events[-1]["step"] == 4
    metrics = json.loads((Path(data["evaluation"]) / "metrics.json").read_text(encoding="utf-8"))
    assert metrics
    studio = json.loads((Path(data["export"]) / "studio.json").read_text(encoding="utf-8"))
    assert studio["model"] == "tiny-smolvlm"
    assert (Path(data["export"]) / "README.md").is_file()
    assert (Path(data["dataset"]) / "records.jsonl").is_file()  # summary.json names its export and dataset folders
    with zipfile.ZipFile(data["export_zip"]) as archive:
        assert archive.testzip() is None
        assert any(name.endswith(".safetensors") for name in archive.namelist())


@pytest.mark.slow
def test_short_demo_streams_stage_and_training_lines(short_demo):
    _, summary, lines = short_demo
    text = "\n".join(lines)
    for n, stage in enumerate(("sample", "convert", "validate", "split", "train", "evaluate", "export"), 1):
        assert f"[{n}/7] {stage}:" in text
    assert "train step 1/4" in text and "train succeeded at step 4/4" in text
    assert summary.test_examples == 6


@pytest.mark.slow
def test_short_demo_table_shows_the_three_models(short_demo):
    _, summary, _ = short_demo
    table = summary.table()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["fine-tuned", "base", "mean-box baseline"]
    assert f"{summary.finetuned_miou:.3f}" in rows[1] and f"{summary.baseline_miou:.3f}" in rows[3]


def test_summary_table_and_ratio():
    summary = DemoSummary(out="x", finetuned_miou=0.6, base_miou=0.0, baseline_miou=0.12, seconds=241.0, steps=600,
                          metrics={"model": {"miou": 0.6, "ap50": 0.71, "parse_failure_rate": 0.0},
                                   "base": {"miou": 0.0, "parse_failure_rate": 1.0},
                                   "baseline": {"miou": 0.12, "ap50": 0.02, "parse_failure_rate": 0.0}},
                          stage_seconds={"sample": 20.0, "train": 180.0})
    assert summary.ratio == pytest.approx(5.0)
    table = summary_table(summary)
    assert "| fine-tuned | tiny-smolvlm, cpu_demo, 600 steps | 0.600 | 0.710 | 0.00 |" in table
    assert "| base | tiny-smolvlm before training | 0.000 | - | 1.00 |" in table
    assert "5.0x the baseline" in table and "241 s wall (sample 20, train 180)" in table
    assert summary.to_dict()["ratio_to_baseline"] == pytest.approx(5.0)


def test_progress_lines_from_events():
    log = {"event": "log", "step": 20, "total_steps": 600, "loss": 0.51234, "samples_per_s": 80.25, "eta_s": 125.0}
    assert progress_line(log) == "  train step 20/600  loss 0.5123  80.2 samples/s  eta 2m05s"
    end = {"event": "end", "status": "succeeded", "step": 600, "total_steps": 600, "final_loss": 0.2}
    assert progress_line(end) == "  train succeeded at step 600/600, final loss 0.2000"
    assert progress_line({"event": "checkpoint", "step": 100}) is None
    assert progress_line({"event": "eval", "step": 250, "eval_loss": 0.4, "eval_miou": 0.25}) == \
        "  eval  step 250  eval_loss 0.4000  val mIoU 0.250"


def test_follow_progress_prints_about_twenty_log_lines_and_every_eval(tmp_path):
    events = [{"event": "start", "step": 0, "total_steps": 200}]
    events += [{"event": "log", "step": s, "total_steps": 200, "loss": 1 / s, "eta_s": 200 - s} for s in range(1, 201)]
    events += [{"event": "eval", "step": 100, "eval_loss": 0.5},
               {"event": "end", "status": "succeeded", "step": 200, "total_steps": 200, "final_loss": 0.005}]
    lines: list[str] = []
    with follow_progress(tmp_path, lines.append, every=0.01):
        (tmp_path / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    logs = [line for line in lines if line.startswith("  train step")]
    assert logs[0].startswith("  train step 1/200") and logs[-1].startswith("  train step 200/200")
    assert 19 <= len(logs) <= 22
    assert lines[-2:] == ["  eval  step 100  eval_loss 0.5000", "  train succeeded at step 200/200, final loss 0.0050"]


def test_non_empty_out_is_refused_and_left_alone(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists and is not empty"):
        run_demo(tmp_path, steps=1, echo=lambda line: None)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_bad_sample_option_leaves_nothing_behind(tmp_path):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--frames", "3"]) == 2
    assert not out.exists()


def test_cli_help_lists_the_options():
    text = subprocess.run([sys.executable, "-m", "pipeline", "demo", "--help"], capture_output=True, text=True,
                          check=True).stdout
    for option in ("--out", "--model", "--task", "--steps", "--frames", "--videos", "--eval-limit"):
        assert option in text


@pytest.mark.slow
def test_demo_runs_on_another_family_in_its_convention(tmp_path):
    """Florence-2's twin (encoder-decoder, <loc_N> answers): the whole demo, scored in its own convention."""
    summary = run_demo(tmp_path / "out", steps=2, sample=SHORT, eval_limit=4, echo=lambda line: None,
                       progress=False, model="tiny-florence2")
    data = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert data["model"] == summary.model == "tiny-florence2" and data["convention"] == "florence2"
    truth = [json.loads(line)["truth_answer"] for line in
             (Path(data["evaluation"]) / "predictions.jsonl").read_text().splitlines()]
    assert truth and all("<loc_" in answer for answer in truth)
    with pytest.raises(UserError, match="unknown demo model 'tiny-nope'.*tiny-paligemma"):
        run_demo(tmp_path / "other", model="tiny-nope")
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_short_track_demo_names_its_baseline(tmp_path: Path) -> None:
    """demo --task track end to end, shortened: clips of 3 frames, scored on later frames against the copied box."""
    out = tmp_path / "track"
    summary = run_demo(out, steps=2, sample={"frames": 16, "videos": 4}, eval_limit=4, echo=lambda line: None,
                       progress=False, task="track")
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert data["task"] == "track" and data["metric"] == "track_miou" and "copy-the-given-box" in data["baseline"]
    assert data["baseline_miou"] == data["metrics"]["baseline"]["track_miou"] and data["steps"] == 2
    assert 0.0 <= data["baseline_miou"] < 0.5  # the shapes move fast: the first box rarely fits later frames
    rows = [json.loads(line) for line in (Path(data["evaluation"]) / "predictions.jsonl").read_text().splitlines()]
    assert rows and all(r["task"] == "track" and len(r["images"]) == 3 for r in rows)
    assert "copy-the-given-box baseline" in summary.table()
    with pytest.raises(UserError, match="--task"):
        run_demo(tmp_path / "bad", task="polygon")
    with pytest.raises(UserError, match="tiny-florence2 .florence2. takes one image per example"):
        run_demo(tmp_path / "single", task="track", model="tiny-florence2")  # refused before anything is made
    assert not (tmp_path / "single").exists()


def test_recipes_change_only_what_their_family_needs(studio_home: Path) -> None:
    """The recipes on top of cpu_demo: Florence-2 at a lower learning rate, Qwen2-VL for 2,000 steps, the rest as
    the preset; every recipe names a tiny model the demo accepts."""
    from pipeline.demo_recipes import RECIPES, apply_recipe, check_demo_model
    from pipeline.presets import get_preset

    def config(model: str):
        return apply_recipe(get_preset("cpu_demo", model=model, data=str(studio_home), out=str(studio_home / "r")),
                            model)

    preset = get_preset("cpu_demo", model="tiny-smolvlm", data=str(studio_home), out=str(studio_home / "r"))
    florence, qwen2, smol = config("tiny-florence2"), config("tiny-qwen2-vl"), config("tiny-smolvlm")
    assert florence.training.learning_rate == 1e-3 and florence.training.max_steps == preset.training.max_steps
    assert qwen2.training.max_steps == 2000 and qwen2.training.learning_rate == preset.training.learning_rate
    assert smol.training == preset.training
    assert all(check_demo_model(model).tiny for model in RECIPES)


@pytest.mark.slow
def test_short_rl_demo_refines_on_videos_held_back_from_sft(tmp_path: Path) -> None:
    """demo --rl, shortened: SFT trains without the held-back videos, GRPO's prompts are exactly them, and the
    summary has both held-out scores (same examples) and the GRPO seconds."""
    from pipeline.dataset import open_dataset

    out = tmp_path / "rl"
    run_demo(out, steps=2, sample=SHORT, eval_limit=4, echo=lambda line: None, progress=False, rl=True, rl_steps=2)
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert data["rl_steps"] == 2 and data["rl_seconds"] > 0
    assert data["sft_miou"] == data["metrics"]["model"]["miou"] and data["rl_miou"] == data["metrics"]["rl"]["miou"]
    dataset = open_dataset(out / "dataset")
    held, train = dataset.split("rl"), dataset.split("train")
    assert data["data"]["rl_holdout"] == {"train": len(train), "rl": len(held)} and held and train
    assert {r.video_id for r in held}.isdisjoint({r.video_id for r in train})
    grpo = (out / "run-grpo" / "config.yaml").read_text(encoding="utf-8")
    assert "train_split: rl" in grpo
    sft = json.loads((out / "run" / "studio.json").read_text(encoding="utf-8"))["train_examples"]
    rl = json.loads((out / "run-grpo" / "studio.json").read_text(encoding="utf-8"))["train_examples"]
    assert 0 < sft <= len(train) and 0 < rl <= len(held)  # one example per annotated frame of its own split
