"""Training presets: built-in starting points plus the user's own, saved as YAML under STUDIO_HOME/presets."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from .config import TrainConfig, config_from_dict, load_config, save_config
from .errors import UserError
from .home import home_dir

TEXT_ROOM = 128  # text tokens a preset keeps free next to the image tokens

# Each preset overrides the TrainConfig defaults; `model.name` and `data.path` come from the caller.
BUILTIN: dict[str, dict[str, Any]] = {
    "quick_test": {
        "about": "LoRA smoke test: a few steps in seconds on CPU, checks the whole path",
        "data": {"max_length": 256, "max_eval_samples": 8},
        "training": {"method": "lora", "max_steps": 10, "batch_size": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0,
                     "scheduler": "constant", "logging_steps": 1, "save_steps": 5, "keep_checkpoints": 1},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
    },
    "cpu_demo": {
        "about": "the offline demo: full fine-tuning of a tiny model on 64 px frames, about 3 minutes on 2 CPU cores",
        "data": {"max_length": 256, "max_eval_samples": 64},
        # Full fine-tuning: the tiny model is random, so every part must learn (docs/DEMO.md has the measurements).
        "training": {"method": "full", "max_steps": 1000, "batch_size": 32, "learning_rate": 2e-3,
                     "warmup_ratio": 0.05, "scheduler": "cosine", "weight_decay": 0.0,
                     "logging_steps": 10, "save_steps": 250, "keep_checkpoints": 1,
                     # the best checkpoint is the one that finds boxes best on validation, not the lowest loss
                     "geometry_eval_samples": 64, "best_metric": "eval_miou", "best_mode": "max"},
    },
    "balanced": {
        "about": "LoRA r=16 on every linear layer of the language model: the default for a real GPU",
        "data": {"max_length": 1024},
        "training": {"method": "lora", "epochs": 3, "batch_size": 4, "grad_accum": 4, "learning_rate": 2e-4,
                     "warmup_ratio": 0.05, "scheduler": "cosine", "logging_steps": 10, "save_steps": 200,
                     "keep_checkpoints": 2},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
    },
    "production": {
        "about": "LoRA r=64 plus the connector, longer schedule, gradient checkpointing and early stopping",
        "data": {"max_length": 2048, "max_eval_samples": 256},
        "training": {"method": "lora", "epochs": 5, "batch_size": 8, "grad_accum": 4, "learning_rate": 1e-4,
                     "warmup_ratio": 0.03, "scheduler": "cosine", "weight_decay": 0.01,
                     "gradient_checkpointing": True, "logging_steps": 10, "save_steps": 500, "keep_checkpoints": 3,
                     "early_stopping_patience": 5, "early_stopping_threshold": 0.001, "histogram_steps": 500},
        "lora": {"r": 64, "alpha": 128, "dropout": 0.05, "modules_to_save": "registry"},
    },
    "ultra_low_memory_8gb": {
        "about": "QLoRA 4-bit, gradient checkpointing, images capped at 384 px, batch 1 x 16: fits an 8 GB GPU",
        "data": {"max_length": 1024, "max_image_size": 384, "max_eval_samples": 32},
        "training": {"method": "qlora", "epochs": 3, "batch_size": 1, "grad_accum": 16, "learning_rate": 2e-4,
                     "warmup_ratio": 0.05, "scheduler": "cosine", "gradient_checkpointing": True,
                     "logging_steps": 10, "save_steps": 200, "keep_checkpoints": 2},
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "hardware": {"gpu_memory_gb": 8},
    },
}
# GRPO refinement presets (`train --method grpo --from RUN --preset NAME`): training and grpo settings laid over
# the parent run's config (its model, data and LoRA shape stay). Not in BUILTIN: each needs a parent run.
GRPO_PRESETS: dict[str, dict[str, Any]] = {
    "grpo": {
        "about": "GRPO refinement with box-IoU rewards: 8 samples per prompt, small learning rate, KL to the parent",
        "training": {"max_steps": 200, "batch_size": 8, "grad_accum": 1, "learning_rate": 1e-5, "warmup_ratio": 0.0,
                     "scheduler": "constant", "logging_steps": 5, "save_steps": 50, "keep_checkpoints": 2,
                     "geometry_eval_samples": 32, "best_metric": "eval_miou", "best_mode": "max",
                     "early_stopping_patience": 0},
        "grpo": {"num_generations": 8, "beta": 0.04, "temperature": 1.0},
    },
    "grpo_cpu_demo": {
        "about": "the offline demo's GRPO stage: a few minutes on 2 CPU cores after cpu_demo (docs/DEMO.md)",
        # 8 prompts a step: at 4 (batch 32) the held-out gain was half as large (docs/DEMO.md, "GRPO stage")
        "training": {"max_steps": 300, "batch_size": 64, "grad_accum": 1, "learning_rate": 3e-5,
                     "warmup_ratio": 0.0, "scheduler": "constant", "logging_steps": 5, "save_steps": 20,
                     "eval_steps": 20, "keep_checkpoints": 1, "geometry_eval_samples": 64, "best_metric": "eval_miou",
                     "best_mode": "max", "early_stopping_patience": 0, "weight_decay": 0.0},
        # a KL term to the SFT parent, as the `grpo` preset: +0.030 held-out against +0.024 without (docs/DEMO.md)
        "grpo": {"num_generations": 8, "beta": 0.04, "temperature": 1.0, "loss_type": "dapo"},
    },
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _user_dir() -> Path:
    return home_dir("presets")


def _user_file(name: str) -> Path:
    if not _NAME.fullmatch(name):
        raise UserError(f"preset name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return _user_dir() / f"{name}.yaml"


def list_presets() -> list[str]:
    """Built-in preset names, then the user's saved ones (sorted)."""
    user = sorted(p.stem for p in _user_dir().glob("*.yaml") if p.stem not in BUILTIN)
    return [*BUILTIN, *user]


def describe_preset(name: str) -> str:
    """One line about a preset (the user's saved presets: their method and model)."""
    if name in BUILTIN:
        return str(BUILTIN[name]["about"])
    cfg = get_preset(name)
    return f"saved preset: {cfg.training.method} on {cfg.model.name}"


def fit_image_tokens(cfg: TrainConfig) -> TrainConfig:
    """Raise data.max_length so one image's tokens leave TEXT_ROOM tokens for text (rounded up to 64)."""
    from .memory import image_tokens
    from .registry import get_spec, with_image_cap

    try:
        spec = with_image_cap(get_spec(cfg.model.name), cfg.data.max_pixels)
    except UserError:
        return cfg  # validate_config reports the unknown model
    need = image_tokens(spec, cfg.data.max_image_size) + TEXT_ROOM
    if cfg.data.max_length < need:
        cfg.data.max_length = -(-need // 64) * 64
    return cfg


def get_preset(name: str, model: str | None = None, data: str | None = None, out: str | None = None) -> TrainConfig:
    """A fresh TrainConfig for a built-in or saved preset, for `model` (default: the preset's or the registry's)."""
    from .registry import DEFAULT_MODEL

    if name in BUILTIN:
        values = copy.deepcopy({k: v for k, v in BUILTIN[name].items() if k != "about"})
        values.setdefault("model", {})["name"] = DEFAULT_MODEL
        cfg = config_from_dict(values, f"preset {name}")
    else:
        path = _user_file(name)
        if not path.is_file():
            raise UserError(f"unknown preset {name!r}; choose one of {', '.join(list_presets())}")
        cfg = load_config(path)
    if model:
        cfg.model.name = model
    if data:
        cfg.data.path = str(data)
    if out:
        cfg.training.output_dir = str(out)
    return fit_image_tokens(cfg)


def save_preset(name: str, cfg: TrainConfig) -> Path:
    """Save `cfg` (without its dataset and output paths) as the user's preset `name`."""
    if name in BUILTIN:
        raise UserError(f"preset name {name!r} is built in; choose another name")
    template = cfg.model_copy(deep=True)
    template.data.path = ""
    template.training.output_dir = ""
    return save_config(template, _user_file(name))


def delete_preset(name: str) -> None:
    """Remove a saved user preset."""
    path = _user_file(name)
    if not path.is_file():
        raise UserError(f"no saved preset {name!r}")
    path.unlink()
