"""Trainer callbacks of a run folder: progress JSONL, TensorBoard, checkpoint manifests / best / pruning,
early stopping and cancel (SIGTERM or RUN/STOP). Only rank 0 writes; every callback is cheap on the step path.
The run folder's names, manifests, best.json and STOP belong to `pipeline.rundir`; these callbacks ask it.
"""

from __future__ import annotations

import json
import math
import os
import queue
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .atomic import atomic_write_text
from .rundir import (
    checkpoint_path,
    last_event,
    list_checkpoints,
    progress_path,
    prune_checkpoints,
    read_best,
    read_checkpoint_state,
    read_manifest,
    stop_path,
    write_best,
    write_checkpoint_state,
    write_manifest,
)


# -- progress.jsonl --------------------------------------------------------------------------------------
class ProgressWriter:
    """Appends events to RUN/progress.jsonl from a background thread; each event gets the next `seq`."""

    def __init__(self, run_dir: str | Path, enabled: bool = True) -> None:
        self.path = progress_path(run_dir)
        self.enabled = enabled
        last = last_event(self.path) if enabled else {}
        self.seq = int(last.get("seq", 0)) if isinstance(last.get("seq"), int) else 0
        self.previous_elapsed = float(last.get("elapsed_s") or 0.0)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="progress-writer", daemon=True)
        if enabled:
            self._thread.start()

    def emit(self, event: dict[str, Any]) -> None:
        """Queue one event (returns at once)."""
        if not self.enabled:
            return
        self.seq += 1
        self._queue.put({"seq": self.seq, "time": round(time.time(), 3), **event})

    def _drain(self) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            while True:
                event = self._queue.get()
                if event is None:
                    return
                lines = [event]
                while not self._queue.empty():  # batch what piled up into one write
                    more = self._queue.get()
                    if more is None:
                        self._queue.put(None)
                        break
                    lines.append(more)
                handle.write("".join(json.dumps(_clean(e), separators=(",", ":")) + "\n" for e in lines))
                handle.flush()

    def close(self) -> None:
        """Write everything queued, then stop the thread."""
        if self.enabled and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=30)


def _clean(event: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values: NaN/inf become null, tensors and numpy scalars become floats."""
    out: dict[str, Any] = {}
    for key, value in event.items():
        if hasattr(value, "item") and not isinstance(value, dict | list):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = _clean(value) if isinstance(value, dict) else value
    return out


class Throughput:
    """Counts samples and non-padding tokens on the training thread without forcing a device sync."""

    def __init__(self) -> None:
        self.samples = 0
        self._tokens: Any = 0

    def add(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        ids = inputs.get("input_ids")
        if mask is not None:
            self.samples += int(mask.shape[0])
            self._tokens = self._tokens + mask.sum()
        elif ids is not None:
            self.samples += int(ids.shape[0])
            self._tokens = self._tokens + ids.numel()

    @property
    def tokens(self) -> int:
        return int(self._tokens)


def memory_now() -> dict[str, int]:
    """Resident memory of this process and, on CUDA, the peak allocated by torch (bytes)."""
    import psutil
    import torch

    out = {"rss": int(psutil.Process().memory_info().rss)}
    if torch.cuda.is_available():
        out["cuda_max_allocated"] = int(torch.cuda.max_memory_allocated())
    return out


class RunProgressCallback(TrainerCallback):
    """One JSON line per log step (loss, lr, speed, ETA, memory) plus eval events; rank 0 only."""

    def __init__(self, writer: ProgressWriter, throughput: Throughput, world_size: int = 1) -> None:
        self.writer, self.throughput, self.world = writer, throughput, world_size
        self.start = self.last_time = time.monotonic()
        self.start_step = self.last_step = 0
        self.last_samples = self.last_tokens = 0
        self.begin_event: dict[str, Any] = {}
        self.extra: dict[str, str] = {}  # log key -> event field copied into each log event (e.g. GRPO's reward)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.start = self.last_time = time.monotonic()
        self.start_step = self.last_step = state.global_step
        if state.is_world_process_zero and self.begin_event:
            if self.begin_event.get("event") == "resume":
                self.begin_event.update(_optimizer_summary(kwargs.get("optimizer"), kwargs.get("lr_scheduler")))
            self.writer.emit({**self.begin_event, "total_steps": state.max_steps, "step": state.global_step})

    def _pause(self, state: Any) -> None:
        """Evaluation and saving follow the log of the same step: keep their time out of the next speed."""
        if state.global_step == self.last_step:
            self.last_time = time.monotonic()

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._pause(state)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._pause(state)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        if any(key.startswith("eval_") for key in logs):
            self.writer.emit({"event": "eval", "step": state.global_step, "epoch": state.epoch, **logs})
            return
        if "loss" not in logs:
            return  # the Trainer's closing summary; the end event carries it
        now = time.monotonic()
        samples, tokens = self.throughput.samples, self.throughput.tokens
        span = max(now - self.last_time, 1e-9)
        done = state.global_step - self.start_step
        per_step = (now - self.start) / done if done else 0.0
        self.writer.emit({
            "event": "log", "step": state.global_step, "total_steps": state.max_steps, "epoch": state.epoch,
            "loss": logs.get("loss"), "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
            "samples_per_s": round((samples - self.last_samples) * self.world / span, 3),
            "tokens_per_s": round((tokens - self.last_tokens) * self.world / span, 1),
            "eta_s": round(per_step * (state.max_steps - state.global_step), 1),
            "elapsed_s": round(self.writer.previous_elapsed + now - self.start, 2),
            "memory": memory_now(), **{name: logs[key] for key, name in self.extra.items() if key in logs},
        })
        self.last_time, self.last_step, self.last_samples, self.last_tokens = now, state.global_step, samples, tokens


def _optimizer_summary(optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """The restored optimizer step count and learning rate (proof that their states were loaded)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    out: dict[str, Any] = {}
    for param_state in getattr(inner, "state", {}).values():
        if "step" in param_state:
            out["optimizer_step"] = int(param_state["step"])
            break
    if scheduler is not None and hasattr(scheduler, "get_last_lr"):
        out["lr"] = float(scheduler.get_last_lr()[0])
    return out


# -- TensorBoard -------------------------------------------------------------------------------------------
class TensorBoardCallback(TrainerCallback):
    """Scalars at every log, histograms of trainable weights and gradients every `histogram_steps`; rank 0 only."""

    def __init__(self, log_dir: str | Path, histogram_steps: int = 0) -> None:
        self.log_dir, self.every = str(log_dir), histogram_steps
        self.writer: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.log_dir)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.writer is None or not logs:
            return
        for key, value in logs.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                tag = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
                self.writer.add_scalar(tag, value, state.global_step)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        step = state.global_step + 1  # the step this optimizer update completes
        if self.writer is None or not self.every or step % self.every:
            return
        model = kwargs.get("model")
        for name, param in model.named_parameters() if model is not None else []:
            if not param.requires_grad:
                continue
            self.writer.add_histogram(f"weights/{name}", param.detach().float().cpu(), step)
            if param.grad is not None:
                self.writer.add_histogram(f"grads/{name}", param.grad.detach().float().cpu(), step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# -- ranks --------------------------------------------------------------------------------------------------
def _distributed() -> Any:
    """torch.distributed when a process group is up (torchrun / accelerate launch), else None."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def agree(flag: bool, any_rank: bool = True) -> bool:
    """The same decision on every rank: any rank's True (any_rank) or every rank's True."""
    dist = _distributed()
    if dist is None:
        return flag
    import torch

    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX if any_rank else dist.ReduceOp.MIN)
    return bool(value.item())


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    dist = _distributed()
    if dist is not None:
        dist.barrier()


# -- checkpoints ------------------------------------------------------------------------------------------
def _improved(value: float, best: float | None, mode: str, threshold: float = 0.0) -> bool:
    if best is None:
        return True
    return value < best - threshold if mode == "min" else value > best + threshold


class CheckpointCallback(TrainerCallback):
    """After each save: manifest (last), best.json by a metric, pruning; before each save: a free-disk check."""

    def __init__(self, run_dir: str | Path, writer: ProgressWriter, *, keep: int = 2, metric: str = "eval_loss",
                 mode: str = "min", min_free_bytes: int = 0, base_model: str | None = None,
                 on_saved: Any = None) -> None:
        self.run_dir, self.writer, self.keep = Path(run_dir), writer, keep
        self.metric, self.mode, self.min_free = metric, mode, min_free_bytes
        self.base_model, self.on_saved = base_model, on_saved
        self.last_metric: float | None = None
        best = read_best(run_dir)
        self.best_value = float(best["value"]) if best and best.get("value") is not None else None

    def _needed_bytes(self) -> int:
        for _, path in reversed(list_checkpoints(self.run_dir)):
            try:
                return int((read_manifest(path) or {})["total_bytes"])
            except (ValueError, KeyError, TypeError):
                continue
        return 0

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not control.should_save:
            return
        free = need = 0
        if state.is_world_process_zero:
            free, need = shutil.disk_usage(self.run_dir).free, self._needed_bytes() + self.min_free
        if agree(free >= need, any_rank=False):
            return
        control.should_save = False  # on every rank, so no rank waits for a save the others skip
        if state.is_world_process_zero:
            self.writer.emit({"event": "warning", "step": state.global_step,
                              "message": f"checkpoint skipped: {free / 2**20:.1f} MiB free, {need / 2**20:.1f} MiB "
                                         "needed"})

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        if metrics and self.metric in metrics:
            self.last_metric = float(metrics[self.metric])

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        barrier()  # sharded saves (FSDP, DeepSpeed) write from every rank: all files first, then the manifest
        if not state.is_world_process_zero:
            return
        step = state.global_step
        folder = checkpoint_path(self.run_dir, step)
        if self.base_model:
            set_adapter_base(folder, self.base_model)
        if self.on_saved is not None:
            self.on_saved(folder)
        manifest = write_manifest(folder, step, {"metric": self.metric, "value": self.last_metric})
        event: dict[str, Any] = {"event": "checkpoint", "step": step, "checkpoint": folder.name,
                                 "bytes": manifest["total_bytes"]}
        if self.last_metric is not None and _improved(self.last_metric, self.best_value, self.mode):
            self.best_value = self.last_metric
            best = {"checkpoint": folder.name, "step": step, "metric": self.metric, "value": self.last_metric,
                    "mode": self.mode}
            write_best(self.run_dir, best)
            event.update(best_metric=self.last_metric, best_metric_name=self.metric, best_checkpoint=folder.name)
        event["pruned"] = prune_checkpoints(self.run_dir, self.keep, step)
        self.writer.emit(event)


def set_adapter_base(folder: str | Path, base_model: str) -> None:
    """Point adapter_config.json at the base model's Hub id (PEFT writes the local folder it loaded from)."""
    path = Path(folder) / "adapter_config.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("base_model_name_or_path") != base_model:
            data["base_model_name_or_path"] = base_model
            atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


# -- stopping ---------------------------------------------------------------------------------------------
class EarlyStopping(TrainerCallback):
    """Stop after `patience` evaluations without an improvement larger than `threshold`."""

    def __init__(self, metric: str, mode: str, patience: int, threshold: float = 0.0) -> None:
        self.metric, self.mode, self.patience, self.threshold = metric, mode, patience, threshold
        self.best: float | None = None
        self.bad_evals = 0
        self.stopped_at: int | None = None

    def state(self) -> dict[str, Any]:
        return {"best": self.best, "bad_evals": self.bad_evals}

    def load(self, data: dict[str, Any]) -> None:
        self.best, self.bad_evals = data.get("best"), int(data.get("bad_evals", 0))

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:
        if not metrics or self.metric not in metrics:
            return
        value = float(metrics[self.metric])
        if _improved(value, self.best, self.mode, self.threshold):
            self.best, self.bad_evals = value, 0
        else:
            self.bad_evals += 1
        if self.bad_evals >= self.patience:
            control.should_training_stop = True
            self.stopped_at = state.global_step


class CancelCallback(TrainerCallback):
    """SIGTERM or a RUN/STOP file: finish the current step, save a checkpoint, stop (all ranks agree)."""

    def __init__(self, run_dir: str | Path, world_size: int = 1) -> None:
        self.stop_file = stop_path(run_dir)
        self.world = world_size
        self.requested = False
        self.cancelled_at: int | None = None

    def install_signal(self) -> Any:
        """Turn SIGTERM into a graceful stop request (main thread only); returns the handler it replaced."""
        if threading.current_thread() is not threading.main_thread():
            return None
        return signal.signal(signal.SIGTERM, self._on_signal)

    @staticmethod
    def restore_signal(previous: Any) -> None:
        """Put back the SIGTERM handler that install_signal replaced."""
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.requested = True

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        wanted = self.requested or self.stop_file.exists()
        if agree(wanted) if self.world > 1 else wanted:
            self.requested = True
            self.cancelled_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            control.should_log = True


def save_studio_state(folder: str | Path, early: EarlyStopping | None) -> None:
    """Counters a resume needs beside the Trainer's own state (written before the manifest)."""
    write_checkpoint_state(folder, {"early_stopping": early.state() if early else None})


def load_studio_state(folder: str | Path) -> dict[str, Any]:
    """What save_studio_state wrote ({} when absent)."""
    return read_checkpoint_state(folder)


def remove_path(path: str | Path) -> None:
    """Delete a file or folder if present."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        os.unlink(path)
