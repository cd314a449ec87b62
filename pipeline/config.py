"""TrainConfig: the one training configuration (model, data, training, lora, hardware), its field ranges and YAML I/O.

The schema checks types and choices; `range_errors` checks the numeric ranges. Everything that needs the registry,
the dataset or this machine (resolving, cross-field checks, the memory estimate) lives in `pipeline.plan`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import UserError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(_Section):
    """Which registry model to fine-tune and how its weights are loaded."""

    name: str = "tiny-smolvlm"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class DataSection(_Section):
    """A converted dataset folder (records.jsonl, images/, dataset.json, optional splits/)."""

    path: str = ""
    tasks: list[str] | None = None  # None: the tasks recorded in dataset.json
    max_length: int = 512
    max_image_size: int | None = None  # cap on the longest image side in pixels (fewer image tokens)
    # The Qwen image cap (processor max_pixels); None: the dataset's (dataset.json), filled in by pipeline.plan.
    max_pixels: int | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = 64
    # the split to train on; a GRPO stage can take a split held back from its parent's training (`rl`, holdout.py)
    train_split: str = "train"


class TrainingSection(_Section):
    """Optimisation, schedule, checkpoints, evaluation and stopping."""

    method: Literal["lora", "qlora", "full", "grpo"] = "lora"  # grpo: refine a finished run (the grpo section)
    output_dir: str = ""
    max_steps: int = -1  # -1: run `epochs` epochs
    epochs: float = 3.0
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial"] = "cosine"
    max_grad_norm: float = 1.0
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 100
    eval_steps: int | None = None  # None: evaluate at every save; 0: never
    keep_checkpoints: int = 2  # newest complete checkpoints kept, plus the best
    best_metric: str = "eval_loss"
    best_mode: Literal["min", "max"] = "min"
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0: off
    early_stopping_threshold: float = 0.0
    histogram_steps: int = 0  # TensorBoard weight/gradient histograms every N steps; 0: off
    geometry_eval_samples: int = 0  # > 0: every evaluation also generates and scores N val examples (eval_miou, ...)
    seed: int = 42


class LoraSection(_Section):
    """Adapter shape; `target_modules: null` takes the registry's list, `modules_to_save: registry` its list too."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str | None = None
    modules_to_save: list[str] | Literal["registry"] | None = None


class GrpoSection(_Section):
    """GRPO refinement of a finished run (`training.method: grpo`): the parent, sampling, KL and reward weights.

    Rewards come from the project's parser and metrics (pipeline/rewards.py): box IoU with the truth, mask IoU for
    polygons, exact / near (off by one) count, label match, 1 for a correct "none" on a negative and
    `reward_parse_failure` (a small penalty) for an answer the parser rejects; each is scaled by its weight.
    """

    parent: str = ""  # the finished run whose weights this run continues from (its final adapter/ or model/)
    weights: Literal["lora", "qlora", "full"] | None = None  # how the parent trained; filled in from its config
    num_generations: int = 4  # completions sampled per prompt (the group the advantages are relative to)
    max_completion_length: int | None = None  # None: the longest training answer in tokens plus a margin
    temperature: float = 1.0
    top_k: int | None = None
    beta: float = 0.0  # KL weight against the parent (0: no reference model is kept)
    epsilon: float = 0.2  # clipping of the policy ratio
    num_iterations: int = 1  # optimisation passes over each batch of generations
    loss_type: Literal["grpo", "dapo", "dr_grpo", "bnpo"] = "dapo"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    reward_box: float = 1.0  # x box IoU (grounding)
    reward_mask: float = 1.0  # x mask IoU (polygon)
    reward_count_exact: float = 1.0  # counting: exact
    reward_count_near: float = 0.5  # counting: off by one
    reward_label: float = 1.0  # x label match / listing F1 (referring, listing)
    reward_negative: float = 1.0  # a correct "none" for an absent label
    reward_parse_failure: float = -0.1  # an answer the parser rejects


class HardwareSection(_Section):
    """Where to train; `gpu_memory_gb` plans for another GPU than the one detected."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpu_memory_gb: float | None = None
    min_free_disk_gb: float = 0.2
    num_workers: int = 0


class TrainConfig(_Section):
    """Everything one training run needs; saved as RUN/config.yaml."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    lora: LoraSection = Field(default_factory=LoraSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    grpo: GrpoSection = Field(default_factory=GrpoSection)


def weights_method(cfg: TrainConfig) -> str:
    """How the weights are trained and stored (lora, qlora or full): training.method, or for a GRPO run the
    parent's method (grpo.weights)."""
    if cfg.training.method == "grpo":
        return cfg.grpo.weights or "lora"
    return cfg.training.method


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def schema_errors(exc: ValidationError) -> list[str]:
    """Pydantic errors as `field: problem (got value)` lines."""
    out = []
    for err in exc.errors():
        got = err.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(f"{_field(err['loc'])}: {msg}{shown}")
    return out


def config_from_dict(data: dict[str, Any], source: str | os.PathLike[str] | None = None) -> TrainConfig:
    """Build a TrainConfig from plain data; UserError naming the first bad field."""
    try:
        return TrainConfig.model_validate(data or {})
    except ValidationError as exc:
        errors = schema_errors(exc)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(errors[0] + more, source) from None


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read a YAML config file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError("config file not found", path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"not valid YAML{where}", path) from None
    if data is not None and not isinstance(data, dict):
        raise UserError("a config file must be a YAML mapping with model/data/training/lora/hardware", path)
    return config_from_dict(data or {}, path)


def config_to_yaml(cfg: TrainConfig) -> str:
    """YAML text of a config (sections in schema order)."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None)


def save_config(cfg: TrainConfig, path: str | os.PathLike[str]) -> Path:
    """Write a config as YAML (atomically), headed by the command that runs it."""
    from .atomic import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# python -m pipeline train --config {path}\n"
    atomic_write_text(path, header + config_to_yaml(cfg))
    return path


def set_field(cfg: TrainConfig, dotted: str, value: Any) -> None:
    """Set `section.field` to `value` (validated); UserError naming the field when rejected."""
    section_name, _, name = dotted.partition(".")
    section = getattr(cfg, section_name, None)
    if not isinstance(section, BaseModel) or name not in type(section).model_fields:
        raise UserError(f"{dotted}: unknown config field")
    try:
        setattr(section, name, value)
    except ValidationError as exc:
        raise UserError(f"{dotted}: {exc.errors()[0]['msg']} (got {value!r})") from None


# (field, minimum, maximum, minimum is exclusive)
RANGES: list[tuple[str, float | None, float | None, bool]] = [
    ("data.max_length", 16, 1_048_576, False),
    ("data.max_image_size", 16, 16_384, False),
    ("data.max_pixels", 1024, 268_435_456, False),
    ("data.max_train_samples", 1, None, False),
    ("data.max_eval_samples", 1, None, False),
    ("training.max_steps", -1, None, False),
    ("training.epochs", 0, 10_000, True),
    ("training.batch_size", 1, 4096, False),
    ("training.grad_accum", 1, 4096, False),
    ("training.learning_rate", 0, 1, True),
    ("training.weight_decay", 0, 1, False),
    ("training.warmup_ratio", 0, 0.9, False),
    ("training.max_grad_norm", 0, None, False),
    ("training.logging_steps", 1, None, False),
    ("training.save_steps", 1, None, False),
    ("training.eval_steps", 0, None, False),
    ("training.keep_checkpoints", 1, 1000, False),
    ("training.early_stopping_patience", 0, None, False),
    ("training.early_stopping_threshold", 0, None, False),
    ("training.histogram_steps", 0, None, False),
    ("training.geometry_eval_samples", 0, 10_000, False),
    ("lora.r", 1, 1024, False),
    ("lora.alpha", 0, None, True),
    ("lora.dropout", 0, 0.9, False),
    ("hardware.gpu_memory_gb", 0, None, True),
    ("grpo.num_generations", 2, 1024, False),
    ("grpo.max_completion_length", 1, 65_536, False),
    ("grpo.temperature", 0, 10, True),
    ("grpo.top_k", 1, None, False),
    ("grpo.beta", 0, 100, False),
    ("grpo.epsilon", 0, 1, True),
    ("grpo.num_iterations", 1, 64, False),
    ("grpo.reward_box", 0, 100, False),
    ("grpo.reward_mask", 0, 100, False),
    ("grpo.reward_count_exact", 0, 100, False),
    ("grpo.reward_count_near", 0, 100, False),
    ("grpo.reward_label", 0, 100, False),
    ("grpo.reward_negative", 0, 100, False),
    ("grpo.reward_parse_failure", -100, 0, False),
    ("hardware.min_free_disk_gb", 0, None, False),
    ("hardware.num_workers", 0, 64, False),
]


def get_field(cfg: TrainConfig, dotted: str) -> Any:
    """The value of `section.field`."""
    section, _, name = dotted.partition(".")
    return getattr(getattr(cfg, section), name)


def range_errors(cfg: TrainConfig) -> list[str]:
    """`field: must be ...` for every value outside RANGES."""
    errors = []
    for dotted, low, high, open_low in RANGES:
        value = get_field(cfg, dotted)
        if value is None or dotted == "training.max_steps" and value == -1:
            continue
        too_low = low is not None and (value <= low if open_low else value < low)
        too_high = high is not None and value > high
        if too_low or too_high:
            if low is not None and high is not None:
                want = f"{'above' if open_low else 'at least'} {low:g} and at most {high:g}"
            elif low is not None:
                want = f"{'above' if open_low else 'at least'} {low:g}"
            else:
                want = f"at most {high:g}"
            errors.append(f"{dotted}: must be {want} (got {value!r})")
    if cfg.training.max_steps == 0:
        errors.append("training.max_steps: must be -1 (use epochs) or at least 1 (got 0)")
    return errors


def eval_steps(cfg: TrainConfig) -> int:
    """Evaluation interval in steps (0: no periodic evaluation)."""
    return cfg.training.save_steps if cfg.training.eval_steps is None else cfg.training.eval_steps
