"""A quickly trained export that answers in its convention, for the serving tests (made once per test process).

The demo's data and recipe, smaller: 16 generated videos of 12 frames at 64x64, a temporal split, the cpu_demo preset
(full fine-tuning of tiny-smolvlm) for 80 steps of batch 16 with no evaluation during training, exported merged. It
answers well-formed boxes (not noise), which is what parity of served and offline evaluation needs to mean something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_CACHE: dict[str, Any] = {}
STEPS = 80


def served_run(base: Path) -> dict[str, Path]:
    """{"dataset", "run", "export"} under `base` (built on the first call)."""
    if "paths" not in _CACHE:
        from pipeline.config import set_field
        from pipeline.demo import MODEL, SAMPLE_OPTIONS, SPLIT_OPTIONS
        from pipeline.export import export_run
        from pipeline.ingest import convert
        from pipeline.presets import get_preset
        from pipeline.registry import get_spec
        from pipeline.sample import generate_sample
        from pipeline.split import split_dataset
        from pipeline.train import run_training

        info = generate_sample(base / "sample", progress=False, **{**SAMPLE_OPTIONS, "videos": 16})
        dataset = base / "dataset"
        convert(info.demo_zips, dataset, video=info.demo_videos, labels=info.labels_json,
                convention=get_spec(MODEL).convention, tasks=["grounding"], progress=False, family=MODEL)
        split_dataset(dataset, **SPLIT_OPTIONS)
        cfg = get_preset("cpu_demo", model=MODEL, data=str(dataset), out=str(base / "run"))
        for name, value in {"data.tasks": ["grounding"], "training.max_steps": STEPS, "training.batch_size": 16,
                            "training.save_steps": STEPS, "training.eval_steps": 0,
                            "training.geometry_eval_samples": 0, "training.best_metric": "eval_loss",
                            "training.best_mode": "min"}.items():
            set_field(cfg, name, value)
        result = run_training(cfg)
        assert result.status == "succeeded", result
        export = export_run(base / "run", base / "export", mode="merged", parity_samples=0).out_dir
        _CACHE["paths"] = {"dataset": dataset, "run": base / "run", "export": export}
    return _CACHE["paths"]
