"""pipeline.plan: the one config builder (CLI, jobs, app), validation done once, the Qwen image cap end to end."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest
import yaml
from helpers.datasets import make

from pipeline import plan
from pipeline.config import load_config
from pipeline.dataset import write_meta
from pipeline.errors import UserError
from pipeline.hardware import GpuInfo, Hardware
from pipeline.registry import QWEN_MAX_PIXELS

GIB = 2**30
CPU = Hardware("cpu", [], False, None, 2, 8 * GIB)
A100 = Hardware("cuda", [GpuInfo("A100", 80 * GIB, 79 * GIB)], True, "12.4", 16, 64 * GIB)
PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"


@pytest.fixture
def studio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private STUDIO_HOME holding datasets/ds (converted for Qwen2.5-VL, the studio's cap recorded)."""
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    make(tmp_path / "home" / "datasets" / "ds", meta={"labels": {"cat": 3, "dog": 3}, "tasks": ["grounding"],
                                                      "convention": "qwen2_5_vl", "max_pixels": QWEN_MAX_PIXELS})
    return tmp_path / "home" / "datasets" / "ds"


def _parser(verb: str) -> argparse.ArgumentParser:
    from pipeline.commands import jobs, train

    parser = argparse.ArgumentParser()
    if verb == "train":
        train.add_arguments(parser)
        return parser
    jobs.add_arguments(parser)
    return parser


def _options(parser: argparse.ArgumentParser) -> set[str]:
    if verb_parsers := [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]:
        parser = verb_parsers[0].choices["submit"]
    return {opt for action in parser._actions for opt in action.option_strings}


def test_train_and_jobs_submit_accept_the_same_training_options() -> None:
    train, submit = _options(_parser("train")), _options(_parser("jobs"))
    shared = {"--config", "--preset", "--model", "--data", "--out", "--method", "--max-steps", "--save-steps", "--set"}
    assert shared <= train and shared <= submit
    assert train - submit == {"--resume", "--check"}  # what only the foreground trainer does
    assert submit - train == {"--gpus", "--name", "--tag", "--json"}  # what only a queued job has


def test_cli_verbs_and_the_app_build_identical_configs(studio: Path) -> None:
    from pipeline import service
    from pipeline.commands.train_options import config_from_args

    argv = ["--preset", "cpu_demo", "--model", "tiny-qwen2-vl", "--data", str(studio), "--max-steps", "7",
            "--set", "lora.r=4"]
    from_train = config_from_args(_parser("train").parse_args(argv))
    from_jobs = config_from_args(_parser("jobs").parse_args(["submit", *argv]))
    text = service.config_yaml(plan.build_config(preset="cpu_demo", model="tiny-qwen2-vl", sets=["lora.r=4"]))
    from_app = service.training_config("ds", "tiny-qwen2-vl", "cpu_demo", text, max_steps=7)
    from_api = plan.build_config(preset="cpu_demo", model="tiny-qwen2-vl", data=studio,
                                 overrides={"training.max_steps": 7}, sets=["lora.r=4"])
    dumps = [c.model_dump(mode="json") for c in (from_train, from_jobs, from_app, from_api)]
    assert dumps[0] == dumps[1] == dumps[2] == dumps[3]
    assert dumps[0]["data"]["path"] == str(studio.resolve()) and dumps[0]["training"]["max_steps"] == 7
    assert dumps[0]["lora"]["r"] == 4 and dumps[0]["data"]["max_pixels"] == QWEN_MAX_PIXELS


def test_builder_sources_and_their_errors(tmp_path: Path) -> None:
    cfg = plan.build_config(model="tiny-smolvlm", out=tmp_path / "run", overrides={"training.method": "full"})
    assert cfg.training.output_dir == str((tmp_path / "run").resolve()) and cfg.training.method == "full"
    assert cfg.training.grad_accum == 4  # the default preset (balanced)
    assert cfg.data.max_pixels is None  # filled in once a dataset is named (from its dataset.json)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"training": {"max_steps": 9}}))
    resumed = plan.build_config(out=tmp_path / "run", resume=True)
    assert resumed.training.max_steps == 9  # `train --resume --out RUN` reads RUN/config.yaml back
    with pytest.raises(UserError, match="--config or --preset, not both"):
        plan.build_config(config=tmp_path / "run" / "config.yaml", preset="balanced")
    with pytest.raises(UserError, match=r"^training\.batch_size: "):
        plan.build_config(sets=["training.batch_size=many"])
    with pytest.raises(UserError, match=r"^lora\.rank: unknown config field"):
        plan.build_config(overrides={"lora.rank": 3})
    with pytest.raises(UserError, match=r"^--set 'lora\.r': expected SECTION\.FIELD=VALUE"):
        plan.build_config(sets=["lora.r"])
    with pytest.raises(UserError, match="config YAML must be a mapping"):
        plan.build_config(yaml_text="- just\n- a list\n")
    with pytest.raises(UserError, match=r"^config YAML: training\.epochs"):
        plan.build_config(yaml_text="training: {epochs: soon}\n")
    from pipeline import service

    assert service.MAX_YAML_BYTES == plan.MAX_YAML_BYTES  # the app's upload check and the builder agree
    with pytest.raises(UserError, match="over 64 KiB"):
        plan.build_config(yaml_text="#" * (plan.MAX_YAML_BYTES + 1))


@pytest.mark.parametrize(("overrides", "field"), [
    ({"training.learning_rate": 0}, "training.learning_rate: must be above 0"),
    ({"data.max_length": 8}, "data.max_length: must be at least 16"),
    ({"model.name": "gpt-17"}, "model.name: unknown model"),
    ({"data.max_pixels": 200_704, "model.name": "qwen2.5-vl-3b"}, "data.max_pixels: 200704 is not the 1003520"),
    ({"data.path": "/nonexistent/ds"}, "data.path: /nonexistent/ds is not a folder"),
])
def test_validation_errors_name_the_field(overrides: dict, field: str) -> None:
    cfg = plan.build_config(preset="quick_test")
    for key, value in overrides.items():
        from pipeline.config import set_field

        set_field(cfg, key, value)
    checked = plan.check(cfg, CPU)
    assert any(e.startswith(field) for e in checked.errors), checked.errors
    with pytest.raises(UserError, match="^" + field.split(":")[0].replace(".", r"\.") + ":"):
        checked.raise_errors()


def test_a_folder_that_is_not_a_dataset_is_a_data_path_error(tmp_path: Path) -> None:
    cfg = plan.build_config(preset="quick_test", data=tmp_path)
    errors = plan.check(cfg, CPU).errors
    assert errors[0].startswith(f"data.path: {tmp_path.resolve()} is not a converted dataset") and "\n" not in errors[0]


def test_check_resolves_and_estimates_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = plan.build_config(preset="balanced", model="qwen2-vl-2b")
    calls = []
    real = plan.memory_estimate
    monkeypatch.setattr(plan, "memory_estimate", lambda *a, **k: calls.append(1) or real(*a, **k))
    checked = plan.check(cfg, A100)
    assert checked.ok and len(calls) == 1, checked.errors
    assert (checked.device, checked.precision, checked.weight_dtype) == ("cuda", "bf16", "bfloat16")
    assert checked.memory_bytes() == checked.memory.total > 0
    assert plan.check(cfg, CPU).memory_bytes() is None  # nothing to reserve on a GPU when training on CPU


def test_image_cap_from_dataset_json_to_run_config(studio: Path, tmp_path: Path, monkeypatch) -> None:
    from pipeline.jobs import prepare_train

    older = make(tmp_path / "older", meta={"labels": {"cat": 3}, "tasks": ["grounding"]})  # converted before the cap
    assert plan.build_config(preset="quick_test", data=older).data.max_pixels == QWEN_MAX_PIXELS
    write_meta(older, {"labels": {"cat": 3}, "max_pixels": 200_704})
    qwen = plan.build_config(preset="quick_test", model="qwen2.5-vl-3b", data=older)
    assert qwen.data.max_pixels == 200_704  # the dataset's recorded cap, not a second number
    assert plan.check(qwen, A100).spec.token_args["max_pixels"] == 200_704  # the estimate counts with it

    checks = []
    real_check = plan.check
    monkeypatch.setattr(plan, "check", lambda *a, **k: checks.append(1) or real_check(*a, **k))
    cfg = plan.build_config(preset="quick_test", model="tiny-qwen2-vl", data=studio, out=tmp_path / "run")
    spec = prepare_train(train_config=cfg)
    assert len(checks) == 1  # validated once, from the object: no temporary YAML read back
    saved = load_config(Path(spec.run_dir) / "config.yaml")
    assert saved.data.max_pixels == QWEN_MAX_PIXELS and spec.dataset_fingerprint
    assert sorted(p.name for p in Path(spec.run_dir).iterdir()) == ["config.yaml"]


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.add(node.module or "")
    return found


def test_config_and_memory_import_neither_each_other_nor_plan() -> None:
    """config.py is the schema, memory.py the arithmetic: both imported by plan.py, never the other way round."""
    assert not _imports(PIPELINE / "config.py") & {"memory", "plan", "registry", "hardware"}
    assert not _imports(PIPELINE / "memory.py") & {"config", "plan", "registry", "hardware"}
    assert not _imports(PIPELINE / "dataset.py") & {"plan", "config", "train", "evaluate", "jobs", "service"}
    assert not _imports(PIPELINE / "registry.py") - {"errors", "imagegrid"}
    assert not _imports(PIPELINE / "imagegrid.py") - {"errors"}
