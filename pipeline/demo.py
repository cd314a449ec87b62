"""The offline demo: the whole pipeline end to end on generated data, ending in a table that shows learning.

    python -m pipeline demo --out demo/          # sample -> convert -> validate -> split -> train -> evaluate -> export

    from pipeline.demo import run_demo
    summary = run_demo("demo/")                  # DemoSummary; also written to demo/summary.json and summary.md

Every stage is the public function the CLI verb and the app call, with the app's defaults (built-in sample, tiny
model, cpu_demo preset); nothing is special-cased. See docs/DEMO.md for the numbers measured on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import UserError
from .rundir import ProgressTail, log_path, progress_path, studio_path

MODEL = "tiny-smolvlm"
PRESET = "cpu_demo"
TASKS = ("grounding",)
# Many short videos at the tiny model's input size, one shape each: the split holds out whole videos, so the test
# frames show colours, backgrounds and paths never seen in training (docs/DEMO.md says why one shape).
SAMPLE_OPTIONS: dict[str, Any] = {"frames": 12, "videos": 256, "width": 64, "height": 64, "export_every": 1,
                                  "objects": 1, "seed": 0}
SPLIT_OPTIONS: dict[str, Any] = {"strategy": "temporal", "ratios": (0.8, 0.1, 0.1), "seed": 42}
DEMO_TASKS = ("grounding", "track")
# demo --task track: fast shapes that leave and re-enter, clips of 3 frames 2 frames apart; the held-out score is
# the mean IoU on the later frames against copying the given first-frame box (docs/DEMO.md).
TRACK_SAMPLE: dict[str, Any] = {**SAMPLE_OPTIONS, "frames": 16, "motion": "track"}
TRACK_CLIPS: dict[str, Any] = {"clip_frames": 3, "clip_stride": 2}
TRACK_STEPS = 1000  # 400 steps stayed under the copy baseline; 1000 beat it by 0.19 (docs/DEMO.md)
BASELINES = {"grounding": "mean-box baseline (training-split mean box per label)",
             "track": "copy-the-given-box baseline (the first frame's box answered for every later frame)"}
EVAL_LIMIT = 200  # held-out examples scored per model (a fixed, seeded subset)
EVAL_BATCH = 32
STAGES = ("sample", "convert", "validate", "split", "train", "evaluate", "export")
RL_STAGES = ("sample", "convert", "validate", "split", "train", "grpo", "evaluate", "export")
RL_PRESET = "grpo_cpu_demo"  # `demo --rl`: GRPO after the SFT stage
# `demo --rl`: this share of the training videos is held back from SFT as the GRPO stage's prompts (split `rl`):
# GRPO on the frames SFT learned by heart did not help (docs/DEMO.md, "GRPO stage")
RL_HOLDOUT = 0.3


@dataclass
class DemoSummary:
    """What the demo measured and wrote; `paths` are absolute, `stage_seconds` are wall-clock per stage."""

    out: str
    finetuned_miou: float | None = None
    base_miou: float | None = None
    baseline_miou: float | None = None
    seconds: float = 0.0
    steps: int = 0
    model: str = MODEL
    convention: str = ""
    preset: str = PRESET
    method: str = ""
    train_examples: int = 0
    test_examples: int = 0
    final_loss: float | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    task: str = "grounding"
    metric: str = "miou"  # the summary's headline metric (track: track_miou, the later frames' mean IoU)
    baseline: str = BASELINES["grounding"]
    rl: bool = False  # `--rl`: a GRPO stage after SFT; the *_miou below are held-out, on the same examples
    sft_miou: float | None = None
    rl_miou: float | None = None
    rl_seconds: float | None = None
    rl_steps: int = 0
    rl_preset: str | None = None

    @property
    def ratio(self) -> float | None:
        """Fine-tuned mIoU over the mean-box baseline's."""
        if self.finetuned_miou is None or not self.baseline_miou:
            return None
        return self.finetuned_miou / self.baseline_miou

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio_to_baseline": self.ratio, **{k: v for k, v in self.paths.items()}}

    def table(self) -> str:
        """The result as a Markdown table (what docs/DEMO.md and the README show)."""
        return summary_table(self)


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_table(summary: DemoSummary) -> str:
    """Markdown: held-out scores of the fine-tuned model, its untrained base and the mean-box baseline."""
    track = summary.task == "track"
    rows = [("fine-tuned", f"{summary.model}, {summary.preset}, {summary.steps} steps", "model"),
            ("base", f"{summary.model} before training", "base"),
            ("copy-the-given-box baseline", "the first frame's box for every later frame", "baseline") if track else
            ("mean-box baseline", "training-split mean box per label", "baseline")]
    second, title = ("track_lost_rate", "lost-track rate") if track else ("ap50", "AP50")
    head = "held-out mIoU (later frames)" if track else "held-out mIoU"
    lines = [f"| model | what | {head} | {title} | parse failures |", "|---|---|---|---|---|"]
    for name, what, key in rows:
        m = summary.metrics.get(key, {})
        lines.append(f"| {name} | {what} | {_fmt(m.get(summary.metric))} | {_fmt(m.get(second))} | "
                     f"{_fmt(m.get('parse_failure_rate'), 2)} |")
    if summary.rl:
        rl = summary.metrics.get("rl", {})
        lines.insert(2, f"| SFT + GRPO | {summary.rl_preset}, {summary.rl_steps} steps, "
                        f"{_fmt(summary.rl_seconds, 0)} s | {_fmt(summary.rl_miou)} | {_fmt(rl.get('ap50'))} | "
                        f"{_fmt(rl.get('parse_failure_rate'), 2)} |")
    ratio = f"{summary.ratio:.1f}x the baseline" if summary.ratio is not None else "no baseline"
    stages = ", ".join(f"{k} {v:.0f}" for k, v in summary.stage_seconds.items())
    held_out = summary.data.get("held_out", "the test split")
    lines += ["", f"Held-out: {summary.test_examples} {summary.task} examples from {held_out} "
              f"({summary.train_examples} training examples). Fine-tuned: {ratio}. Whole demo: "
              f"{summary.seconds:.0f} s wall ({stages})."]
    return "\n".join(lines)


# -- progress -------------------------------------------------------------------------------------------------------
def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


def progress_line(event: dict[str, Any]) -> str | None:
    """One terminal line for a progress.jsonl event (log, eval, end), None for the others."""
    kind, step, total = event.get("event"), event.get("step"), event.get("total_steps")
    if kind == "log":
        loss = event.get("loss")
        return (f"  train step {step}/{total}  loss {_fmt(loss, 4) if isinstance(loss, float) else loss}  "
                f"{_fmt(event.get('samples_per_s'), 1)} samples/s  eta {_eta(event.get('eta_s'))}")
    if kind == "eval":
        miou = f"  val mIoU {_fmt(event['eval_miou'], 3)}" if isinstance(event.get("eval_miou"), float) else ""
        return f"  eval  step {step}  eval_loss {_fmt(event.get('eval_loss'), 4)}{miou}"
    if kind == "end":
        return f"  train {event.get('status')} at step {step}/{total}, final loss {_fmt(event.get('final_loss'), 4)}"
    return None


@contextmanager
def follow_progress(run_dir: Path, echo: Callable[[str], None], every: float = 0.5, lines: int | None = 20,
                    ) -> Iterator[None]:
    """Print the run's progress.jsonl events while the block trains (a reader thread); about `lines` log lines,
    none when `lines` is None (in a terminal the Trainer draws its own bar)."""
    tail, stop = ProgressTail(progress_path(run_dir)), threading.Event()
    due = 0  # the next log step to print

    def drain() -> None:
        nonlocal due
        for event in tail.read():
            if event.get("event") == "log":
                if lines is None:
                    continue
                step, total = int(event.get("step") or 0), int(event.get("total_steps") or 0)
                if step < due and step < total:
                    continue
                due = step + max(1, total // lines)
            line = progress_line(event)
            if line:
                echo(line)

    def loop() -> None:
        while not stop.wait(every):
            drain()

    thread = threading.Thread(target=loop, name="demo-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        drain()


def quiet_library_bars() -> None:
    """Hide the libraries' own bars (datasets saving shards, transformers loading weights) for a readable log."""
    from datasets.utils.logging import disable_progress_bar
    from transformers.utils import logging as hf_logging

    disable_progress_bar()
    hf_logging.disable_progress_bar()


# -- the stages -----------------------------------------------------------------------------------------------------
def default_out() -> Path:
    """STUDIO_HOME/demos/demo-<timestamp>: a new folder per run."""
    from .home import home_dir

    return home_dir("demos") / datetime.now().strftime("demo-%Y%m%d-%H%M%S")


def _new_folder(out: str | Path | None) -> Path:
    folder = Path(out).expanduser().resolve() if out else default_out()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError("output folder already exists and is not empty (choose another --out)", folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_demo(out: str | Path | None = None, *, steps: int | None = None, sample: dict[str, Any] | None = None,
             eval_limit: int | None = EVAL_LIMIT, echo: Callable[[str], None] | None = None,
             progress: bool = True, model: str = MODEL, task: str = "grounding", rl: bool = False,
             rl_steps: int | None = None) -> DemoSummary:
    """Run every stage into `out` (a new folder, removed again on failure) and write summary.json / summary.md.

    `model` is any offline tiny model (registry key); its family's recipe (pipeline/demo_recipes.py) sets the
    training values that make it learn in the demo's time. `task` "track": the video task on a sample whose shapes
    leave and re-enter, against copying the given box (a model that takes several images per example).
    """
    from .clips import SINGLE_IMAGE_FAMILIES
    from .demo_recipes import check_demo_model, recipe_sample

    if task not in DEMO_TASKS:
        raise UserError(f"--task must be one of {', '.join(DEMO_TASKS)} (got {task!r})")
    echo = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    spec = check_demo_model(model)
    if task == "track" and spec.family in SINGLE_IMAGE_FAMILIES:
        raise UserError(f"--task track shows the model several frames per example, but {spec.key} ({spec.family}) "
                        "takes one image per example; choose another --model")
    folder = _new_folder(out)
    summary = DemoSummary(out=str(folder), model=spec.key, convention=spec.convention, task=task,
                          metric="track_miou" if task == "track" else "miou", baseline=BASELINES[task], rl=rl)
    started = time.monotonic()
    base_sample = TRACK_SAMPLE if task == "track" else SAMPLE_OPTIONS
    try:
        options = {**base_sample, **recipe_sample(spec.key), **(sample or {})}
        _run_stages(folder, summary, steps, options, eval_limit, echo, progress, rl_steps)
        summary.seconds = round(time.monotonic() - started, 1)
        _write_summary(folder, summary)
    except BaseException:
        # The run folder records absolute paths into this folder, so it is built in place, not renamed at the end.
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return summary


def _stage(summary: DemoSummary, name: str, echo: Callable[[str], None]) -> Callable[[str], None]:
    """Announce a stage; the returned `done(text)` records its seconds and prints the outcome."""
    began = time.monotonic()
    stages = RL_STAGES if summary.rl else STAGES
    echo(f"[{stages.index(name) + 1}/{len(stages)}] {name} ...")

    def done(text: str) -> None:
        summary.stage_seconds[name] = round(time.monotonic() - began, 1)
        echo(f"[{stages.index(name) + 1}/{len(stages)}] {name}: {text} ({summary.stage_seconds[name]:.0f} s)")

    return done


def _run_stages(folder: Path, summary: DemoSummary, steps: int | None, sample: dict[str, Any],
                eval_limit: int | None, echo: Callable[[str], None], progress: bool,
                rl_steps: int | None = None) -> None:
    from .evaluate import evaluate_run
    from .export import export_run
    from .ingest import convert
    from .quality import validate
    from .registry import get_spec
    from .sample import generate_sample
    from .split import split_dataset

    spec = get_spec(summary.model)
    done = _stage(summary, "sample", echo)
    info = generate_sample(folder / "sample", progress=progress, **sample)
    done(f"{len(info.demo_zips)} SAM 2 demo exports of {sample['frames']} frames at "
         f"{sample['width']}x{sample['height']}")

    done = _stage(summary, "convert", echo)
    dataset = folder / "dataset"
    clips = TRACK_CLIPS if summary.task == "track" else {}
    converted = convert(info.demo_zips, dataset, video=info.demo_videos, labels=info.labels_json,
                        convention=spec.convention, tasks=[summary.task], progress=progress, family=spec.key,
                        **clips)
    summary.data.update(frames=converted.frames, objects=converted.objects, labels=converted.labels)
    done(f"{converted.frames} frames, {converted.objects} objects, labels {', '.join(sorted(converted.labels))}")

    done = _stage(summary, "validate", echo)
    report = validate(dataset, folder / "report", family=spec.key)
    s = report.summary
    summary.data["quality"] = {"errors": s["errors"], "warnings": s["warnings"], "infos": s["infos"]}
    done(f"{'passed' if report.passed else 'FAILED'}: {s['errors']} error(s), {s['warnings']} warning(s)")

    done = _stage(summary, "split", echo)
    split = split_dataset(dataset, **SPLIT_OPTIONS)
    summary.data["split"] = {"counts": split.counts, "videos": {k: len(v) for k, v in split.videos.items()}}
    unseen = set(split.videos.get("test", [])).isdisjoint(split.videos.get("train", []))
    summary.data["held_out"] = "videos never seen in training" if unseen else \
        "the end of the video, after the training frames and a guard gap (temporal split)"
    done(", ".join(f"{name} {split.counts.get(name, 0)} frames / {len(split.videos.get(name, []))} videos"
                   for name in ("train", "val", "test")))
    if summary.rl:
        _hold_out(dataset, summary, echo)

    run = _train(folder, summary, dataset, steps, echo)
    if summary.rl:
        run = _grpo(folder, summary, run, rl_steps, echo)

    done = _stage(summary, "evaluate", echo)
    # a GRPO run is evaluated with its parent (the SFT run) on the same held-out examples
    result = evaluate_run(run, dataset, split="test", limit=eval_limit, batch_size=EVAL_BATCH, out=folder / "eval")
    _take_metrics(summary, result.comparison)
    what = "held-out mIoU on later frames" if summary.task == "track" else "held-out mIoU"
    name = "copy-the-given-box" if summary.task == "track" else "mean-box"
    rl_text = f"SFT+GRPO {_fmt(summary.rl_miou)}, " if summary.rl else ""
    done(f"{what} {rl_text}fine-tuned {_fmt(summary.finetuned_miou)}, base {_fmt(summary.base_miou)}, "
         f"{name} baseline {_fmt(summary.baseline_miou)}")

    done = _stage(summary, "export", echo)
    mode = "merged" if summary.method == "full" else "adapter"
    exported = export_run(run, folder / "export", mode=mode, progress=False)
    summary.notes += list(exported.notes)
    done(f"{mode} from {exported.source} -> {exported.out_dir.name}/ + {exported.zip_path.name}")
    summary.paths.update(report=report.paths.get("md", str(folder / "report" / "report.md")), run=str(run),
                         evaluation=result.out, export=str(exported.out_dir), export_zip=str(exported.zip_path),
                         dataset=str(dataset), sample=str(info.out_dir))


def _train(folder: Path, summary: DemoSummary, dataset: Path, steps: int | None, echo: Callable[[str], None]) -> Path:
    from .config import set_field
    from .presets import get_preset
    from .train import run_training

    run = folder / "run"
    from .demo_recipes import apply_recipe

    cfg = get_preset(PRESET, model=summary.model, data=str(dataset), out=str(run))
    set_field(cfg, "data.tasks", [summary.task])
    apply_recipe(cfg, summary.model)
    if summary.task == "track":  # the best checkpoint is the one that tracks best on validation
        set_field(cfg, "training.best_metric", "eval_track_miou")
        set_field(cfg, "training.max_steps", TRACK_STEPS)
    if steps is not None:
        if steps < 1:
            raise UserError(f"--steps must be at least 1 (got {steps})")
        set_field(cfg, "training.max_steps", steps)
    summary.method = cfg.training.method
    done = _stage(summary, "train", echo)
    echo(f"  {summary.model}, preset {PRESET}: {cfg.training.method} fine-tuning, {cfg.training.max_steps} steps of "
         f"batch {cfg.training.batch_size}, learning rate {cfg.training.learning_rate:g} (progress: "
         f"{progress_path(run)})")
    with follow_progress(run, echo, lines=None if sys.stderr.isatty() else 20):
        result = run_training(cfg)
    if result.status != "succeeded":
        raise UserError(f"training {result.status} at step {result.step}; see {log_path(run)}", run)
    summary.steps, summary.final_loss = result.step, result.final_loss
    summary.train_examples = _studio(run).get("train_examples", 0)
    done(f"{result.step} steps, final loss {_fmt(result.final_loss, 4)}")
    return run


def _hold_out(dataset: Path, summary: DemoSummary, echo: Callable[[str], None]) -> None:
    """`--rl`: hold RL_HOLDOUT of the training videos back from SFT; they are the GRPO stage's prompts."""
    from .holdout import hold_out_videos

    counts = hold_out_videos(dataset, RL_HOLDOUT, "rl", seed=int(SPLIT_OPTIONS["seed"]))
    summary.data["rl_holdout"] = counts
    echo(f"  held back for the GRPO stage: {counts['rl']} training frames (split rl, {RL_HOLDOUT:.0%} of the "
         f"training videos); SFT trains on the other {counts['train']}")


def _grpo(folder: Path, summary: DemoSummary, parent: Path, steps: int | None, echo: Callable[[str], None]) -> Path:
    """The GRPO stage: refine the SFT run (preset RL_PRESET) on the held-back split `rl` into folder/run-grpo."""
    from .config import set_field
    from .grpo import run_grpo
    from .plan import build_config

    run = folder / "run-grpo"
    cfg = build_config(from_run=parent, preset=RL_PRESET, out=run)
    set_field(cfg, "data.train_split", "rl")
    if steps is not None:
        if steps < 1:
            raise UserError(f"--rl-steps must be at least 1 (got {steps})")
        set_field(cfg, "training.max_steps", steps)
    summary.rl_preset = RL_PRESET
    done = _stage(summary, "grpo", echo)
    echo(f"  GRPO from {parent.name}/: {cfg.training.max_steps} steps of {cfg.training.batch_size} completions "
         f"({cfg.grpo.num_generations} per prompt), learning rate {cfg.training.learning_rate:g}, KL beta "
         f"{cfg.grpo.beta:g} (progress: {progress_path(run)})")
    began = time.monotonic()
    with follow_progress(run, echo, lines=None if sys.stderr.isatty() else 20):
        result = run_grpo(cfg)
    summary.rl_seconds = round(time.monotonic() - began, 1)
    if result.status != "succeeded":
        raise UserError(f"GRPO {result.status} at step {result.step}; see {log_path(run)}", run)
    summary.rl_steps = result.step
    done(f"{result.step} steps, best val mIoU {_fmt((result.best or {}).get('value'))}")
    return run


def _studio(run: Path) -> dict[str, Any]:
    try:
        return json.loads(studio_path(run).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _take_metrics(summary: DemoSummary, comparison: dict[str, dict[str, Any]]) -> None:
    keys = ("miou", "ap50", "map", "track_miou", "track_lost_rate", "parse_failure_rate", "n")
    summary.metrics = {name: {k: m.get(k) for k in keys if k in m} for name, m in comparison.items()}
    if summary.rl:  # evaluated the GRPO run: "model" is SFT+GRPO, "parent" the SFT run, on the same examples
        summary.metrics["rl"] = summary.metrics.pop("model", {})
        summary.metrics["model"] = summary.metrics.pop("parent", {})
        summary.rl_miou = summary.metrics["rl"].get(summary.metric)
        summary.sft_miou = summary.metrics["model"].get(summary.metric)
        comparison = {**comparison, "model": comparison.get("parent", {})}
    summary.finetuned_miou = comparison.get("model", {}).get(summary.metric)
    summary.base_miou = comparison.get("base", {}).get(summary.metric)
    summary.baseline_miou = comparison.get("baseline", {}).get(summary.metric)
    summary.test_examples = int(comparison.get("model", {}).get("n") or 0)


def _write_summary(folder: Path, summary: DemoSummary) -> None:
    from .atomic import atomic_write_text

    summary.paths["summary"] = str(folder / "summary.json")
    summary.paths["summary_md"] = str(folder / "summary.md")
    atomic_write_text(folder / "summary.md", "# Demo result\n\n" + summary.table() + "\n")
    atomic_write_text(folder / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
