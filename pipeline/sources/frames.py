"""Where clean frames come from: a video file (decoded in index order) or a folder of numbered images."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import UserError
from ..records import ObjectAnn
from .common import IMAGE_SUFFIXES, Source, SourceFrame

Build = Callable[[int, tuple[int, int]], list[ObjectAnn]]


class VideoFrames:
    """Frames of a video file, decoded once, in order (never all in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._info = None
        self.reasons: dict[int, str] = {}

    @property
    def info(self):
        """pipeline.video.VideoInfo (fps, frame_count, width, height); raises UserError when it does not decode."""
        if self._info is None:
            from ..video import probe_video

            self._info = probe_video(self.path)
        return self._info

    def iter(self, indices: list[int]) -> Iterator[tuple[int, object, Path | None]]:
        """Yield (index, RGB image, None) for the wanted indices that the video has."""
        from ..video import iter_video_frames

        done = -1
        try:
            for index, image in iter_video_frames(self.path, indices):
                done = index
                yield index, image, None
        except UserError as exc:
            for index in indices:
                if index > done:
                    self.reasons[index] = f"{exc}"
            return
        for index in indices:
            if index > done:
                self.reasons[index] = f"frame {index} is beyond the end of the video {self.path.name} " \
                                      f"({done + 1} frames decoded)"

    def reason(self, index: int) -> str:
        return self.reasons.get(index, f"frame {index} not found in {self.path.name}")


def numbered_images(folder: Path) -> dict[int, Path]:
    """Image files of a folder keyed by the last number in their name (00012.jpg, frame_000012.png -> 12)."""
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        numbers = re.findall(r"\d+", path.stem)
        if numbers:
            found.setdefault(int(numbers[-1]), path)
    return found


class ImageFrames:
    """Frames stored as image files keyed by frame index (JPEG frame folders, overlay PNGs, COCO images)."""

    def __init__(self, files: dict[int, Path], where: str) -> None:
        self.files = files
        self.where = where
        self.reasons: dict[int, str] = {}

    @classmethod
    def from_folder(cls, folder: Path) -> ImageFrames:
        """Numbered images of a folder; UserError when there is none."""
        files = numbered_images(folder) if folder.is_dir() else {}
        if not files:
            raise UserError("folder has no numbered image files (00000.jpg, ...)", folder)
        return cls(files, str(folder))

    def iter(self, indices: list[int]) -> Iterator[tuple[int, object, Path | None]]:
        """Yield (index, lazily opened image, path) for the wanted indices that have a readable file."""
        from PIL import Image

        for index in sorted(indices):
            path = self.files.get(index)
            if path is None or not path.is_file():
                shown = f"{path}" if path is not None else f"in {self.where}"
                self.reasons[index] = f"frame {index}: image file not found ({shown})"
                continue
            try:
                image = Image.open(path)
                image.size  # noqa: B018 - header parsed: unreadable files fail here
            except OSError as exc:
                self.reasons[index] = f"frame {index}: {path} is not a readable image ({exc.__class__.__name__})"
                continue
            yield index, image, path

    def reason(self, index: int) -> str:
        return self.reasons.get(index, f"frame {index} not found in {self.where}")


def read_frames(source: Source, provider: VideoFrames | ImageFrames, video_id: str, indices: list[int],
                build: Build) -> Iterator[SourceFrame]:
    """Pair each available frame with its objects (built at the frame's size); log frames that are missing."""
    seen: set[int] = set()
    for index, image, path in provider.iter(indices):
        seen.add(index)
        width, height = image.size
        yield SourceFrame(video_id, index, width, height, image, build(index, (height, width)), path)
    for index in indices:
        if index not in seen:
            source.issue("missing_frame", "error", f"{provider.reason(index)}; frame skipped",
                         video_id=video_id, frame_index=index)


def open_frames(path: Path) -> VideoFrames | ImageFrames:
    """A video file or a folder of numbered frames."""
    return ImageFrames.from_folder(path) if Path(path).is_dir() else VideoFrames(path)
