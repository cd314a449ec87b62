"""Read what is already on disk for the app to show again: a dataset's examples (the viewer), its saved split.

    from pipeline.viewer import browse
    page = browse(dataset_folder, split="test", task="grounding", label="circle", start=0, count=12)
    page["rows"], page["tiles"], page["total"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

ALL = "all"
ROW_COLUMNS = ["example", "split", "task", "prompt", "target answer"]


def options(root: str | Path) -> dict[str, list[str]]:
    """What the viewer can filter by: {"splits": [all, train, ...], "tasks": [all, ...], "labels": [all, ...]}."""
    from .dataset import open_dataset

    opened = open_dataset(root)
    labels = opened.meta.get("labels")
    names = sorted(labels) if isinstance(labels, dict | list) else sorted(
        {lab for rec in opened.records() for lab in rec.labels})
    return {"splits": [ALL, *opened.split_names()], "tasks": [ALL, *opened.tasks], "labels": [ALL, *names]}


def browse(root: str | Path, split: str = ALL, task: str = ALL, label: str = ALL, start: int = 0, count: int = 12,
           ) -> dict[str, Any]:
    """A page of a dataset's examples: {"total", "start", "rows" [[id, split, task, prompt, answer]], "tiles"
    [(PIL image with the frame's objects drawn, caption)]}; filtered by split, task and label."""
    from PIL import Image

    from .dataset import open_dataset
    from .gallery import draw_objects
    from .tasks import build_examples, label_set

    opened = open_dataset(root)
    split, task, label = split or ALL, task or ALL, label or ALL
    if split == ALL:
        splits = opened.split_names()
        by_split = {name: opened.split(name) for name in splits} if splits else {"(no split)": opened.records()}
    else:
        by_split = {split: opened.split(split)}
    if task != ALL and task not in opened.tasks:
        raise UserError(f"the dataset has no {task!r} examples (its tasks: {', '.join(opened.tasks)})")
    tasks = opened.tasks if task == ALL else [task]
    found: list[tuple[str, Any, Any]] = []
    for name, records in by_split.items():
        if label != ALL:
            records = [r for r in records if label in r.labels]
        by_id = {r.id: r for r in records}
        for ex in build_examples(records, tasks, opened.convention, seed=opened.seed, label_set=label_set(opened.meta),
                                 max_pixels=opened.max_pixels):
            if label == ALL or label in ex.prompt or label in ex.answer or ex.task in ("listing", "counting"):
                found.append((name, ex, by_id[ex.record_id]))
    start = max(0, int(start or 0))
    if found and start >= len(found):
        start = max(0, len(found) - count)
    page = found[start : start + max(1, int(count))]
    tiles = []
    for name, ex, record in page:
        with Image.open(opened.root / record.image) as image:
            shown = [o for o in record.objects if label == ALL or o.label == label]
            tiles.append((draw_objects(image.convert("RGB"), shown), f"{name} · {ex.task}: {ex.prompt} → {ex.answer}"))
    rows = [[ex.id, name, ex.task, ex.prompt, ex.answer] for name, ex, _ in page]
    return {"total": len(found), "start": start, "rows": rows, "tiles": tiles}


def saved_split(root: str | Path) -> dict[str, Any] | None:
    """The statistics of the dataset's saved split (split.yaml), in the shape `service.split` returns; None."""
    import yaml

    from .dataset import open_dataset, split_config_path

    opened = open_dataset(root)
    path = split_config_path(opened.root)
    if not path.is_file() or not opened.split_names():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(data, dict):
        return None
    keys = ("strategy", "ratios", "seed", "guard", "counts", "objects", "label_shares", "max_share_deviation",
            "videos", "notes")
    return {"dataset": opened.root.name, **{k: data.get(k) for k in keys}}
