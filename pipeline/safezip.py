"""Bounded, traversal-proof ZIP extraction: every reader opens user archives through this module.

The central directory is parsed by `zipfile`, but member data is read and decompressed here, in bounded chunks,
so the bytes actually written are counted (headers can lie) and no member can expand past what its header
declares. Every refusal is a one-line `UserError` naming the archive (and member); nothing is left behind.
"""

from __future__ import annotations

import bz2
import errno
import os
import shutil
import stat
import struct
import tempfile
import threading
import unicodedata
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

from .errors import UserError

GiB = 1024**3
MiB = 1024**2
CHUNK = MiB
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # first local header, or an empty archive
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
IMAGE_FORMATS = {"JPEG", "MPO", "PNG", "WEBP"}  # MPO: the JPEG variant many phones write
UNSUPPORTED_IMAGE_SUFFIXES = {
    ".svg", ".svgz", ".tif", ".tiff", ".gif", ".bmp", ".heic", ".heif", ".avif", ".ico", ".jp2", ".j2k",
    ".jxl", ".psd", ".tga", ".pcx", ".ppm", ".pgm", ".pbm", ".pnm", ".exr", ".dds",
}  # fmt: skip
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # 30 bytes: signature ... name length, extra length
_PIL_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is process-global


@dataclass(frozen=True)
class ZipLimits:
    """Caps applied to one archive; the defaults suit real SAM 2 exports with room to spare."""

    max_entries: int = 10_000  # entries in the central directory, ignored ones included
    max_entry_bytes: int = 2 * GiB  # uncompressed bytes of one member
    max_total_bytes: int = 8 * GiB  # uncompressed bytes of all extracted members
    max_ratio: float = 200.0  # uncompressed / compressed size of one member ...
    ratio_min_bytes: int = MiB  # ... checked only once a member exceeds this size (tiny files compress wildly)
    max_image_pixels: int = 80_000_000  # width x height of one JPEG/PNG/WebP member

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value < 0 or (value == 0 and item.name != "ratio_min_bytes"):
                raise UserError(f"ZipLimits.{item.name} must be positive, got {value}")


DEFAULT_LIMITS = ZipLimits()


@dataclass
class _Member:
    info: zipfile.ZipInfo
    name: str
    parts: tuple[str, ...]
    is_dir: bool
    start: int = 0  # offset of the local header
    data: int = 0  # offset of the compressed data
    end: int = 0  # end of the compressed data


class _CorruptData(Exception):
    pass


def is_zip_file(path: str | Path) -> bool:
    """True when the file starts with ZIP magic bytes (the name is not looked at)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in ZIP_MAGICS
    except OSError:
        return False


def extract_zip(path: str | Path, dest_dir: str | Path, limits: ZipLimits = DEFAULT_LIMITS) -> list[Path]:
    """Extract the archive into the existing empty folder `dest_dir`; return the extracted files in archive order."""
    archive, dest = Path(path), Path(dest_dir)
    if not dest.is_dir() or any(dest.iterdir()):
        raise UserError("extraction folder must be an existing empty folder", dest)
    dest = dest.resolve()
    members: list[_Member] = []
    try:
        return _extract(archive, dest, limits, members)
    except BaseException:
        _remove_written(dest, members)
        raise


@contextmanager
def extracted_zip(
    path: str | Path, limits: ZipLimits = DEFAULT_LIMITS, tmp_dir: str | Path | None = None
) -> Iterator[Path]:
    """Extract into a fresh temporary folder (under `tmp_dir` if given) and remove it on exit or error."""
    folder = Path(tempfile.mkdtemp(prefix="safezip-", dir=tmp_dir))
    try:
        extract_zip(path, folder, limits)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _refuse(archive: Path, name: str, problem: str) -> UserError:
    return UserError(f"member {name!r}: {problem}", archive)


def _remove_written(dest: Path, members: list[_Member]) -> None:
    # The folder was empty at the start, so every top-level name of a member is ours to remove.
    for top in {m.parts[0] for m in members}:
        target = dest / top
        try:
            if stat.S_ISDIR(target.lstat().st_mode):
                shutil.rmtree(target)
            else:
                target.unlink()
        except OSError:  # never written (missing, name too long): nothing to remove; never mask the first error
            pass


def _extract(archive: Path, dest: Path, limits: ZipLimits, members: list[_Member]) -> list[Path]:
    _check_magic(archive)
    with open(archive, "rb") as raw:
        infos, start_dir = _read_directory(archive, raw, limits)
        everything = [_check_entry(archive, info, limits) for info in infos]
        _locate(archive, raw, everything, start_dir)
        members.extend(m for m in everything if not _ignored(m.parts))
        _check_collisions(archive, members)
        for m in members:
            _check_image_suffix(archive, m)
        declared = sum(m.info.file_size for m in members)
        if declared > limits.max_total_bytes:
            raise UserError(f"expands to {declared} bytes, over the total limit of {limits.max_total_bytes}", archive)
        files: list[Path] = []
        for m in members:
            target = dest.joinpath(*m.parts)
            if m.is_dir:
                _make_dirs(archive, m, target, dest)
                continue
            _write_member(archive, raw, m, target, dest)
            if target.suffix.lower() in IMAGE_SUFFIXES:
                _check_image(archive, m, target, limits)
            files.append(target)
        return files


def _check_magic(archive: Path) -> None:
    if not archive.is_file():
        raise UserError("archive not found (or not a file)", archive)
    if archive.stat().st_size == 0:
        raise UserError("is empty (0 bytes), not a ZIP archive", archive)
    if not is_zip_file(archive):
        raise UserError("not a ZIP archive (its first bytes are not the ZIP signature 'PK')", archive)


def _declared_entries(raw: BinaryIO) -> int:
    """Entry count from the end-of-central-directory record (zip64 aware); -1 when not found."""
    size = raw.seek(0, os.SEEK_END)
    raw.seek(max(0, size - 22 - 65535))
    tail = raw.read()
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return -1
    count = struct.unpack_from("<H", tail, pos + 10)[0]
    if count == 0xFFFF and pos >= 20 and tail[pos - 20 : pos - 16] == b"PK\x06\x07":
        raw.seek(struct.unpack_from("<Q", tail, pos - 12)[0])
        record = raw.read(40)
        if len(record) == 40 and record[:4] == b"PK\x06\x06":
            count = struct.unpack_from("<Q", record, 32)[0]
    return count


def _read_directory(archive: Path, raw: BinaryIO, limits: ZipLimits) -> tuple[list[zipfile.ZipInfo], int]:
    too_many = "has {} entries, over the limit of {}"
    declared = _declared_entries(raw)  # checked before zipfile builds one object per entry
    if declared > limits.max_entries:
        raise UserError(too_many.format(declared, limits.max_entries), archive)
    try:
        with zipfile.ZipFile(raw) as zf:
            infos, start_dir = zf.infolist(), zf.start_dir
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error) as exc:
        raise UserError(f"truncated or corrupt ZIP archive ({exc})", archive) from None
    if len(infos) > limits.max_entries:
        raise UserError(too_many.format(len(infos), limits.max_entries), archive)
    return infos, start_dir


def _name_problem(name: str) -> str | None:
    """Why a member name is unsafe, or None."""
    body = name[:-1] if name.endswith("/") else name
    parts = body.split("/")
    checks = [
        (not body, "empty name"),
        ("\x00" in name, "NUL byte in name"),
        (any(ord(c) < 32 or ord(c) == 127 for c in name), "control character in name"),
        ("\\" in name, "backslash in name (Windows path separator)"),
        (name.startswith("/"), "absolute path"),
        (len(name) > 1 and name[1] == ":" and name[0].isascii() and name[0].isalpha(), "drive letter in name"),
        (".." in parts, "'..' in path (path traversal)"),
        ("." in parts, "'.' component in path"),
        ("" in parts, "empty path component ('//')"),
    ]
    return next((problem for bad, problem in checks if bad), None)


def _size_problem(size: int, compressed: int, limits: ZipLimits) -> str | None:
    """Why `size` uncompressed bytes from `compressed` bytes break the per-member caps, or None."""
    if size > limits.max_entry_bytes:
        return f"expands to more than {limits.max_entry_bytes} bytes (per-file limit)"
    if size > max(limits.ratio_min_bytes, limits.max_ratio * compressed):
        ratio = size / max(compressed, 1)
        return f"compression ratio {ratio:.0f}:1 is over the limit of {limits.max_ratio:g}:1 (zip bomb?)"
    return None


def _entry_problem(info: zipfile.ZipInfo, limits: ZipLimits) -> str | None:
    """Why an entry must not be extracted (name, type, encryption, method, declared sizes), or None."""
    name_problem = _name_problem(info.orig_filename)  # `filename` has already been cut at a NUL byte
    if name_problem:
        return name_problem
    kind = stat.S_IFMT(info.external_attr >> 16)  # Unix mode bits; 0 when written on Windows
    if kind == stat.S_IFLNK:
        return "is a symbolic link (only regular files and folders are extracted)"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "is a special file (device, FIFO or socket)"
    if info.flag_bits & 0x1:
        return "is encrypted (password-protected archives are not supported)"
    if info.flag_bits & 0x20 or info.compress_type not in _DECOMPRESSORS:
        return f"uses unsupported compression method {info.compress_type} (use stored, deflate or bzip2)"
    return _size_problem(info.file_size, info.compress_size, limits)


def _check_entry(archive: Path, info: zipfile.ZipInfo, limits: ZipLimits) -> _Member:
    name = info.orig_filename
    problem = _entry_problem(info, limits)
    if problem:
        raise _refuse(archive, name, problem)
    return _Member(info, name, tuple(name.rstrip("/").split("/")), name.endswith("/"))


def _check_image_suffix(archive: Path, m: _Member) -> None:
    suffix = Path(m.parts[-1]).suffix
    if not m.is_dir and suffix.lower() in UNSUPPORTED_IMAGE_SUFFIXES:
        raise _refuse(archive, m.name, f"unsupported image format '{suffix}' (only JPEG, PNG and WebP are accepted)")


def _ignored(parts: tuple[str, ...]) -> bool:
    """macOS resource forks and dot files/folders are not extracted."""
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _locate(archive: Path, raw: BinaryIO, members: list[_Member], start_dir: int) -> None:
    """Find each member's data from its local header and refuse overlapping or out-of-bounds ranges."""
    for m in members:
        raw.seek(m.info.header_offset)
        header = raw.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise _refuse(archive, m.name, "bad local header (truncated or corrupt archive)")
        fields = _LOCAL_HEADER.unpack(header)
        flags, name_len, extra_len = fields[3], fields[10], fields[11]
        raw_name = raw.read(name_len)
        local_name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        if local_name != m.name:
            raise _refuse(archive, m.name, f"local header names it {local_name!r} (corrupt or crafted archive)")
        m.start, m.data = m.info.header_offset, m.info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
        m.end = m.data + m.info.compress_size
        if m.end > start_dir:
            raise _refuse(archive, m.name, "data runs into the central directory (truncated or corrupt archive)")
    previous: _Member | None = None
    for m in sorted(members, key=lambda m: (m.start, m.end)):
        if previous is not None and m.start < previous.end:
            raise _refuse(archive, m.name, f"overlaps the data of member {previous.name!r} (overlapping zip bomb?)")
        previous = m


def _collision_key(text: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", text).casefold())


def _check_collisions(archive: Path, members: list[_Member]) -> None:
    """Refuse names equal after case folding and NFC, and a path used both as a file and as a folder."""
    seen: dict[str, str] = {}
    folders: set[str] = set()
    for m in members:
        key = _collision_key("/".join(m.parts))
        if key in seen:
            raise _refuse(archive, m.name, f"duplicates member {seen[key]!r} (ignoring case and Unicode form)")
        seen[key] = m.name
        folders.update(_collision_key("/".join(m.parts[:i])) for i in range(1, len(m.parts)))
    for m in members:
        if not m.is_dir and _collision_key("/".join(m.parts)) in folders:
            raise _refuse(archive, m.name, "is both a file and a folder in this archive")


def _stored(read: Iterator[bytes]) -> Iterator[bytes]:
    yield from read


def _deflated(read: Iterator[bytes]) -> Iterator[bytes]:
    inflater = zlib.decompressobj(-15)
    while not inflater.eof:
        data = inflater.unconsumed_tail or next(read, b"")
        out = inflater.decompress(data, CHUNK)
        if not out and not data:
            raise _CorruptData("deflate stream ends early")
        if out:
            yield out


def _bzip2(read: Iterator[bytes]) -> Iterator[bytes]:
    unpacker = bz2.BZ2Decompressor()
    while not unpacker.eof:
        data = next(read, b"") if unpacker.needs_input else b""
        out = unpacker.decompress(data, CHUNK)
        if not out and not data and unpacker.needs_input:
            raise _CorruptData("bzip2 stream ends early")
        if out:
            yield out


_DECOMPRESSORS = {zipfile.ZIP_STORED: _stored, zipfile.ZIP_DEFLATED: _deflated, zipfile.ZIP_BZIP2: _bzip2}


def _raw_chunks(raw: BinaryIO, m: _Member) -> Iterator[bytes]:
    """The member's compressed bytes, in chunks (never past its compressed size)."""
    raw.seek(m.data)
    left = m.info.compress_size
    while left:
        buf = raw.read(min(CHUNK, left))
        if not buf:
            raise _CorruptData("archive ends inside the member's data")
        left -= len(buf)
        yield buf


def _make_dirs(archive: Path, m: _Member, target: Path, dest: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(archive, m, exc) from None
    real = os.path.realpath(target)
    if real != str(dest) and not real.startswith(str(dest) + os.sep):  # defence in depth: no link in the path
        raise _refuse(archive, m.name, "resolves outside the extraction folder")


def _write_error(archive: Path, m: _Member, exc: OSError) -> UserError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return UserError(f"disk full while extracting member {m.name!r}", archive)
    return _refuse(archive, m.name, f"cannot write it ({exc.strerror or exc})")


def _write_member(archive: Path, raw: BinaryIO, m: _Member, target: Path, dest: Path) -> None:
    """Stream one member to `target`, counting the bytes really written and checking them against its header."""
    _make_dirs(archive, m, target.parent, dest)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    chunks = _DECOMPRESSORS[m.info.compress_type](_raw_chunks(raw, m))
    written, crc = 0, 0
    try:
        fd = os.open(target, flags, 0o644)
    except OSError as exc:
        raise _write_error(archive, m, exc) from None
    try:
        while True:
            try:
                chunk = next(chunks, None)
            except (_CorruptData, zlib.error, OSError, EOFError, ValueError) as exc:
                raise _refuse(archive, m.name, f"corrupt compressed data ({exc})") from None
            if chunk is None:
                break
            written += len(chunk)
            # The declared sizes passed every cap (per file, total, ratio); refusing the first byte past the
            # declared size therefore bounds the bytes really written by those same caps.
            if written > m.info.file_size:
                raise _refuse(archive, m.name, f"data is longer than the {m.info.file_size} bytes its header declares")
            crc = zlib.crc32(chunk, crc)
            _write_all(archive, m, fd, chunk)
    finally:
        os.close(fd)
    if written < m.info.file_size:
        raise _refuse(archive, m.name, f"data is shorter than the {m.info.file_size} bytes its header declares")
    if crc != m.info.CRC:
        raise _refuse(archive, m.name, "CRC mismatch (corrupt archive)")


def _write_all(archive: Path, m: _Member, fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError as exc:
        raise _write_error(archive, m, exc) from None


def _check_image(archive: Path, m: _Member, path: Path, limits: ZipLimits) -> None:
    """Open the header with Pillow under the pixel cap; only JPEG, PNG and WebP content is accepted."""
    from PIL import Image, UnidentifiedImageError

    cap = limits.max_image_pixels
    bomb = f"image is over the pixel limit of {cap} (decompression bomb?)"
    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, cap
        try:
            with Image.open(path) as im:
                fmt, (width, height) = im.format, im.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _refuse(archive, m.name, bomb) from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):  # their text names the temp path
            raise _refuse(archive, m.name, "is not a readable JPEG, PNG or WebP image") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    if width * height > cap:
        raise _refuse(archive, m.name, f"{width}x{height} {bomb}")
    if fmt not in IMAGE_FORMATS:
        raise _refuse(archive, m.name, f"is {fmt} data; only JPEG, PNG and WebP images are accepted")
