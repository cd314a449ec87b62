"""Evaluation: batched greedy generation on a split, answers parsed back to geometry, metrics, before/after.

    python -m pipeline evaluate RUN --split test --limit 200
    python -m pipeline evaluate --model tiny-smolvlm --adapter RUN/adapter --data DATASET

    from pipeline.evaluate import evaluate_run
    result = evaluate_run("studio_data/runs/r1", split="test")   # -> RUN/eval/test/{metrics.json, ...}

The fine-tuned model, its base model (adapter switched off, or the registry base of a full fine-tune) and the
mean-box baseline are scored by the same code (eval_score.py); see docs/EVALUATION.md.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import rundir
from .dataset import meta_path, open_dataset, split_path
from .errors import UserError
from .generation import generate_answers, token_budget
from .records import FrameRecord
from .tasks import Example, pick_subset


@dataclass
class Target:
    """What to evaluate: model to load (+ adapter), how it talks (convention, tasks) and where it came from."""

    model: str
    processor: str = ""  # where the processor comes from (default: `model`)
    adapter: str | None = None
    base: str | None = None  # the model to compare against (None: no before/after)
    name: str = ""
    convention: str | None = None
    tasks: list[str] | None = None
    seed: int | None = None
    labels: list[str] | None = None
    image_cap: int | None = None
    max_pixels: int | None = None  # the Qwen image cap (None: registry.QWEN_MAX_PIXELS)
    quantization: str | None = None
    dataset: str | None = None
    run_dir: str | None = None
    checkpoint: str | None = None
    step: int | None = None
    notes: list[str] = field(default_factory=list)
    parent_run: str | None = None  # a GRPO run's parent run: evaluated beside it on the same examples
    system: str | None = None  # a system prompt written before every prompt (a folder trained elsewhere)


@dataclass
class EvalResult:
    """What an evaluation wrote: OUT, the main metrics, the metrics of every compared model by role ("model",
    "base", "baseline"), their display names ("fine-tuned", "base (M)", "mean-box baseline"), files and notes."""

    out: str
    metrics: dict[str, Any]
    comparison: dict[str, dict[str, Any]]
    files: dict[str, str]
    notes: list[str] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- data ------------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError:
        raise UserError("not valid JSON", path) from None
    return data if isinstance(data, dict) else {}


Split = tuple[list[FrameRecord], list[FrameRecord], dict[str, Any], str | None]


def load_split(dataset: str | Path, split: str) -> Split:
    """(records of the split, training records, dataset.json, note); a dataset without splits/ uses every record."""
    opened = open_dataset(dataset)
    split_path(opened.root, split)  # a plain split name, before anything is read
    names = opened.split_names()
    if not names:
        everything = opened.records()
        return everything, everything, opened.meta, "the dataset has no splits/: every record was evaluated (and " \
                                                    "the mean-box baseline was computed on the same records)"
    train = opened.split("train") if "train" in names else []
    return opened.split(split), train, opened.meta, None


def build_eval_examples(records: list[FrameRecord], target: Target, meta: dict[str, Any]) -> list[Example]:
    """The instruction/answer pairs training built for these records (same tasks, convention, seed, labels)."""
    from .tasks import build_examples, label_set

    tasks = target.tasks or meta.get("tasks") or ["grounding"]
    seed = target.seed if target.seed is not None else int(meta.get("seed") or 0)
    labels = target.labels or label_set(meta)
    from .clips import clip_options, video_fps

    return build_examples(records, list(tasks), target.convention or "json", seed=seed, label_set=labels,
                          max_pixels=target.max_pixels, clips=clip_options(meta), fps=video_fps(meta))


# -- what to evaluate ----------------------------------------------------------------------------------------------
def _final_step(run: Path) -> int | None:
    steps = [e.get("step") for e in rundir.run_events(run) if e.get("event") == "end"]
    return int(steps[-1]) if steps and isinstance(steps[-1], int) else None


def resolve_checkpoint(run: Path, which: str | int = "best") -> tuple[Path, int | None, str | None]:
    """(weights folder, training step, note) for best | last | N; best without best.json falls back to last."""
    which, note = str(which).strip().lower(), None
    if which == "best":
        best = rundir.best_checkpoint(run, verify=False)
        if best is not None:
            return best, rundir.checkpoint_step(best), None
        which, note = "last", f"no best checkpoint ({rundir.BEST_FILE}) in the run: evaluated the final weights"
    if which == "last":
        final = rundir.final_output(run)
        if final is not None:
            return final, _final_step(run), note
        newest = rundir.newest_checkpoint(run)
        if newest is None:
            raise UserError(f"the run has no weights yet (no {rundir.ADAPTER_DIR}/, {rundir.MODEL_DIR}/ or complete "
                            "checkpoint)", run)
        return newest, rundir.checkpoint_step(newest), note
    number = which.removeprefix(rundir.CHECKPOINT_PREFIX)
    if not re.fullmatch(r"\d+", number):
        raise UserError(f"--checkpoint must be best, last or a step number (got {which!r})")
    folder = rundir.checkpoint_path(run, int(number))
    if not folder.is_dir():
        have = ", ".join(p.name for _, p in rundir.list_checkpoints(run)) or "none"
        raise UserError(f"no {folder.name} in the run (checkpoints: {have})", run)
    problem = rundir.check_manifest(folder, verify_hashes=False)
    if problem:
        raise UserError(f"{folder.name} is incomplete: {problem}", run)
    return folder, rundir.checkpoint_step(folder), None


def run_target(run_dir: str | Path, checkpoint: str | int = "best") -> Target:
    """The Target of a run folder: its base model + adapter (LoRA/QLoRA) or its own weights (full fine-tune)."""
    from .config import load_config, weights_method
    from .registry import get_spec

    run = Path(run_dir).expanduser().resolve()
    if not rundir.config_path(run).is_file():
        raise UserError(f"not a run folder (no {rundir.CONFIG_FILE})", run)
    cfg = load_config(rundir.config_path(run))
    info = _read_json(rundir.studio_path(run))
    folder, step, note = resolve_checkpoint(run, checkpoint)
    method = weights_method(cfg)
    full = method == "full"
    labels = info.get("label_map")
    return Target(
        model=str(folder) if full else cfg.model.name, processor=cfg.model.name, adapter=None if full else str(folder),
        base=cfg.model.name,
        name=f"{run.name}/{folder.name}", convention=info.get("convention") or get_spec(cfg.model.name).convention,
        tasks=info.get("tasks") or cfg.data.tasks, seed=info.get("seed"),
        labels=sorted(labels) if isinstance(labels, dict | list) and labels else None,
        image_cap=cfg.data.max_image_size, max_pixels=cfg.data.max_pixels or info.get("max_pixels"),
        quantization="4bit" if method == "qlora" else None,
        dataset=info.get("dataset") or cfg.data.path or None, run_dir=str(run), checkpoint=folder.name, step=step,
        notes=[note] if note else [], parent_run=cfg.grpo.parent or None if cfg.training.method == "grpo" else None)


def _folder_convention(model: str, dataset: str | Path | None) -> tuple[str | None, str | None]:
    """(convention, note) of a model folder without studio.json, from its config.json through the registry."""
    from .registry import family_of_config, spec_for_config

    folder = Path(model).expanduser()
    config = _read_json(folder / "config.json") if folder.is_dir() else {}
    spec = spec_for_config(config) if config else None
    if spec is None:
        return None, None
    note = (f"convention {spec.convention} inferred from config.json (model_type {config.get('model_type')!r}, "
            f"family {family_of_config(config)}); pass --convention to override")
    data_convention = _read_json(meta_path(Path(dataset).expanduser())).get("convention") if dataset else None
    if data_convention and data_convention != spec.convention:
        note += (f"; the dataset was converted with convention {data_convention}: a model trained on its exported "
                 f"files speaks that one (--convention {data_convention})")
    return spec.convention, note


def _folder_system(model: str, system: str | None) -> tuple[str | None, list[str]]:
    """(system prompt, notes): `system` when given ('' for none), else what a folder trained elsewhere used."""
    from .peer_folders import folder_system_prompt

    if system is not None:
        return system or None, []
    folder = Path(model).expanduser()
    if not folder.is_dir() or rundir.studio_path(folder).is_file():
        return None, []
    found, note = folder_system_prompt(folder, _read_json(folder / "config.json"))
    return found, [note] if note else []


def model_target(model: str, adapter: str | Path | None = None, base: str | None = None,
                 convention: str | None = None, dataset: str | Path | None = None,
                 system: str | None = None) -> Target:
    """A Target for a model key / Hub id / folder, with an optional adapter; studio.json beside it is honoured.

    A folder trained elsewhere (no studio.json, e.g. LLaMA-Factory's output) is scored with the convention of its
    family, read from config.json (`model_type`, architectures), and with the system prompt it trained with
    (pipeline.peer_folders); `convention` and `system` ('' for none) override.
    """
    from .coords import CONVENTIONS
    from .models import find_spec

    info: dict[str, Any] = {}
    if convention is not None and convention not in CONVENTIONS:
        raise UserError(f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)}")
    folder = Path(model).expanduser()
    if adapter is None and (folder / "adapter_config.json").is_file() and rundir.studio_path(folder).is_file():
        info = _read_json(rundir.studio_path(folder))  # an adapter export: its base (registry key) + the adapter
        model, adapter = str(info.get("model") or model), folder
    if adapter is not None:
        adapter = Path(adapter).expanduser().resolve()
        if not (adapter / "adapter_config.json").is_file():
            raise UserError("not a LoRA adapter folder (no adapter_config.json)", adapter)
        info = _read_json(rundir.studio_path(adapter))
    elif Path(model).expanduser().is_dir():
        info = _read_json(rundir.studio_path(Path(model).expanduser()))
    spec = find_spec(model)
    notes: list[str] = []
    convention = convention or info.get("convention") or (spec.convention if spec else None)
    if convention is None:
        convention, note = _folder_convention(model, dataset)
        notes += [note] if note else []
    if convention is None:
        raise UserError(f"cannot tell the coordinate convention of {model!r} (not in the registry, no studio.json "
                        "and no known model_type in config.json): pass --convention")
    labels = info.get("label_map")
    system, system_notes = _folder_system(model, system)
    notes += system_notes
    name = f"{Path(model).name}+{adapter.name}" if adapter else Path(model).name
    return Target(model=model, adapter=str(adapter) if adapter else None,
                  base=base or (model if adapter else None), name=name, convention=convention,
                  tasks=info.get("tasks"), seed=info.get("seed"),
                  labels=sorted(labels) if isinstance(labels, dict | list) and labels else None,
                  image_cap=info.get("max_image_size"), max_pixels=info.get("max_pixels"), notes=notes,
                  system=system)


# -- running ------------------------------------------------------------------------------------------------------
def _load(target: Target) -> tuple[Any, Any]:
    from .models import apply_image_cap, load_model, load_processor

    processor = load_processor(target.processor or target.model)
    apply_image_cap(processor, target.image_cap, target.max_pixels)
    if target.system:
        from .peer_folders import add_system_prompt

        add_system_prompt(processor, target.system)
    return processor, load_model(target.model, adapter=target.adapter, quantization=target.quantization)


def _release() -> None:
    """Give the memory of a dropped model back (the caller deletes its reference first)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def model_answers(target: Target, examples: list[Example], root: Path, *, batch_size: int,
                  max_new_tokens: int | None, with_base: bool) -> tuple[dict[str, list[str]], int]:
    """({"model": answers, "base": answers when compared (adapter off, or reloaded)}, max_new_tokens used)."""
    processor, model = _load(target)
    budget = max_new_tokens or token_budget(processor, [ex.answer for ex in examples])
    kwargs: dict[str, Any] = {"image_root": root, "batch_size": batch_size, "max_new_tokens": budget,
                              "image_cap": target.image_cap}
    out = {"model": generate_answers(model, processor, examples, desc=target.name or "model", **kwargs)}
    if with_base and target.base:
        if target.adapter:
            with model.disable_adapter():
                out["base"] = generate_answers(model, processor, examples, desc=f"base {target.base}", **kwargs)
        else:
            del model
            _release()
            from .models import load_model

            model = load_model(target.base, quantization=target.quantization)
            out["base"] = generate_answers(model, processor, examples, desc=f"base {target.base}", **kwargs)
    del model
    _release()
    return out, budget


def _parent_answers(target: Target, examples: list[Example], root: Path, batch_size: int,
                    budget: int) -> tuple[str, list[str]] | None:
    """(name, answers) of a GRPO run's parent run (its best weights) on the same examples; None without one."""
    if not target.parent_run or not Path(target.parent_run).is_dir():
        return None
    parent = run_target(target.parent_run, "best")
    answers, _ = model_answers(parent, examples, root, batch_size=batch_size, max_new_tokens=budget, with_base=False)
    return parent.name, answers["model"]


def _default_out(target: Target, name: str) -> Path:
    if target.run_dir:
        return rundir.eval_path(target.run_dir, name)
    from .home import home_dir

    slug = re.sub(r"[^\w.-]+", "_", target.name).strip("._") or "model"
    return home_dir("evals") / slug / name


def evaluate_target(target: Target, dataset: str | Path | None = None, *, split: str = "test",
                    limit: int | None = None, batch_size: int = 8, out: str | Path | None = None,
                    with_base: bool = True, with_baseline: bool = True, max_new_tokens: int | None = None,
                    overwrite: bool | None = None, tensorboard: bool = True, out_suffix: str = "",
                    answerer: Callable[..., tuple[dict[str, list[str]], int]] | None = None,
                    extra_meta: Callable[[], dict[str, Any]] | None = None, with_parent: bool = True) -> EvalResult:
    """Evaluate a Target on a dataset split and write OUT (see docs/EVALUATION.md for every file); `answerer`
    replaces loading and generating (an endpoint, endpoint_eval.py), `extra_meta` adds to metrics.json's meta;
    a GRPO run's parent (its supervised run) is scored next to it unless `with_parent` is False."""
    from .eval_report import display_names, write_outputs, write_tensorboard
    from .eval_score import mean_box_baseline, score_answers, summarize

    source = dataset or target.dataset
    if not source:
        raise UserError("no dataset: pass --data DATASET")
    root = Path(source).expanduser().resolve()
    records, train, meta, note = load_split(root, split)
    target.notes += [note] if note else []
    examples = pick_subset(build_eval_examples(records, target, meta), limit)
    if not examples:
        raise UserError(f"the {split} split has no examples for tasks {', '.join(target.tasks or ['grounding'])}",
                        root)
    missing = next((image for ex in examples for image in ex.frames if not (root / image).is_file()), None)
    if missing:
        raise UserError(f"image {missing} of the dataset is missing", root)
    default = out is None
    out_dir = Path(out).expanduser().resolve() if out else _default_out(target, split + out_suffix)
    replace = default if overwrite is None else overwrite
    if not replace and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError("output folder already exists and is not empty (choose another --out)", out_dir)
    answers, budget = (answerer or model_answers)(target, examples, root, batch_size=batch_size,
                                                  max_new_tokens=max_new_tokens, with_base=with_base)
    parent = _parent_answers(target, examples, root, batch_size, budget) if with_parent and answerer is None else None
    if parent is not None:  # a GRPO run: its parent (the supervised run) next to it
        answers = {"model": answers.pop("model"), "parent": parent[1], **answers}
    results = {name: score_answers(examples, texts, target.convention or "json") for name, texts in answers.items()}
    if with_baseline:
        baseline = mean_box_baseline(train)
        if any(ex.images for ex in examples):  # video tasks: count_unique's baseline is the training mode
            from .clips import clip_options, unique_count_modes, video_fps

            baseline.unique_counts = unique_count_modes(train, clip_options(meta), video_fps(meta))
        results["baseline"] = score_answers(examples, [baseline.answer(ex, target.convention or "json")
                                                       for ex in examples], target.convention or "json")
    summaries = {name: summarize(rows) for name, rows in results.items()}
    meta_info = {"model": target.model, "adapter": target.adapter, "base": target.base if with_base else None,
                 "name": target.name, "run_dir": target.run_dir, "checkpoint": target.checkpoint, "step": target.step,
                 "dataset": str(root), "split": split, "limit": limit, "convention": target.convention,
                 "tasks": sorted({ex.task for ex in examples}), "batch_size": batch_size,
                 "max_new_tokens": budget, "notes": target.notes, **(extra_meta() if extra_meta else {}),
                 "parent": {"run_dir": target.parent_run, "name": parent[0]} if parent is not None else None}
    files = write_outputs(out_dir, results, summaries, meta_info, root, overwrite=replace)
    if tensorboard:
        tb = rundir.tensorboard_path(target.run_dir) if target.run_dir else out_dir / "tb"
        files["tensorboard"] = str(write_tensorboard(tb, f"evaluate_{split}", summaries, results["model"],
                                                     target.step or 0, out_dir))
    return EvalResult(str(out_dir), summaries["model"], summaries, files, target.notes,
                      display_names(meta_info, list(summaries)))


def evaluate_run(run_dir: str | Path, dataset: str | Path | None = None, split: str = "test",
                 limit: int | None = None, batch_size: int = 8, checkpoint: str | int = "best",
                 out: str | Path | None = None, with_base: bool = True, with_baseline: bool = True,
                 max_new_tokens: int | None = None, overwrite: bool | None = None) -> EvalResult:
    """Evaluate a run's checkpoint (best, last or a step) on a split; OUT defaults to RUN/eval/<split>."""
    target = run_target(run_dir, checkpoint)
    suffix = "" if str(checkpoint) == "best" else f"-{target.checkpoint}"
    return evaluate_target(target, dataset, split=split, limit=limit, batch_size=batch_size, out=out,
                           with_base=with_base, with_baseline=with_baseline, max_new_tokens=max_new_tokens,
                           overwrite=overwrite, out_suffix=suffix)


def evaluate_model(model: str, adapter: str | Path | None = None, dataset: str | Path | None = None,
                   split: str = "test", limit: int | None = None, batch_size: int = 8,
                   out: str | Path | None = None, with_base: bool = True, with_baseline: bool = True,
                   max_new_tokens: int | None = None, base: str | None = None,
                   overwrite: bool | None = None, convention: str | None = None,
                   system: str | None = None) -> EvalResult:
    """Evaluate a model key / Hub id / folder (+ adapter); base = the model without the adapter unless given.

    Any Hugging Face VLM folder works: without studio.json the convention comes from config.json (or `convention`)
    and the system prompt from the tool that trained it (or `system`; '' for none).
    """
    target = model_target(model, adapter, base, convention=convention, dataset=dataset, system=system)
    return evaluate_target(target, dataset, split=split, limit=limit, batch_size=batch_size, out=out,
                           with_base=with_base, with_baseline=with_baseline, max_new_tokens=max_new_tokens,
                           overwrite=overwrite)
