"""The training entry point: LoRA / QLoRA / full fine-tuning of a registry VLM on a converted dataset.

Reads top to bottom: plan (every check, nothing written) -> load -> run folder -> Trainer -> outputs. The same code
serves `python -m pipeline train`, the job runner (a process of its own) and `torchrun` / `accelerate launch`
(rank 0 alone writes progress, manifests and outputs).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import TrainConfig, eval_steps, save_config, weights_method
from .dataset import open_dataset
from .errors import UserError
from .hardware import Hardware, detect_hardware
from .models import apply_image_cap
from .plan import check, fill_image_cap, memory_estimate, resolve_device, resolve_precision
from .records import FrameRecord
from .rundir import (
    OUTPUT_TMP,
    checkpoint_step,
    clear_stale_stop,
    config_path,
    leftovers,
    list_checkpoints,
    newest_valid_checkpoint,
    output_name,
    output_path,
    read_best,
    remove_best,
    studio_path,
    tensorboard_path,
)
from .train_setup import build_model, close_logging, setup_logging, weights_sha

log = logging.getLogger("pipeline.train")


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


def _rows(records: list[FrameRecord], dataset: Path, tasks: list[str], spec: Any, meta: dict[str, Any],
          limit: int | None, max_pixels: int | None = None) -> list[dict[str, Any]]:
    from .clips import clip_options, video_fps
    from .tasks import build_examples, label_set

    examples = build_examples(records, tasks, spec.convention, seed=int(meta.get("seed", 0)),
                              label_set=label_set(meta), max_pixels=max_pixels, clips=clip_options(meta),
                              fps=video_fps(meta))
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
    found = leftovers(run)
    if found:
        raise UserError(f"run folder already holds a run ({', '.join(found[:3])}); use --resume or another --out", run)


def plan_run(cfg: TrainConfig, resume: bool = False, hardware: Hardware | None = None,
             check_folder: bool = True) -> Plan:
    """Validate the config, the dataset and the run folder; build the rows. Writes nothing."""
    from .registry import get_spec

    fill_image_cap(cfg)  # RUN/config.yaml records the Qwen image cap the processor is set to
    checked = check(cfg, hardware)
    errors, warnings = checked.errors, checked.warnings
    if not cfg.data.path:
        errors.insert(0, "data.path: required (a converted dataset folder)")
    if not cfg.training.output_dir:
        errors.insert(0, "training.output_dir: required (the run folder, --out)")
    if errors:
        raise _first_error(errors)
    dataset, run = Path(cfg.data.path).expanduser().resolve(), Path(cfg.training.output_dir).expanduser().resolve()
    if check_folder:
        _check_run_folder(run, resume)
    opened = open_dataset(dataset)
    spec, meta, cap = get_spec(cfg.model.name), opened.meta, cfg.data.max_pixels
    tasks = cfg.data.tasks or meta.get("tasks") or ["grounding"]
    train_records, val_records = opened.train_val(cfg.data.train_split)
    train_rows = _rows(train_records, dataset, tasks, spec, meta, cfg.data.max_train_samples, cap)
    if not train_rows:
        raise UserError(f"no training examples for tasks {', '.join(tasks)}", dataset)
    eval_rows = _rows(val_records, dataset, tasks, spec, meta, cfg.data.max_eval_samples, cap) if val_records else []
    if not eval_rows and eval_steps(cfg):
        warnings.append("data: the dataset has no val split: no evaluation, best checkpoint or early stopping")
    checkpoint, skipped = newest_valid_checkpoint(run) if resume and run.is_dir() else (None, [])
    return Plan(spec, dataset, run, train_rows, eval_rows, meta, list(tasks), checkpoint, skipped, warnings,
                val_records)


# -- model ---------------------------------------------------------------------------------------------------
# -- data -------------------------------------------------------------------------------------------------------
class RowDataset:
    """Rows for the collator; images above the cap are downscaled (aspect kept) when read.

    With `tokens` (from tokenize_cache.cached_tokenize) each row also carries its token ids, for TokenizedCollator.
    """

    def __init__(self, rows: list[dict[str, Any]], cap: int | None = None,
                 tokens: list[dict[str, Any]] | None = None) -> None:
        self.rows, self.cap, self.tokens = rows, cap, tokens

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index] if self.tokens is None else {**self.rows[index], **self.tokens[index]}
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


def schedule_arguments(cfg: TrainConfig, run: Path, hw: Hardware, has_eval: bool) -> dict[str, Any]:
    """The arguments supervised training and GRPO share: schedule, precision, checkpoints, evaluation, logging."""
    t, device, precision = cfg.training, resolve_device(cfg, hw), resolve_precision(cfg, hw)
    every = eval_steps(cfg) if has_eval else 0
    _, world = dist_info()
    return dict(
        output_dir=str(run), max_steps=t.max_steps, num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.learning_rate, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_ratio, lr_scheduler_type=t.scheduler, max_grad_norm=t.max_grad_norm,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=device == "cpu",
        logging_strategy="steps", logging_steps=t.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=None,
        eval_strategy="steps" if every else "no", eval_steps=every or None,
        remove_unused_columns=False, report_to="none", seed=t.seed, data_seed=t.seed,
        dataloader_num_workers=cfg.hardware.num_workers, dataloader_pin_memory=device == "cuda",
        disable_tqdm=not sys.stderr.isatty(), ddp_backend="gloo" if device == "cpu" and world > 1 else None,
        log_level="info", log_level_replica="warning",
    )


def training_arguments(cfg: TrainConfig, run: Path, hw: Hardware, has_eval: bool) -> Any:
    """TrainingArguments for the config (reporting is ours: progress.jsonl + TensorBoard callbacks)."""
    from transformers import TrainingArguments

    return TrainingArguments(**schedule_arguments(cfg, run, hw, has_eval), prediction_loss_only=True,
                             label_names=["labels"])


# -- run folder -------------------------------------------------------------------------------------------------
def dataset_fingerprint(dataset: Path) -> str | None:
    """Short sha256 of records.jsonl and the split files (the same value the job store records)."""
    from .dataset import fingerprint

    return fingerprint(dataset)


def studio_info(cfg: TrainConfig, plan: Plan) -> dict[str, Any]:
    """RUN/studio.json: what evaluation and export need to talk to the trained model like training did."""
    from . import __version__
    from .tasks import PHRASES

    labels = plan.meta.get("labels")
    return {
        "tool_version": __version__, "model": plan.spec.key, "base_model": plan.spec.hub_id,
        "family": plan.spec.family, "convention": plan.spec.convention, "method": weights_method(cfg),
        "tasks": plan.tasks, "prompt_templates": {task: PHRASES.get(task, []) for task in plan.tasks},
        "label_map": labels if isinstance(labels, dict) else {str(lab): None for lab in labels or []},
        "seed": plan.meta.get("seed", 0), "dataset": str(plan.dataset),
        "dataset_fingerprint": dataset_fingerprint(plan.dataset), "max_length": cfg.data.max_length,
        "max_image_size": cfg.data.max_image_size, "max_pixels": cfg.data.max_pixels,
        "train_examples": len(plan.train_rows), "eval_examples": len(plan.eval_rows),
        "output": output_name(weights_method(cfg)),
        **({"objective": "grpo", "parent_run": cfg.grpo.parent} if cfg.training.method == "grpo" else {}),
    }


def prepare_run_folder(cfg: TrainConfig, plan: Plan, resume: bool = False) -> None:
    """Rank 0: create RUN, write config.yaml, drop incomplete checkpoints and stale leftovers."""
    from .callbacks import remove_path

    plan.run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, config_path(plan.run))
    remove_path(plan.run / OUTPUT_TMP)
    resumed = _step_of(plan.checkpoint) or 0
    for step, path in list_checkpoints(plan.run):
        if step > resumed:  # incomplete or newer than the resume point: the Trainer writes them again
            remove_path(path)
    best = read_best(plan.run)
    if best and not (plan.run / str(best.get("checkpoint"))).is_dir():
        remove_best(plan.run)
    if resume:  # a STOP older than this process ended an earlier attempt; one written since is a new cancel
        import psutil

        clear_stale_stop(plan.run, psutil.Process().create_time())


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
        batch_size=cfg.training.batch_size, image_cap=cfg.data.max_image_size, max_pixels=cfg.data.max_pixels,
        meta=plan.meta)


def _callbacks(cfg: TrainConfig, plan: Plan, writer: Any, world: int, processor: Any) -> dict[str, Any]:
    from . import callbacks as cb

    t = cfg.training
    early = None
    if t.early_stopping_patience and plan.eval_rows:
        early = cb.EarlyStopping(t.best_metric, t.best_mode, t.early_stopping_patience, t.early_stopping_threshold)
        if plan.checkpoint is not None:
            early.load(cb.load_studio_state(plan.checkpoint).get("early_stopping") or {})
    base = None if weights_method(cfg) == "full" else plan.spec.hub_id
    return {  # geometry first (the others see its metrics); cancel before checkpoint (its save gets the disk
        # check); progress last (sees saves finished)
        "geometry": _geometry_callback(cfg, plan, processor),
        "tensorboard": cb.TensorBoardCallback(tensorboard_path(plan.run), t.histogram_steps),
        "cancel": cb.CancelCallback(plan.run, world),
        "checkpoint": cb.CheckpointCallback(
            plan.run, writer, keep=t.keep_checkpoints, metric=t.best_metric, mode=t.best_mode,
            min_free_bytes=int(cfg.hardware.min_free_disk_gb * 2**30), base_model=base,
            on_saved=functools.partial(cb.save_studio_state, early=early)),
        "early": early,
        "progress": cb.RunProgressCallback(writer, cb.Throughput(), world),
    }


def _begin_event(cfg: TrainConfig, plan: Plan, model: Any, hw: Hardware, world: int, resume: bool) -> dict[str, Any]:
    from .models import model_info

    info = model_info(model)
    event: dict[str, Any] = {
        "event": "resume" if plan.checkpoint else "start", "run_dir": str(plan.run), "model": plan.spec.key,
        "method": cfg.training.method, "train_examples": len(plan.train_rows), "eval_examples": len(plan.eval_rows),
        "world_size": world, "params": info["params"], "trainable_params": info["trainable"],
        "quantization": info["quantization"], "hardware": hw.summary(),
        "memory_estimate_gib": round(memory_estimate(cfg, hw).total / 2**30, 3),
        "warnings": plan.warnings}
    if plan.checkpoint is not None:
        event["resumed_from"] = _step_of(plan.checkpoint)
    if resume:
        event["skipped"] = [{"checkpoint": name, "reason": why} for name, why in plan.skipped]
    return event


def _save_outputs(trainer: Any, cfg: TrainConfig, plan: Plan, info: dict[str, Any], main: bool) -> Path:
    """RUN/adapter (or RUN/model) with the processor and studio.json, renamed into place when complete."""
    from .atomic import atomic_write_text
    from .callbacks import remove_path, set_adapter_base

    final = output_path(plan.run, weights_method(cfg))
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
        if weights_method(cfg) != "full":
            set_adapter_base(tmp, plan.spec.hub_id)
        text = json.dumps(info, indent=2) + "\n"
        atomic_write_text(studio_path(tmp), text)
        atomic_write_text(studio_path(plan.run), text)
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
    from .collate import VisionLanguageCollator, is_seq2seq
    from .models import load_processor
    from .tokenize_cache import TokenizedCollator

    if config.training.method == "grpo":
        raise UserError("training.method grpo runs through pipeline.grpo.run_grpo (train --method grpo --from RUN)")
    rank, world = dist_info()
    main = rank == 0
    hw = detect_hardware()
    plan = plan_run(config, resume, hw, check_folder=main)
    args = training_arguments(config, plan.run, hw, bool(plan.eval_rows))
    with args.main_process_first(desc="load model"):
        processor = load_processor(config.model.name)
        apply_image_cap(processor, config.data.max_image_size, config.data.max_pixels)
        model = build_model(config, plan.spec, hw, str(args.device))
    with args.main_process_first(desc="run folder"):
        if main:
            prepare_run_folder(config, plan, resume)
    # text tokenized once before the loop; an encoder-decoder (Florence-2) keeps the in-loop collator, whose labels are
    # the decoder's own sequence
    def in_loop(processor: Any, pad_to_multiple_of: int | None = None) -> Any:
        return VisionLanguageCollator(processor, max_length=config.data.max_length)

    collator_cls = in_loop if is_seq2seq(processor) else TokenizedCollator
    return _train(config, plan, args, processor, model, hw, resume, collator_cls)


def _datasets(cfg: TrainConfig, plan: Plan, processor: Any) -> tuple[RowDataset, RowDataset | None]:
    """Train/eval datasets whose rows carry their token ids, tokenized once (cached in the dataset folder)."""
    from .collate import is_seq2seq
    from .tokenize_cache import cached_tokenize

    def dataset(rows: list[dict[str, Any]]) -> RowDataset:
        if is_seq2seq(processor):  # tokenized in the loop (see run_training)
            return RowDataset(rows, cfg.data.max_image_size)
        tokens = cached_tokenize(processor, rows, plan.dataset, convention=plan.spec.convention,
                                 max_length=cfg.data.max_length, cap=cfg.data.max_image_size)
        return RowDataset(rows, cfg.data.max_image_size, tokens)

    return dataset(plan.train_rows), dataset(plan.eval_rows) if plan.eval_rows else None


def _train(cfg: TrainConfig, plan: Plan, args: Any, processor: Any, model: Any, hw: Hardware, resume: bool,
           collator_cls: Any, make_trainer: Any = None) -> TrainResult:
    """The run around a Trainer: logging, progress, callbacks, outputs, end/error events. `make_trainer(callbacks)`
    builds the Trainer (default: the supervised one; pipeline.grpo passes its GRPO trainer)."""
    from transformers.trainer_callback import PrinterCallback

    from .callbacks import ProgressWriter

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
        callbacks = [c for c in cbs.values() if c is not None]
        if make_trainer is not None:  # GRPO (pipeline/grpo.py) brings its own trainer and data
            trainer = make_trainer(callbacks)
        else:
            with args.main_process_first(desc="tokenize"):  # rank 0 fills the cache, the others read it
                train_data, eval_data = _datasets(cfg, plan, processor)
            trainer = _trainer_class()(
                model=model, args=args, train_dataset=train_data, eval_dataset=eval_data,
                data_collator=collator_cls(processor, pad_to_multiple_of=8 if args.device.type == "cuda" else None),
                processing_class=processor, callbacks=callbacks)
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
        close_logging(handlers, saved_logging)


def _step_of(checkpoint: Path | None) -> int | None:
    return checkpoint_step(checkpoint) if checkpoint else None
