"""The built-in sample: deterministic synthetic SAM 2 sessions written in every input format, with the exact truth.

Each video shows 2-4 labelled shapes that fly in from outside the frame, cross, occlude each other (a nearer shape
hides the one behind) and leave again; the masks are the generator's own, so they are exact (visible part only).
The SAM 2 demo-export ZIP reproduces the real exporter's format and defects (docs/SAMPLE_DATA.md, FORMATS.md 1).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_output_dir
from ..errors import UserError
from .demo_zip import write_demo
from .other_formats import write_coco, write_sav, write_stream
from .scene import COCO_STEP, FPS, LABELS, MOTIONS, SEG_KINDS, make_scene

__all__ = ["LABELS", "MAX_VIDEOS", "SampleInfo", "generate_sample"]
_ROLES = {"demo": 1, "sav": 2, "coco": 3, "stream": 4, "names": 5}


@dataclass
class SampleInfo:
    """Every file `generate_sample` wrote (absolute paths) and the truth it wrote to sample_truth.json."""

    out_dir: Path
    demo_zips: list[Path]
    demo_videos: list[Path]
    sav_json: Path
    sav_video: Path
    coco_json: Path
    coco_frames: Path
    stream_jsonl: Path
    stream_video: Path
    labels_json: Path
    truth_json: Path
    truth: dict[str, Any]

    @property
    def files(self) -> list[Path]:
        """All files written, sorted."""
        return sorted(p for p in self.out_dir.rglob("*") if p.is_file())

    def summary(self) -> str:
        """A one-screen description of what was written."""
        return _summary(self)


def generate_sample(out_dir: str | Path, *, frames: int = 72, videos: int = 1, width: int = 320, height: int = 180,
                    export_every: int = 5, seed: int = 0, objects: int | None = None,
                    progress: bool = False, motion: str = "cross") -> SampleInfo:
    """Write the synthetic SAM 2 session in every input format (+ truth) into `out_dir`, atomically.

    `objects` caps the shapes per video (1: a circle only; default: 2-4 at random, the first two crossing). `motion`
    "track" makes the shapes fast, leaving and re-entering (for the track task); the default sample is unchanged.
    """
    _check_arguments(frames, videos, width, height, export_every, seed)
    if objects is not None and not 1 <= objects <= len(LABELS):
        raise UserError(f"objects per video must be between 1 and {len(LABELS)} (got {objects})")
    if motion not in MOTIONS:
        raise UserError(f"motion must be one of {', '.join(MOTIONS)} (got {motion!r})")
    scenes = {role: [make_scene(width, height, frames, _rng(seed, role, k), objects, motion) for k in range(count)]
              for role, count in (("demo", videos), ("sav", 1), ("coco", 1), ("stream", 1))}
    names = _rng(seed, "names", 0)
    total = frames * (videos + 2) + len(range(0, frames, COCO_STEP))
    with atomic_output_dir(out_dir) as tmp, _progress_bar(total, progress) as tick:
        demo = [write_demo(tmp, scene, export_every, _uuid(names), _uuid(names), k, tick)
                for k, scene in enumerate(scenes["demo"])]
        sav = write_sav(tmp, scenes["sav"][0], f"sav_{seed % 1_000_000:06d}", tick)
        coco = write_coco(tmp, scenes["coco"][0], tick)
        stream = write_stream(tmp, scenes["stream"][0], tick)
        used = max(len(s.shapes) for group in scenes.values() for s in group)
        labels = {str(i): LABELS[i] for i in range(used)}
        generator = {"tool": "sam2-vlm-studio sample", "seed": seed, "frames": frames, "videos": videos,
                     "width": width, "height": height, "fps": FPS, "export_every": export_every,
                     **({"objects": objects} if objects else {}), **({"motion": motion} if motion != "cross" else {})}
        truth = {"generator": generator,
                 "labels": labels, "sam2_demo_zip": demo, "sav": sav, "coco": coco, "sam2_stream": stream}
        (tmp / "labels.json").write_text(json.dumps(labels, indent=2) + "\n", encoding="utf-8")
        (tmp / "sample_truth.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    out = Path(out_dir).expanduser().resolve()
    return SampleInfo(
        out_dir=out, demo_zips=[out / d["file"] for d in demo], demo_videos=[out / d["video"] for d in demo],
        sav_json=out / sav["file"], sav_video=out / sav["video"], coco_json=out / coco["file"],
        coco_frames=out / coco["images_dir"], stream_jsonl=out / stream["file"], stream_video=out / stream["video"],
        labels_json=out / "labels.json", truth_json=out / "sample_truth.json", truth=truth)


MAX_VIDEOS = 1024


def _check_arguments(frames: int, videos: int, width: int, height: int, every: int, seed: int) -> None:
    if not 8 <= frames <= 20_000:
        raise UserError(f"frames per video (--frames) must be between 8 and 20000 (got {frames})")
    if not 1 <= videos <= MAX_VIDEOS:
        raise UserError(f"videos (--videos) must be between 1 and {MAX_VIDEOS} (got {videos})")
    if not (32 <= width <= 1920 and 32 <= height <= 1920) or width % 2 or height % 2:
        raise UserError(f"size (--size) must be even numbers from 32 to 1920, e.g. 320x180 (got {width}x{height})")
    if not 1 <= every <= frames:
        raise UserError(f"export_every (--every) must be between 1 and the frame count {frames} (got {every})")
    if seed < 0:
        raise UserError(f"seed must be >= 0 (got {seed})")


def _rng(seed: int, role: str, k: int) -> np.random.Generator:
    return np.random.default_rng([seed, _ROLES[role], k])


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


@contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[..., Any]]:
    """Yield a tick function: a tqdm bar on stderr when asked for and the sample is large, a no-op otherwise."""
    if not enabled or total < 600:
        yield lambda n=1: None
        return
    import sys

    from tqdm import tqdm

    with tqdm(total=total, desc="sample frames", unit="frame", file=sys.stderr) as bar:
        yield bar.update


# ---------------------------------------------------------------- summary


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1024:.0f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


def _summary(info: SampleInfo) -> str:
    truth, gen = info.truth, info.truth["generator"]
    lines = [f"Sample written to {info.out_dir}",
             f"  {gen['videos'] + 2} videos of {gen['frames']} frames, {gen['width']}x{gen['height']} at {FPS} fps, "
             f"seed {gen['seed']}", "", "  SAM 2 demo export (ZIP + its source video; pass --labels labels.json):"]
    demo = truth["sam2_demo_zip"]
    for session, zip_path, video in list(zip(demo, info.demo_zips, info.demo_videos, strict=True))[:4]:
        empty = sum(not f["objects"] for f in session["frames"])
        lines += [f"    {zip_path.name} ({_size(zip_path)}, {len(session['frames'])} frames, {empty} without objects)",
                  f"      + {video.name} ({_size(video)})"]
    if len(demo) > 4:
        lines.append(f"    ... {len(demo) - 4} more sessions")
    sav, coco, stream = truth["sav"], truth["coco"], truth["sam2_stream"]
    kinds = {k: sum(o["segmentation"] == k for f in coco["frames"] for o in f["objects"]) for k in SEG_KINDS}
    lines += ["  SA-V:", f"    {info.sav_json.name} ({len(sav['frames'])} annotated frames, "
                         f"{len(sav['masklet_id'])} masklets) + {info.sav_video.name} ({_size(info.sav_video)})",
              "  COCO instances:", f"    {info.coco_json.name} + {info.coco_frames.name}/ ({len(coco['frames'])} "
                                   f"JPEGs; " + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")",
              "  SAM 2 demo stream:", f"    {info.stream_jsonl.name} ({len(stream['order'])} frames, forward from "
                                      f"{stream['click_frame']} then backward) + {info.stream_video.name}",
              f"  labels: {info.labels_json.name} {json.dumps(truth['labels'])}",
              f"  truth:  {info.truth_json.name} (exact boxes and areas per format, for tests)"]
    return "\n".join(lines)
