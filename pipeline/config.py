"""TrainConfig: the one training configuration (model, data, training, lora, hardware), YAML I/O and validation.

The schema checks types and choices; `validate_config` checks ranges and cross-field rules against the registry and
the hardware, returning `(errors, warnings)` where every message starts with the field it is about.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import UserError

if TYPE_CHECKING:
    from .hardware import Hardware

MIN_TEXT_TOKENS = 32  # room for prompt + answer once the image tokens are placed
MIN_CUDA = (11, 8)  # the oldest CUDA the pinned torch / bitsandbytes wheels support


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
    max_train_samples: int | None = None
    max_eval_samples: int | None = 64


class TrainingSection(_Section):
    """Optimisation, schedule, checkpoints, evaluation and stopping."""

    method: Literal["lora", "qlora", "full"] = "lora"
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
    ("hardware.min_free_disk_gb", 0, None, False),
    ("hardware.num_workers", 0, 64, False),
]


def get_field(cfg: TrainConfig, dotted: str) -> Any:
    """The value of `section.field`."""
    section, _, name = dotted.partition(".")
    return getattr(getattr(cfg, section), name)


def _range_errors(cfg: TrainConfig) -> list[str]:
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


def resolve_device(cfg: TrainConfig, hw: Hardware) -> str:
    """The device training will use: the configured one, or CUDA when present, else CPU."""
    if cfg.hardware.device != "auto":
        return cfg.hardware.device
    return "cuda" if hw.device == "cuda" else "cpu"


def resolve_precision(cfg: TrainConfig, hw: Hardware) -> str:
    """Mixed precision actually used: bf16 where the GPU has it, fp16 on older GPUs, fp32 on CPU."""
    if cfg.training.precision != "auto":
        return cfg.training.precision
    if resolve_device(cfg, hw) != "cuda":
        return "fp32"
    return "bf16" if hw.bf16 else "fp16"


def resolve_weight_dtype(cfg: TrainConfig, hw: Hardware) -> str:
    """Dtype the base weights are loaded in: fp32 master weights for full fine-tuning, else the compute dtype."""
    if cfg.model.dtype != "auto":
        return cfg.model.dtype
    if cfg.training.method == "full":
        return "float32"
    return {"bf16": "bfloat16", "fp16": "float16"}.get(resolve_precision(cfg, hw), "float32")


def planning_hardware(cfg: TrainConfig, hw: Hardware) -> Hardware:
    """The hardware memory is judged against: a GPU of `hardware.gpu_memory_gb` when set, else the detected one."""
    from .hardware import GpuInfo, Hardware

    if not cfg.hardware.gpu_memory_gb:
        return hw
    size = int(cfg.hardware.gpu_memory_gb * 2**30)
    bf16 = hw.bf16 if hw.device == "cuda" else True
    return Hardware("cuda", [GpuInfo("planned GPU", size, size)], bf16, hw.cuda_version, hw.cpu_cores, hw.ram)


def eval_steps(cfg: TrainConfig) -> int:
    """Evaluation interval in steps (0: no periodic evaluation)."""
    return cfg.training.save_steps if cfg.training.eval_steps is None else cfg.training.eval_steps


def _step_warnings(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    t, errors, warnings = cfg.training, [], []
    every = eval_steps(cfg)
    if t.max_steps > 0:
        if t.save_steps > t.max_steps:
            warnings.append(f"training.save_steps: {t.save_steps} is beyond training.max_steps {t.max_steps}: "
                            "no checkpoint before the end, so an interrupted run restarts from zero")
        if every > t.max_steps:
            warnings.append(f"training.eval_steps: {every} is beyond training.max_steps {t.max_steps}: "
                            "no evaluation during training")
        if t.logging_steps > t.max_steps:
            warnings.append(f"training.logging_steps: {t.logging_steps} is beyond training.max_steps {t.max_steps}")
    if every and t.save_steps % every:
        warnings.append(f"training.save_steps: {t.save_steps} is not a multiple of the evaluation interval {every}: "
                        "the best checkpoint is judged by the latest evaluation before each save")
    if t.early_stopping_patience and not every:
        errors.append("training.early_stopping_patience: needs periodic evaluation (training.eval_steps is 0)")
    geometric = t.best_metric.startswith("eval_") and not t.best_metric.endswith("loss")
    if geometric and not t.geometry_eval_samples:
        errors.append(f"training.best_metric: {t.best_metric} is a geometry metric; set "
                      "training.geometry_eval_samples (e.g. 16) so that evaluations compute it")
    if t.best_metric.endswith("loss") and t.best_mode == "max":
        warnings.append(f"training.best_mode: 'max' for {t.best_metric} keeps the worst checkpoint")
    return errors, warnings


def _hardware_checks(cfg: TrainConfig, spec: Any, hw: Hardware) -> tuple[list[str], list[str]]:
    errors, warnings = [], []
    device, precision = resolve_device(cfg, hw), resolve_precision(cfg, hw)
    if cfg.hardware.device == "cuda" and hw.device != "cuda":
        errors.append("hardware.device: cuda requested but no CUDA GPU was found")
    if precision == "bf16" and device == "cuda" and not hw.bf16:
        errors.append("training.precision: bf16 needs a GPU of compute capability 8.0+ (use fp16 or auto)")
    if precision == "bf16" and device == "cpu":
        warnings.append("training.precision: bf16 on CPU is emulated on most processors and usually slower than fp32")
    if precision == "fp16" and device != "cuda":
        errors.append("training.precision: fp16 mixed precision needs a CUDA GPU (use fp32 or auto)")
    if cfg.training.method == "qlora":
        if not spec.qlora_supported:
            errors.append(f"training.method: qlora is not supported for {spec.key} (use lora)")
        elif device != "cuda":
            warnings.append("training.method: qlora without a CUDA GPU runs bitsandbytes 4-bit on CPU, slowly")
    if device == "cuda" and hw.cuda_version:
        parts = tuple(int(p) for p in hw.cuda_version.split(".")[:2] if p.isdigit())
        if parts and parts < MIN_CUDA:
            errors.append(f"hardware: CUDA {hw.cuda_version} is older than {'.'.join(map(str, MIN_CUDA))}, "
                          "which torch and bitsandbytes need")
    return errors, warnings


def _memory_checks(cfg: TrainConfig, hw: Hardware) -> tuple[list[str], list[str]]:
    from .memory import estimate_memory, fits

    planned = cfg.hardware.gpu_memory_gb
    hw = planning_hardware(cfg, hw)
    gpu_bytes = hw.gpu_memory if planned or resolve_device(cfg, hw) == "cuda" else 0
    if not gpu_bytes:
        return [], []
    estimate = estimate_memory(cfg, hardware=hw)
    verdict = fits(estimate, gpu_bytes)
    need, have = estimate.total / 2**30, gpu_bytes / 2**30
    where = "hardware.gpu_memory_gb" if planned else "hardware"
    if verdict == "won't fit":
        return [f"{where}: estimated {need:.1f} GiB does not fit in {have:.1f} GiB of GPU memory "
                f"(largest part: {estimate.largest()}); lower batch size or max length, or use qlora"], []
    if verdict == "tight":
        return [], [f"{where}: estimated {need:.1f} GiB is tight for {have:.1f} GiB of GPU memory"]
    return [], []


def _token_checks(cfg: TrainConfig, spec: Any) -> tuple[list[str], list[str]]:
    from .clips import config_checks
    from .memory import image_tokens

    errors, images = config_checks(cfg.data.tasks, cfg.data.path, spec)  # video tasks: K frames per example
    if errors:
        return errors, []
    side = cfg.data.max_image_size or spec.image_size
    tokens = image_tokens(spec, side) * images
    what = f"one {side}x{side} image" if images == 1 else f"{images} {side}x{side} images (a clip)"
    room = cfg.data.max_length - tokens
    if room <= 0:
        return [f"data.max_length: {cfg.data.max_length} cannot hold the {tokens} image tokens of "
                f"{what} (raise it or cap data.max_image_size)"], []
    if room < MIN_TEXT_TOKENS:
        return [], [f"data.max_length: only {room} tokens are left for text after {tokens} image tokens"]
    return [], []


def _lora_checks(cfg: TrainConfig) -> list[str]:
    if cfg.training.method == "full":
        return []
    targets = cfg.lora.target_modules
    if targets is not None and not targets:
        return ["lora.target_modules: empty (leave it null for the registry's list)"]
    return []


def validate_config(cfg: TrainConfig | dict[str, Any], hardware: Hardware | None = None) -> tuple[list[str], list[str]]:
    """Check a config against ranges, the registry and the hardware; returns (errors, warnings)."""
    from .hardware import detect_hardware
    from .registry import get_spec

    if isinstance(cfg, dict):
        try:
            cfg = TrainConfig.model_validate(cfg)
        except ValidationError as exc:
            return schema_errors(exc), []
    errors = _range_errors(cfg) + _lora_checks(cfg)
    warnings: list[str] = []
    step_errors, step_warnings = _step_warnings(cfg)
    errors += step_errors
    warnings += step_warnings
    if cfg.data.path and not Path(cfg.data.path).expanduser().is_dir():
        errors.append(f"data.path: {cfg.data.path} is not a folder")
    try:
        spec = get_spec(cfg.model.name)
    except UserError as exc:
        return errors + [f"model.name: {exc}"], warnings
    if not spec.enabled:
        errors.append(f"model.name: {spec.key} is disabled: {spec.disabled_reason}")
    hw = hardware or detect_hardware()
    if errors:  # the estimates below assume sane numbers
        return errors, warnings
    for check in (_hardware_checks(cfg, spec, hw), _token_checks(cfg, spec), _memory_checks(cfg, hw)):
        errors += check[0]
        warnings += check[1]
    return errors, warnings
