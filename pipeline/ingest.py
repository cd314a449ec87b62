"""convert(): SAM 2 exports -> records.jsonl + clean frames + dataset.json + training formats, streamed and atomic."""

from __future__ import annotations

import json
import shutil
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import atomic_output_dir
from .dataset import records_path, write_meta
from .errors import UserError
from .records import FrameRecord, read_records
from .registry import QWEN_MAX_PIXELS
from .sources import DetectResult, IssueLog, ReadOptions, Source, SourceFrame, detect_format, open_source
from .sources.labels import load_labels

JPEG_QUALITY = 95


@dataclass
class ConvertSummary:
    """What a conversion wrote: counts, labels, videos, files (relative to `out`), issue count and warnings."""

    out: Path
    frames: int = 0
    objects: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    videos: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    issues: int = 0
    warnings: list[str] = field(default_factory=list)
    fragments: int | None = None  # --drop-fragments: masks corrected

    def text(self) -> str:
        """The one-screen summary the CLI prints."""
        lines = [f"Dataset written to {self.out}",
                 f"  {self.frames} frames from {len(self.videos)} video(s), {self.objects} objects"]
        lines += [f"    {label}: {count}" for label, count in sorted(self.labels.items(), key=lambda kv: -kv[1])[:20]]
        if len(self.labels) > 20:
            lines.append(f"    ... {len(self.labels) - 20} more labels")
        lines.append("  files: " + ", ".join(self.files))
        if self.fragments is not None:
            lines.append(f"  --drop-fragments: {self.fragments} mask(s) lost detached specks (dataset.json "
                         "\"mask_fragments\")")
        if self.issues:
            lines.append(f"  {self.issues} data issue(s) recorded in dataset.json (see `python -m pipeline validate`)")
        lines += [f"  warning: {w}" for w in self.warnings[:8]]
        return "\n".join(lines)


def detect(path: str | Path) -> DetectResult:
    """The format of one input (for the app's upload preview); UserError when nothing matches."""
    return detect_format(path)


def select_frames(indices: Sequence[int], every: int = 1, max_frames: int | None = None) -> list[int]:
    """Every Nth annotated frame, then at most `max_frames` of them."""
    chosen = list(indices)[::every]
    return chosen[:max_frames] if max_frames is not None else chosen


def convert(inputs: str | Path | Sequence[str | Path], out: str | Path, *,
            video: str | Path | Sequence[str | Path] | None = None, images: str | Path | None = None,
            labels: str | Path | dict[int, str] | None = None,
            convention: str = "json", tasks: Sequence[str] = ("grounding",), every: int = 1,
            max_frames: int | None = None, allow_overlay_frames: bool = False, include_auto: bool = False,
            seed: int = 0, progress: bool = False, overwrite: bool = False, family: str | None = None,
            drop_fragments: bool = False, keep_share: float | None = None, clip_frames: int = 4,
            clip_stride: int | None = None) -> ConvertSummary:
    """Convert one or more exports into one dataset folder `out` (nothing is left behind on error)."""
    paths = [Path(p) for p in ([inputs] if isinstance(inputs, str | Path) else inputs)]
    _check_arguments(paths, every, max_frames, convention, tasks)
    clips, fragments = check_video_options(tasks, family or convention, clip_frames, clip_stride, drop_fragments,
                                           keep_share)
    options = ReadOptions(videos=tuple(Path(v) for v in _as_list(video)), images=Path(images) if images else None,
                          labels=labels if isinstance(labels, dict) else load_labels(labels) if labels else None,
                          allow_overlay_frames=allow_overlay_frames, include_auto=include_auto,
                          single_input=len(paths) == 1)
    for path in [*options.videos, *([options.images] if options.images else [])]:
        if not path.exists():
            raise UserError("no such file or folder", path)
    _check_out(Path(out), [*paths, *options.videos, *([options.images] if options.images else [])], overwrite)
    log = IssueLog()
    with ExitStack() as stack:
        sources = [stack.enter_context(open_source(path, options, log)) for path in paths]
        used = {src.video for src in sources}
        log.warnings += [f"--video {v} matched no input (name it like the video the export refers to)"
                         for v in options.videos if v not in used]
        with atomic_output_dir(out, overwrite=overwrite) as tmp:
            writer = _Writer(tmp, log, progress, fragments)
            writer.clips = clips
            writer.run(sources, every, max_frames)
            summary = writer.finish(sources, Path(out).expanduser().resolve(), convention, list(tasks), seed,
                                    family or convention)
    return summary


def check_video_options(tasks: Sequence[str], family: str, clip_frames: int = 4, clip_stride: int | None = None,
                        drop_fragments: bool = False, keep_share: float | None = None) -> tuple[Any, float | None]:
    """(ClipOptions, --keep-share or None) of a conversion; UserError for a bad value, or for video tasks written
    for a family that takes one image per example (the app checks this before it queues a job)."""
    from .clips import check_clip_options, check_family_takes_clips

    fragments = _fragment_share(drop_fragments, keep_share)
    clips = check_clip_options(clip_frames, clip_stride)
    check_family_takes_clips(tasks, family, clips.frames)
    return clips, fragments


def _fragment_share(drop: bool, keep_share: float | None) -> float | None:
    """The --keep-share of --drop-fragments (None: masks are kept as they are)."""
    if keep_share is not None and not drop:
        raise UserError("--keep-share only applies with --drop-fragments")
    if not drop:
        return None
    from .fragments import DEFAULT_KEEP_SHARE

    share = DEFAULT_KEEP_SHARE if keep_share is None else keep_share
    if not 0 < share < 1:
        raise UserError(f"--keep-share must be between 0 and 1 (got {share})")
    return float(share)


def _check_out(out: Path, reads: list[Path], overwrite: bool) -> None:
    """Fail fast on an existing OUT, and never let --overwrite replace a folder holding an input."""
    out = out.expanduser().resolve()
    if not out.exists():
        return
    if not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise UserError("output folder already exists and is not empty (choose another --out)", out)
    for path in reads:
        if path.expanduser().resolve().is_relative_to(out):
            raise UserError(f"output folder holds the input {path}: choose another --out", out)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return [value] if isinstance(value, str | Path) else list(value)


def _check_arguments(inputs: list[Path], every: int, max_frames: int | None, convention: str,
                     tasks: Sequence[str]) -> None:
    if not inputs:
        raise UserError("give at least one input (a SAM 2 export ZIP, JSON, JSONL or folder)")
    if not isinstance(every, int) or every < 1:
        raise UserError(f"--every must be a positive integer (got {every})")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise UserError(f"--max-frames must be a positive integer (got {max_frames})")
    from .coords import CONVENTIONS
    from .tasks import TASKS

    if convention not in CONVENTIONS:
        raise UserError(f"unknown coordinate convention {convention!r} (choose from {', '.join(CONVENTIONS)})")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UserError(f"unknown task(s) {unknown or tasks!r} (choose from {', '.join(TASKS)})")


class _Writer:
    """Streams frames of every source to images/ and records.jsonl, counting as it goes."""

    def __init__(self, out: Path, log: IssueLog, progress: bool, keep_share: float | None = None) -> None:
        self.out, self.log, self.progress = out, log, progress
        self.keep_share = keep_share  # --drop-fragments: pieces below this share of a mask's area are removed
        self.fragments: list[dict[str, Any]] = []
        self.clips: Any = None  # ClipOptions of the video tasks (track, visibility, count_unique)
        self.labels: Counter[str] = Counter()
        self.frames = self.objects = 0
        self.videos: dict[str, dict[str, Any]] = {}
        self.per_source: dict[int, Counter[str]] = {}

    def run(self, sources: list[Source], every: int, max_frames: int | None) -> None:
        """Write every chosen frame of every source, then check that each source gave something usable."""
        from tqdm import tqdm

        plans = [(n, src, vid, select_frames(idx, every, max_frames))
                 for n, src in enumerate(sources) for vid, idx in src.plan().items()]
        total = sum(len(chosen) for *_, chosen in plans)
        with open(records_path(self.out), "w", encoding="utf-8") as handle, \
                tqdm(total=total, disable=not self.progress, file=sys.stderr, unit="frame", desc="convert",
                     leave=False) as bar:
            for n, src, vid, chosen in plans:
                out_id = self._video_id(vid, src)
                counts = self.per_source.setdefault(n, Counter())
                start = len(self.log.issues)
                for frame in src.frames(vid, chosen):
                    if self._write(handle, src, out_id, frame):
                        counts.update(frames=1, objects=len(frame.objects))
                    bar.update(1)
                for issue in self.log.issues[start:]:  # issues name the video as the dataset does (renamed ids)
                    if issue["video_id"] == vid:
                        issue["video_id"] = out_id
        for n, src in enumerate(sources):
            src.finish()
            self._check_usable(src, self.per_source.get(n, Counter()))

    def _video_id(self, video_id: str, src: Source) -> str:
        out_id, k = video_id, 1
        while out_id in self.videos:
            k += 1
            out_id = f"{video_id}-{k}"
        if out_id != video_id:
            self.log.warnings.append(f"{src.path.name}: video id {video_id!r} already used; renamed {out_id!r}")
        self.videos[out_id] = {"video_id": out_id, "source": str(src.path), "format": src.format,
                               **src.video_meta(video_id), "frames": 0}
        return out_id

    def _write(self, handle: Any, src: Source, video_id: str, frame: SourceFrame) -> bool:
        rel = f"images/{video_id}/{frame.frame_index:06d}.jpg"
        target = self.out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        problem = _save_jpeg(frame, target)
        if problem:
            src.issue("missing_frame", "error", f"{problem}; frame skipped", video_id=video_id,
                      frame_index=frame.frame_index)
            return False
        if self.keep_share is not None:
            from .fragments import drop_fragments

            self.fragments += [{"video_id": video_id, "frame_index": frame.frame_index, **change}
                               for change in drop_fragments(frame.objects, self.keep_share)]
        record = FrameRecord(id=f"{video_id}:{frame.frame_index:06d}", source=src.format, video_id=video_id,
                             frame_index=frame.frame_index, image=rel, width=frame.width, height=frame.height,
                             objects=frame.objects)
        handle.write(json.dumps(record.to_dict(), separators=(",", ":")) + "\n")
        self.frames += 1
        self.objects += len(frame.objects)
        self.labels.update(obj.label for obj in frame.objects)
        self.videos[video_id]["frames"] += 1
        return True

    def _check_usable(self, src: Source, counts: Counter[str]) -> None:
        """An input giving no frame, or only errors and no object, is unusable as a whole."""
        if counts["frames"] == 0:
            raise UserError(f"no usable frame: {self._first_error(src) or 'it lists no annotated frame'}", src.path)
        if counts["objects"] == 0 and self._first_error(src):
            raise UserError(f"no usable annotation: {self._first_error(src)}", src.path)

    def _first_error(self, src: Source) -> str | None:
        """The first error issue of a source, shortened for a one-line message."""
        first = self.log.first(str(src.path))
        if first is None:
            return None
        text = first["message"].removesuffix("; object skipped").removesuffix("; frame skipped")
        if first["frame_index"] is not None and not text.startswith("frame"):
            text = f"frame {first['frame_index']}, {text}"
        more = self.log.count(str(src.path), "error") - 1
        return text + (f" (and {more} more errors)" if more else "")

    def finish(self, sources: list[Source], out: Path, convention: str, tasks: list[str], seed: int,
               family: str) -> ConvertSummary:
        if self.objects == 0:
            raise UserError("no visible object in any selected frame: nothing to train on (check --every / "
                            "--max-frames and the data issues)", sources[0].path)
        self._training_formats(convention, tasks, seed)
        warnings = list(self.log.warnings)
        meta = {"tool_version": __version__, "sources": [src.info() for src in sources], "frames": self.frames,
                "objects": self.objects, "labels": dict(sorted(self.labels.items())), "family": family,
                "convention": convention, "tasks": tasks, "seed": seed, "max_pixels": QWEN_MAX_PIXELS,
                "videos": list(self.videos.values()), "warnings": warnings, "issues": self.log.issues}
        from .clips import uses_clips

        if uses_clips(tasks) and self.clips is not None:
            meta["clips"] = self.clips.to_dict()
        if self.keep_share is not None:
            from .fragments import correction_summary

            meta["mask_fragments"] = correction_summary(self.fragments, self.keep_share)
        write_meta(self.out, meta)
        files = sorted(p.name + ("/" if p.is_dir() else "") for p in self.out.iterdir())
        return ConvertSummary(out=out, frames=self.frames, objects=self.objects, labels=dict(self.labels),
                              videos=list(self.videos), files=files, issues=len(self.log.issues), warnings=warnings,
                              fragments=len(self.fragments) if self.keep_share is not None else None)

    def _training_formats(self, convention: str, tasks: list[str], seed: int) -> None:
        from .formats import write_training_formats

        records: list[FrameRecord] = read_records(records_path(self.out))
        with _datasets_bars(self.progress):
            fps = {vid: float(v["fps"]) for vid, v in self.videos.items() if v.get("fps")}
            write_training_formats(self.out, {"all": records}, convention=convention, tasks=tasks, seed=seed,
                                   max_pixels=QWEN_MAX_PIXELS, clips=self.clips, fps=fps)


@contextmanager
def _datasets_bars(enabled: bool) -> Iterator[None]:
    """Silence the `datasets` progress bars unless the caller asked for progress."""
    from datasets.utils import logging as ds_logging

    was = ds_logging.is_progress_bar_enabled()
    if not enabled:
        ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            ds_logging.enable_progress_bar()


def _save_jpeg(frame: SourceFrame, target: Path) -> str | None:
    """Copy an RGB JPEG file as it is (no second compression), else encode at quality 95; the problem, if any."""
    image = frame.image
    try:
        try:
            image.load()  # a truncated file fails here, not in a training run
        except OSError as exc:
            return f"frame {frame.frame_index}: {frame.image_path or 'image'} does not decode " \
                   f"({exc.__class__.__name__})"
        if frame.image_path is not None and image.format == "JPEG" and image.mode == "RGB":
            shutil.copyfile(frame.image_path, target)
        else:
            (image if image.mode == "RGB" else image.convert("RGB")).save(target, "JPEG", quality=JPEG_QUALITY)
        return None
    finally:
        if frame.image_path is not None:
            image.close()
