"""The app facade: the Data and Quality & Split tabs (convert, validate, split, the dataset viewer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..home import home_dir
from ..uploads import staged_inputs
from .common import DEFAULT_MODEL, DEFAULT_TASKS, check_name, dataset_dir


# -- inputs: the built-in sample and uploads -------------------------------------------------------------------
# -- Data tab ---------------------------------------------------------------------------------------------------
def convert_inputs(files: Sequence[str | Path] | None, name: str, *, sample: bool = False,
                   labels: dict[int, str] | None = None, tasks: Sequence[str] = DEFAULT_TASKS,
                   family: str = DEFAULT_MODEL, every: int = 1, max_frames: int | None = None,
                   overwrite: bool = False, progress: bool = False, allow_overlay_frames: bool = False,
                   include_auto: bool = False, seed: int = 0, clip_frames: int = 4, clip_stride: int | None = None,
                   drop_fragments: bool = False, keep_share: float | None = None) -> dict[str, Any]:
    """Convert uploads (or the sample) into STUDIO_HOME/datasets/<name>; names typed in the editor win (every
    option of `python -m pipeline convert` is a keyword here)."""
    from ..ingest import convert
    from ..registry import resolve_convention

    name = check_name(name, "dataset name")
    out = home_dir("datasets") / name
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"a dataset named {name!r} already exists: choose another name or tick 'replace'")
    with staged_inputs(files, sample, progress) as inputs:
        names = {**inputs.labels, **(labels or {})}
        summary = convert(inputs.annotations, out, video=inputs.videos, images=inputs.images, labels=names or None,
                          convention=resolve_convention(family or DEFAULT_MODEL), tasks=list(tasks or DEFAULT_TASKS),
                          every=int(every or 1), max_frames=int(max_frames) if max_frames else None,
                          progress=progress, overwrite=overwrite, family=family or DEFAULT_MODEL,
                          allow_overlay_frames=bool(allow_overlay_frames), include_auto=bool(include_auto),
                          seed=int(seed or 0), clip_frames=clip_frames, clip_stride=clip_stride,
                          drop_fragments=bool(drop_fragments), keep_share=keep_share)
    return {"dataset": name, "frames": summary.frames, "objects": summary.objects, "labels": summary.labels,
            "videos": summary.videos, "issues": summary.issues, "warnings": summary.warnings[:20],
            "files": summary.files, "fragments": summary.fragments}


# -- Quality & Split tab ---------------------------------------------------------------------------------------
def validate_dataset(name: str) -> dict[str, Any]:
    """Run the quality rules on a dataset; report files in STUDIO_HOME/reports/<name>/ (replaced on each run)."""
    from ..quality import run_rules, write_report

    write_report(run_rules(dataset_dir(name)), home_dir("reports") / name, overwrite=True)
    return _report_view(name)


def _report_view(name: str) -> dict[str, Any]:
    """The saved quality report of a dataset as the app shows it: counts and the findings table (no record ids),
    plots and the report files; every server path replaced by the dataset's name."""
    import json

    folder = home_dir("reports") / name
    saved = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    text = (folder / "report.md").read_text(encoding="utf-8").replace(str(dataset_dir(name)), name)
    concise = text.split("\n## Errors")[0].split("\n## Plots")[0].rstrip()  # counts and the findings table
    summary = {**saved.get("summary", {}), "dataset": name}  # a name, never the server folder
    findings = saved.get("findings") or []
    return {"dataset": name, "passed": bool(summary.get("passed")), "summary": summary,
            "findings": [{"rule": f.get("rule"), "severity": f.get("severity"), "message": f.get("message"),
                          "records": len(f.get("records") or [])} for f in findings],
            "markdown": concise + "\n\nThe record ids of each finding and how to fix it: report.md (download below).",
            "plots": [str(p) for p in sorted(folder.glob("*.png"))],
            "files": [str(folder / "report.md"), str(folder / "report.json")]}


def saved_dataset_state(name: str) -> dict[str, Any]:
    """What is on disk for a dataset: {"report": as validate_dataset returns it or None, "split": as split returns
    it or None} (re-shown after a reload or when the dataset is picked again)."""
    from ..viewer import saved_split

    root = dataset_dir(name)
    report = _report_view(name) if (home_dir("reports") / name / "report.json").is_file() else None
    return {"report": report, "split": saved_split(root)}


def browse_dataset(name: str, split_name: str = "all", task: str = "all", label: str = "all", start: int = 0,
                   count: int = 12) -> dict[str, Any]:
    """A page of a dataset's training examples (image with boxes, prompt, target answer); see viewer.browse."""
    from ..viewer import browse

    return browse(dataset_dir(name), split_name, task, label, int(start or 0), int(count or 12))


def dataset_options(name: str) -> dict[str, list[str]]:
    """The splits, tasks and labels a dataset's viewer filters by."""
    from ..viewer import options

    return options(dataset_dir(name))


def split(name: str, strategy: str = "temporal", ratios: str | Sequence[float] = "0.8,0.1,0.1",
          seed: int = 42) -> dict[str, Any]:
    """Split a dataset (writes splits/ and split.yaml into it); the counts, shares and notes."""
    from ..split import split_dataset

    result = split_dataset(dataset_dir(name), strategy=strategy, ratios=ratios, seed=int(seed))
    return {"dataset": name, "strategy": result.strategy, "ratios": list(result.ratios), "seed": result.seed,
            "guard": result.guard, "counts": result.counts, "objects": result.objects,
            "label_shares": result.label_shares, "max_share_deviation": round(result.max_deviation, 4),
            "videos": result.videos, "notes": result.notes, "digest": result.digest}


def split_figure(result: dict[str, Any]) -> Any:
    """Frames per split and each label's share per split, as one grouped bar chart."""
    import plotly.graph_objects as go

    shares = {k: v for k, v in result.get("label_shares", {}).items() if k != "overall"}
    labels = sorted({label for per in shares.values() for label in per})
    counts = result.get("counts", {})
    fig = go.Figure([go.Bar(x=labels, y=[100 * per.get(label, 0.0) for label in labels],
                            name=f"{split} ({counts.get(split, 0)} frames)") for split, per in shares.items()])
    fig.update_layout(title="Label share per split (% of the split's objects)", barmode="group", height=320,
                      template="plotly_white", margin={"t": 50, "b": 30, "l": 40, "r": 10})
    return fig




__all__ = [
    'browse_dataset', 'convert_inputs', 'dataset_options', 'saved_dataset_state', 'split', 'split_figure',
    'validate_dataset',
]
