"""Builders of hostile inputs for the reliability suite: ZIP archives, JSON, RLE, images and videos, each written
into a case folder from one real generated SAM 2 session (pipeline.sample), so everything but the defect is valid.

The ZIP checks themselves are unit-tested in tests/test_safezip.py; here each hostile file goes end to end through
`python -m pipeline convert/validate` and through the app.
"""

from __future__ import annotations

import io
import json
import stat
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVIL = b"owned\n"


@dataclass
class Sample:
    """The generated session this suite derives every input from."""

    root: Path
    demo_zip: Path
    demo_video: Path
    stream_jsonl: Path
    stream_video: Path
    coco_json: Path
    coco_frames: Path
    truth: dict[str, Any]

    def demo_members(self) -> list[tuple[str, bytes]]:
        """(name, bytes) of the demo export ZIP, in archive order."""
        with zipfile.ZipFile(self.demo_zip) as archive:
            return [(name, archive.read(name)) for name in archive.namelist()]

    def demo_annotations(self) -> dict[str, Any]:
        return json.loads(dict(self.demo_members())["annotations.json"])

    def stream_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream_jsonl.read_text().splitlines() if line.strip()]

    def coco(self) -> dict[str, Any]:
        return json.loads(self.coco_json.read_text())


def make_sample(root: Path) -> Sample:
    """A small session (24 frames, 64x48) in every format; a couple of seconds of CPU."""
    from pipeline.sample import generate_sample

    info = generate_sample(root, frames=24, width=64, height=48, export_every=5, seed=3)
    return Sample(root=info.out_dir, demo_zip=info.demo_zips[0], demo_video=info.demo_videos[0],
                  stream_jsonl=info.stream_jsonl, stream_video=info.stream_video, coco_json=info.coco_json,
                  coco_frames=info.coco_frames, truth=info.truth)


# -- ZIP writers ------------------------------------------------------------------------------------------------------
def zip_bytes(entries: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A ZIP written by zipfile (its duplicate-name warning silenced: duplicates are a case)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w", method) as archive:
            for name, data in entries:
                archive.writestr(name, data)
    return buf.getvalue()


def _local(name: bytes, data: bytes, flags: int = 0) -> bytes:
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, 0, 0, 0x21, zlib.crc32(data), len(data), len(data),
                       len(name), 0) + name


def _central(name: bytes, data: bytes, offset: int, flags: int = 0) -> bytes:
    return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, flags, 0, 0, 0x21, zlib.crc32(data), len(data),
                       len(data), len(name), 0, 0, 0, 0, 0o100644 << 16, offset) + name


def _eocd(count: int, directory: bytes, offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)


def raw_zip(entries: list[tuple[bytes, bytes]], flags: int = 0) -> bytes:
    """A stored ZIP assembled by hand (for names zipfile cannot write), every entry with `flags`."""
    body, directory = b"", b""
    for name, data in entries:
        directory += _central(name, data, len(body), flags)
        body += _local(name, data, flags) + data
    return body + directory + _eocd(len(entries), directory, len(body))


def overlap_zip(inner_name: bytes, inner: bytes) -> bytes:
    """Overlapping entries: member b's local header and data sit inside member a's stored data."""
    nested = _local(inner_name, inner) + inner
    outer = b"annotations.json"
    head = _local(outer, nested)
    body = head + nested
    directory = _central(outer, nested, 0) + _central(inner_name, inner, len(head))
    return body + directory + _eocd(2, directory, len(body))


def patch_sizes(data: bytes, declared: int) -> bytes:
    """Make every local and central header declare `declared` uncompressed bytes (a header that lies)."""
    out = bytearray(data)
    for signature, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        pos = out.find(signature)
        while pos >= 0:
            struct.pack_into("<L", out, pos + at, declared)
            pos = out.find(signature, pos + 4)
    return bytes(out)


def set_flag(data: bytes, bit: int) -> bytes:
    """Set a general-purpose flag bit in every local and central header."""
    out = bytearray(data)
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(signature)
        while pos >= 0:
            old = struct.unpack_from("<H", out, pos + at)[0]
            struct.pack_into("<H", out, pos + at, old | bit)
            pos = out.find(signature, pos + 4)
    return bytes(out)


def corrupt_member(data: bytes, name: str) -> bytes:
    """Flip bytes in the middle of one member's compressed data (headers left intact)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    out = bytearray(data)
    for k in range(start + info.compress_size // 3, start + info.compress_size // 3 + 16):
        out[k] ^= 0x5A
    return bytes(out)


def symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


# -- images and videos ------------------------------------------------------------------------------------------------
def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny IDAT (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">L", len(body)) + kind + body + struct.pack(">L", zlib.crc32(kind + body))

    ihdr = struct.pack(">2L5B", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buf, fmt)
    return buf.getvalue()


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48"><rect width="64" height="48"/></svg>'
