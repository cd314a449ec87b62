"""Leakage-free train/val/test splits of a converted dataset, saved as split.yaml so they can be reproduced.

    python -m pipeline split DATASET --strategy stratified --ratios 0.8,0.1,0.1 --seed 42
    python -m pipeline split DATASET --config DATASET/split.yaml      # the saved split again, exactly

    from pipeline.split import split_dataset
    result = split_dataset("studio_data/datasets/demo", strategy="temporal", ratios=(0.8, 0.1, 0.1), seed=42)

Every strategy first groups near-duplicate frames (perceptual hash) and never puts one group in two splits.
random: seeded shuffle. stratified: iterative stratification on the label counts. temporal: whole videos per split;
a single video is cut into contiguous time blocks train | val | test with a guard gap of frames between them.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_write_text
from .dataset import open_dataset, records_path, split_config_path, split_path
from .errors import UserError
from .quality_context import duplicate_groups, image_infos
from .records import FrameRecord, records_text

SPLITS = ("train", "val", "test")
STRATEGIES = ("random", "stratified", "temporal")
TOLERANCE = 0.05  # stratified: each label's share per split within 5 percentage points of its overall share
DEFAULT_DUP_DISTANCE = 4  # perceptual-hash bits, as the duplicate_frames quality rule


@dataclass
class SplitResult:
    """The split: parameters, frame/object counts, label shares per split, notes, and each record's split."""

    strategy: str
    ratios: tuple[float, float, float]
    seed: int
    guard: int | None
    dup_distance: int
    counts: dict[str, int]
    objects: dict[str, int]
    label_shares: dict[str, dict[str, float]]
    max_deviation: float
    stratified_ok: bool | None
    videos: dict[str, list[str]]
    notes: list[str]
    assignment: dict[str, str] = field(repr=False)
    digest: str = ""
    paths: dict[str, str] = field(default_factory=dict)

    def to_config(self) -> dict[str, Any]:
        """What split.yaml holds (parameters first: they are what --config reads back)."""
        return {"tool_version": __version__, "strategy": self.strategy, "ratios": list(self.ratios), "seed": self.seed,
                "guard": self.guard, "dup_distance": self.dup_distance, "counts": self.counts,
                "objects": self.objects, "videos": self.videos, "label_shares": self.label_shares,
                "max_share_deviation": round(self.max_deviation, 4),
                f"stratified_within_{round(TOLERANCE * 100)}_points": self.stratified_ok,
                "notes": self.notes, "digest": self.digest}


def parse_ratios(text: str | list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    """'0.8,0.1,0.1' (or a sequence) -> three non-negative ratios summing to 1; UserError otherwise."""
    try:
        values = [float(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except (TypeError, ValueError):
        raise UserError(f"ratios must be three numbers like 0.8,0.1,0.1 (got {text!r})") from None
    if len(values) != 3 or any(v < 0 for v in values):
        raise UserError(f"ratios must be three non-negative numbers train,val,test (got {text!r})")
    if abs(sum(values) - 1.0) > 1e-6:
        shown = " + ".join(f"{v:g}" for v in values)
        raise UserError(f"ratios must sum to 1 ({shown} = {sum(values):g})")
    if values[0] == 0:
        raise UserError("the train ratio must be above 0")
    return values[0], values[1], values[2]


def load_split_config(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    """The parameters of a saved split.yaml (or a dict); other keys (counts, shares...) are ignored."""
    if not isinstance(config, dict):
        import yaml

        source = config
        try:
            loaded = yaml.safe_load(Path(source).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UserError(f"split config cannot be read ({exc.__class__.__name__})", source) from None
        if not isinstance(loaded, dict):
            raise UserError("split config must be a mapping (a split.yaml written by the split command)", source)
        config = loaded
    return {k: config[k] for k in ("strategy", "ratios", "seed", "guard", "dup_distance", "digest") if k in config}


def split_dataset(dataset_dir: str | Path, strategy: str = "temporal", ratios: Any = (0.8, 0.1, 0.1), seed: int = 42,
                  guard: int | None = None, config: dict[str, Any] | str | Path | None = None, *,
                  dup_distance: int = DEFAULT_DUP_DISTANCE, write: bool = True) -> SplitResult:
    """Split a dataset; values in `config` (a saved split.yaml) win over the arguments. Writes unless write=False."""
    saved = load_split_config(config) if config is not None else {}
    strategy = saved.get("strategy", strategy)
    if strategy not in STRATEGIES:
        raise UserError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    ratios = parse_ratios(saved.get("ratios", ratios))
    seed, guard = int(saved.get("seed", seed)), saved.get("guard", guard)
    dup_distance = int(saved.get("dup_distance", dup_distance))
    if guard is not None and (not isinstance(guard, int) or guard < 0):
        raise UserError(f"guard must be a whole number of frames >= 0 (got {guard!r})")
    root = Path(dataset_dir).expanduser().resolve()
    records, meta = _load(root)
    groups = duplicate_groups(image_infos(root, records), dup_distance)
    notes: list[str] = []
    if strategy == "temporal":
        assign, guard = _temporal(records, groups, ratios, seed, guard, notes)
    else:
        if guard is not None:
            notes.append(f"--guard applies to the temporal strategy only; ignored for {strategy}")
            guard = None
        from .clips import clip_groups

        units = _units(len(records), clip_groups(records, meta, groups))
        pick = _stratified if strategy == "stratified" else _random
        assign = _expand(units, pick(units, records, ratios, random.Random(seed)), len(records))
        _video_note(records, assign, notes)
    result = _summarise(records, assign, strategy, ratios, seed, guard, dup_distance, groups, notes)
    if saved.get("digest") and saved["digest"] != result.digest:
        result.notes.append("the records changed since this split was saved: the split differs from the saved one")
    if write:
        _write(root, records, result, meta)
    return result


def _load(root: Path) -> tuple[list[FrameRecord], dict[str, Any]]:
    dataset = open_dataset(root)
    records = dataset.records()
    if not records:
        raise UserError("the dataset has no records to split", records_path(root))
    return records, dataset.meta


# ---------------------------------------------------------------- strategies


def _units(n: int, groups: list[list[int]]) -> list[list[int]]:
    """Record indices grouped so that near-duplicates form one unit; singletons otherwise, in record order."""
    grouped = {i for g in groups for i in g}
    return sorted([*groups, *([i] for i in range(n) if i not in grouped)])


def _expand(units: list[list[int]], unit_split: list[str], n: int) -> list[str]:
    assign = [""] * n
    for members, split in zip(units, unit_split, strict=True):
        for i in members:
            assign[i] = split
    return assign


def _targets(n: int, ratios: tuple[float, ...]) -> dict[str, int]:
    """Frames per split by largest remainder; each split with a ratio > 0 gets one frame when there are enough."""
    raw = [r * n for r in ratios]
    counts = [int(v) for v in raw]
    for k in sorted(range(3), key=lambda k: (-(raw[k] - counts[k]), k))[: n - sum(counts)]:
        counts[k] += 1
    active = [k for k in range(3) if ratios[k] > 0]
    for k in active:
        if counts[k] == 0 and n >= len(active):
            counts[counts.index(max(counts))] -= 1
            counts[k] += 1
    return dict(zip(SPLITS, counts, strict=True))


def _deficit_fill(sizes: list[int], order: list[int], targets: dict[str, int],
                  filled: dict[str, int] | None = None) -> dict[int, str]:
    """Give each unit (in order) to the split furthest below its target (ties: train, val, test)."""
    filled = filled or dict.fromkeys(SPLITS, 0)
    chosen = {}
    for u in order:
        split = max(SPLITS, key=lambda s: (targets[s] - filled[s], -SPLITS.index(s)))
        chosen[u] = split
        filled[split] += sizes[u]
    return chosen


def _random(units: list[list[int]], records: list[FrameRecord], ratios: tuple[float, float, float],
            rng: random.Random) -> list[str]:
    order = list(range(len(units)))
    rng.shuffle(order)
    order.sort(key=lambda u: -len(units[u]))  # big duplicate groups first, so they cannot overshoot small splits
    chosen = _deficit_fill([len(u) for u in units], order, _targets(len(records), ratios))
    return [chosen[u] for u in range(len(units))]


def _stratified(units: list[list[int]], records: list[FrameRecord], ratios: tuple[float, float, float],
                rng: random.Random) -> list[str]:
    """Iterative stratification (Sechidis et al. 2011) on object counts: rarest label first, to the neediest split."""
    counts = [Counter(label for i in members for label in records[i].labels) for members in units]
    total = sum(counts, Counter())
    active = [s for s, r in zip(SPLITS, ratios, strict=True) if r > 0]
    want = {s: {label: r * n for label, n in total.items()} for s, r in zip(SPLITS, ratios, strict=True)}
    want_frames = {s: r * len(records) for s, r in zip(SPLITS, ratios, strict=True)}
    chosen: dict[int, str] = {}
    remaining = set(range(len(units)))
    while remaining:
        left: Counter[str] = Counter()
        for u in remaining:
            left.update(counts[u])
        label = min(left, key=lambda k: (left[k], k)) if left else None
        batch = sorted(u for u in remaining if label is None or counts[u][label] > 0)
        rng.shuffle(batch)
        for u in batch:
            split = max(active, key=lambda s: (want[s][label] if label is not None else 0.0, want_frames[s],
                                               -SPLITS.index(s)))
            chosen[u] = split
            for key, n in counts[u].items():
                want[split][key] -= n
            want_frames[split] -= len(units[u])
            remaining.discard(u)
    return [chosen[u] for u in range(len(units))]


def _temporal(records: list[FrameRecord], groups: list[list[int]], ratios: tuple[float, float, float], seed: int,
              guard: int | None, notes: list[str]) -> tuple[list[str], int | None]:
    videos = sorted({r.video_id for r in records})
    if len(videos) == 1:
        return _time_blocks(records, groups, ratios, guard, notes)
    if guard is not None:
        notes.append("--guard applies to a single video; with several videos whole videos are split")
    # videos sharing a near-duplicate frame travel together
    parent = {v: v for v in videos}
    for group in groups:
        first = _root(parent, records[group[0]].video_id)
        for i in group[1:]:
            parent[_root(parent, records[i].video_id)] = first
    clusters: dict[str, list[str]] = {}
    for v in videos:
        clusters.setdefault(_root(parent, v), []).append(v)
    units = sorted(clusters.values())
    if len(units) < len(videos):
        notes.append(f"{len(videos) - len(units)} video(s) share near-duplicate frames with another video and were "
                     "kept in its split")
    sizes = [sum(r.video_id in unit for r in records) for unit in units]
    unit_split = _assign_videos(sizes, ratios, random.Random(seed), notes)
    where = {v: split for unit, split in zip(units, unit_split, strict=True) for v in unit}
    return [where[r.video_id] for r in records], None


def _root(parent: dict[str, str], v: str) -> str:
    while parent[v] != v:
        v = parent[v]
    return v


def _assign_videos(sizes: list[int], ratios: tuple[float, float, float], rng: random.Random,
                   notes: list[str]) -> list[str]:
    """Whole video groups to splits: the smallest seed val/test when there are enough, then fill by frames."""
    order = list(range(len(sizes)))
    rng.shuffle(order)
    order.sort(key=lambda u: -sizes[u])
    targets = _targets(sum(sizes), ratios)
    filled = dict.fromkeys(SPLITS, 0)
    chosen: dict[int, str] = {}
    small_first = [s for s, r in zip(SPLITS, ratios, strict=True) if r > 0 and s != "train"]
    if len(order) > len(small_first):
        for split in small_first:
            u = order.pop()  # the smallest left
            chosen[u], filled[split] = split, filled[split] + sizes[u]
    else:
        notes.append(f"only {len(sizes)} video group(s) for {len(small_first) + 1} splits: some splits stay empty "
                     "(add videos, or use --strategy random/stratified)")
    chosen.update(_deficit_fill(sizes, order, targets, filled))
    return [chosen[u] for u in range(len(sizes))]


def _time_blocks(records: list[FrameRecord], groups: list[list[int]], ratios: tuple[float, float, float],
                 guard: int | None, notes: list[str]) -> tuple[list[str], int]:
    """One video: contiguous blocks train | gap | val | gap | test; the gaps come out of the earlier block."""
    order = sorted(range(len(records)), key=lambda i: (records[i].frame_index, records[i].id))
    frames = [records[i].frame_index for i in order]
    steps = sorted(b - a for a, b in zip(frames, frames[1:], strict=False) if b > a)
    guard = 2 * (steps[len(steps) // 2] if steps else 1) if guard is None else guard
    targets = _targets(len(order), ratios)
    assign = [""] * len(records)
    end = len(order)
    for split in ("test", "val"):
        start = max(0, end - targets[split])
        for pos in range(start, end):
            assign[order[pos]] = split
        if start < end:  # leave out the frames within `guard` before this block
            first = frames[start]
            while start > 0 and frames[start - 1] >= first - guard:
                start -= 1
                assign[order[start]] = "excluded"
        end = start
    for pos in range(end):
        assign[order[pos]] = "train"
    excluded = assign.count("excluded")
    notes.append(f"single video: contiguous blocks train | val | test, {excluded} frame(s) left out as guard gaps of "
                 f"{guard} frame indices")
    moved = 0
    for group in groups:  # a near-duplicate of an earlier frame joins that frame's split
        kept = [i for i in group if assign[i] != "excluded"]
        if kept:
            first = min(kept, key=lambda i: records[i].frame_index)
            moved += sum(assign[i] != assign[first] for i in kept)
            for i in kept:
                assign[i] = assign[first]
    if moved:
        notes.append(f"{moved} frame(s) moved to the split of an earlier near-duplicate frame")
    return assign, guard


def _video_note(records: list[FrameRecord], assign: list[str], notes: list[str]) -> None:
    spread = {v for v in {r.video_id for r in records}
              if len({assign[i] for i, r in enumerate(records) if r.video_id == v}) > 1}
    if spread:
        notes.append(f"{len(spread)} video(s) have frames in several splits; near-duplicates are kept together, but "
                     "neighbouring frames still look alike: use --strategy temporal to test on unseen videos")


# ---------------------------------------------------------------- summary and files


def _summarise(records: list[FrameRecord], assign: list[str], strategy: str, ratios: tuple[float, float, float],
               seed: int, guard: int | None, dup_distance: int, groups: list[list[int]],
               notes: list[str]) -> SplitResult:
    labels = {s: Counter(label for i, r in enumerate(records) if assign[i] == s for label in r.labels)
              for s in SPLITS}
    overall = sum(labels.values(), Counter())
    shares = {"overall": _shares(overall), **{s: _shares(labels[s]) for s in SPLITS}}
    counts = {s: assign.count(s) for s in (*SPLITS, "excluded")}
    active = [s for s, r in zip(SPLITS, ratios, strict=True) if r > 0 and counts[s] > 0]
    deviation = max((abs(shares[s].get(k, 0.0) - share) for s in active for k, share in shares["overall"].items()),
                    default=0.0)
    _edge_notes(records, counts, ratios, overall, labels, notes)
    stratified_ok = None
    if strategy == "stratified":
        stratified_ok = deviation <= TOLERANCE
        if not stratified_ok:
            off = sorted({k for s in active for k, share in shares["overall"].items()
                          if abs(shares[s].get(k, 0.0) - share) > TOLERANCE})
            notes.append(f"label shares could not all be kept within {TOLERANCE:.0%} points (largest gap "
                         f"{deviation:.1%}); off: {', '.join(off)} — too few examples or frames with many labels")
    if groups:
        notes.append(f"{len(groups)} near-duplicate group(s) ({sum(len(g) for g in groups)} frames) kept in one split")
    digest = hashlib.sha256("".join(f"{assign[i]}\t{r.id}\n" for i, r in enumerate(records)).encode()).hexdigest()
    return SplitResult(strategy, ratios, seed, guard, dup_distance, counts,
                       {s: sum(labels[s].values()) for s in SPLITS}, shares, deviation, stratified_ok,
                       {s: sorted({r.video_id for i, r in enumerate(records) if assign[i] == s}) for s in SPLITS},
                       notes, {r.id: assign[i] for i, r in enumerate(records)}, digest)


def _shares(counts: Counter[str]) -> dict[str, float]:
    total = sum(counts.values())
    return {label: round(n / total, 4) for label, n in sorted(counts.items())} if total else {}


def _edge_notes(records: list[FrameRecord], counts: dict[str, int], ratios: tuple[float, float, float],
                overall: Counter[str], labels: dict[str, Counter[str]], notes: list[str]) -> None:
    for split, ratio in zip(SPLITS, ratios, strict=True):
        if ratio > 0 and counts[split] == 0:
            notes.append(f"{split} is empty although its ratio is {ratio:g} ({len(records)} frame(s) in all)")
    active = sum(r > 0 for r in ratios)
    rare = sorted(label for label, n in overall.items() if sum(labels[s][label] > 0 for s in SPLITS) < active)
    for label in rare:
        inside = [s for s in SPLITS if labels[s][label]]
        notes.append(f"label {label!r} ({overall[label]} object(s)) is only in {', '.join(inside)}: too few examples "
                     "to appear in every split")


def _write(root: Path, records: list[FrameRecord], result: SplitResult, meta: dict[str, Any]) -> None:
    """Training formats first (they check everything before writing), then splits/*.jsonl, split.yaml last."""
    import yaml

    from .formats import write_training_formats

    by_split = {s: [r for r in records if result.assignment[r.id] == s] for s in SPLITS}
    from .clips import clip_options, video_fps

    write_training_formats(root, by_split, convention=meta.get("convention") or "json",
                           tasks=list(meta.get("tasks") or ["grounding"]), seed=int(meta.get("seed") or 0),
                           max_pixels=meta.get("max_pixels"), clips=clip_options(meta), fps=video_fps(meta))
    for split, chosen in by_split.items():
        path = split_path(root, split)
        path.parent.mkdir(exist_ok=True)
        atomic_write_text(path, records_text(chosen))
        result.paths[split] = str(path)
    header = (f"# Written by sam2-vlm-studio {__version__}. Reproduce this split exactly with:\n"
              f"#   python -m pipeline split {root} --config {split_config_path(root)}\n")
    atomic_write_text(split_config_path(root), header + yaml.safe_dump(result.to_config(), sort_keys=False,
                                                                   allow_unicode=True))
    result.paths["config"] = str(split_config_path(root))
