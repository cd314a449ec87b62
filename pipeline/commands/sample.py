"""`python -m pipeline sample`: write the built-in synthetic SAM 2 session in every input format."""

from __future__ import annotations

import argparse
import re

from ..errors import UserError

HELP = "generate the built-in synthetic SAM 2 session in every input format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the `sample` verb."""
    parser.add_argument("--out", required=True, metavar="DIR", help="new (or empty) folder to write the sample into")
    parser.add_argument("--frames", type=int, default=72, metavar="N", help="frames per video, 24 fps (default 72)")
    parser.add_argument("--videos", type=int, default=1, metavar="K",
                        help="number of SAM 2 demo-export sessions, each with its own video (default 1)")
    parser.add_argument("--every", type=int, default=5, metavar="N",
                        help="demo export: annotate every N-th video frame (default 5)")
    parser.add_argument("--size", default="320x180", metavar="WxH", help="frame size, even numbers (default 320x180)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--objects", type=int, default=None, metavar="N",
                        help="at most N shapes per video, 1 to 4 (default: 2 to 4 at random; 1 draws a circle only)")
    parser.add_argument("--motion", choices=("cross", "track"), default="cross",
                        help="cross (default): shapes fly in and cross; track: fast shapes that leave and re-enter "
                             "(the data of demo --task track)")


def parse_size(text: str) -> tuple[int, int]:
    """'320x180' -> (320, 180); anything else is a UserError."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*[xX]\s*(\d{1,5})\s*", text)
    if not match:
        raise UserError(f"--size must be WIDTHxHEIGHT, e.g. 320x180 (got {text!r})")
    return int(match.group(1)), int(match.group(2))


def run(args: argparse.Namespace) -> int:
    """Generate the sample and print a summary of the files written."""
    from ..sample import generate_sample

    width, height = parse_size(args.size)
    info = generate_sample(args.out, frames=args.frames, videos=args.videos, width=width, height=height,
                           export_every=args.every, seed=args.seed, objects=args.objects,
                           progress=True, motion=args.motion)
    print(info.summary())
    return 0
