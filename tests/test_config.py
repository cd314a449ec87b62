"""TrainConfig schema, YAML round trip, validation messages and presets (no training here)."""

from __future__ import annotations

import re

import pytest

from pipeline.config import (
    TrainConfig,
    config_from_dict,
    load_config,
    save_config,
    set_field,
)
from pipeline.errors import UserError
from pipeline.hardware import GpuInfo, Hardware
from pipeline.plan import memory_estimate, resolve_precision, validate_config
from pipeline.presets import BUILTIN, get_preset, list_presets, save_preset
from pipeline.registry import list_specs

GIB = 2**30
CPU = Hardware("cpu", [], False, None, 2, 8 * GIB)
A100 = Hardware("cuda", [GpuInfo("A100", 80 * GIB, 79 * GIB)], True, "12.4", 16, 64 * GIB)
T4 = Hardware("cuda", [GpuInfo("T4", 16 * GIB, 15 * GIB)], False, "12.4", 8, 32 * GIB)
OLD_CUDA = Hardware("cuda", [GpuInfo("K80", 12 * GIB, 12 * GIB)], False, "11.0", 4, 16 * GIB)
TINY = ["tiny-smolvlm", "tiny-llava", "tiny-qwen2-vl"]


@pytest.mark.parametrize("preset", list(BUILTIN))
@pytest.mark.parametrize("model", TINY)
def test_every_preset_validates_for_every_tiny_model(preset: str, model: str) -> None:
    cfg = get_preset(preset, model=model)
    assert cfg.model.name == model
    for hw in (CPU, A100):
        errors, warnings = validate_config(cfg, hw)
        assert errors == [], (preset, model, hw.device)
        if cfg.training.method == "qlora" and hw is CPU:
            assert any(w.startswith("training.method: qlora without a CUDA GPU") for w in warnings)


def _with(path: str, value: object, **more: object) -> dict:
    data: dict = {}
    for dotted, val in {path: value, **more}.items():
        section, _, name = dotted.partition(".")
        data.setdefault(section, {})[name] = val
    return data


def _matches(expected: str, message: str) -> bool:
    """A message starts with the expected text, or matches it as a regular expression."""
    return message.startswith(expected) or re.match(expected, message) is not None


BAD = [  # (config overrides, hardware, the error's field and words)
    (_with("training.learning_rate", 0), CPU, "training.learning_rate: must be above 0"),
    (_with("training.batch_size", 0), CPU, "training.batch_size: must be at least 1"),
    (_with("lora.dropout", 1.5), CPU, "lora.dropout: must be at least 0 and at most 0.9"),
    (_with("lora.r", 0), CPU, "lora.r: must be at least 1"),
    (_with("training.max_steps", 0), CPU, "training.max_steps: must be -1 (use epochs) or at least 1"),
    (_with("training.method", "dora"), CPU, "training.method: Input should be 'lora', 'qlora', 'full' or 'grpo'"),
    (_with("training.bogus", 1), CPU, "training.bogus: unknown field"),
    (_with("training.batch_size", "four"), CPU, "training.batch_size: Input should be a valid integer"),
    (_with("model.name", "no-such-model"), CPU, "model.name: unknown model 'no-such-model'"),
    (_with("model.name", "minicpm-v-2.6"), CPU, "model.name: minicpm-v-2.6 is disabled"),
    (_with("data.path", "/no/such/folder"), CPU, "data.path: /no/such/folder is not a folder"),
    (_with("model.name", "tiny-llava", **{"data.max_length": 60}), CPU,
     "data.max_length: 60 cannot hold the 64 image tokens"),
    (_with("training.early_stopping_patience", 3, **{"training.eval_steps": 0}), CPU,
     "training.early_stopping_patience: needs periodic evaluation"),
    (_with("training.precision", "fp16"), CPU, "training.precision: fp16 mixed precision needs a CUDA GPU"),
    (_with("training.precision", "bf16"), T4, "training.precision: bf16 needs a GPU of compute capability 8.0+"),
    (_with("hardware.device", "cuda"), CPU, "hardware.device: cuda requested but no CUDA GPU was found"),
    (_with("lora.target_modules", []), CPU, "lora.target_modules: empty"),
    ({}, OLD_CUDA, "hardware: CUDA 11.0 is older than 11.8"),
    (_with("model.name", "qwen2.5-vl-7b", **{"training.method": "full", "data.max_length": 2048}), A100,
     r"hardware: estimated [12]\d\d\.\d GiB does not fit in 80.0 GiB"),  # full fine-tuning of 8B
    (_with("model.name", "qwen2-vl-2b", **{"hardware.gpu_memory_gb": 4}), CPU,
     r"hardware.gpu_memory_gb: estimated \d+\.\d GiB does not fit in 4.0 GiB .*largest part"),
]


@pytest.mark.parametrize(("data", "hw", "expected"), BAD, ids=[b[2].split(":")[0] + str(i) for i, b in enumerate(BAD)])
def test_bad_configs_name_the_field(data: dict, hw: Hardware, expected: str) -> None:
    errors, _ = validate_config(data, hw)
    assert any(_matches(expected, e) for e in errors), errors


WARN = [
    (_with("training.max_steps", 10, **{"training.save_steps": 50}), CPU,
     "training.save_steps: 50 is beyond training.max_steps 10"),
    (_with("training.method", "qlora"), CPU, "training.method: qlora without a CUDA GPU"),
    (_with("training.best_mode", "max"), CPU, "training.best_mode: 'max' for eval_loss"),
    (_with("training.save_steps", 10, **{"training.eval_steps": 4}), CPU, "training.save_steps: 10 is not a multiple"),
    (_with("model.name", "qwen2-vl-2b", **{"hardware.gpu_memory_gb": 15, "data.max_image_size": 448}), CPU,
     r"hardware.gpu_memory_gb: estimated \d+\.\d GiB is tight for 15.0 GiB"),
    (_with("training.precision", "bf16"), CPU, "training.precision: bf16 on CPU"),
]


@pytest.mark.parametrize(("data", "hw", "expected"), WARN)
def test_warnings_name_the_field(data: dict, hw: Hardware, expected: str) -> None:
    errors, warnings = validate_config(data, hw)
    assert errors == []
    assert any(_matches(expected, w) for w in warnings), warnings


def test_precision_follows_hardware() -> None:
    cfg = TrainConfig()
    assert [resolve_precision(cfg, hw) for hw in (CPU, A100, T4)] == ["fp32", "bf16", "fp16"]


def test_yaml_round_trip_starts_with_its_command(tmp_path) -> None:
    cfg = get_preset("production", model="tiny-llava", data=str(tmp_path), out=str(tmp_path / "run"))
    set_field(cfg, "lora.target_modules", ["q_proj", "v_proj"])
    path = save_config(cfg, tmp_path / "config.yaml")
    text = path.read_text()
    assert text.splitlines()[0] == f"# python -m pipeline train --config {path}"
    assert load_config(path) == cfg
    assert "modules_to_save: registry" in text


def test_load_config_errors(tmp_path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("training:\n  lr: [1,\n")
    with pytest.raises(UserError, match=r"bad.yaml: not valid YAML at line \d"):
        load_config(bad_yaml)
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="must be a YAML mapping"):
        load_config(not_mapping)
    typo = tmp_path / "typo.yaml"
    typo.write_text("training:\n  learning_rte: 0.1\n")
    with pytest.raises(UserError, match=r"typo.yaml: training.learning_rte: unknown field"):
        load_config(typo)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_set_field_validates() -> None:
    cfg = TrainConfig()
    set_field(cfg, "training.batch_size", 8)
    assert cfg.training.batch_size == 8
    with pytest.raises(UserError, match=r"training.method: Input should be .* \(got 'sgd'\)"):
        set_field(cfg, "training.method", "sgd")
    with pytest.raises(UserError, match="training.nope: unknown config field"):
        set_field(cfg, "training.nope", 1)
    assert config_from_dict({"lora": {"r": "8"}}).lora.r == 8


def test_user_presets_round_trip(tmp_path) -> None:
    cfg = get_preset("quick_test", model="tiny-qwen2-vl", data=str(tmp_path), out=str(tmp_path / "run"))
    set_field(cfg, "lora.r", 4)
    path = save_preset("my-small", cfg)
    assert path.parent.name == "presets" and path.is_file()
    assert "my-small" in list_presets() and list_presets()[: len(BUILTIN)] == list(BUILTIN)
    loaded = get_preset("my-small")
    assert loaded.lora.r == 4 and loaded.model.name == "tiny-qwen2-vl"
    assert loaded.data.path == "" and loaded.training.output_dir == ""  # a preset is a template, not a run
    with pytest.raises(UserError, match="is built in"):
        save_preset("balanced", cfg)
    with pytest.raises(UserError, match="preset name"):
        save_preset("../escape", cfg)
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        get_preset("nope")


def _gb_class(spec) -> float:
    """The smallest GPU size the registry quotes for a model ('12 GB (LoRA), 8 GB (QLoRA)' -> 8)."""
    sizes = [float(n) for n in re.findall(r"(\d+(?:\.\d+)?) GB", spec.gpu_memory_class)]
    return min(sizes, default=float("inf"))


def test_8gb_preset_fits_the_registrys_8gb_models() -> None:
    small = [spec for spec in list_specs() if _gb_class(spec) <= 8]
    assert {"smolvlm2-2.2b", "llava-onevision-0.5b"} <= {s.key for s in small}
    gpu = Hardware("cuda", [GpuInfo("RTX 4060", 8 * GIB, 8 * GIB)], True, "12.4", 8, 32 * GIB)
    for spec in small:
        cfg = get_preset("ultra_low_memory_8gb", model=spec.key)
        estimate = memory_estimate(cfg, gpu)
        assert estimate.total < 7.2 * GIB, (spec.key, estimate.gib())
        assert cfg.training.method == "qlora" and cfg.training.gradient_checkpointing
        assert cfg.training.batch_size == 1 and cfg.training.grad_accum > 1
        if spec.enabled:
            assert validate_config(cfg, gpu)[0] == [], spec.key


def test_presets_keep_room_for_image_tokens() -> None:
    cfg = get_preset("ultra_low_memory_8gb", model="llava-onevision-0.5b")
    errors, _ = validate_config(cfg, A100)
    assert errors == [] and cfg.data.max_length > 1024  # anyres images need more than the preset's 1024
