"""Where clean frames come from: a video file (decoded in index order) or a folder of numbered images."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..records import ObjectAnn
from .common import IMAGE_SUFFIXES, Source, SourceFrame

if TYPE_CHECKING:
    from PIL import Image

    from ..video import VideoInfo

Build = Callable[[int, tuple[int, int]], list[ObjectAnn]]
FRAME_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP"}  # image files a frame folder may hold (decoded by Pillow)


class VideoFrames:
    """Frames of a video file, decoded once, in order (never all in memory)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._info: VideoInfo | None = None
        self.reasons: dict[int, str] = {}

    @property
    def info(self) -> VideoInfo:
        """pipeline.video.VideoInfo (fps, frame_count, width, height); raises UserError when it does not decode."""
        if self._info is None:
            from ..video import probe_video

            self._info = probe_video(self.path)
        return self._info

    def iter(self, indices: list[int]) -> Iterator[tuple[int, Image.Image, Path | None]]:
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

    def __init__(self, files: Mapping[int, Path | None], where: str) -> None:
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

    def iter(self, indices: list[int]) -> Iterator[tuple[int, Image.Image, Path | None]]:
        """Yield (index, lazily opened image, path) for the wanted indices that have a readable file."""
        for index in sorted(indices):
            path = self.files.get(index)
            if path is None:
                self.reasons[index] = f"frame {index}: image path leads outside {self.where} (or is not listed)"
                continue
            if not path.is_file():
                self.reasons[index] = f"frame {index}: image file not found ({path})"
                continue
            image, problem = open_frame(path)
            if problem:
                self.reasons[index] = f"frame {index}: {problem}"
                continue
            yield index, image, path

    def reason(self, index: int) -> str:
        return self.reasons.get(index, f"frame {index} not found in {self.where}")


def open_frame(path: Path) -> tuple[Any, str | None]:
    """(lazily opened image, None), or (None, why not): unreadable, over the pixel cap, or not an accepted format."""
    import warnings

    from PIL import Image

    from ..safezip import DEFAULT_LIMITS

    cap = DEFAULT_LIMITS.max_image_pixels  # the same cap as images inside ZIP archives
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below decides
            image = Image.open(path)
    except Image.DecompressionBombError:
        return None, f"{path} is over the pixel limit of {cap} (decompression bomb?)"
    except OSError as exc:
        return None, f"{path} is not a readable image ({exc.__class__.__name__})"
    width, height = image.size
    problem = None
    if width * height > cap:
        problem = f"{path} is {width}x{height}, over the pixel limit of {cap} (decompression bomb?)"
    elif image.format not in FRAME_FORMATS:
        problem = f"{path} is {image.format} data; only JPEG, PNG, WebP and BMP frames are accepted"
    if problem:
        image.close()
        return None, problem
    return image, None


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
