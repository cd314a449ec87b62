"""What the training process sets up around its loop: the model to train (full, LoRA, or QLoRA on a 4-bit base,
with the registry's LoRA targets) and the log handlers that send its output to RUN/train.log."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .hardware import Hardware
from .plan import resolve_weight_dtype
from .rundir import log_path


def lora_config(cfg: TrainConfig, spec: Any) -> Any:
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

    model = get_peft_model(model, lora_config(cfg, spec))
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
    to_log = _same_file(sys.stderr, log_path(run))
    if main and not to_log:
        file_handler = logging.FileHandler(log_path(run), encoding="utf-8")
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


def close_logging(handlers: list[logging.Handler], saved: dict[str, Any]) -> None:
    """Detach the run's log file and put the logging levels back (the process may train again)."""
    for name in ("pipeline", "transformers"):
        for handler in handlers:
            logging.getLogger(name).removeHandler(handler)
        logging.getLogger(name).setLevel(saved[name])
    for handler, level in saved["console"].items():
        handler.setLevel(level)
    for handler in handlers:
        handler.close()
