"""A training config on this machine: the one config builder, resolving (device, precision, dtype, the hardware
memory is judged against, the Qwen image cap), validation done once, and the memory estimate.

    cfg = build_config(preset="balanced", model="qwen2-vl-2b", data="DATASET", overrides={"training.max_steps": 50})
    plan = check(cfg)            # errors / warnings (each names its field), device, precision, memory estimate
    plan.raise_errors()          # UserError with the first error (+N more)

`python -m pipeline train`, `jobs submit`, the app's Train tab and `/start_training` all build configs here.
`config.py` is the schema and YAML only; `memory.py` is the arithmetic on a ModelSpec.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .clips import config_checks
from .config import (
    TrainConfig,
    config_from_dict,
    eval_steps,
    load_config,
    range_errors,
    schema_errors,
    set_field,
    weights_method,
)
from .dataset import NOT_A_DATASET, Dataset, is_dataset, open_dataset
from .errors import UserError
from .hardware import GpuInfo, Hardware, detect_hardware
from .memory import MemoryEstimate, estimate_memory, fits, image_tokens
from .registry import QWEN_MAX_PIXELS, ModelSpec, get_spec, with_image_cap
from .rundir import config_path as run_config_path

DEFAULT_PRESET = "balanced"
MAX_YAML_BYTES = 64 * 1024  # config text from the app or the API
MIN_TEXT_TOKENS = 32  # room for prompt + answer once the image tokens are placed
MIN_CUDA = (11, 8)  # the oldest CUDA the pinned torch / bitsandbytes wheels support


# -- the one config builder --------------------------------------------------------------------------------------
def build_config(*, config: str | Path | None = None, preset: str | None = None, model: str | None = None,
                 data: str | Path | None = None, out: str | Path | None = None, yaml_text: str | None = None,
                 overrides: Mapping[str, Any] | None = None, sets: Iterable[str] = (), resume: bool = False,
                 default_preset: str = DEFAULT_PRESET, base: TrainConfig | None = None,
                 from_run: str | Path | None = None) -> TrainConfig:
    """A TrainConfig from `base` (copied), a YAML file, YAML text, RUN/config.yaml (resume) or a preset (fitted to
    `model`), then `model`, `data`, `out`, `overrides` ({dotted field: value}; None skipped) and `sets`
    ("section.field=value", values read as YAML).

    Every value passes the schema (UserError naming the field); ranges and everything that depends on the registry,
    the dataset or this machine are checked once, by `check`. data.max_pixels is filled in from the dataset.

    `from_run`: a GRPO refinement of that finished run (training.method grpo): its model, data and LoRA shape, the
    GRPO preset `preset` (default `grpo`) for training and the grpo section, grpo.parent / grpo.weights set.
    """
    if base is not None:
        cfg = base.model_copy(deep=True)
    elif from_run is not None and not (resume and out and run_config_path(Path(out).expanduser()).is_file()):
        if config or yaml_text:
            raise UserError("give --from RUN or --config, not both")
        cfg = grpo_config(from_run, preset)
    else:
        cfg = _base_config(config, preset, model, yaml_text, out, resume, default_preset)
    values: dict[str, Any] = {
        "model.name": model, "data.path": str(Path(data).expanduser().resolve()) if data else None,
        "training.output_dir": str(Path(out).expanduser().resolve()) if out else None, **(overrides or {})}
    for key, value in values.items():
        if value is not None:
            set_field(cfg, key, value)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected SECTION.FIELD=VALUE")
        set_field(cfg, key.strip(), _yaml_value(value))
    fill_image_cap(cfg)
    return cfg


def _base_config(config: str | Path | None, preset: str | None, model: str | None, yaml_text: str | None,
                 out: str | Path | None, resume: bool, default_preset: str) -> TrainConfig:
    text = (yaml_text or "").strip()
    if config and (preset or text):
        raise UserError(f"give --config or {'--preset' if preset else 'config YAML'}, not both")
    if config:
        return load_config(config)
    if text:  # the app sends its preset along with the editor's text: the text wins
        return config_from_dict(yaml_mapping(text), "config YAML")
    saved = run_config_path(Path(out).expanduser()) if out else None  # what `train --resume --out RUN` reads back
    if resume and saved is not None and not preset and saved.is_file():
        return load_config(saved)
    from .presets import get_preset

    return get_preset(preset or default_preset, model=model)


def grpo_config(parent: str | Path, preset: str | None = None) -> TrainConfig:
    """The config of a GRPO run refining the finished run `parent`: the parent's config (model, data, LoRA shape)
    with the training and grpo settings of a GRPO preset (or the training numbers of any other preset)."""
    from .presets import GRPO_PRESETS, get_preset
    from .rundir import final_output

    folder = Path(parent).expanduser().resolve()
    if not run_config_path(folder).is_file():
        raise UserError("grpo.parent: not a run folder (no config file)", folder)
    if final_output(folder) is None:
        raise UserError("grpo.parent: the run has no final weights yet (finish or resume it first)", folder)
    cfg = load_config(run_config_path(folder))
    weights = weights_method(cfg)
    name = preset or "grpo"
    values: dict[str, Any] = dict(GRPO_PRESETS[name]) if name in GRPO_PRESETS else \
        {"training": get_preset(name).training.model_dump(), "grpo": {}}
    training = {k: v for k, v in values.get("training", {}).items() if k not in ("method", "output_dir")}
    for key, value in training.items():
        set_field(cfg, f"training.{key}", value)
    for key, value in values.get("grpo", {}).items():
        set_field(cfg, f"grpo.{key}", value)
    if not cfg.training.geometry_eval_samples:  # checkpoints are judged by validation mIoU
        cfg.training.geometry_eval_samples = 16
    cfg.training.best_metric, cfg.training.best_mode = "eval_miou", "max"
    cfg.training.method, cfg.training.output_dir = "grpo", ""
    cfg.grpo.parent, cfg.grpo.weights = str(folder), weights  # type: ignore[assignment]
    return cfg


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def yaml_mapping(text: str) -> dict[str, Any]:
    """Config YAML text (at most MAX_YAML_BYTES) as a mapping; UserError for anything else."""
    import yaml

    if len(text.encode("utf-8")) > MAX_YAML_BYTES:
        raise UserError(f"config YAML is over {MAX_YAML_BYTES // 1024} KiB")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise UserError("config YAML is not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if data is not None and not isinstance(data, dict):
        raise UserError("config YAML must be a mapping with model/data/training/lora/hardware sections")
    return data or {}


def fill_image_cap(cfg: TrainConfig) -> TrainConfig:
    """Once data.path is set, fill an unset data.max_pixels with the Qwen image cap the dataset was converted with
    (the studio's QWEN_MAX_PIXELS for a dataset that records none)."""
    if cfg.data.max_pixels is None and cfg.data.path:
        cfg.data.max_pixels = dataset_image_cap(cfg.data.path)
    return cfg


def dataset_image_cap(path: str | Path | None) -> int:
    """The Qwen image cap recorded in a dataset's dataset.json (QWEN_MAX_PIXELS when none is recorded)."""
    if path and is_dataset(path):
        try:
            return open_dataset(path).max_pixels or QWEN_MAX_PIXELS
        except UserError:
            return QWEN_MAX_PIXELS  # check() reports the broken dataset.json
    return QWEN_MAX_PIXELS


# -- resolving on this machine ---------------------------------------------------------------------------------
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
    if weights_method(cfg) == "full":
        return "float32"
    return {"bf16": "bfloat16", "fp16": "float16"}.get(resolve_precision(cfg, hw), "float32")


def planning_hardware(cfg: TrainConfig, hw: Hardware) -> Hardware:
    """The hardware memory is judged against: a GPU of `hardware.gpu_memory_gb` when set, else the detected one."""
    if not cfg.hardware.gpu_memory_gb:
        return hw
    size = int(cfg.hardware.gpu_memory_gb * 2**30)
    bf16 = hw.bf16 if hw.device == "cuda" else True
    return Hardware("cuda", [GpuInfo("planned GPU", size, size)], bf16, hw.cuda_version, hw.cpu_cores, hw.ram)


def capped_spec(cfg: TrainConfig) -> ModelSpec:
    """The registry entry of cfg.model.name as this run uses it (Qwen processors capped at data.max_pixels)."""
    return with_image_cap(get_spec(cfg.model.name), cfg.data.max_pixels)


def _dataset_meta(cfg: TrainConfig) -> dict[str, Any]:
    """The meta of cfg.data.path when it is a readable dataset, else {} (the clip options need it leniently)."""
    if not cfg.data.path or not is_dataset(Path(cfg.data.path).expanduser()):
        return {}
    try:
        return open_dataset(Path(cfg.data.path).expanduser()).meta
    except UserError:
        return {}


def memory_estimate(cfg: TrainConfig, hardware: Hardware | None = None) -> MemoryEstimate:
    """Peak training memory of one rank for this config on `hardware` (detected when None); video tasks put every
    frame of a clip through the vision tower."""
    spec = capped_spec(cfg)
    _, images = config_checks(cfg.data.tasks, _dataset_meta(cfg), spec)
    hw = planning_hardware(cfg, hardware or detect_hardware())
    modules = spec.modules_to_save if cfg.lora.modules_to_save == "registry" else (cfg.lora.modules_to_save or [])
    method = weights_method(cfg)
    estimate = estimate_memory(
        spec, method=method, batch_size=cfg.training.batch_size, seq_len=cfg.data.max_length,
        image_size=cfg.data.max_image_size, gradient_checkpointing=cfg.training.gradient_checkpointing,
        precision=resolve_precision(cfg, hw), weight_dtype=resolve_weight_dtype(cfg, hw), lora_r=cfg.lora.r,
        lora_targets=cfg.lora.target_modules, modules_to_save=list(modules), lora_dropout=cfg.lora.dropout,
        device=resolve_device(cfg, hw), images_per_example=images)
    if cfg.training.method == "grpo":
        from .memory import add_grpo_memory

        add_grpo_memory(estimate, spec, method=method, completions=cfg.training.batch_size,
                        seq_len=cfg.data.max_length, beta=cfg.grpo.beta, precision=resolve_precision(cfg, hw),
                        weight_dtype=resolve_weight_dtype(cfg, hw), lora_r=cfg.lora.r,
                        lora_targets=cfg.lora.target_modules)
    return estimate


# -- validation, once ---------------------------------------------------------------------------------------------
@dataclass
class ConfigPlan:
    """A config checked on this machine: errors and warnings (each starts with its field), what was resolved and the
    memory estimate (None when the config is too broken to estimate)."""

    config: TrainConfig
    hardware: Hardware
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    spec: ModelSpec | None = None
    dataset: Dataset | None = None
    memory: MemoryEstimate | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def device(self) -> str:
        return resolve_device(self.config, self.hardware)

    @property
    def precision(self) -> str:
        return resolve_precision(self.config, self.hardware)

    @property
    def weight_dtype(self) -> str:
        return resolve_weight_dtype(self.config, self.hardware)

    def raise_errors(self, where: str | Path | None = None) -> None:
        """UserError with the first error (and how many more) when there are any."""
        if self.errors:
            more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            raise UserError(self.errors[0] + more, where)

    def memory_bytes(self) -> int | None:
        """Per-GPU bytes the scheduler reserves when the run trains on CUDA here, else None."""
        if self.memory is None or self.device != "cuda":
            return None
        return int(self.memory.total)


def check(cfg: TrainConfig, hardware: Hardware | None = None) -> ConfigPlan:
    """Validate a config against its ranges, the registry, the dataset and the hardware: the one validation."""
    hw = hardware or detect_hardware()
    plan = ConfigPlan(cfg, hw, range_errors(cfg) + _lora_checks(cfg) + _grpo_checks(cfg))
    step_errors, step_warnings = _step_warnings(cfg)
    plan.errors += step_errors
    plan.warnings += step_warnings
    plan.dataset = _dataset_checks(cfg, plan.errors)
    try:
        spec = capped_spec(cfg)
    except UserError as exc:
        plan.errors.append(f"model.name: {exc}")
        return plan
    if not spec.enabled:
        plan.errors.append(f"model.name: {spec.key} is disabled: {spec.disabled_reason}")
    plan.spec = spec
    _image_cap_checks(cfg, spec, plan)
    if plan.errors:  # the estimates below assume sane numbers
        return plan
    plan.memory = memory_estimate(cfg, hw)
    for errors, warnings in (_hardware_checks(cfg, spec, hw), _token_checks(cfg, spec, plan), _memory_checks(plan)):
        plan.errors += errors
        plan.warnings += warnings
    return plan


def validate_config(cfg: TrainConfig | dict[str, Any], hardware: Hardware | None = None) -> tuple[list[str], list[str]]:
    """(errors, warnings) of `check` (a dict goes through the schema first; its errors name the fields)."""
    if isinstance(cfg, dict):
        try:
            cfg = TrainConfig.model_validate(cfg)
        except ValidationError as exc:
            return schema_errors(exc), []
    plan = check(cfg, hardware)
    return plan.errors, plan.warnings


def _dataset_checks(cfg: TrainConfig, errors: list[str]) -> Dataset | None:
    if not cfg.data.path:
        return None
    path = Path(cfg.data.path).expanduser()
    if not path.is_dir():
        errors.append(f"data.path: {cfg.data.path} is not a folder")
        return None
    if not is_dataset(path):
        errors.append(f"data.path: {cfg.data.path} is {NOT_A_DATASET}")
        return None
    try:
        return open_dataset(path)
    except UserError as exc:
        errors.append(f"data.path: {exc}")
        return None


def _image_cap_checks(cfg: TrainConfig, spec: ModelSpec, plan: ConfigPlan) -> None:
    """A Qwen model must see images on the grid its answers were written for (one cap from convert to inference)."""
    if spec.token_rule != "smart_resize" or cfg.data.max_pixels is None:
        return
    recorded = (plan.dataset.max_pixels if plan.dataset else None) or QWEN_MAX_PIXELS
    if cfg.data.max_pixels != recorded:
        where = "the dataset was converted with (dataset.json)" if plan.dataset else "the studio's Qwen image cap"
        plan.errors.append(f"data.max_pixels: {cfg.data.max_pixels} is not the {recorded} {where}: the answers "
                           "are written on that grid; leave it unset (or convert again)")


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
    if weights_method(cfg) == "qlora":
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


def _memory_checks(plan: ConfigPlan) -> tuple[list[str], list[str]]:
    cfg, estimate = plan.config, plan.memory
    planned = cfg.hardware.gpu_memory_gb
    hw = planning_hardware(cfg, plan.hardware)
    gpu_bytes = hw.gpu_memory if planned or resolve_device(cfg, hw) == "cuda" else 0
    if not gpu_bytes or estimate is None:
        return [], []
    verdict = fits(estimate, gpu_bytes)
    need, have = estimate.total / 2**30, gpu_bytes / 2**30
    where = "hardware.gpu_memory_gb" if planned else "hardware"
    if verdict == "won't fit":
        return [f"{where}: estimated {need:.1f} GiB does not fit in {have:.1f} GiB of GPU memory "
                f"(largest part: {estimate.largest()}); lower batch size or max length, or use qlora"], []
    if verdict == "tight":
        return [], [f"{where}: estimated {need:.1f} GiB is tight for {have:.1f} GiB of GPU memory"]
    return [], []


def _token_checks(cfg: TrainConfig, spec: ModelSpec, plan: ConfigPlan) -> tuple[list[str], list[str]]:
    # video tasks: K frames per example, for a family that takes several images
    errors, images = config_checks(cfg.data.tasks, plan.dataset.meta if plan.dataset else {}, spec)
    if errors:
        return errors, []
    side = cfg.data.max_image_size
    tokens = image_tokens(spec, side) * images
    room = cfg.data.max_length - tokens
    image = f"one {side}x{side} image" if side else "one full-size image"
    if images > 1:
        image = f"{images} {side}x{side} images (a clip)" if side else f"{images} full-size images (a clip)"
    if room <= 0:
        return [f"data.max_length: {cfg.data.max_length} cannot hold the {tokens} image tokens of {image} "
                "(raise it or cap data.max_image_size)"], []
    if room < MIN_TEXT_TOKENS:
        return [], [f"data.max_length: only {room} tokens are left for text after {tokens} image tokens"]
    return [], []


def _grpo_checks(cfg: TrainConfig) -> list[str]:
    """A GRPO run needs a finished parent run, and whole groups of completions per batch."""
    t, g = cfg.training, cfg.grpo
    if t.method != "grpo":
        return ["grpo.parent: only a GRPO run (training.method grpo) has a parent"] if g.parent else []
    errors = []
    if not g.parent:
        errors.append("grpo.parent: required for training.method grpo (train --method grpo --from RUN)")
    elif not run_config_path(Path(g.parent).expanduser()).is_file():
        errors.append(f"grpo.parent: {g.parent} is not a run folder")
    else:
        from .rundir import final_output

        if final_output(Path(g.parent).expanduser()) is None:
            errors.append(f"grpo.parent: {g.parent} has no final weights (an unfinished run)")
    if g.weights is None:
        errors.append("grpo.weights: unknown; build the config with --from RUN (it reads the parent's method)")
    if (t.batch_size * t.grad_accum) % g.num_generations:
        errors.append(f"grpo.num_generations: {g.num_generations} must divide training.batch_size x grad_accum "
                      f"({t.batch_size * t.grad_accum}): each batch holds whole groups of completions")
    if t.best_metric.endswith("loss"):
        errors.append(f"training.best_metric: {t.best_metric} means nothing for GRPO; use eval_miou (max)")
    return errors


def _lora_checks(cfg: TrainConfig) -> list[str]:
    if weights_method(cfg) == "full":
        return []
    targets = cfg.lora.target_modules
    if targets is not None and not targets:
        return ["lora.target_modules: empty (leave it null for the registry's list)"]
    return []
