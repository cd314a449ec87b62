"""Data quality report: run every rule on a converted dataset, collect findings and metrics, write md/json/plots.

    python -m pipeline validate EXPORT_OR_DATASET [--video V] [--family F] --out DIR

    from pipeline.quality import validate, run_rules
    report = validate("export.zip", "report/", video="session.mp4", family="smolvlm-256m")
    report = run_rules("studio_data/datasets/demo")          # no files written
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_output_dir
from .dataset import RECORDS_FILE, is_dataset
from .errors import UserError
from .quality_context import Context, Finding, duplicate_groups, load_dataset

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
ALIASES = {"missing_frame", "bbox_mismatch"}  # reader issue ids reported by missing_annotations / bbox_out_of_bounds


@dataclass
class Report:
    """What validate/run_rules return: summary counts, findings (worst first), metrics and the written files."""

    summary: dict[str, Any]
    findings: list[Finding]
    stats: dict[str, Any]
    paths: dict[str, str] = field(default_factory=dict)
    plot_data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        return self.summary["errors"] == 0

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "findings": [f.to_dict() for f in self.findings], "stats": self.stats}


def run_rules(dataset_dir: str | Path, config: dict[str, Any] | str | Path | None = None) -> Report:
    """Run every enabled rule on a converted dataset; a failing rule becomes a finding, never an exception."""
    from .quality_rules import RULES, load_config

    cfg = load_config(config)
    ctx = load_dataset(dataset_dir)
    findings = [Finding("invalid_record", cfg["invalid_record"]["severity"], f"{RECORDS_FILE} line {n}: {why}",
                        [f"{RECORDS_FILE}:{n}"], "Fix or delete the line (or reconvert the export).")
                for n, why in ctx.bad_lines] if cfg["invalid_record"]["severity"] != "off" else []
    for rule_id, rule_fn in RULES.items():
        if cfg[rule_id]["severity"] == "off":
            continue
        try:
            found = list(rule_fn(ctx, cfg[rule_id]))
        except Exception as exc:  # a bug or an unforeseen record shape must not cost the whole report
            found = [Finding(rule_id, "warning", f"rule could not finish ({exc.__class__.__name__}: {exc})", [],
                             "Please report this with the dataset; the other rules ran normally.")]
        for finding in found:
            finding.rule = finding.rule or rule_id
            finding.severity = finding.severity or cfg[rule_id]["severity"]
        findings += found
    if cfg["invalid_record"]["severity"] != "off":
        findings += _with_rule(ctx.ingest_findings("invalid_record", "Fix the source entry and convert again."),
                               "invalid_record", cfg["invalid_record"]["severity"])
    findings += _unknown_issues(ctx, set(cfg) | ALIASES)
    findings.sort(key=lambda f: (SEVERITY_ORDER.get(f.severity, 3), f.rule))
    counts = {sev: sum(f.severity == sev for f in findings) for sev in SEVERITY_ORDER}
    summary = {"errors": counts["error"], "warnings": counts["warning"], "infos": counts["info"],
               "passed": counts["error"] == 0, "dataset": str(ctx.dir), "tool_version": __version__,
               "rules": sorted(RULES), "failed_rules": sorted({f.rule for f in findings if f.severity != "info"})}
    stats, plot_data = compute_stats(ctx, cfg)
    return Report(summary, findings, stats, plot_data=plot_data)


def _with_rule(findings: Any, rule_id: str, severity: str) -> list[Finding]:
    found = list(findings)
    for finding in found:
        finding.rule, finding.severity = rule_id, finding.severity or severity
    return found


def _unknown_issues(ctx: Context, known: set[str]) -> list[Finding]:
    """Reader issues whose rule id no quality rule handles, passed through as they came."""
    return [finding for rule_id in sorted({str(i.get("rule")) for i in ctx.issues} - known)
            for finding in _with_rule(ctx.ingest_findings(rule_id, "See the message; fix the source and convert "
                                                          "again."), rule_id, "warning")]


def compute_stats(ctx: Context, cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quality metrics (mask areas per label, density, temporal consistency) and the raw series for the plots."""
    per_frame = [len(r.objects) for r in ctx.records]
    fractions: dict[str, list[float]] = {}
    areas: dict[str, list[int]] = {}
    for _, _, rec, obj, info in ctx.ok_objects():
        areas.setdefault(obj.label, []).append(info.area)
        fractions.setdefault(obj.label, []).append(info.area / (rec.width * rec.height))
    groups = duplicate_groups(ctx.images, cfg["duplicate_frames"]["max_distance"])
    videos = sorted({r.video_id for r in ctx.records})
    stats = {
        "frames": len(ctx.records), "objects": sum(per_frame), "videos": len(videos),
        "labels": dict(ctx.label_counts.most_common()),
        "mask_area": {label: _area_stats(areas[label], fractions[label]) for label in sorted(areas)},
        "density": _density(per_frame, ctx),
        "temporal": _temporal(ctx),
        "images": {"unreadable": sum(bool(i.problem) for i in ctx.images),
                   "sizes": _count(f"{i.size[0]}x{i.size[1]}" for i in ctx.images if i.size)},
        "duplicates": {"groups": len(groups), "frames": sum(len(g) for g in groups)},
        "sources": ctx.meta.get("sources") or [],
    }
    timeline: dict[str, dict[str, list[int]]] = {}
    for (video_id, object_id), items in ctx.tracks.items():
        label = ctx.records[items[0][1]].objects[items[0][2]].label
        timeline.setdefault(video_id, {})[f"{label} #{object_id}"] = [frame for frame, _, _ in items]
    plot_data = {"labels": stats["labels"], "fractions": fractions, "per_frame": per_frame, "timeline": timeline}
    return stats, plot_data


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def _area_stats(areas: list[int], fractions: list[float]) -> dict[str, Any]:
    return {"count": len(areas), "min": min(areas), "max": max(areas), "mean": round(statistics.fmean(areas), 1),
            "median": _quantile(areas, 0.5), "p10": _quantile(areas, 0.1), "p90": _quantile(areas, 0.9),
            "mean_fraction": round(statistics.fmean(fractions), 6),
            "median_fraction": round(_quantile(fractions, 0.5), 6)}


def _density(per_frame: list[int], ctx: Context) -> dict[str, Any]:
    if not per_frame:
        return {"objects_per_frame": {}, "frames_without_objects": 0, "histogram": {}}
    by_video: dict[str, list[int]] = {}
    for rec in ctx.records:
        by_video.setdefault(rec.video_id, []).append(len(rec.objects))
    return {"objects_per_frame": {"mean": round(statistics.fmean(per_frame), 3), "median": _quantile(per_frame, 0.5),
                                  "min": min(per_frame), "max": max(per_frame)},
            "frames_without_objects": per_frame.count(0),
            "histogram": {str(k): per_frame.count(k) for k in range(max(per_frame) + 1)},
            "per_video": {v: {"frames": len(n), "objects": sum(n), "objects_per_frame": round(sum(n) / len(n), 3)}
                          for v, n in sorted(by_video.items())}}


def _temporal(ctx: Context) -> dict[str, Any]:
    objects: list[dict[str, Any]] = []
    for (video_id, object_id), items in ctx.tracks.items():
        ious = [p.iou for p in ctx.pairs[video_id, object_id]]
        area = [ctx.objects[ri, oi].area for _, ri, oi in items]
        cv = statistics.pstdev(area) / statistics.fmean(area) if len(area) > 1 else 0.0
        objects.append({"video_id": video_id, "object_id": object_id,
                        "label": ctx.records[items[0][1]].objects[items[0][2]].label, "frames": len(items),
                        "first_frame": items[0][0], "last_frame": items[-1][0],
                        "mean_iou": round(statistics.fmean(ious), 4) if ious else None,
                        "min_iou": round(min(ious), 4) if ious else None, "area_cv": round(cv, 4)})
    means = [o["mean_iou"] for o in objects if o["mean_iou"] is not None]
    return {"tracks": len(objects), "mean_iou": round(statistics.fmean(means), 4) if means else None,
            "min_iou": min((o["min_iou"] for o in objects if o["min_iou"] is not None), default=None),
            "objects": objects}


# ---------------------------------------------------------------- writing


def write_report(report: Report, out: str | Path, overwrite: bool = False) -> Report:
    """Write report.md, report.json and the plots (HTML + PNG) into `out`, atomically; fills report.paths."""
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        _write_files(report, tmp)
    final = Path(out).expanduser().resolve()
    report.paths = {name: str(final / Path(path).name) for name, path in report.paths.items()}
    return report


def _write_files(report: Report, folder: Path) -> None:
    from . import plots

    data = report.plot_data
    written = {
        "class_distribution": plots.class_distribution(data.get("labels", {}), folder / "class_distribution"),
        "mask_area": plots.mask_area_histogram(data.get("fractions", {}), folder / "mask_area"),
        "objects_per_frame": plots.objects_per_frame(data.get("per_frame", []), folder / "objects_per_frame"),
        "visibility_timeline": plots.visibility_timeline(data.get("timeline", {}), folder / "visibility_timeline"),
    }
    report.paths = {f"{name}_{kind}": str(path) for name, files in written.items() for kind, path in files.items()}
    report.paths["json"], report.paths["md"] = str(folder / "report.json"), str(folder / "report.md")
    (folder / "report.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    (folder / "report.md").write_text(render_markdown(report, list(written)), encoding="utf-8")


SHOWN = 20  # records / details listed per finding in report.md (report.json has them all)
PLOT_TITLES = {"class_distribution": "Class distribution", "mask_area": "Mask area per label",
               "objects_per_frame": "Objects per frame", "visibility_timeline": "Object visibility per video"}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _shorten(items: list[str]) -> str:
    shown = ", ".join(f"`{item}`" for item in items[:SHOWN])
    return shown + (f" ... and {len(items) - SHOWN} more (report.json lists all)" if len(items) > SHOWN else "")


def render_markdown(report: Report, plots: list[str]) -> str:
    """The human-readable report: summary, findings by severity with records and fixes, metrics, plots."""
    s, st = report.summary, report.stats
    verdict = "**PASSED** (no errors)" if s["passed"] else f"**FAILED: {s['errors']} error(s)**"
    lines = ["# Data quality report", "",
             f"Dataset: `{s['dataset']}` · {st['frames']} frames · {st['objects']} objects · {st['videos']} videos "
             f"· {len(st['labels'])} labels · tool {s['tool_version']}", "",
             f"{verdict}; {s['warnings']} warning(s), {s['infos']} info.", ""]
    if report.findings:
        lines += ["| severity | rule | finding | records |", "|---|---|---|---|"]
        lines += [f"| {f.severity} | `{f.rule}` | {_cell(f.message)} | {len(f.records)} |" for f in report.findings]
    for severity, title in (("error", "Errors"), ("warning", "Warnings"), ("info", "Info")):
        chosen = [f for f in report.findings if f.severity == severity]
        lines += ["", f"## {title}", ""] + ([] if chosen else ["None.", ""])
        for f in chosen:
            lines += [f"### `{f.rule}`: {f.message}", ""]
            if f.records:
                lines.append(f"- Records ({len(f.records)}): {_shorten(f.records)}")
            if f.details:
                lines.append("- Details:")
                lines += [f"  - {_cell(d)}" for d in f.details[:SHOWN]]
                if len(f.details) > SHOWN:
                    lines.append(f"  - ... and {len(f.details) - SHOWN} more (report.json)")
            lines += [f"- **Fix:** {f.recommendation}", ""]
    lines += _metrics_markdown(st)
    lines += ["", "## Plots", ""] + [f"![{PLOT_TITLES[p]}]({p}.png) ([interactive]({p}.html))" for p in plots]
    return "\n".join(lines) + "\n"


def _metrics_markdown(st: dict[str, Any]) -> list[str]:
    lines = ["", "## Metrics", "", "| label | objects | median area | median % of frame | p10 | p90 |",
             "|---|---|---|---|---|---|"]
    for label, count in st["labels"].items():
        a = st["mask_area"].get(label)
        lines.append(f"| {_cell(label)} | {count} | " + (f"{a['median']:.0f} px | {a['median_fraction']:.2%} | "
                     f"{a['p10']:.0f} px | {a['p90']:.0f} px |" if a else "- | - | - | - |"))
    d, t = st["density"], st["temporal"]
    if d["objects_per_frame"]:
        o = d["objects_per_frame"]
        lines += ["", f"Objects per frame: mean {o['mean']}, median {o['median']:g}, min {o['min']}, max {o['max']}; "
                  f"{d['frames_without_objects']} frame(s) without objects."]
    lines += ["", f"Temporal consistency: {t['tracks']} object track(s); mean IoU between consecutive annotated "
              f"frames {t['mean_iou']}, lowest {t['min_iou']}."]
    worst = sorted((o for o in t["objects"] if o["min_iou"] is not None), key=lambda o: o["min_iou"])[:10]
    if worst:
        lines += ["", "| video | object | label | frames | mean IoU | min IoU | area CV |", "|---" * 7 + "|"]
        lines += [f"| {_cell(o['video_id'])} | {o['object_id']} | {_cell(o['label'])} | {o['frames']} | "
                  f"{o['mean_iou']} | {o['min_iou']} | {o['area_cv']} |" for o in worst]
    return lines


def validate(input_or_dataset: str | Path, out: str | Path, *, video: str | Path | None = None,
             family: str | None = None, config: dict[str, Any] | str | Path | None = None, overwrite: bool = False,
             **convert_options: Any) -> Report:
    """Report on a converted dataset, or on a raw export converted into a temporary folder (removed afterwards)."""
    from .quality_rules import load_config

    source = Path(input_or_dataset).expanduser()
    if not source.exists():
        raise UserError("input not found", source)
    cfg = load_config(config)
    if family:
        cfg["image_token_budget"]["model"] = family
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        if is_dataset(source):
            report = run_rules(source, cfg)
        else:
            report = _convert_and_run(source, tmp / ".converted", cfg, video, convert_options)
        _write_files(report, tmp)
    final = Path(out).expanduser().resolve()
    report.paths = {name: str(final / Path(path).name) for name, path in report.paths.items()}
    return report


def _convert_and_run(source: Path, converted: Path, cfg: dict[str, Any], video: Any,
                     convert_options: dict[str, Any]) -> Report:
    try:
        from .ingest import convert
    except ImportError:
        raise UserError("not a converted dataset (converting raw exports needs pipeline.ingest)", source) from None
    try:
        convert([source], converted, video=video, **convert_options)
        report = run_rules(converted, cfg)
    finally:
        shutil.rmtree(converted, ignore_errors=True)
    report.summary["dataset"] = f"{source} (converted for this report, not kept)"
    return report
