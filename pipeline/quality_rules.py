"""Data quality rules: one small function per stable rule id; severities and thresholds live in DEFAULT_CONFIG.

A rule reads a `Context` (the loaded dataset plus shared, lazily computed facts: mask checks, image hashes, object
tracks) and yields `Finding`s. The engine (`pipeline.quality.run_rules`) fills in each finding's rule id and, where the
rule left it open, the configured severity. Problems the readers met while ingesting (dataset.json "issues") become
findings of the rule with the same id.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError
from .masks import box_iou, decode_rle
from .quality_context import Context, Finding, duplicate_groups, looks_like_overlay

SEVERITIES = ("error", "warning", "info")

# Every threshold in one place; `--config quality.yaml` (or run_rules(config=...)) overrides any of them.
DEFAULT_CONFIG: dict[str, dict[str, Any]] = {
    "invalid_record": {"severity": "error"},
    "missing_annotations": {"severity": "warning"},
    "duplicate_frames": {"severity": "warning", "max_distance": 4},  # perceptual-hash bits (of 64) apart
    "invalid_rle": {"severity": "error"},
    "mask_size_mismatch": {"severity": "error"},
    "bbox_out_of_bounds": {"severity": "error", "min_mask_iou": 0.8, "tolerance_px": 2},
    "empty_mask": {"severity": "error"},
    "tiny_mask": {"severity": "warning", "min_area_px": 32, "min_area_fraction": 0.0001},
    "mask_fragments": {"severity": "warning", "max_share": 0.05, "min_box_growth": 0.05},
    "class_imbalance": {"severity": "warning", "max_ratio": 10.0},
    "unlabeled_objects": {"severity": "warning", "pattern": r"(?i)^((object|obj)[ _-]?)?\d+$|^(unknown|unlabell?ed)?$"},
    "label_near_duplicates": {"severity": "warning"},
    "overlay_frames": {"severity": "error", "sample_frames": 200, "objects_per_frame": 3, "tolerance": 40,
                       "min_saturation": 90, "saturation_margin": 20, "line_fraction": 0.6, "side_fraction": 0.15,
                       "bulk_fraction": 0.5},
    "fps_mismatch": {"severity": "warning", "tolerance": 0.01},
    "temporal_flicker": {"severity": "warning", "min_iou": 0.5, "collapse_factor": 0.7, "max_area_ratio": 3.0,
                         "max_gap_steps": 2},
    "image_token_budget": {"severity": "warning", "model": None, "max_length": None, "prompt_tokens": 40,
                           "tokens_per_object": 25},
    "placeholder_mismatch": {"severity": "error"},
}

Rule = Callable[[Context, dict[str, Any]], Iterator[Finding]]
RULES: dict[str, Rule] = {}


def rule(rule_id: str) -> Callable[[Rule], Rule]:
    """Register a rule function under its stable id (which must have an entry in DEFAULT_CONFIG)."""
    assert rule_id in DEFAULT_CONFIG, rule_id

    def register(fn: Rule) -> Rule:
        RULES[rule_id] = fn
        return fn

    return register


def load_config(overrides: dict[str, Any] | str | Path | None = None) -> dict[str, dict[str, Any]]:
    """DEFAULT_CONFIG merged with overrides ({rule_id: {key: value}} or a YAML file); UserError on unknown keys."""
    config = {rule_id: dict(values) for rule_id, values in DEFAULT_CONFIG.items()}
    if isinstance(overrides, str | Path):
        overrides = _read_yaml(Path(overrides))
    for rule_id, values in (overrides or {}).items():
        if rule_id not in config:
            raise UserError(f"unknown quality rule {rule_id!r} in config; rules: {', '.join(config)}")
        if not isinstance(values, dict):
            raise UserError(f"config for rule {rule_id!r} must be a mapping of settings")
        for key, value in values.items():
            if key not in config[rule_id]:
                raise UserError(f"rule {rule_id!r} has no setting {key!r}; settings: {', '.join(config[rule_id])}")
            if key == "severity" and value not in (*SEVERITIES, "off"):
                raise UserError(f"rule {rule_id!r}: severity must be error, warning, info or off, got {value!r}")
            config[rule_id][key] = value
    return config


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"quality config cannot be read ({exc.__class__.__name__})", path) from None
    if not isinstance(data, dict):
        raise UserError("quality config must be a mapping {rule_id: {setting: value}}", path)
    return data


def hit(message: str, records: list[str], fix: str, details: list[str] | None = None,
        severity: str | None = None) -> Finding:
    """A finding of the calling rule (the engine fills in the rule id and, when None, the configured severity)."""
    return Finding("", severity or "", message, sorted(dict.fromkeys(records)), fix, details or [])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------- records and masks


@rule("missing_annotations")
def missing_annotations(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Frames without an image, objects without a mask, annotated frames without any object."""
    yield from ctx.ingest_findings(("missing_annotations", "missing_frame"),
                                   "Re-export the missing frames/masks (or the video they come from) or drop them.")
    bad_images = [(ri, info.problem) for ri, info in enumerate(ctx.images) if info.problem]
    if bad_images:
        yield hit(f"{_plural(len(bad_images), 'frame')} listed without a usable image",
                  [ctx.rid(ri) for ri, _ in bad_images], "Restore the image files (or reconvert the export); "
                  "a training row pointing at no image fails the data loader.",
                  [f"{ctx.rid(ri)}: {ctx.records[ri].image}: {problem}" for ri, problem in bad_images], "error")
    no_mask = [key for key, info in ctx.objects.items() if info.status == "missing"]
    if no_mask:
        yield hit(f"{_plural(len(no_mask), 'tracked object')} without a mask", [ctx.rid(ri) for ri, _ in no_mask],
                  "Re-run SAM 2 propagation for these objects or delete them from the export.",
                  [f"{ctx.rid(ri)}: object {ctx.records[ri].objects[oi].object_id}" for ri, oi in no_mask])
    empty = [ri for ri, rec in enumerate(ctx.records) if not rec.objects]
    if empty:
        yield hit(f"{_plural(len(empty), 'annotated frame')} without any object", [ctx.rid(ri) for ri in empty],
                  "Fine if they are intended negatives ('nothing here' answers); otherwise annotate or drop them.",
                  severity="info")


@rule("invalid_rle")
def invalid_rle(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Masks whose run-length encoding does not decode to the stated size."""
    yield from ctx.ingest_findings("invalid_rle", "Re-export the affected masks; the readers dropped them.")
    yield from _status_finding(ctx, "invalid", "mask RLE does not decode",
                               "Re-export the mask (or delete the object): its RLE is corrupt.")


@rule("mask_size_mismatch")
def mask_size_mismatch(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Mask size differs from the frame size, or the image on disk differs from the recorded size."""
    yield from ctx.ingest_findings("mask_size_mismatch", "Check that the masks belong to this video/resolution.")
    yield from _status_finding(ctx, "size", "mask size differs from its frame",
                               "Resize the mask to the frame (convert does this for SAM 2 exports) or fix the "
                               "record's width/height.")
    wrong = [(ri, info.size) for ri, info in enumerate(ctx.images)
             if info.size and info.size != (ctx.records[ri].width, ctx.records[ri].height)]
    if wrong:
        yield hit(f"{_plural(len(wrong), 'image')} differ in size from their record", [ctx.rid(ri) for ri, _ in wrong],
                  "Reconvert from the source video so that images, masks and boxes share one resolution.",
                  [f"{ctx.rid(ri)}: image {w}x{h}, record {ctx.records[ri].width}x{ctx.records[ri].height}"
                   for ri, (w, h) in wrong])


@rule("empty_mask")
def empty_mask(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Objects listed as visible whose mask has no pixel."""
    yield from ctx.ingest_findings("empty_mask", "Nothing to do: the readers dropped invisible objects.")
    yield from _status_finding(ctx, "empty", "visible object with an empty mask",
                               "Delete the object from this frame (it is not visible) or re-run propagation.")


def _status_finding(ctx: Context, status: str, what: str, fix: str) -> Iterator[Finding]:
    keys = [key for key, info in ctx.objects.items() if info.status == status]
    if keys:
        yield hit(f"{_plural(len(keys), 'object')}: {what}", [ctx.rid(ri) for ri, _ in keys], fix,
                  [f"{ctx.rid(ri)}: object {ctx.records[ri].objects[oi].object_id}: {ctx.objects[ri, oi].problem}"
                   for ri, oi in keys])


@rule("bbox_out_of_bounds")
def bbox_out_of_bounds(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Stored boxes that leave the image or disagree with their mask."""
    yield from ctx.ingest_findings(("bbox_out_of_bounds", "bbox_mismatch"),
                                   "Nothing to do for the dataset (boxes were recomputed from the masks on import); "
                                   "fix the exporting tool if its boxes matter elsewhere.")
    details, records = [], []
    for ri, _, rec, obj, info in ctx.ok_objects():
        problem = _box_problem(obj.bbox, info.box, rec.width, rec.height, cfg)
        if problem:
            records.append(ctx.rid(ri))
            details.append(f"{ctx.rid(ri)}: object {obj.object_id}: {problem}")
    if records:
        yield hit(f"{_plural(len(details), 'stored box')} outside the image or not matching the mask", records,
                  "Recompute boxes from the masks (convert does this); never train on boxes the mask disagrees with.",
                  details)


def _box_problem(bbox: Any, mask_box: list[int] | None, width: int, height: int, cfg: dict[str, Any]) -> str:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
        return f"box {bbox!r} is not [x1, y1, x2, y2]"
    x1, y1, x2, y2 = bbox
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height or x2 <= x1 or y2 <= y1:
        return f"box {bbox} outside the {width}x{height} image or inverted"
    if mask_box is None:
        return ""
    off = max(abs(a - b) for a, b in zip(bbox, mask_box, strict=True))
    if box_iou(bbox, mask_box) < cfg["min_mask_iou"] and off > cfg["tolerance_px"]:
        return f"box {bbox} disagrees with its mask's box {mask_box} (IoU {box_iou(bbox, mask_box):.2f})"
    return ""


@rule("tiny_mask")
def tiny_mask(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Masks too small to learn from (or to be real objects)."""
    details, records = [], []
    for ri, _, rec, obj, info in ctx.ok_objects():
        if info.area < cfg["min_area_px"] or info.area < cfg["min_area_fraction"] * rec.width * rec.height:
            records.append(ctx.rid(ri))
            details.append(f"{ctx.rid(ri)}: {obj.label} #{obj.object_id}: {info.area} px")
    if records:
        yield hit(f"{_plural(len(details), 'mask')} below {cfg['min_area_px']} px or "
                  f"{cfg['min_area_fraction']:.4%} of the frame", records,
                  "Check them: usually a sliver at the frame border or a stray click. Delete them, or raise the "
                  "export resolution if the objects really are that small.", details)


@rule("mask_fragments")
def mask_fragments(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Masks with detached specks (below `max_share` of the area) that widen the object's box."""
    from .fragments import fragment_problem

    details, records = [], []
    for ri, _, _, obj, _ in ctx.ok_objects():
        problem = fragment_problem(obj, cfg["max_share"], cfg["min_box_growth"])
        if problem:
            records.append(ctx.rid(ri))
            details.append(f"{ctx.rid(ri)}: {obj.label} #{obj.object_id}: {problem}")
    if records:
        yield hit(f"{_plural(len(details), 'mask')} with detached specks that widen the box", records,
                  "Reconvert with --drop-fragments (keeps the main region and pieces above --keep-share of the "
                  "area, recomputes box and area), or remove the specks in SAM 2 with a negative click.", details)


# ---------------------------------------------------------------- labels


@rule("class_imbalance")
def class_imbalance(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Largest class more than max_ratio times the smallest."""
    counts = ctx.label_counts
    if len(counts) < 2:
        return
    largest = max(counts.values())
    rare = sorted(label for label, n in counts.items() if n * cfg["max_ratio"] < largest)
    if rare:
        records = [ctx.rid(ri) for ri, rec in enumerate(ctx.records) if set(rec.labels) & set(rare)]
        ratio = largest / min(counts.values())
        named = ", ".join(f"'{label}' ({counts[label]})" for label in rare)
        yield hit(f"class imbalance {ratio:.0f}:1 (largest class {largest} objects; rare: {named})", records,
                  f"Annotate more frames with {named}; meanwhile oversample frames with rare classes or augment them "
                  "(flips, crops, colour jitter), and use the stratified split so each split keeps them.",
                  [f"{label}: {n}" for label, n in counts.most_common()])


@rule("unlabeled_objects")
def unlabeled_objects(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Objects still carrying default names such as object_0."""
    pattern = re.compile(cfg["pattern"])
    names = sorted({label for label in ctx.label_counts if pattern.match(label.strip())})
    if names:
        records = [ctx.rid(ri) for ri, rec in enumerate(ctx.records) if set(rec.labels) & set(names)]
        yield hit(f"{_plural(len(names), 'default object name')} ({', '.join(repr(n) for n in names[:8])})", records,
                  'Name the objects: convert ... --labels labels.json with {"0": "kettle", "1": "cup"} (object id -> '
                  "name). A model cannot learn what 'object_0' means across videos.")


def _label_key(label: str) -> str:
    key = re.sub(r"[\s_\-]+", " ", label.strip().casefold())
    return key[:-1] if len(key) > 3 and key.endswith("s") and not key.endswith("ss") else key


@rule("label_near_duplicates")
def label_near_duplicates(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Label spellings that differ only in case, spacing, separators or a plural s."""
    groups: dict[str, list[str]] = defaultdict(list)
    for label in sorted(ctx.label_counts):
        groups[_label_key(label)].append(label)
    for variants in groups.values():
        if len(variants) < 2:
            continue
        ranked = sorted(variants, key=lambda v: (-ctx.label_counts[v], v))
        minority = set(ranked[1:])
        records = [ctx.rid(ri) for ri, rec in enumerate(ctx.records) if set(rec.labels) & minority]
        spelled = ", ".join(f"{v!r} ({ctx.label_counts[v]})" for v in ranked)
        yield hit(f"one class spelled {len(variants)} ways: {spelled}", records,
                  f"Map every spelling to {ranked[0]!r} (convert --labels, or fix the source tool's label list).")


# ---------------------------------------------------------------- frames and videos


@rule("duplicate_frames")
def duplicate_frames(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Exact copies (same bytes) and near-duplicates (perceptual hash within max_distance bits)."""
    groups = duplicate_groups(ctx.images, cfg["max_distance"])
    for exact in (True, False):
        chosen = [g for g in groups if (len({ctx.images[i].sha1 for i in g}) == 1) == exact]
        if not chosen:
            continue
        kind = "exact duplicates" if exact else f"near-duplicates (perceptual hash within {cfg['max_distance']} bits)"
        videos = sum(len({ctx.records[i].video_id for i in g}) > 1 for g in chosen)
        yield hit(f"{_plural(len(chosen), 'group')} of {kind}; {videos} span several videos",
                  [ctx.rid(i) for g in chosen for i in g],
                  "The split keeps each group in one split, so they cannot leak between train and test; drop "
                  "repeats (export fewer frames per second) if they over-weight a scene.",
                  [" = ".join(ctx.rid(i) for i in g) for g in chosen])


@rule("overlay_frames")
def overlay_frames(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Images that are visualisations (tint + drawn contour or box): training on them leaks the answer."""
    fix = ("Use clean frames: pass the source video (convert EXPORT.zip --video VIDEO.mp4) so frames are decoded "
           "from it instead of the export's overlay PNGs.")
    yield from ctx.ingest_findings("overlay_frames", fix, cfg["severity"])  # the frames still are overlays
    candidates = [ri for ri, info in enumerate(ctx.images) if not info.problem and any(ctx.ok_objects(ri))]
    step = max(1, len(candidates) / max(1, cfg["sample_frames"]))
    sampled = [candidates[int(k * step)] for k in range(min(len(candidates), cfg["sample_frames"]))]
    flagged = [ri for ri in sampled if _frame_is_overlay(ctx, ri, cfg)]
    if not flagged:
        return
    bulk = len(flagged) >= cfg["bulk_fraction"] * len(sampled)
    yield hit(f"{len(flagged)} of {len(sampled)} checked frames look like visualisation overlays (a line drawn "
              "along the mask or its box)", [ctx.rid(ri) for ri in flagged], fix,
              severity=None if bulk else "warning")


def _frame_is_overlay(ctx: Context, ri: int, cfg: dict[str, Any]) -> bool:
    import numpy as np
    from PIL import Image

    objects = sorted(ctx.ok_objects(ri), key=lambda item: -item[4].area)[: cfg["objects_per_frame"]]
    try:
        with Image.open(ctx.image_path(ri)) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, ValueError):
        return False
    return any(looks_like_overlay(rgb, decode_rle(obj.rle), cfg) for _, _, _, obj, _ in objects
               if rgb.shape[:2] == (obj.rle["size"][0], obj.rle["size"][1]))


@rule("fps_mismatch")
def fps_mismatch(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """The export's claimed frame rate differs from the video's real one (timestamps are then wrong)."""
    fix = ("Trust frame_index, not timestamp_sec: convert with --video so the real fps comes from the video "
           "(the SAM 2 demo hard-codes 30 fps for its 24 fps videos).")
    reported = {str(issue.get("source")) for issue in ctx.issues if issue.get("rule") == "fps_mismatch"}
    yield from ctx.ingest_findings("fps_mismatch", fix)
    for source in ctx.meta.get("sources") or []:
        claimed, real = source.get("fps_claimed"), source.get("fps_video")
        if not (isinstance(claimed, int | float) and isinstance(real, int | float) and real > 0):
            continue
        if abs(claimed - real) / real > cfg["tolerance"] and str(source.get("path")) not in reported:
            yield hit(f"{source.get('path')}: claims {claimed:g} fps, the video has {real:g} fps",
                      ctx.source_records(str(source.get("path"))), fix)


@rule("temporal_flicker")
def temporal_flicker(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """An object's mask shape (IoU with centres aligned) collapses between consecutive annotated frames, or its
    area jumps; objects at the frame border or touching another object are skipped (occlusion, entering)."""
    culprits: dict[int, str] = {}
    for (video_id, object_id), pairs in ctx.pairs.items():
        near = [p for p in pairs if p.gap <= cfg["max_gap_steps"] * ctx.video_step(video_id)
                and not ctx.crowded(p.a, p.oa) and not ctx.crowded(p.b, p.ob)]
        ious = [p.iou if p.iou >= cfg["min_iou"] else max(p.iou, ctx.aligned_iou(p)) for p in near]
        bad = {}
        for j, (pair, iou) in enumerate(zip(near, ious, strict=True)):
            others = sorted(ious[:j] + ious[j + 1 :])
            baseline = others[len(others) // 2] if others else 1.0
            if (iou < cfg["min_iou"] and iou < cfg["collapse_factor"] * baseline) \
                    or pair.area_ratio > cfg["max_area_ratio"]:
                bad[j] = (f"{ctx.records[pair.a].video_id} object {object_id}, frames {ctx.records[pair.a].frame_index}"
                          f" -> {ctx.records[pair.b].frame_index}: IoU {iou:.2f}, area x{pair.area_ratio:.1f}")
        for j, why in bad.items():
            # two flagged pairs in a row share the frame that jumped; a lone flagged pair blames both frames
            after = j + 1 in bad and near[j + 1].a == near[j].b
            before = j - 1 in bad and near[j - 1].b == near[j].a
            for ri in [near[j].b] if after else [] if before else [near[j].a, near[j].b]:
                culprits[ri] = f"{ctx.rid(ri)}: {why}"
    if culprits:
        yield hit(f"{_plural(len(culprits), 'frame')} where an object's mask jumps between consecutive frames",
                  [ctx.rid(ri) for ri in culprits], "Open these frames in SAM 2, add a correction click on the "
                  "frame where the mask jumps and re-propagate (or delete the bad mask).", list(culprits.values()))


@rule("image_token_budget")
def image_token_budget(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """Vision tokens per frame plus the answer text against the model's max length."""
    key = cfg["model"] or ctx.meta.get("family")
    if not key:
        yield hit("token budget not checked: no model family chosen", [], "Pass --family/--model.", severity="info")
        return
    try:
        from .registry import get_spec

        spec = get_spec(str(key))
    except (ImportError, UserError, KeyError) as exc:
        source = "" if cfg["model"] else " (the dataset's family)"
        yield hit(f"token budget not checked for {key!r}{source}: model not in the registry", [],
                  "Pass --family/--model with a registry key, e.g. smolvlm-256m or qwen2-vl-2b.", [str(exc)], "info")
        return
    max_length = cfg["max_length"] or getattr(spec, "max_length", None) or 2048
    from .clips import images_per_example

    frames = images_per_example(ctx.meta.get("tasks") or [], ctx.meta)  # a clip's K frames all take tokens
    tokens_for = {size: frames * spec.vision_tokens(*size) for size in {(r.width, r.height) for r in ctx.records
                                                                        if r.width > 0 and r.height > 0}}
    over = [(ri, tokens_for[(r.width, r.height)] + cfg["prompt_tokens"] + cfg["tokens_per_object"] * len(r.objects))
            for ri, r in enumerate(ctx.records) if (r.width, r.height) in tokens_for]
    over = [(ri, total) for ri, total in over if total > max_length]
    per = "" if frames == 1 else f" per clip of {frames} frames"
    sizes = ", ".join(f"{w}x{h}: {n} vision tokens{per}" for (w, h), n in sorted(tokens_for.items()))
    if over:
        yield hit(f"{_plural(len(over), 'frame')} need more than max_length {max_length} tokens for {spec.key} "
                  f"({sizes})", [ctx.rid(ri) for ri, _ in over],
                  "Raise data.max_length, lower the image resolution (max_pixels / longest_edge in the preset) or "
                  "pick a model with fewer image tokens; otherwise training truncates the answers or runs out of "
                  "memory.", [f"{ctx.rid(ri)}: ~{total} tokens" for ri, total in over])
    else:
        yield hit(f"token budget fits {spec.key}: {sizes}; max_length {max_length}", [], "Nothing to do.",
                  severity="info")


@rule("placeholder_mismatch")
def placeholder_mismatch(ctx: Context, cfg: dict[str, Any]) -> Iterator[Finding]:
    """`<image>` placeholders vs images in the training rows (llava.json, sharegpt.json, messages.jsonl)."""
    details, rows = [], []
    for name, index, row in _training_rows(ctx.dir):
        if row is None:
            details.append(f"{name}: cannot be parsed")
            rows.append(name)
            continue
        tags, images = _placeholders(row)
        if tags != images:
            row_id = row.get("id", index) if isinstance(row, dict) else index
            rows.append(f"{name}#{row_id}")
            details.append(f"{name}#{row_id}: {tags} <image> placeholders, {images} images")
    if rows:
        yield hit(f"{_plural(len(rows), 'training row')} where <image> placeholders and images disagree", rows,
                  "Regenerate the training formats (python -m pipeline split DATASET or convert); trainers reject "
                  "rows whose placeholder count differs from their images.", details)


def _training_rows(root: Path) -> Iterator[tuple[str, int, Any]]:
    names = [p for pattern in ("llava.json", "llava/*.json", "sharegpt.json", "sharegpt/*.json", "messages.jsonl",
                               "messages/*.jsonl") for p in sorted(root.glob(pattern))]
    for path in names:
        name = path.relative_to(root).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
            rows = ([json.loads(line) for line in text.splitlines() if line.strip()] if path.suffix == ".jsonl"
                    else json.loads(text))
        except (OSError, ValueError):
            yield name, 0, None
            continue
        for index, row in enumerate(rows if isinstance(rows, list) else []):
            yield name, index, row


def _placeholders(row: Any) -> tuple[int, int]:
    if not isinstance(row, dict):
        return -1, 0
    images = row.get("images", row.get("image"))
    count = 0 if images is None else 1 if isinstance(images, str) else len(images)
    tags = 0
    for turn in row.get("conversations") or row.get("messages") or []:
        content = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
        if isinstance(content, str):
            tags += content.count("<image>")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict):
                tags += part.get("type") == "image"
                tags += str(part.get("text") or "").count("<image>")
    return tags, count
