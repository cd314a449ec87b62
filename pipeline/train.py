"""The training entry point: LoRA / QLoRA / full fine-tuning of a registry VLM on a converted dataset.

Reads top to bottom: plan (every check, nothing written) -> load -> run folder -> Trainer -> outputs. The same code
serves `python -m pipeline train`, the job runner (a process of its own) and `torchrun` / `accelerate launch`
(rank 0 alone writes progress, manifests and outputs).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import (
    TrainConfig,
    eval_steps,
    resolve_device,
    resolve_precision,
    resolve_weight_dtype,
    save_config,
    validate_config,
)
from .errors import UserError
from .hardware import Hardware, detect_hardware
from .records import DATASET_META_FILE, RECORDS_FILE, FrameRecord, read_records

log = logging.getLogger("pipeline.train")
FRESH_RUN_FILES = {"config.yaml", "train.log", "STOP"}  # what a job runner may leave in RUN before starting us
OUTPUT_TMP = ".output.tmp"


@dataclass
class TrainResult:
    """What a run ended with; `output` is RUN/adapter (LoRA, QLoRA) or RUN/model (full fine-tuning)."""

    status: str
    run_dir: str
    step: int = 0
    total_steps: int = 0
    final_loss: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    best: dict[str, Any] | None = None
    output: str | None = None
    weights_sha: str | None = None
    resumed_from: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """Everything checked before a single byte is written."""

    spec: Any
    dataset: Path
    run: Path
    train_rows: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]]
    meta: dict[str, Any]
    tasks: list[str]
    checkpoint: Path | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    val_records: list[FrameRecord] = field(default_factory=list)  # what eval_rows were built from


def dist_info() -> tuple[int, int]:
    """(rank, world size) from the torchrun / accelerate environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


# -- plan ---------------------------------------------------------------------------------------------------
def _first_error(errors: list[str], where: str | None = None) -> UserError:
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return UserError(errors[0] + more, where)


def _read_meta(dataset: Path) -> dict[str, Any]:
    if not (dataset / RECORDS_FILE).is_file():
        raise UserError(f"not a converted dataset (no {RECORDS_FILE}); run `python -m pipeline convert` first",
                        dataset)
    try:
        meta = json.loads((dataset / DATASET_META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"not a converted dataset (no {DATASET_META_FILE})", dataset) from None
    except ValueError:
        raise UserError(f"{DATASET_META_FILE} is not valid JSON", dataset) from None
    if not isinstance(meta, dict):
        raise UserError(f"{DATASET_META_FILE} must hold a JSON object", dataset)
    return meta


def _split_records(dataset: Path) -> tuple[list[FrameRecord], list[FrameRecord]]:
    """(train, val) records: the saved splits when present, else every record for training."""
    splits = dataset / "splits"
    try:
        if (splits / "train.jsonl").is_file():
            val = read_records(splits / "val.jsonl") if (splits / "val.jsonl").is_file() else []
            return read_records(splits / "train.jsonl"), val
        return read_records(dataset / RECORDS_FILE), []
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"unreadable records ({type(exc).__name__}: {exc})", dataset) from None


def _rows(records: list[FrameRecord], dataset: Path, tasks: list[str], spec: Any, meta: dict[str, Any],
          limit: int | None) -> list[dict[str, Any]]:
    from .clips import clip_options, video_fps
    from .tasks import build_examples, label_set

    examples = build_examples(records, tasks, spec.convention, seed=int(meta.get("seed", 0)),
                              label_set=label_set(meta), clips=clip_options(meta), fps=video_fps(meta))
    for image in {image for ex in examples for image in ex.frames}:
        if not (dataset / image).is_file():
            raise UserError(f"image {image} of the dataset is missing", dataset)
    rows = [{"id": ex.id, "image": str(dataset / ex.image), "prompt": ex.prompt, "answer": ex.answer,
             **({"images": [str(dataset / image) for image in ex.images]} if ex.images else {})}
            for ex in examples]
    if not limit or limit >= len(rows):
        return rows
    keep = sorted(random.Random(f"{meta.get('seed', 0)}:subset").sample(range(len(rows)), limit))
    return [rows[i] for i in keep]  # a seeded spread over every video, not the first one's frames


def _check_run_folder(run: Path, resume: bool) -> None:
    if run.exists() and not run.is_dir():
        raise UserError("training.output_dir is a file, not a folder", run)
    if resume or not run.is_dir():
        return
    leftovers = sorted(p.name for p in run.iterdir() if p.name not in FRESH_RUN_FILES and not p.name.startswith("."))
    if leftovers:
        raise UserError(f"run folder already holds a run ({', '.join(leftovers[:3])}); use --resume or another --out",
                        run)


def plan_run(cfg: TrainConfig, resume: bool = False, hardware: Hardware | None = None,
             check_folder: bool = True) -> Plan:
    """Validate the config, the dataset and the run folder; build the rows. Writes nothing."""
    from .callbacks import newest_valid_checkpoint
    from .registry import get_spec

    errors, warnings = validate_config(cfg, hardware)
    if not cfg.data.path:
        errors.insert(0, "data.path: required (a converted dataset folder)")
    if not cfg.training.output_dir:
        errors.insert(0, "training.output_dir: required (the run folder, --out)")
    if errors:
        raise _first_error(errors)
    dataset, run = Path(cfg.data.path).expanduser().resolve(), Path(cfg.training.output_dir).expanduser().resolve()
    if check_folder:
        _check_run_folder(run, resume)
    spec, meta = get_spec(cfg.model.name), _read_meta(dataset)
    tasks = cfg.data.tasks or meta.get("tasks") or ["grounding"]
    train_records, val_records = _split_records(dataset)
    train_rows = _rows(train_records, dataset, tasks, spec, meta, cfg.data.max_train_samples)
    if not train_rows:
        raise UserError(f"no training examples for tasks {', '.join(tasks)}", dataset)
    eval_rows = _rows(val_records, dataset, tasks, spec, meta, cfg.data.max_eval_samples) if val_records else []
    if not eval_rows and eval_steps(cfg):
        warnings.append("data: the dataset has no val split: no evaluation, best checkpoint or early stopping")
    checkpoint, skipped = newest_valid_checkpoint(run) if resume and run.is_dir() else (None, [])
    return Plan(spec, dataset, run, train_rows, eval_rows, meta, list(tasks), checkpoint, skipped, warnings,
                val_records)


# -- model ---------------------------------------------------------------------------------------------------
def apply_image_cap(processor: Any, cap: int | None) -> None:
    """Make the processor itself respect the image cap (Idefics3 upscales to its grid, Qwen2-VL to max_pixels)."""
    if not cap:
        return
    image_processor: Any = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if not isinstance(size, dict) or "longest_edge" not in size:
        return
    if hasattr(image_processor, "merge_size"):  # Qwen2-VL family: longest_edge is a pixel budget
        size["longest_edge"] = min(size["longest_edge"], cap * cap)
        if getattr(image_processor, "max_pixels", None):
            image_processor.max_pixels = min(image_processor.max_pixels, cap * cap)
    elif isinstance(getattr(image_processor, "max_image_size", None), dict):  # Idefics3 / SmolVLM tiles
        tile = image_processor.max_image_size.get("longest_edge", cap)
        size["longest_edge"] = min(size["longest_edge"], -(-cap // tile) * tile)


def _lora_config(cfg: TrainConfig, spec: Any) -> Any:
    from peft import LoraConfig

    saved = spec.modules_to_save if cfg.lora.modules_to_save == "registry" else cfg.lora.modules_to_save
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules or list(spec.lora_targets),
                      modules_to_save=list(saved) if saved else None, task_type="CAUSAL_LM")


def _restore_16bit(model: Any, dtype: Any) -> None:
    """prepare_model_for_kbit_training upcasts embeddings and head to fp32; on a GPU keep them 16-bit."""
    import torch

    if dtype == torch.float32:
        return
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            module.to(dtype)


def build_model(cfg: TrainConfig, spec: Any, hw: Hardware, device: str) -> Any:
    """Load the base model and make it trainable for the configured method."""
    import torch

    from .models import load_model

    method, weight_dtype = cfg.training.method, resolve_weight_dtype(cfg, hw)
    ckpt_kwargs = {"use_reentrant": False}
    model = load_model(cfg.model.name, quantization="4bit" if method == "qlora" else None, dtype=weight_dtype,
                       device=device)
    model.config.use_cache = False
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, cfg.training.gradient_checkpointing, ckpt_kwargs)
        _restore_16bit(model, getattr(torch, weight_dtype))
    elif cfg.training.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs)
    if method == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    from peft import get_peft_model

    model = get_peft_model(model, _lora_config(cfg, spec))
    for param in model.parameters():  # fp32 adapters and saved modules: stable AdamW, fp16 grad scaling allowed
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def weights_sha(model: Any) -> str:
    """A short hash of the trainable weights (identical on every rank after a DDP step)."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        if param.requires_grad:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


# -- data -------------------------------------------------------------------------------------------------------
class RowDataset:
    """Rows for the collator; images above the cap are downscaled (aspect kept) when read."""

    def __init__(self, rows: list[dict[str, Any]], cap: int | None = None) -> None:
        self.rows, self.cap = rows, cap

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        if not self.cap:
            return row
        from .collate import load_image

        def capped(path: Any) -> Any:
            image = load_image(path, row["id"])
            if max(image.size) > self.cap:
                image.thumbnail((self.cap, self.cap))
            return image

        if row.get("images"):  # a clip: every frame capped alike
            frames = [capped(path) for path in row["images"]]
            return {**row, "image": frames[0], "images": frames}
        return {**row, "image": capped(row["image"])}


def _trainer_class() -> type:
    from transformers import Trainer

    class StudioTrainer(Trainer):
        """The stock Trainer plus a sample/token counter on the training step (no device sync)."""

        throughput: Any = None

        def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
            if self.throughput is not None:
                self.throughput.add(inputs)
            return super().training_step(model, inputs, num_items_in_batch)

    return StudioTrainer


def training_arguments(cfg: TrainConfig, run: Path, hw: Hardware, has_eval: bool) -> Any:
    """TrainingArguments for the config (reporting is ours: progress.jsonl + TensorBoard callbacks)."""
    from transformers import TrainingArguments

    t, device, precision = cfg.training, resolve_device(cfg, hw), resolve_precision(cfg, hw)
    every = eval_steps(cfg) if has_eval else 0
    _, world = dist_info()
    return TrainingArguments(
        output_dir=str(run), max_steps=t.max_steps, num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.learning_rate, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio, lr_scheduler_type=t.scheduler, max_grad_norm=t.max_grad_norm,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
        logging_strategy="steps", logging_steps=t.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=None,
        eval_strategy="steps" if every else "no", eval_steps=every or None, prediction_loss_only=True,
        label_names=["labels"], remove_unused_columns=False, report_to="none", seed=t.seed, data_seed=t.seed,
        dataloader_num_workers=cfg.hardware.num_workers, dataloader_pin_memory=device == "cuda",
        disable_tqdm=not sys.stderr.isatty(), ddp_backend="gloo" if device == "cpu" and world > 1 else None,
        log_level="info", log_level_replica="warning",
    )


# -- run folder -------------------------------------------------------------------------------------------------
def dataset_fingerprint(dataset: Path) -> str | None:
    """Short sha256 of records.jsonl and the split files (the same value the job store records)."""
    files = [f for f in [dataset / RECORDS_FILE, *sorted((dataset / "splits").glob("*.jsonl"))] if f.is_file()]
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def studio_info(cfg: TrainConfig, plan: Plan) -> dict[str, Any]:
    """RUN/studio.json: what evaluation and export need to talk to the trained model like training did."""
    from . import __version__
    from .tasks import PHRASES

    labels = plan.meta.get("labels")
    return {
        "tool_version": __version__, "model": plan.spec.key, "base_model": plan.spec.hub_id,
        "family": plan.spec.family, "convention": plan.spec.convention, "method": cfg.training.method,
        "tasks": plan.tasks, "prompt_templates": {task: PHRASES.get(task, []) for task in plan.tasks},
        "label_map": labels if isinstance(labels, dict) else {str(lab): None for lab in labels or []},
        "seed": plan.meta.get("seed", 0), "dataset": str(plan.dataset),
        "dataset_fingerprint": dataset_fingerprint(plan.dataset), "max_length": cfg.data.max_length,
        "max_image_size": cfg.data.max_image_size, "train_examples": len(plan.train_rows),
        "eval_examples": len(plan.eval_rows), "output": "model" if cfg.training.method == "full" else "adapter",
    }


def prepare_run_folder(cfg: TrainConfig, plan: Plan, resume: bool = False) -> None:
    """Rank 0: create RUN, write config.yaml, drop incomplete checkpoints and stale leftovers."""
    from .callbacks import BEST_FILE, STOP_FILE, list_checkpoints, read_best, remove_path

    plan.run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, plan.run / "config.yaml")
    remove_path(plan.run / OUTPUT_TMP)
    resumed = int(plan.checkpoint.name.split("-")[1]) if plan.checkpoint else 0
    for step, path in list_checkpoints(plan.run):
        if step > resumed:  # incomplete or newer than the resume point: the Trainer writes them again
            remove_path(path)
    best = read_best(plan.run)
    if best and not (plan.run / str(best.get("checkpoint"))).is_dir():
        remove_path(plan.run / BEST_FILE)
    if resume:
        _drop_stale_stop(plan.run / STOP_FILE)


def _drop_stale_stop(stop: Path) -> None:
    """A STOP file older than this process ended an earlier attempt; one written since is a new cancel."""
    import psutil

    try:
        if stop.stat().st_mtime < psutil.Process().create_time():
            stop.unlink()
    except FileNotFoundError:
        pass


def _same_file(handle: Any, path: Path) -> bool:
    try:
        return path.exists() and os.path.samestat(os.fstat(handle.fileno()), path.stat())
    except (OSError, ValueError, AttributeError):
        return False


def setup_logging(run: Path, main: bool) -> tuple[list[logging.Handler], dict[str, Any]]:
    """INFO to RUN/train.log for this package and transformers; the console keeps warnings (and tqdm) only.

    Under the job runner stderr already is train.log, so the log goes there instead of being written twice.
    """
    import transformers

    lib = transformers.utils.logging
    handlers: list[logging.Handler] = []
    saved: dict[str, Any] = {name: logging.getLogger(name).level for name in ("pipeline", "transformers")}
    saved["console"] = {h: h.level for h in logging.getLogger("transformers").handlers}
    to_log = _same_file(sys.stderr, run / "train.log")
    if main and not to_log:
        file_handler = logging.FileHandler(run / "train.log", encoding="utf-8")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file_handler)
        lib._get_library_root_logger()  # creates transformers' own stderr handler
        for existing in logging.getLogger("transformers").handlers:
            existing.setLevel(logging.WARNING)
    lib.set_verbosity_info() if main else lib.set_verbosity_warning()
    for name in ("pipeline", "transformers"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO if main else logging.WARNING)
        for handler in handlers:
            logger.addHandler(handler)
    return handlers, saved


def _close_logging(handlers: list[logging.Handler], saved: dict[str, Any]) -> None:
    """Detach the run's log file and put the logging levels back (the process may train again)."""
    for name in ("pipeline", "transformers"):
        for handler in handlers:
            logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(saved[name])
    for handler, level in saved["console"].items():
        handler.setLevel(level)
    for handler in handlers:
        handler.close()


# -- run -----------------------------------------------------------------------------------------------------------
def _geometry_callback(cfg: TrainConfig, plan: Plan, processor: Any) -> Any:
    """The optional geometry evaluation (eval_miou, eval_ap50, ...) over a fixed spread of val examples."""
    if not cfg.training.geometry_eval_samples or not plan.eval_rows:
        return None
    from .eval_callback import GeometryEvalCallback
    from .tasks import label_set

    return GeometryEvalCallback.for_dataset(
        processor, plan.dataset, plan.val_records, plan.tasks, plan.spec.convention,
        seed=int(plan.meta.get("seed", 0)), label_set=label_set(plan.meta), samples=cfg.training.geometry_eval_samples,
        batch_size=cfg.training.batch_size, image_cap=cfg.data.max_image_size, meta=plan.meta)


def _callbacks(cfg: TrainConfig, plan: Plan, writer: Any, world: int, processor: Any) -> dict[str, Any]:
    from . import callbacks as cb

    t = cfg.training
    early = None
    if t.early_stopping_patience and plan.eval_rows:
        early = cb.EarlyStopping(t.best_metric, t.best_mode, t.early_stopping_patience, t.early_stopping_threshold)
        if plan.checkpoint is not None:
            early.load(cb.load_studio_state(plan.checkpoint).get("early_stopping") or {})
    base = None if t.method == "full" else plan.spec.hub_id
    return {  # geometry first (the others see its metrics); cancel before checkpoint (its save gets the disk
        # check); progress last (sees saves finished)
        "geometry": _geometry_callback(cfg, plan, processor),
        "tensorboard": cb.TensorBoardCallback(plan.run / "tb", t.histogram_steps),
        "cancel": cb.CancelCallback(plan.run, world),
        "checkpoint": cb.CheckpointCallback(
            plan.run, writer, keep=t.keep_checkpoints, metric=t.best_metric, mode=t.best_mode,
            min_free_bytes=int(cfg.hardware.min_free_disk_gb * 2**30), base_model=base,
            on_saved=functools.partial(cb.save_studio_state, early=early)),
        "early": early,
        "progress": cb.RunProgressCallback(writer, cb.Throughput(), world),
    }


def _begin_event(cfg: TrainConfig, plan: Plan, model: Any, hw: Hardware, world: int, resume: bool) -> dict[str, Any]:
    from .memory import estimate_memory
    from .models import model_info

    info = model_info(model)
    event: dict[str, Any] = {
        "event": "resume" if plan.checkpoint else "start", "run_dir": str(plan.run), "model": plan.spec.key,
        "method": cfg.training.method, "train_examples": len(plan.train_rows), "eval_examples": len(plan.eval_rows),
        "world_size": world, "params": info["params"], "trainable_params": info["trainable"],
        "quantization": info["quantization"], "hardware": hw.summary(),
        "memory_estimate_gib": round(estimate_memory(cfg, hardware=hw).total / 2**30, 3),
        "warnings": plan.warnings}
    if plan.checkpoint is not None:
        event["resumed_from"] = int(plan.checkpoint.name.split("-")[1])
    if resume:
        event["skipped"] = [{"checkpoint": name, "reason": why} for name, why in plan.skipped]
    return event


def _save_outputs(trainer: Any, cfg: TrainConfig, plan: Plan, info: dict[str, Any], main: bool) -> Path:
    """RUN/adapter (or RUN/model) with the processor and studio.json, renamed into place when complete."""
    from .atomic import atomic_write_text
    from .callbacks import remove_path, set_adapter_base

    final = plan.run / ("model" if cfg.training.method == "full" else "adapter")
    tmp = plan.run / OUTPUT_TMP
    try:
        trainer.save_model(str(tmp))  # every rank takes part (FSDP/DeepSpeed gather); rank 0 writes
    except BaseException:
        if main:
            remove_path(tmp)  # a half-written output (e.g. disk full) must not hold the space or look like a result
        raise
    trainer.accelerator.wait_for_everyone()
    if main:
        remove_path(tmp / "training_args.bin")
        if cfg.training.method != "full":
            set_adapter_base(tmp, plan.spec.hub_id)
        text = json.dumps(info, indent=2) + "\n"
        atomic_write_text(tmp / "studio.json", text)
        atomic_write_text(plan.run / "studio.json", text)
        remove_path(final)
        tmp.rename(final)
    trainer.accelerator.wait_for_everyone()
    return final


def _metrics(trainer: Any, output: Any) -> dict[str, Any]:
    history = [entry for entry in trainer.state.log_history if "loss" in entry]
    evals = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    metrics = dict(output.metrics) if output is not None else {}
    if history:
        metrics["final_loss"] = history[-1]["loss"]
    if evals:
        metrics["eval_loss"] = evals[-1]["eval_loss"]
    return metrics


def run_training(config: TrainConfig, *, resume: bool = False) -> TrainResult:
    """Train as configured (resuming from the newest complete checkpoint when asked); see docs/TRAINING.md."""
    from .collate import VisionLanguageCollator
    from .models import load_processor

    rank, world = dist_info()
    main = rank == 0
    hw = detect_hardware()
    plan = plan_run(config, resume, hw, check_folder=main)
    args = training_arguments(config, plan.run, hw, bool(plan.eval_rows))
    with args.main_process_first(desc="load model"):
        processor = load_processor(config.model.name)
        apply_image_cap(processor, config.data.max_image_size)
        model = build_model(config, plan.spec, hw, str(args.device))
    with args.main_process_first(desc="run folder"):
        if main:
            prepare_run_folder(config, plan, resume)
    return _train(config, plan, args, processor, model, hw, resume, VisionLanguageCollator)


def _train(cfg: TrainConfig, plan: Plan, args: Any, processor: Any, model: Any, hw: Hardware, resume: bool,
           collator_cls: Any) -> TrainResult:
    from transformers.trainer_callback import PrinterCallback

    from .callbacks import ProgressWriter, read_best

    rank, world = dist_info()
    main = rank == 0
    handlers, saved_logging = setup_logging(plan.run, main)
    writer = ProgressWriter(plan.run, enabled=main)
    cbs = _callbacks(cfg, plan, writer, world, processor)
    previous_sigterm = cbs["cancel"].install_signal()
    for warning in plan.warnings:
        log.warning(warning)
    result = TrainResult("failed", str(plan.run), resumed_from=_step_of(plan.checkpoint))
    try:
        trainer = _trainer_class()(
            model=model, args=args, train_dataset=RowDataset(plan.train_rows, cfg.data.max_image_size),
            eval_dataset=RowDataset(plan.eval_rows, cfg.data.max_image_size) if plan.eval_rows else None,
            data_collator=collator_cls(processor, max_length=cfg.data.max_length), processing_class=processor,
            callbacks=[c for c in cbs.values() if c is not None])
        trainer.throughput = cbs["progress"].throughput
        trainer.remove_callback(PrinterCallback)  # progress.jsonl and train.log already carry every log
        cbs["progress"].begin_event = _begin_event(cfg, plan, model, hw, world, resume)
        started, cpu_started = time.monotonic(), time.process_time()
        output = trainer.train(resume_from_checkpoint=str(plan.checkpoint) if plan.checkpoint else None)
        cpu_seconds = time.process_time() - cpu_started
        result.status = "cancelled" if cbs["cancel"].cancelled_at is not None else "succeeded"
        result.step, result.total_steps = trainer.state.global_step, trainer.state.max_steps
        result.metrics = {**_metrics(trainer, output), "train_cpu_seconds": round(cpu_seconds, 3)}
        result.final_loss = result.metrics.get("final_loss")
        result.weights_sha = weights_sha(trainer.model)
        if result.status == "succeeded":
            result.output = str(_save_outputs(trainer, cfg, plan, studio_info(cfg, plan), main))
        result.best = read_best(plan.run)
        early = cbs["early"]
        writer.emit({"event": "end", "status": result.status, "step": result.step, "total_steps": result.total_steps,
                     "final_loss": result.final_loss, "eval_loss": result.metrics.get("eval_loss"),
                     "train_runtime": round(time.monotonic() - started, 2), "output": result.output,
                     "best_metric": (result.best or {}).get("value"), "best_metric_name": cfg.training.best_metric,
                     "best_checkpoint": (result.best or {}).get("checkpoint"), "weights_sha": result.weights_sha,
                     "stopped_early": bool(early and early.stopped_at is not None)})
        log.info("training %s at step %d", result.status, result.step)
        return result
    except BaseException as exc:
        message = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        log.exception("training %s", status)
        writer.emit({"event": "error", "message": message or type(exc).__name__})
        writer.emit({"event": "end", "status": status, "error": message or type(exc).__name__})
        raise
    finally:
        cbs["cancel"].restore_signal(previous_sigterm)
        writer.close()
        _close_logging(handlers, saved_logging)


def _step_of(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.split("-")[1]) if checkpoint else None
