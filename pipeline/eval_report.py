"""What an evaluation writes: predictions.jsonl + metrics.json per compared model, comparison.md/.json, gallery,
plots and TensorBoard records; and the comparison of several finished evaluations (checkpoints or runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .atomic import atomic_output_dir
from .errors import UserError
from .eval_score import HIGHER_IS_BETTER, METRIC_KEYS
from .rundir import progress_path

TITLES = {"miou": "box mIoU (matched)", "ap50": "box AP@0.5 (COCO)", "map": "box mAP@[.5:.95] (COCO)",
          "mask_iou": "mask IoU (polygons)", "dice": "mask Dice", "pixel_accuracy": "pixel accuracy",
          "label_accuracy": "referring label accuracy", "count_accuracy": "counting accuracy",
          "count_mae": "counting MAE", "negative_accuracy": "negative ('none') accuracy", "listing_f1": "listing F1",
          "track_miou": "track mIoU (later frames)", "track_lost_rate": "track lost rate",
          "visibility_f1": "visibility F1", "unique_accuracy": "count_unique accuracy",
          "unique_mae": "count_unique MAE",
          "parse_failure_rate": "parse-failure rate"}
FOLDERS = {"model": "", "base": "base", "baseline": "baseline"}


def display_names(meta: dict[str, Any], keys: list[str]) -> dict[str, str]:
    """Column names: fine-tuned (or the model's name), base, mean-box baseline."""
    main = "fine-tuned" if meta.get("adapter") or meta.get("run_dir") else (meta.get("name") or "model")
    parent = meta.get("parent") or {}
    if parent:
        main = "GRPO-refined"
    names = {"model": main, "base": f"base ({meta.get('base')})", "baseline": "mean-box baseline",
             "parent": f"parent ({parent.get('name')})"}
    return {key: names.get(key, key) for key in keys}


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def comparison_markdown(summaries: dict[str, dict[str, Any]], title: str, notes: list[str] | None = None,
                        per_label: bool = True) -> str:
    """A Markdown table: one row per metric any column has, one column per compared model; per-label tables after."""
    names = list(summaries)
    keys = [k for k in METRIC_KEYS if any(s.get(k) is not None for s in summaries.values())]
    lines = [f"# {title}", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in keys:
        arrow = "↑" if HIGHER_IS_BETTER[key] else "↓"
        lines.append(f"| {TITLES[key]} {arrow} | " + " | ".join(_fmt(s.get(key)) for s in summaries.values()) + " |")
    lines.append("| examples | " + " | ".join(_fmt(s.get("n")) for s in summaries.values()) + " |")
    for name, summary in summaries.items() if per_label else ():
        table = summary.get("per_label") or {}
        cols = [k for k in METRIC_KEYS if any(b.get(k) is not None for b in table.values())]
        if table and cols:
            lines += ["", f"## Per label: {name}", "", "| label | n | " + " | ".join(cols) + " |",
                      "|---|---:|" + "---:|" * len(cols)]
            lines += [f"| {label} | {b['n']} | " + " | ".join(_fmt(b.get(k)) for k in cols) + " |"
                      for label, b in table.items()]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False) + "\n")


def _json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _comparison(summaries: dict[str, dict[str, Any]], names: dict[str, str], meta: dict[str, Any]) -> dict[str, Any]:
    """comparison.json: metrics by role (model, base, baseline) with their display names."""
    return {"names": names, "metrics": {k: {m: s.get(m) for m in (*METRIC_KEYS, "n")} for k, s in summaries.items()},
            "per_label": {k: s.get("per_label") for k, s in summaries.items()}, "meta": meta}


def write_outputs(out_dir: Path, results: dict[str, list[dict[str, Any]]], summaries: dict[str, dict[str, Any]],
                  meta: dict[str, Any], image_root: Path, overwrite: bool = False) -> dict[str, str]:
    """Write OUT atomically (nothing is left behind on an error); returns {what: path}."""
    from .eval_plots import comparison_bars, confusion_matrix, training_curves
    from .gallery import write_gallery

    names = display_names(meta, list(results))
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        for key, rows in results.items():
            folder = tmp / FOLDERS.get(key, key)
            _jsonl(folder / "predictions.jsonl", rows)
            _json(folder / "metrics.json", {**summaries[key], "meta": {**meta, "role": names[key]}})
        named = {names[k]: s for k, s in summaries.items()}
        _json(tmp / "comparison.json", _comparison(summaries, names, meta))
        title = f"Evaluation of {meta.get('name')} on {meta.get('split')} ({summaries['model']['n']} examples)"
        (tmp / "comparison.md").write_text(comparison_markdown(named, title, meta.get("notes")), encoding="utf-8")
        write_gallery(results["model"], image_root, tmp / "gallery")
        confusion_matrix(summaries["model"].get("confusion"), tmp / "plots" / "confusion")
        comparison_bars(named, tmp / "plots" / "comparison")
        progress = progress_path(meta["run_dir"]) if meta.get("run_dir") else None
        if progress is not None and progress.is_file():
            training_curves(progress, tmp / "plots")
    files = {"predictions": "predictions.jsonl", "metrics": "metrics.json", "comparison": "comparison.md",
             "comparison_json": "comparison.json", "gallery_worst": "gallery/worst.png",
             "gallery_best": "gallery/best.png", "confusion": "plots/confusion.png",
             "comparison_plot": "plots/comparison.png", "curves": "plots/loss.png"}
    return {key: str(out_dir / rel) for key, rel in files.items() if (out_dir / rel).exists()}


def _samples_markdown(rows: list[dict[str, Any]]) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")[:160]

    lines = ["| id | task | prompt | truth | answer | score |", "|---|---|---|---|---|---|"]
    lines += [f"| {cell(r['id'])} | {r['task']} | {cell(r['prompt'])} | `{cell(r['truth_answer'])}` | "
              f"`{cell(r['answer'])}` | {r['score']:.2f}{'' if r['parse_ok'] else ' (parse failure)'} |" for r in rows]
    return "\n".join(lines)


def write_tensorboard(log_dir: Path, tag: str, summaries: dict[str, dict[str, Any]], rows: list[dict[str, Any]],
                      step: int, out_dir: Path) -> Path:
    """Metric scalars (per compared model), the worst-first gallery image and sample answers as text."""
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for key, summary in summaries.items():
            prefix = tag if key == "model" else f"{tag}_{key}"
            for metric in METRIC_KEYS:
                if summary.get(metric) is not None:
                    writer.add_scalar(f"{prefix}/{metric}", float(summary[metric]), step)
        gallery = out_dir / "gallery" / "worst.png"
        if gallery.is_file():
            with Image.open(gallery) as image:
                writer.add_image(f"{tag}/gallery_worst", np.asarray(image.convert("RGB")), step, dataformats="HWC")
        writer.add_text(f"{tag}/samples", _samples_markdown(rows[:10]), step)
    finally:
        writer.close()
    return log_dir


def _read_eval(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    metrics_file = folder / "metrics.json"
    if not metrics_file.is_file():
        raise UserError("not an evaluation folder (no metrics.json)", folder)
    try:
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable evaluation ({type(exc).__name__})", folder) from None
    return metrics, rows


def compare_evaluations(eval_dirs: list[str | Path], out: str | Path, overwrite: bool = False) -> dict[str, str]:
    """Side by side: finished evaluations (checkpoints or runs) -> comparison.md/.json, metric grid, gallery grid."""
    from .eval_plots import comparison_bars, metric_grid
    from .gallery import comparison_grid

    if len(eval_dirs) < 2:
        raise UserError("give at least two evaluation folders to compare")
    summaries: dict[str, dict[str, Any]] = {}
    rows: dict[str, list[dict[str, Any]]] = {}
    root = None
    for folder in (Path(d).expanduser().resolve() for d in eval_dirs):
        metrics, predictions = _read_eval(folder)
        meta = metrics.get("meta") or {}
        name = str(meta.get("name") or folder.name)
        name = name if name not in summaries else f"{name} ({folder.name})"
        summaries[name], rows[name] = metrics, predictions
        root = root or meta.get("dataset")
    out_dir = Path(out).expanduser().resolve()
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        (tmp / "comparison.md").write_text(comparison_markdown(summaries, "Comparison of evaluations"),
                                           encoding="utf-8")
        _json(tmp / "comparison.json", {"names": {n: n for n in summaries}, "metrics": {
            n: {m: s.get(m) for m in (*METRIC_KEYS, "n")} for n, s in summaries.items()},
            "sources": [str(d) for d in eval_dirs]})
        metric_grid(summaries, tmp / "plots" / "metric_grid")
        comparison_bars(summaries, tmp / "plots" / "comparison", title="Metrics across evaluations")
        if root:
            comparison_grid(rows, root, tmp / "gallery" / "compare.png")
    files = {"comparison": "comparison.md", "comparison_json": "comparison.json",
             "metric_grid": "plots/metric_grid.png", "comparison_plot": "plots/comparison.png",
             "gallery": "gallery/compare.png"}
    return {key: str(out_dir / rel) for key, rel in files.items() if (out_dir / rel).exists()}
