"""`python -m pipeline convert INPUT... --out OUT`: ingest SAM 2 exports into one dataset folder."""

from __future__ import annotations

import argparse

HELP = "ingest SAM 2 exports into canonical records and training formats"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the convert options."""
    parser.add_argument("--submit", action="store_true",
                        help="queue it as a job (local scheduler, or a `preprocessing` worker) and print its id")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="SAM 2 demo export ZIP / job folder, SA-V *_manual.json or val folder, SAM 2 stream "
                             "JSONL, COCO or YouTube-VIS JSON (several make one dataset)")
    parser.add_argument("--out", required=True, help="dataset folder to create (must not exist or be empty)")
    parser.add_argument("--video", action="append", default=[], metavar="V",
                        help="source video (or folder of numbered frames); repeat for several inputs, matched by "
                             "file name")
    parser.add_argument("--images", metavar="DIR", help="folder the COCO / YouTube-VIS file names are relative to")
    parser.add_argument("--labels", metavar="F", help='object id -> name: JSON {"0": "circle"} or CSV id,name')
    parser.add_argument("--family", default="json", metavar="F",
                        help="coordinate convention (json, llava, qwen2_vl, qwen2_5_vl, qwen3_vl, paligemma, "
                             "florence2, internvl) or a model registry key/family (default: json)")
    parser.add_argument("--tasks", default="grounding", metavar="T,...",
                        help="comma-separated tasks for the training files (default: grounding); track, visibility "
                             "and count_unique take clips of --clip-frames frames of one video")
    parser.add_argument("--clip-frames", type=int, default=4, metavar="K",
                        help="video tasks: frames per clip, in time order (default 4)")
    parser.add_argument("--clip-stride", type=int, default=None, metavar="N",
                        help="video tasks: source video frames between a clip's frames (default: half a second at "
                             "the video's fps)")
    parser.add_argument("--every", type=int, default=1, metavar="N", help="keep every Nth annotated frame")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="at most N frames per video")
    parser.add_argument("--allow-overlay-frames", action="store_true",
                        help="without the source video, use a demo export's overlay PNGs as frames (not advised)")
    parser.add_argument("--include-auto", action="store_true",
                        help="SA-V: also take the *_auto.json masklets beside the manual file")
    parser.add_argument("--drop-fragments", action="store_true",
                        help="remove detached specks from each mask (keep the main region and pieces above "
                             "--keep-share of its area); box, area and mask are recomputed, dataset.json records it")
    parser.add_argument("--keep-share", type=float, default=None, metavar="S",
                        help="with --drop-fragments: keep detached pieces holding at least this share of the mask's "
                             "area (default 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the instruction phrasing")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    """Convert and print the one-screen summary."""
    if getattr(args, "submit", False):
        from ..steps import print_submitted

        return print_submitted("convert", args.raw_argv)
    from ..ingest import convert
    from ..registry import resolve_convention

    convention = resolve_convention(args.family)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    summary = convert(args.inputs, args.out, video=args.video, images=args.images, labels=args.labels,
                      convention=convention, tasks=tasks, every=args.every, max_frames=args.max_frames,
                      allow_overlay_frames=args.allow_overlay_frames, include_auto=args.include_auto,
                      seed=args.seed, progress=True, overwrite=args.overwrite, family=args.family,
                      drop_fragments=args.drop_fragments, keep_share=args.keep_share,
                      clip_frames=args.clip_frames, clip_stride=args.clip_stride)
    print(summary.text())
    return 0
