"""The app facade: the Evaluate, Export and Try tabs, and the step jobs (convert, validate, evaluate, export)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..home import home_dir, studio_home
from ..uploads import sample_options

if TYPE_CHECKING:
    pass
from .common import DEFAULT_MODEL, DEFAULT_TASKS, _gallery, _plain, _preset_of, _round, backend, check_name, dataset_dir
from .training import job_info


# -- step jobs: convert, validate, evaluate and export off the request path ------------------------------------
def submit_convert(files: Sequence[str | Path] | None, name: str, *, sample: bool = False,
                   labels: dict[int, str] | None = None, tasks: Sequence[str] = DEFAULT_TASKS,
                   family: str = DEFAULT_MODEL, every: int = 1, overwrite: bool = False,
                   max_frames: int | None = None, seed: int = 0, include_auto: bool = False,
                   allow_overlay_frames: bool = False, clip_frames: int = 4, clip_stride: int | None = None,
                   drop_fragments: bool = False, keep_share: float | None = None) -> dict[str, Any]:
    """Queue a conversion job (uploads are copied into its folder; the options are `convert_inputs`'); returns the
    job at once. Bad clip / fragment options, or video tasks for a single-image family, are refused now."""
    from ..ingest import check_video_options
    from ..steps import prepare_step

    name = check_name(name, "dataset name")
    out = home_dir("datasets") / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"a dataset named {name!r} already exists: choose another name or tick 'replace'")
    if not sample and not [f for f in files or [] if f]:
        raise UserError("upload an export (ZIP, JSON, JSONL, with its video or frames) or pick the built-in sample")
    check_video_options(list(tasks or DEFAULT_TASKS), family or DEFAULT_MODEL, clip_frames, clip_stride,
                        drop_fragments, keep_share)
    params = {"files": [str(f) for f in files or [] if f], "name": name, "sample": bool(sample),
              "labels": {str(k): v for k, v in (labels or {}).items()}, "tasks": list(tasks or DEFAULT_TASKS),
              "family": family or DEFAULT_MODEL, "every": int(every or 1), "overwrite": bool(overwrite),
              "max_frames": int(max_frames) if max_frames else None, "seed": int(seed or 0),
              "include_auto": bool(include_auto), "allow_overlay_frames": bool(allow_overlay_frames),
              "clip_frames": clip_frames, "clip_stride": clip_stride, "drop_fragments": bool(drop_fragments),
              "keep_share": keep_share}
    params["sample_options"] = sample_options() if sample else None  # the job generates it the app's way
    return _submit(prepare_step("convert", params, name=f"convert {name}"))


def submit_validate(name: str) -> dict[str, Any]:
    """Queue the quality report of a dataset; returns the job at once."""
    from ..steps import prepare_step

    dataset_dir(name)  # refuse an unknown dataset now, not in the job
    return _submit(prepare_step("validate", {"dataset": name.strip()}, name=f"validate {name}"))


def submit_evaluate(run_id: str, checkpoint: str = "best", split_name: str = "test",
                    limit: int | None = 32, allow_no_split: bool = True) -> dict[str, Any]:
    """Queue the evaluation of a run's checkpoint; returns the job at once (allow_no_split: as `evaluate`)."""
    from ..steps import prepare_step

    run_id = (run_id or "").strip()
    refuse_no_split(run_id, allow_no_split)  # refused now, not in the job
    params = {"run_id": run_id, "run_dir": str(_run_dir(run_id)), "checkpoint": checkpoint or "best",
              "split": split_name or "test", "limit": int(limit) if limit else None}
    return _submit(prepare_step("evaluate", params, experiment=run_id, name=f"evaluate {run_id}"))


def submit_export(run_id: str, mode: str = "adapter", checkpoint: str = "best") -> dict[str, Any]:
    """Queue the export of a run; returns the job at once."""
    from ..steps import prepare_step

    run_id = (run_id or "").strip()
    if mode not in ("adapter", "merged"):
        raise UserError(f"export mode {mode!r}: use adapter or merged")
    params = {"run_id": run_id, "run_dir": str(_run_dir(run_id)), "mode": mode, "checkpoint": checkpoint or "best"}
    return _submit(prepare_step("export", params, experiment=run_id, name=f"export {run_id}"))


def _submit(spec: Any) -> dict[str, Any]:
    """Submit a prepared step job; its folder is removed again when the submit fails (nothing was queued)."""
    import shutil

    try:
        return job_info(backend().submit(spec))
    except BaseException:
        shutil.rmtree(spec.run_dir, ignore_errors=True)
        raise


def step_outcome(job_id: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(the job, its result read from JOB/result.json or None): what a result view shows, after any reload."""
    from ..steps import read_result

    job = backend().get(int(job_id))
    return job_info(job), read_result(job.run_dir) if job.status == "succeeded" else None


def step_params(job_id: int) -> dict[str, Any]:
    """What a step job was asked to do (its request's parameters: dataset, run_id, split, mode...); {} for a CLI job."""
    from ..steps import read_request

    try:
        return dict(read_request(backend().get(int(job_id)).run_dir).get("params") or {})
    except UserError:
        return {}


def latest_step(kind: str) -> int | None:
    """The newest job of a step kind (running or queued first), for a page that re-attaches after a reload."""
    jobs = [j for j in backend().list() if j.kind == kind]
    active = [j.id for j in jobs if j.status in ("running", "queued")]
    return max(active or [j.id for j in jobs], default=None)


def step_gallery(result: dict[str, Any]) -> list[tuple[Any, str]]:
    """The worst examples of an evaluation result (read from its gallery folder)."""
    return _gallery(Path(result["gallery"])) if result.get("gallery") else []


# -- runs: Evaluate and Export tabs ----------------------------------------------------------------------------
def run_choices() -> list[tuple[str, str]]:
    """(label, run id) of the experiments, newest first."""
    from ..experiments import list_experiments

    return [(f"{e.name} · {e.status}" + (" · smoke test" if _preset_of(e) == "quick_test" else ""), e.run_id)
            for e in list_experiments(store=backend().store)]


def _run_dir(run_id: str) -> Path:
    from ..experiments import get_experiment

    if not (run_id or "").strip():
        raise UserError("pick a run (train one in the Train tab first)")
    return Path(get_experiment(run_id.strip(), store=backend().store).run_dir)


def checkpoint_choices(run_id: str) -> list[str]:
    """best, last and every checkpoint step still in the run folder."""
    if not run_id:
        return ["best", "last"]
    from ..rundir import list_checkpoints

    return ["best", "last", *(str(step) for step, _ in list_checkpoints(_run_dir(run_id)))]


def run_dataset(run_id: str) -> dict[str, Any]:
    """The dataset a run trained on: {"name", "splits", "exists"} (names only, never the server folder)."""
    import json

    from ..dataset import is_dataset, open_dataset
    from ..rundir import studio_path

    run = _run_dir(run_id)
    try:
        info = json.loads(studio_path(run).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = {}
    folder = info.get("dataset") or ""
    if not folder:
        from ..config import load_config
        from ..rundir import config_path

        folder = load_config(config_path(run)).data.path if config_path(run).is_file() else ""
    exists = bool(folder) and is_dataset(folder)
    return {"name": Path(folder).name if folder else None, "exists": exists,
            "splits": open_dataset(folder).split_names() if exists else [], "folder": folder}


def is_smoke_test(run_id: str) -> bool:
    """True for a run trained with the quick_test preset (a smoke test: its metrics mean nothing)."""
    from ..experiments import get_experiment

    exp = get_experiment(run_id.strip(), store=backend().store)
    return _preset_of(exp) == "quick_test"




NO_SPLIT = ("the run's dataset has no splits: evaluating would score frames the model trained on. Split it in the "
            "Quality & Split tab, or tick 'evaluate on the training data anyway'")


def evaluate(run_id: str, checkpoint: str = "best", split_name: str = "test", limit: int | None = 32,
             allow_no_split: bool = True) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """Score a run's checkpoint against its base model and the mean-box baseline; (metrics, gallery worst-first).

    With allow_no_split=False a run whose dataset has no splits is refused (it would score the training data)."""
    refuse_no_split(run_id, allow_no_split)
    info = evaluate_run_folder(_run_dir(run_id), run_id, checkpoint, split_name, limit)
    return public_evaluation(info), step_gallery(info)


def refuse_no_split(run_id: str, allow_no_split: bool) -> None:
    """UserError when allow_no_split is False and the run's dataset has no splits (it would score training data)."""
    if not allow_no_split:
        data = run_dataset(run_id)
        if data["exists"] and not data["splits"]:
            raise UserError(NO_SPLIT)


def public_evaluation(info: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's info as the app shows it: without the server path of its gallery folder."""
    return {k: v for k, v in info.items() if k != "gallery"}


def evaluate_run_folder(run: Path, run_id: str, checkpoint: str = "best", split_name: str = "test",
                        limit: int | None = 32) -> dict[str, Any]:
    """`evaluate` on a run folder (what an evaluate job runs): the saved evaluation's info (JSON-able), plus
    `gallery`, the folder of the worst examples (a server path: `public_evaluation` drops it)."""
    from ..evaluate import evaluate_run

    result = evaluate_run(run, split=split_name or "test", limit=int(limit) if limit else None,
                          checkpoint=checkpoint or "best", batch_size=8)
    saved = saved_evaluation(run_id, split_name or "test", checkpoint)
    return {**(saved[0] if saved else {}), "gallery": str(Path(result.out) / "gallery" / "worst")}


def saved_evaluation(run_id: str, split_name: str = "test", checkpoint: str | None = None,
                     ) -> tuple[dict[str, Any], list[tuple[Any, str]]] | None:
    """The evaluation of a run's split saved on disk (RUN/eval/<split>/comparison.json), as `evaluate` returns it;
    None when the split was never evaluated."""
    import json

    from ..eval_score import METRIC_KEYS
    from ..rundir import eval_path

    folder = eval_path(_run_dir(run_id), split_name or "test")
    try:
        saved = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    metrics, names, meta = saved.get("metrics") or {}, saved.get("names") or {}, saved.get("meta") or {}
    roles = list(metrics)
    rows = [[key, *[_round(metrics[r].get(key)) for r in roles]] for key in METRIC_KEYS
            if any(metrics[r].get(key) is not None for r in roles)]
    smoke = is_smoke_test(run_id)
    notes = list(meta.get("notes") or [])
    if smoke:
        notes.insert(0, "smoke test (quick_test preset): a few steps on a tiny model; these metrics are expected "
                        "to be near zero and say nothing about the data")
    info = {"run_id": run_id, "checkpoint": checkpoint or meta.get("checkpoint"), "split": split_name,
            "step": meta.get("step"), "examples": (metrics.get("model") or {}).get("n"),
            "columns": ["metric", *[names.get(r, r) for r in roles]], "rows": rows,
            "metrics": {k: _round(v) for k, v in (metrics.get("model") or {}).items() if _plain(v)},
            "notes": [public_note(n) for n in notes], "smoke_test": smoke}
    return info, _gallery(folder / "gallery" / "worst")


def public_note(text: str) -> str:
    """A message with the studio's own folders shown by name (STUDIO_HOME/x/y -> y)."""
    home = str(studio_home())
    return re.sub(re.escape(home.rstrip("/")) + r"/(?:[^\s/]+/)*([^\s/:'\"]+)", r"\1", text)


def _eval_view(result: Any, head: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[Any, str]]]:
    """(metrics table as JSON, gallery worst-first) of an EvalResult."""
    from ..eval_score import METRIC_KEYS

    roles = list(result.comparison)  # model (fine-tuned), base, baseline
    names = getattr(result, "names", None) or {}
    rows = [[key, *[_round(result.comparison[r].get(key)) for r in roles]] for key in METRIC_KEYS
            if any(result.comparison[r].get(key) is not None for r in roles)]
    info = {**head, "columns": ["metric", *[names.get(r, r) for r in roles]],
            "rows": rows, "metrics": {k: _round(v) for k, v in result.metrics.items() if _plain(v)},
            "notes": result.notes}
    return info, _gallery(Path(result.out) / "gallery" / "worst")


# -- Try tab ---------------------------------------------------------------------------------------------------
def held_out_frames(run_id: str) -> list[dict[str, Any]]:
    """Held-out frames (test, else val) of the run's dataset with their truth boxes."""
    from ..try_model import held_out_frames as frames

    data = run_dataset(run_id)
    if not data["exists"]:
        raise UserError(f"the run's dataset {data['name']!r} is no longer there: upload an image instead")
    return frames(data["folder"])


def try_model(run_id: str, image: str | Path | None, prompt: str, truth: list[dict[str, Any]] | None = None,
              checkpoint: str = "best", with_base: bool = True) -> tuple[dict[str, Any], Any, Any]:
    """(result {"answer", "boxes", "parse_ok", "base": {...}, "truth"}, the image with the fine-tuned answer drawn,
    the image with the base model's answer drawn (None for a full fine-tune))."""
    from ..try_model import draw, truth_for, try_run

    if not image:
        raise UserError("upload an image or pick a held-out frame")
    result = try_run(_run_dir(run_id), image, prompt, checkpoint or "best", with_base=with_base)
    shown = truth_for(truth, prompt) if truth else None
    result["truth"] = shown
    result["notes"] = [public_note(str(n)) for n in result.get("notes") or []]
    fine = draw(image, result, shown, "fine-tuned")
    base = draw(image, result["base"], shown, f"base ({result.get('model')})") if result.get("base") else None
    return result, fine, base


def list_exports() -> list[str]:
    """Names of the export folders, newest first."""
    folders = [p for p in home_dir("exports").iterdir() if p.is_dir() and (p / "README.md").is_file()]
    return [p.name for p in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True)]


def push(export_name: str, repo_id: str, token: str, private: bool = True) -> dict[str, Any]:
    """Push an export folder to the Hub with this call's token (never stored, logged or returned)."""
    from ..hub import push_to_hub

    folder = home_dir("exports") / check_name(export_name, "export")
    url = push_to_hub(folder, repo_id, token, private=bool(private))
    return {"export": export_name, "repo": repo_id.strip(), "private": bool(private), "url": url}




__all__ = [
    'NO_SPLIT', 'checkpoint_choices', 'evaluate', 'evaluate_run_folder', 'held_out_frames', 'is_smoke_test',
    'latest_step', 'list_exports', 'public_evaluation', 'public_note', 'push', 'refuse_no_split', 'run_choices',
    'run_dataset', 'saved_evaluation', 'step_gallery', 'step_outcome', 'step_params', 'submit_convert',
    'submit_evaluate', 'submit_export', 'submit_validate', 'try_model',
]
