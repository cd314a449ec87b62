"""Video decoding, probing and writing with PyAV."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError


@dataclass
class VideoInfo:
    fps: float
    frame_count: int
    width: int
    height: int


NO_VIDEO_STREAM = "video does not decode (the file has no video stream)"


def _open(path: str | Path):
    import av

    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise UserError(f"video does not decode ({exc.__class__.__name__})", path) from None


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, frame count and size of a video (frames counted by decoding when the header lacks them)."""
    with _open(path) as container:
        if not container.streams.video:
            raise UserError(NO_VIDEO_STREAM, path)
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 0.0
        count = int(stream.frames or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        if count <= 0:
            count = sum(1 for _ in container.decode(stream))
    if fps <= 0 or width <= 0:
        raise UserError("video does not decode (no usable frame rate or size)", path)
    return VideoInfo(fps=fps, frame_count=count, width=width, height=height)


def iter_video_frames(path: str | Path, indices: Iterable[int] | None = None) -> Iterator[tuple[int, Image.Image]]:
    """Yield (frame_index, RGB image) for the wanted decoded-frame indices (all when None), streaming."""
    import av

    wanted = None if indices is None else set(int(i) for i in indices)
    last = None if wanted is None else (max(wanted) if wanted else -1)
    with _open(path) as container:
        if not container.streams.video:
            raise UserError(NO_VIDEO_STREAM, path)
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                if last is not None and index > last:
                    break
                if wanted is None or index in wanted:
                    yield index, frame.to_image()
        except av.error.FFmpegError as exc:
            raise UserError(f"video stopped decoding at frame {index} ({exc.__class__.__name__})", path) from None


def write_video(frames: Iterable[np.ndarray], path: str | Path, fps: int = 24) -> None:
    """Encode RGB uint8 frames (HxWx3, even sizes) as an H.264 mp4 (mpeg4 when libx264 is missing)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = None
        for array in frames:
            if stream is None:
                stream = _add_stream(container, fps, array.shape[1], array.shape[0])
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)


def _add_stream(container, fps: int, width: int, height: int):
    import av

    try:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.options = {"crf": "18", "preset": "veryfast"}
    except (av.error.FFmpegError, ValueError):
        stream = container.add_stream("mpeg4", rate=Fraction(fps))
        stream.bit_rate = 4_000_000
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    return stream
