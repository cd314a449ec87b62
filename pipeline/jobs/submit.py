"""Training jobs: validate a config, write it to a new run folder (RUN/config.yaml) and describe the job
(`prepare_train`), or do that and submit it (`submit_train`). The job runs `python -m pipeline train --config
RUN/config.yaml` as its own process; nothing here imports the trainer.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..home import studio_home
from ..rundir import config_path as run_config_path
from .backend import get_backend
from .spec import JobBackend, JobSpec, new_run_id
from .store import Job


def train_command(config_path: str | Path) -> list[str]:
    """The training entry point for a run's config."""
    return [sys.executable, "-m", "pipeline", "train", "--config", str(config_path)]


def dataset_fingerprint(path: str | Path) -> str | None:
    """A short hash of a converted dataset's records and splits (None when the folder has none)."""
    folder = Path(path)
    files = [folder / "records.jsonl", *sorted((folder / "splits").glob("*.jsonl"))]
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()[:16]


def _load_train_config(config: str | Path | None, preset: str | None, model: str | None) -> Any:
    from ..config import load_config

    if config is not None and preset is not None:
        raise UserError("give either --config or --preset, not both")
    if config is not None:
        return load_config(config)
    if preset is None:
        raise UserError("give --config FILE, or --preset NAME with --model and --data")
    from ..presets import get_preset

    return get_preset(preset, model=model)  # the preset fits its image-token budget to the model


def prepare_train(config: str | Path | None = None, preset: str | None = None, model: str | None = None,
                  data: str | Path | None = None, max_steps: int | None = None,
                  overrides: Iterable[str] = (), name: str | None = None, gpus: int = 1,
                  tags: Iterable[str] = ()) -> JobSpec:
    """Validate a training config, write it to a new run folder (RUN/config.yaml) and describe the job."""
    import yaml

    from ..config import save_config, set_field, validate_config
    from ..hardware import detect_hardware

    cfg = _load_train_config(config, preset, model)
    if model:
        set_field(cfg, "model.name", model)
    if data:
        set_field(cfg, "data.path", str(Path(data).expanduser().resolve()))
    if max_steps is not None:
        set_field(cfg, "training.max_steps", int(max_steps))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set {item!r}: expected section.field=value")
        set_field(cfg, key.strip(), yaml.safe_load(value))
    if gpus < 1:
        raise UserError(f"--gpus must be at least 1, got {gpus}")
    run_id = new_run_id()
    run_dir = Path(cfg.training.output_dir).expanduser() if cfg.training.output_dir else studio_home() / "runs" / run_id
    run_dir = run_dir.resolve()
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError("run folder already exists and is not empty (resume its job, or change training.output_dir)",
                        run_dir)
    set_field(cfg, "training.output_dir", str(run_dir))
    if not cfg.data.path:
        raise UserError("data.path: no dataset given (--data DIR, or data.path in the config)", config)
    hw = detect_hardware()
    errors, warnings = validate_config(cfg, hw)
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UserError(errors[0] + more, config)
    config_path = save_config(cfg, run_config_path(run_dir))
    return JobSpec(argv=train_command(config_path), run_dir=str(run_dir), kind="train", run_id=run_id,
                   name=name or f"{cfg.model.name}-{run_id}", config=cfg.model_dump(mode="json"),
                   model=cfg.model.name, dataset_fingerprint=dataset_fingerprint(cfg.data.path) if cfg.data.path
                   else None, slots=gpus, mem_bytes=_memory_bytes(cfg, hw), tags=list(tags), warnings=warnings)


def _memory_bytes(cfg: Any, hw: Any) -> int | None:
    """Per-GPU memory estimate when the run will use CUDA here (the scheduler compares it to free memory)."""
    from ..config import resolve_device
    from ..memory import estimate_memory

    if resolve_device(cfg, hw) != "cuda":
        return None
    estimate = estimate_memory(cfg, hardware=hw)
    return int(getattr(estimate, "total_bytes", None) or estimate.total)


def submit_train(backend: JobBackend | None = None, **kwargs: Any) -> Job:
    """prepare_train(**kwargs) then submit it; returns the queued job (the run keeps going after this returns)."""
    spec = prepare_train(**kwargs)
    for warning in spec.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return (backend or get_backend()).submit(spec)


def job_json(job: Job) -> str:
    """A job as one JSON object (what `jobs show --json` prints)."""
    return json.dumps(job.to_dict(), sort_keys=True)
