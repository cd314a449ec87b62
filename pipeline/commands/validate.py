"""`python -m pipeline validate INPUT_OR_DATASET --out DIR`: the data quality report.

Exit 0 when the data has no errors, 1 when it has errors, 2 when the input is unusable (one `error:` line).
"""

from __future__ import annotations

import argparse

HELP = "data quality report for an export or a converted dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the validate options (the convert options apply when INPUT is a raw export)."""
    parser.add_argument("--submit", action="store_true",
                        help="queue it as a job (local scheduler, or a `preprocessing` worker) and print its id")
    parser.add_argument("input", metavar="INPUT_OR_DATASET",
                        help="a converted dataset folder, or a raw export (same inputs as convert)")
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder to create (report.md, "
                        "report.json, plots as HTML + PNG)")
    parser.add_argument("--family", "--model", dest="family", metavar="F",
                        help="model registry key or Hub id for the image_token_budget rule "
                             "(default: the dataset's family)")
    parser.add_argument("--config", metavar="YAML", help="rule settings {rule_id: {severity: off|info|warning|error, "
                        "threshold: value}} (docs/QUALITY_AND_SPLITS.md)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    raw = parser.add_argument_group("raw exports (see convert --help)")
    raw.add_argument("--video", action="append", default=[], metavar="V", help="source video (repeatable)")
    raw.add_argument("--images", metavar="DIR", help="folder the COCO / YouTube-VIS file names are relative to")
    raw.add_argument("--labels", metavar="F", help='object id -> name: JSON {"0": "circle"} or CSV id,name')
    raw.add_argument("--allow-overlay-frames", action="store_true", help="use a demo export's overlay PNGs as frames")
    raw.add_argument("--include-auto", action="store_true", help="SA-V: also read the *_auto.json masklets")


def run(args: argparse.Namespace) -> int:
    """Write the report, print its summary; 1 when the data has errors."""
    if getattr(args, "submit", False):
        from ..steps import print_submitted

        return print_submitted("validate", args.raw_argv)
    from ..quality import validate

    report = validate(args.input, args.out, video=args.video or None, family=args.family, config=args.config,
                      overwrite=args.overwrite, images=args.images, labels=args.labels,
                      allow_overlay_frames=args.allow_overlay_frames, include_auto=args.include_auto)
    s = report.summary
    verdict = "PASSED" if report.passed else "FAILED"
    print(f"{verdict}: {s['errors']} error(s), {s['warnings']} warning(s), {s['infos']} info")
    for finding in report.findings:
        print(f"  {finding.severity:<8} {finding.rule:<22} {finding.message} ({len(finding.records)} record(s))")
    print(f"report: {report.paths['md']} (and report.json, plots as .html/.png)")
    return 0 if report.passed else 1
