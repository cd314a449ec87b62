"""Geometry metrics during training: a TrainerCallback that scores a small fixed validation subset with the same
generation, parsing and metric code as `evaluate`, and puts `eval_miou`, `eval_ap50`, ... into every evaluation.

Register it FIRST among the callbacks: it adds its metrics to the evaluation's log dict in `on_log` (so the progress
and TensorBoard callbacks after it record them) and to the metrics dict in `on_evaluate` (so checkpoint selection
and early stopping after it can follow `eval_miou`). `every_n_steps` also makes the Trainer evaluate at those steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .eval_score import METRIC_KEYS, score_answers, summarize
from .records import FrameRecord
from .tasks import Example


class GeometryEvalCallback(TrainerCallback):
    """Adds `<prefix><metric>` (eval_miou, eval_ap50, eval_map, ...) for the tasks the examples cover."""

    def __init__(self, processor: Any, examples: list[Example], convention: str, every_n_steps: int = 0,
                 batch_size: int = 8, *, image_root: str | Path | None = None, image_cap: int | None = None,
                 max_new_tokens: int | None = None, prefix: str = "eval_") -> None:
        from .generation import token_budget

        self.processor, self.examples, self.convention = processor, list(examples), convention
        self.every, self.batch_size, self.prefix = every_n_steps, batch_size, prefix
        self.image_root, self.image_cap = image_root, image_cap
        self.max_new_tokens = max_new_tokens or (token_budget(processor, [e.answer for e in self.examples])
                                                 if self.examples else 1)
        self.last: tuple[int, dict[str, float]] | None = None  # (step, metrics) of the latest geometry evaluation
        self.history: list[dict[str, Any]] = []

    @classmethod
    def for_dataset(cls, processor: Any, dataset: str | Path, records: list[FrameRecord], tasks: list[str],
                    convention: str, *, seed: int = 0, label_set: list[str] | None = None, samples: int = 16,
                    every_n_steps: int = 0, batch_size: int = 8, image_cap: int | None = None,
                    max_pixels: int | None = None, meta: dict[str, Any] | None = None) -> GeometryEvalCallback:
        """The callback over a fixed, seeded spread of `samples` examples of `records` (e.g. the val split);
        `meta` (dataset.json) gives the clip options of video tasks."""
        from .clips import clip_options, video_fps
        from .tasks import build_examples, pick_subset

        examples = build_examples(records, tasks, convention, seed=seed, label_set=label_set, max_pixels=max_pixels,
                                  clips=clip_options(meta), fps=video_fps(meta))
        return cls(processor, pick_subset(examples, samples), convention, every_n_steps, batch_size,
                   image_root=dataset, image_cap=image_cap)

    def compute(self, model: Any, step: int) -> dict[str, float]:
        """Generate, parse and score the subset now; the numeric metrics with the prefix (cached per step)."""
        if self.last is not None and self.last[0] == step:
            return self.last[1]
        from .generation import generate_answers

        answers = generate_answers(model, self.processor, self.examples, image_root=self.image_root,
                                   batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                                   image_cap=self.image_cap, progress=False)
        summary = summarize(score_answers(self.examples, answers, self.convention))
        metrics = {f"{self.prefix}{k}": float(summary[k]) for k in METRIC_KEYS if summary.get(k) is not None}
        metrics[f"{self.prefix}geometry_n"] = float(summary["n"])
        self.last = (step, metrics)
        self.history.append({"step": step, **metrics, "samples": [
            {"id": e.id, "truth": e.answer, "answer": a} for e, a in zip(self.examples[:3], answers, strict=False)]})
        return metrics

    def _missing(self, logs: dict[str, Any]) -> bool:
        return bool(self.examples) and f"{self.prefix}geometry_n" not in logs

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every and state.global_step % self.every == 0:
            control.should_evaluate = True

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, model: Any = None,
               **kwargs: Any) -> None:
        if not logs or model is None or not any(k.startswith("eval_") for k in logs) or not self._missing(logs):
            return
        metrics = self.compute(model, state.global_step)
        logs.update(metrics)  # the same dict the Trainer hands to on_evaluate next
        last = state.log_history[-1] if state.log_history else None
        if isinstance(last, dict) and last.get("step") == state.global_step and "eval_loss" in last:
            last.update(metrics)  # trainer_state.json keeps them too

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None,
                    model: Any = None, **kwargs: Any) -> None:
        if metrics is not None and model is not None and self._missing(metrics):
            metrics.update(self.compute(model, state.global_step))
