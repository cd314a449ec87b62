"""Safe extraction: a table of hostile archives (built here, byte by byte) is refused cleanly; good ones extract."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import stat
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from pipeline.errors import UserError
from pipeline.safezip import ZipLimits, extract_zip, extracted_zip, is_zip_file

MiB = 1024**2

# ---------------------------------------------------------------- archive builders


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A ZIP written by zipfile (duplicate-name warnings silenced: duplicates are a test case)."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, data in entries:
                zf.writestr(name, data)
    return buf.getvalue()


def _replace(data: bytes, old: bytes, new: bytes, count: int = -1) -> bytes:
    assert old in data
    return data.replace(old, new, count)


def _patch_headers(
    data: bytes, local_at: int | None, central_at: int, fmt: str, value: int, or_: bool = False
) -> bytes:
    """Set one field of every local (PK\\3\\4, unless local_at is None) and central (PK\\1\\2) header."""
    out = bytearray(data)
    for sig, at in ((b"PK\x03\x04", local_at), (b"PK\x01\x02", central_at)):
        pos = out.find(sig) if at is not None else -1
        while pos >= 0:
            old = struct.unpack_from(fmt, out, pos + at)[0]
            struct.pack_into(fmt, out, pos + at, old | value if or_ else value)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def _local(name: bytes, data: bytes, stored: bytes, method: int) -> bytes:
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, zlib.crc32(data), len(stored),
                       len(data), len(name), 0) + name  # fmt: skip


def _central(name: bytes, data: bytes, stored: bytes, method: int, offset: int) -> bytes:
    return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0x21, zlib.crc32(data), len(stored),
                       len(data), len(name), 0, 0, 0, 0, 0o100644 << 16, offset) + name  # fmt: skip


def _eocd(count: int, cd: bytes, cd_offset: int) -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(cd), cd_offset, 0)


def _raw_stored_zip(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A ZIP assembled by hand, for names zipfile refuses to write (NUL bytes, empty names)."""
    body, cd = b"", b""
    for name, data in entries:
        cd += _central(name, data, data, 0, len(body))
        body += _local(name, data, data, 0) + data
    return body + cd + _eocd(len(entries), cd, len(body))


def _deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    return comp.compress(data) + comp.flush()


def _overlap_bomb() -> bytes:
    """Fifield's overlapping-entry bomb: member b's header sits inside a's data, quoted as a stored deflate block."""
    payload = b"\0" * 4096
    kernel = _deflate(payload)
    header_b = _local(b"b.txt", payload, kernel, 8)
    quote = b"\x00" + struct.pack("<HH", len(header_b), len(header_b) ^ 0xFFFF)  # non-final stored block
    stored_a, plain_a = quote + header_b + kernel, header_b + payload
    header_a = _local(b"a.txt", plain_a, stored_a, 8)
    body = header_a + stored_a
    cd = _central(b"a.txt", plain_a, stored_a, 8, 0) + _central(b"b.txt", payload, kernel, 8, len(header_a) + 5)
    return body + cd + _eocd(2, cd, len(body))


def _zip64_declaring(count: int) -> bytes:
    """A one-entry archive whose zip64 end record declares `count` entries."""
    data = _zip([("a.txt", b"x")])
    eocd_at = data.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<LL", data, eocd_at + 12)
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd_at, 1)
    return data[:eocd_at] + record + locator + _eocd(0xFFFF, b"\0" * cd_size, cd_offset)


def _png_header(width: int, height: int) -> bytes:
    """A tiny PNG declaring huge dimensions (the decompression bomb shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _webp_bomb() -> bytes:
    """A two-frame animated WebP whose canvas claims 16383x16383 (268M pixels)."""
    buf = io.BytesIO()
    frames = [Image.new("RGB", (8, 6), color) for color in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = bytearray(buf.getvalue())
    at = data.index(b"VP8X") + 12  # canvas width-1, height-1: 24 bits each
    data[at : at + 6] = (16382).to_bytes(3, "little") * 2
    return bytes(data)


def _image(fmt: str, size: tuple[int, int] = (8, 6)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(buf, format=fmt)
    return buf.getvalue()


def _typed(name: str, kind: int, data: bytes = b"target") -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (kind | 0o777) << 16
    return info


def _numbers(n: int) -> bytes:
    """Incompressible bytes (a fixed seed keeps the archives identical between runs)."""
    return random.Random(n).randbytes(n)


# (id, archive bytes builder, fragments the one-line error must contain, limits)
BAD: list[tuple[str, Callable[[], bytes], tuple[str, ...], ZipLimits]] = [
    ("not-zip-named-zip", lambda: b"id,label\n1,cat\n", ("not a ZIP archive",), ZipLimits()),
    ("empty-file", lambda: b"", ("is empty (0 bytes)",), ZipLimits()),
    ("prepended-junk", lambda: b"MZ" + _zip([("a.txt", b"x")]), ("not a ZIP archive",), ZipLimits()),
    ("truncated", lambda: _zip([("a.txt", _numbers(5000))])[:-40], ("truncated or corrupt ZIP",), ZipLimits()),
    ("corrupt-crc", lambda: _replace(_zip([("a.txt", b"hello world")], zipfile.ZIP_STORED), b"hello", b"hellO"),
     ("member 'a.txt': CRC mismatch",), ZipLimits()),
    ("corrupt-deflate", lambda: _patch_headers(_zip([("a.txt", b"\xff" * 40)], zipfile.ZIP_STORED), 8, 10, "<H", 8),
     ("member 'a.txt': corrupt compressed data",), ZipLimits()),
    ("deflate-ends-early", lambda: _patch_headers(_zip([("a.txt", _numbers(5000))]), 18, 20, "<L", 100),
     ("member 'a.txt': corrupt compressed data (deflate stream ends early)",), ZipLimits()),
    ("bzip2-ends-early",
     lambda: _patch_headers(_zip([("a.txt", _numbers(5000))], zipfile.ZIP_BZIP2), 18, 20, "<L", 100),
     ("member 'a.txt': corrupt compressed data (bzip2 stream ends early)",), ZipLimits()),
    ("bad-local-header-offset", lambda: _patch_headers(_zip([("a.txt", b"x")]), None, 42, "<L", 1),
     ("member 'a.txt': bad local header",), ZipLimits()),
    ("data-past-central-directory", lambda: _patch_headers(_zip([("a.txt", b"x")]), None, 20, "<L", 10_000),
     ("member 'a.txt': data runs into the central directory",), ZipLimits()),
    ("dotdot", lambda: _zip([("../evil.txt", b"x")]), ("member '../evil.txt': '..' in path",), ZipLimits()),
    ("partial-prefix-sibling", lambda: _zip([("ok.txt", b"x"), ("../out-sibling/x.txt", b"x")]),
     ("member '../out-sibling/x.txt': '..' in path",), ZipLimits()),
    ("nested-dotdot", lambda: _zip([("a/../../evil.txt", b"x")]), ("'..' in path",), ZipLimits()),
    ("absolute", lambda: _zip([("/abs_safezip_evil.txt", b"x")]), ("absolute path",), ZipLimits()),
    ("backslash", lambda: _zip([("a\\b.txt", b"x")]), ("member 'a\\\\b.txt': backslash",), ZipLimits()),
    ("backslash-traversal", lambda: _zip([("..\\evil.txt", b"x")]), ("backslash",), ZipLimits()),
    ("drive-letter", lambda: _zip([("C:evil.txt", b"x")]), ("member 'C:evil.txt': drive letter",), ZipLimits()),
    ("nul-byte", lambda: _raw_stored_zip([(b"a\x00b.txt", b"x")]), ("member 'a\\x00b.txt': NUL byte",), ZipLimits()),
    ("empty-name", lambda: _raw_stored_zip([(b"", b"x")]), ("member '': empty name",), ZipLimits()),
    ("dot-component", lambda: _zip([("./a.txt", b"x")]), ("'.' component",), ZipLimits()),
    ("double-slash", lambda: _zip([("a//b.txt", b"x")]), ("empty path component",), ZipLimits()),
    ("file-name-too-long", lambda: _zip([("x" * 300 + ".txt", b"x")]), ("cannot write it (File name too long)",),
     ZipLimits()),
    ("folder-name-too-long", lambda: _zip([("d" * 300 + "/a.txt", b"x")]), ("cannot write it (File name too long)",),
     ZipLimits()),
    ("symlink", lambda: _zip([(_typed("link", stat.S_IFLNK), b"/etc/passwd")]),
     ("member 'link': is a symbolic link",), ZipLimits()),
    ("fifo", lambda: _zip([(_typed("pipe", stat.S_IFIFO), b"")]), ("member 'pipe': is a special file",), ZipLimits()),
    ("duplicate", lambda: _zip([("a.txt", b"1"), ("a.txt", b"2")]),
     ("member 'a.txt': duplicates member 'a.txt'",), ZipLimits()),
    ("case-collision", lambda: _zip([("Frame.txt", b"1"), ("frame.txt", b"2")]),
     ("member 'frame.txt': duplicates member 'Frame.txt'",), ZipLimits()),
    ("nfc-nfd-collision", lambda: _zip([("caf\u00e9.txt", b"1"), ("cafe\u0301.txt", b"2")]),
     ("duplicates member 'caf\u00e9.txt'",), ZipLimits()),
    ("file-and-folder", lambda: _zip([("a", b"1"), ("A/b.txt", b"2")]),
     ("member 'a': is both a file and a folder",), ZipLimits()),
    ("encrypted", lambda: _patch_headers(_zip([("a.txt", b"secret")]), 6, 8, "<H", 1, or_=True),
     ("member 'a.txt': is encrypted",), ZipLimits()),
    ("lzma-method", lambda: _zip([("a.txt", b"x" * 100)], zipfile.ZIP_LZMA),
     ("unsupported compression method 14",), ZipLimits()),
    ("too-many-entries", lambda: _zip([(f"{i}.txt", b"x") for i in range(4)]),
     ("has 4 entries, over the limit of 3",), ZipLimits(max_entries=3)),
    ("too-many-entries-eocd-lies", lambda: _replace(_zip([(f"{i}.txt", b"x") for i in range(4)]),
                                                    b"PK\5\6\0\0\0\0\4\0\4\0", b"PK\5\6\0\0\0\0\1\0\1\0"),
     ("has 4 entries, over the limit of 3",), ZipLimits(max_entries=3)),
    ("zip64-entry-count", lambda: _zip64_declaring(10**9), ("has 1000000000 entries, over the limit of 10000",),
     ZipLimits()),
    ("ratio-bomb", lambda: _zip([("zeros.bin", b"\0" * (2 * MiB))]),
     ("member 'zeros.bin': compression ratio", "over the limit of 200:1"), ZipLimits()),
    ("entry-too-big", lambda: _zip([("big.bin", _numbers(200))]), ("per-file limit",), ZipLimits(max_entry_bytes=100)),
    ("total-too-big", lambda: _zip([(f"{i}.bin", _numbers(100)) for i in range(3)]),
     ("over the total limit of 250",), ZipLimits(max_total_bytes=250)),
    ("header-size-lies-small", lambda: _patch_headers(_zip([("a.txt", b"A" * 100_000)]), 22, 24, "<L", 10),
     ("member 'a.txt': data is longer than the 10 bytes its header declares",), ZipLimits()),
    ("header-size-lies-big", lambda: _patch_headers(_zip([("a.txt", _numbers(100))], zipfile.ZIP_STORED),
                                                    22, 24, "<L", 150),
     ("data is shorter than the 150 bytes",), ZipLimits()),
    ("local-name-differs", lambda: _replace(_zip([("a.txt", b"x")]), b"a.txt", b"b.txt", 1),
     ("member 'a.txt': local header names it 'b.txt'",), ZipLimits()),
    ("overlap-bomb", _overlap_bomb, ("member 'b.txt': overlaps the data of member 'a.txt'",), ZipLimits()),
    ("png-bomb-error", lambda: _zip([("images/huge.png", _png_header(20_000, 20_000))]),
     ("member 'images/huge.png': image is over the pixel limit of 80000000",), ZipLimits()),
    ("png-bomb-warning", lambda: _zip([("huge.png", _png_header(10_000, 10_000))]),
     ("over the pixel limit of 80000000",), ZipLimits()),
    ("webp-bomb", lambda: _zip([("anim.webp", _webp_bomb())]), ("member 'anim.webp': image is over the pixel limit",),
     ZipLimits()),
    ("png-over-custom-cap", lambda: _zip([("small.png", _image("PNG", (12, 10)))]),
     ("over the pixel limit of 100",), ZipLimits(max_image_pixels=100)),
    ("svg-member", lambda: _zip([("a.json", b"{}"), ("icon.svg", b"<svg/>")]),
     ("member 'icon.svg': unsupported image format '.svg'",), ZipLimits()),
    ("tiff-member", lambda: _zip([("frames/0001.TIF", _image("TIFF"))]), ("unsupported image format '.TIF'",),
     ZipLimits()),
    ("gif-named-png", lambda: _zip([("frame.png", _image("GIF"))]), ("member 'frame.png': is GIF data",), ZipLimits()),
    ("garbage-png", lambda: _zip([("frame.png", b"not an image")]),
     ("member 'frame.png': is not a readable JPEG, PNG or WebP image",), ZipLimits()),
]  # fmt: skip


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """in/ (the archive), out/ (an empty destination), tmp/ (the private system temp dir for extracted_zip)."""
    paths = {name: tmp_path / name for name in ("in", "out", "tmp")}
    for path in paths.values():
        path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(paths["tmp"]))
    paths["base"] = tmp_path
    return paths


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.parametrize("build, fragments, limits", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_archive_is_refused_without_leftovers(sandbox, build, fragments, limits):
    archive = sandbox["in"] / "bad.zip"
    archive.write_bytes(build())
    with pytest.raises(UserError) as info:
        extract_zip(archive, sandbox["out"], limits)
    message = str(info.value)
    assert message.startswith(f"{archive}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message
    with pytest.raises(UserError) as again:
        with extracted_zip(archive, limits):
            pytest.fail("the body must not run for a refused archive")
    assert str(again.value) == message
    assert _tree(sandbox["base"]) == {"in", "in/bad.zip", "out", "tmp"}  # nothing outside out/, no temp folder left
    assert not Path("/abs_safezip_evil.txt").exists()


def test_overlap_bomb_fixture_is_a_real_bomb_for_zipfile():
    with zipfile.ZipFile(io.BytesIO(_overlap_bomb())) as zf:  # zipfile itself extracts both overlapping members
        assert len(zf.read("a.txt")) > len(zf.read("b.txt")) == 4096


def _good_archive() -> tuple[bytes, dict[str, bytes]]:
    kept = {
        "dataset/annotations.json": json.dumps({"annotations": []}).encode(),
        "dataset/images/frame_000001.png": _image("PNG"),
        "dataset/images/frame_000002.jpg": _image("JPEG"),
        "dataset/images/frame_000003.webp": _image("WEBP"),
        "dataset/deep/er/notes.txt": _numbers(3000),
        "données/été.json": b"{}",
        "日本語/ノート.txt": "こんにちは".encode(),
        "cafe\u0301.txt": b"nfd alone is fine",
        "empty.txt": b"",
    }
    ignored = {"__MACOSX/dataset/._annotations.json": b"\0\5\26\7", ".DS_Store": b"\0" * 64, "dataset/.hidden": b"x"}
    entries = [("dataset/", b""), ("dataset/images/", b"")] + list(kept.items()) + list(ignored.items())
    return _zip(entries), kept


def test_good_archive_extracts_nested_unicode_and_skips_macos_junk(sandbox):
    data, kept = _good_archive()
    archive = sandbox["in"] / "export.zip"
    archive.write_bytes(data)
    files = extract_zip(archive, sandbox["out"])
    out = sandbox["out"].resolve()
    assert [p.relative_to(out).as_posix() for p in files] == list(kept)
    for name, content in kept.items():
        assert (out / name).read_bytes() == content
    assert _tree(out) == set(kept) | {"dataset", "dataset/images", "dataset/deep", "dataset/deep/er", "données",
                                      "日本語"}  # fmt: skip


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_every_supported_method_streams_large_members_exactly(sandbox, method):
    payload = _numbers(MiB + 17)  # more than one chunk
    archive = sandbox["in"] / "m.zip"
    archive.write_bytes(_zip([("big.bin", payload), ("small.txt", b"hi")], method))
    files = extract_zip(archive, sandbox["out"])
    assert [f.read_bytes() for f in files] == [payload, b"hi"]


def test_extracted_zip_yields_folder_and_removes_it_on_exit_and_on_error(sandbox):
    data, kept = _good_archive()
    archive = sandbox["in"] / "export.zip"
    archive.write_bytes(data)
    with extracted_zip(archive) as folder:
        assert folder.parent == sandbox["tmp"]
        assert (folder / "dataset" / "annotations.json").read_bytes() == kept["dataset/annotations.json"]
    assert not folder.exists()
    with pytest.raises(KeyError), extracted_zip(archive) as folder:
        raise KeyError("reader failed")
    assert not folder.exists()
    custom = sandbox["base"] / "custom_tmp"
    custom.mkdir()
    with extracted_zip(archive, tmp_dir=custom) as folder:
        assert folder.parent == custom
    assert list(custom.iterdir()) == [] and list(sandbox["tmp"].iterdir()) == []


def test_disk_full_while_writing_is_one_line_and_leaves_nothing(sandbox, monkeypatch):
    archive = sandbox["in"] / "a.zip"
    archive.write_bytes(_zip([("first/a.bin", _numbers(1000)), ("second/b.bin", _numbers(1000))]))
    real_write, calls = os.write, []

    def full_after_first_write(fd: int, data) -> int:
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_after_first_write)
    with pytest.raises(UserError, match="disk full while extracting member 'second/b.bin'"):
        extract_zip(archive, sandbox["out"])
    assert list(sandbox["out"].iterdir()) == []  # first/a.bin had been written, then removed
    calls.clear()
    with pytest.raises(UserError, match="disk full while extracting"), extracted_zip(archive):
        pytest.fail("the body must not run")
    assert list(sandbox["tmp"].iterdir()) == []


def test_destination_must_be_an_existing_empty_folder_and_is_never_emptied(sandbox):
    archive = sandbox["in"] / "a.zip"
    archive.write_bytes(_zip([("a.txt", b"x")]))
    keep = sandbox["out"] / "user_file.txt"
    keep.write_text("precious")
    with pytest.raises(UserError, match="must be an existing empty folder"):
        extract_zip(archive, sandbox["out"])
    assert keep.read_text() == "precious"
    with pytest.raises(UserError, match="must be an existing empty folder"):
        extract_zip(archive, sandbox["base"] / "missing")
    with pytest.raises(UserError, match="archive not found"):
        extract_zip(sandbox["in"] / "nope.zip", sandbox["tmp"])


def test_is_zip_file_checks_magic_bytes_not_the_name(tmp_path):
    real, fake, empty_zip = tmp_path / "data.bin", tmp_path / "fake.zip", tmp_path / "empty.zip"
    real.write_bytes(_zip([("a.txt", b"x")]))
    fake.write_text("not a zip")
    empty_zip.write_bytes(_zip([]))
    assert is_zip_file(real) and is_zip_file(empty_zip)
    assert not is_zip_file(fake) and not is_zip_file(tmp_path) and not is_zip_file(tmp_path / "missing.zip")
    out = tmp_path / "out"
    out.mkdir()
    assert extract_zip(empty_zip, out) == []


def test_real_sam2_demo_export_extracts(fixtures_dir, sandbox):
    archive = next((fixtures_dir / "sam2_demo_fork_export").glob("*.zip"))
    files = extract_zip(archive, sandbox["out"])
    assert sorted(f.name for f in files) == ["annotations.json", "metadata.json"]
    with zipfile.ZipFile(archive) as zf:
        assert all(f.read_bytes() == zf.read(f.name) for f in files)
    assert json.loads((sandbox["out"] / "annotations.json").read_text())["video"]["width"] == 1280


def test_limits_validate_themselves_naming_the_field():
    with pytest.raises(UserError, match="ZipLimits.max_ratio must be positive, got 0"):
        ZipLimits(max_ratio=0)
    with pytest.raises(UserError, match="ZipLimits.max_entries must be positive, got -1"):
        ZipLimits(max_entries=-1)
    assert ZipLimits(ratio_min_bytes=0).ratio_min_bytes == 0  # 0: check the ratio of every member
