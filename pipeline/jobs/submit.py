"""Training jobs: validate a config, write it to a new run folder (RUN/config.yaml) and describe the job
(`prepare_train`), or do that and submit it (`submit_train`). The job runs `python -m pipeline train --config
RUN/config.yaml` as its own process; nothing here imports the trainer.
"""

from __future__ import annotations

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
    from ..dataset import fingerprint

    return fingerprint(path)


def _load_train_config(config: str | Path | None, preset: str | None, model: str | None) -> Any:
    from ..plan import build_config

    if config is None and preset is None:
        raise UserError("give --config FILE, or --preset NAME with --model and --data")
    return build_config(config=config, preset=preset, model=model)


def prepare_train(config: str | Path | None = None, preset: str | None = None, model: str | None = None,
                  data: str | Path | None = None, max_steps: int | None = None,
                  overrides: Iterable[str] = (), name: str | None = None, gpus: int = 1,
                  tags: Iterable[str] = (), *, train_config: Any = None) -> JobSpec:
    """Validate a training config (once), write it to a new run folder (RUN/config.yaml) and describe the job.

    `train_config`: a TrainConfig already built by `pipeline.plan.build_config` (the CLI and the app); otherwise one
    is built here from the other arguments.
    """
    from ..config import save_config, set_field
    from ..plan import build_config, check

    base = train_config if train_config is not None else _load_train_config(config, preset, model)
    cfg = build_config(base=base, data=data, sets=overrides,
                       overrides={"training.max_steps": int(max_steps) if max_steps is not None else None})
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
    plan = check(cfg)
    plan.raise_errors(config)
    config_path = save_config(cfg, run_config_path(run_dir))
    if cfg.training.method == "grpo":  # link the refinement to its parent run in the experiment store
        from ..experiments import lineage_tags

        tags = [*tags, *(t for t in lineage_tags(cfg.model_dump(mode="json")) if t not in tags)]
    return JobSpec(argv=train_command(config_path), run_dir=str(run_dir), kind="train", run_id=run_id,
                   name=name or f"{cfg.model.name}-{run_id}", config=cfg.model_dump(mode="json"),
                   model=cfg.model.name, dataset_fingerprint=dataset_fingerprint(cfg.data.path),
                   slots=gpus, mem_bytes=plan.memory_bytes(), tags=list(tags), warnings=plan.warnings)


def submit_train(backend: JobBackend | None = None, **kwargs: Any) -> Job:
    """prepare_train(**kwargs) then submit it; returns the queued job (the run keeps going after this returns)."""
    spec = prepare_train(**kwargs)
    for warning in spec.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return (backend or get_backend()).submit(spec)


def job_json(job: Job) -> str:
    """A job as one JSON object (what `jobs show --json` prints)."""
    return json.dumps(job.to_dict(), sort_keys=True)
