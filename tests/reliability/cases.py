"""The bad-input case table: each case builds one hostile input from the generated session and names the verb, the
arguments and the fragment its one-line error must contain. Shared by the CLI and app-API tests.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import hostile as h
from .hostile import Sample

Build = Callable[[Sample, Path], list[str]]
ESCAPE = "reliability-escape"  # every traversal case aims at a file of this name outside the extraction folder


@dataclass(frozen=True)
class Case:
    """One bad input: `build(sample, folder)` writes it into `folder` and returns the arguments after the verb."""

    id: str
    what: str
    build: Build
    expect: str
    verb: str = "convert"
    app: bool = False  # also sent through the app's upload API


def _demo_zip(folder: Path, name: str, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    path = folder / name
    path.write_bytes(h.zip_bytes(members))
    return path


def _with_member(extra: list[tuple[str | zipfile.ZipInfo, bytes]], name: str = "export.zip") -> Build:
    """The real demo export plus hostile members; the session video is passed too."""

    def build(sample: Sample, folder: Path) -> list[str]:
        return [str(_demo_zip(folder, name, [*sample.demo_members(), *extra])), "--video", str(sample.demo_video)]

    return build


def _raw(make: Callable[[Sample], bytes], name: str = "export.zip", video: bool = True) -> Build:
    def build(sample: Sample, folder: Path) -> list[str]:
        path = folder / name
        path.write_bytes(make(sample))
        return [str(path), *(["--video", str(sample.demo_video)] if video else [])]

    return build


def _annotations(edit: Callable[[dict], object], raw: str | None = None) -> Build:
    """The demo export with annotations.json edited in place (or replaced by `raw` text)."""

    def build(sample: Sample, folder: Path) -> list[str]:
        members = sample.demo_members()
        data = sample.demo_annotations()
        result = edit(data)
        text = raw if raw is not None else json.dumps(data if result is None else result)
        members = [(n, text.encode() if n == "annotations.json" else b) for n, b in members]
        return [str(_demo_zip(folder, "export.zip", members)), "--video", str(sample.demo_video)]

    return build


def _each_object(change: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        for entry in data["annotations"]:
            for obj in entry["objects"]:
                change(obj)

    return edit


def _stream(edit_result: Callable[[dict], None]) -> Build:
    def build(sample: Sample, folder: Path) -> list[str]:
        lines = sample.stream_lines()
        for record in lines:
            for result in record["results"]:
                edit_result(result)
        path = folder / "session.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
        return [str(path), "--video", str(sample.stream_video)]

    return build


def _coco(edit_files: Callable[[Path, list[dict]], None]) -> Build:
    """The COCO export with its frames copied next to it, then the frame files edited."""

    def build(sample: Sample, folder: Path) -> list[str]:
        data = sample.coco()
        frames = folder / "frames"
        frames.mkdir()
        for image in data["images"]:
            name = Path(image["file_name"]).name
            (frames / name).write_bytes((sample.coco_frames / name).read_bytes())
            image["file_name"] = name
        edit_files(frames, data["images"])
        (folder / "coco.json").write_text(json.dumps(data))
        return [str(folder / "coco.json"), "--images", str(frames)]

    return build


def _all_frames(change: Callable[[Path], None]) -> Callable[[Path, list[dict]], None]:
    def edit(frames: Path, images: list[dict]) -> None:
        for image in images:
            change(frames / image["file_name"])

    return edit


def _renamed(suffix: str, content: Callable[[Path], bytes]) -> Callable[[Path, list[dict]], None]:
    def edit(frames: Path, images: list[dict]) -> None:
        for image in images:
            path = frames / image["file_name"]
            new = path.with_suffix(suffix)
            new.write_bytes(content(path))
            path.unlink()
            image["file_name"] = new.name

    return edit


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _big_json(sample: Sample, folder: Path) -> list[str]:
    path = folder / "huge.json"
    with open(path, "wb") as handle:  # sparse: no disk space, no time
        handle.write(b'{"images": [], "annotations": [')
        handle.truncate(600_000_000)
    return [str(path)]


def _too_many(sample: Sample) -> bytes:
    return h.zip_bytes([*sample.demo_members(), *[(f"images/pad_{i:05d}.txt", b"") for i in range(10_001)]],
                       method=zipfile.ZIP_STORED)


def _ratio_bomb(sample: Sample) -> bytes:
    return h.zip_bytes([("annotations.json", b'{"annotations": []' + b" " * (16 << 20) + b"}"),
                        ("metadata.json", b"{}")])


def _sav_mask_bomb(sample: Sample, folder: Path) -> list[str]:
    """An SA-V val folder: two clean frames, object 0's mask PNGs claiming 100000 x 100000 pixels."""
    root = folder / "sav_val"
    frames, masks = root / "JPEGImages_24fps" / "vid1", root / "Annotations_6fps" / "vid1" / "000"
    frames.mkdir(parents=True)
    masks.mkdir(parents=True)
    for index in (0, 4):
        (frames / f"{index:05d}.jpg").write_bytes(h.image_bytes("JPEG"))
        (masks / f"{index:05d}.png").write_bytes(h.png_header_only(100_000, 100_000))
    return [str(root)]


def _video(make: Callable[[Sample], bytes]) -> Build:
    def build(sample: Sample, folder: Path) -> list[str]:
        video = folder / sample.stream_video.name
        video.write_bytes(make(sample))
        lines = folder / "session.jsonl"
        lines.write_text(sample.stream_jsonl.read_text())
        return [str(lines), "--video", str(video)]

    return build


def _config(verb_args: list[str]) -> Build:
    def build(sample: Sample, folder: Path) -> list[str]:
        names = {"{zip}": sample.demo_zip, "{video}": sample.demo_video, "{folder}": folder}
        return [str(names.get(a, a)) for a in verb_args]

    return build


def _rules_file(sample: Sample, folder: Path) -> list[str]:
    (folder / "rules.yaml").write_text("duplicate_frames: {severity: fatal}\n")
    return [str(sample.demo_zip), "--video", str(sample.demo_video), "--config", str(folder / "rules.yaml")]


def _several(sample: Sample, folder: Path) -> list[str]:
    members = sample.demo_members()
    nested = [(f"{top}/{name}", data) for top in ("job_a", "job_b") for name, data in members]
    return [str(_demo_zip(folder, "export.zip", nested)), "--video", str(sample.demo_video)]


def _missing_frames(data: dict) -> None:
    for entry in data["annotations"]:
        entry["frame_index"] += 500  # the 24-frame video has no such frame
    data["export_config"]["frame_indices"] = [e["frame_index"] for e in data["annotations"]]


def _wrong_aspect(result: dict) -> None:
    from pipeline.masks import encode_rle

    result["mask"] = encode_rle(np.ones((100, 100), np.uint8))


ZIP_CASES = [
    Case("not_a_zip", "a text file named .zip", _raw(lambda s: b"this is not a zip archive\n"),
         "export.zip: not a ZIP archive", app=True),
    Case("truncated_zip", "the real export cut to 60 % of its bytes",
         _raw(lambda s: s.demo_zip.read_bytes()[: int(s.demo_zip.stat().st_size * 0.6)]),
         "truncated or corrupt ZIP archive", app=True),
    Case("corrupt_zip", "flipped bytes inside annotations.json's deflate stream",
         _raw(lambda s: h.corrupt_member(s.demo_zip.read_bytes(), "annotations.json")),
         "member 'annotations.json': corrupt compressed data"),
    Case("slip_dotdot", "zip slip: member ../reliability-escape", _with_member([(f"../{ESCAPE}", h.EVIL)]),
         "'..' in path (path traversal)", app=True),
    Case("slip_absolute", "zip slip: absolute member /tmp/reliability-escape",
         _with_member([(f"/tmp/{ESCAPE}", h.EVIL)]), "absolute path"),
    Case("slip_backslash", "zip slip: member ..\\..\\reliability-escape (Windows separators)",
         _with_member([(f"..\\..\\{ESCAPE}", h.EVIL)]), "backslash in name"),
    Case("slip_drive", "zip slip: member C:/reliability-escape (drive letter)",
         _with_member([(f"C:/{ESCAPE}", h.EVIL)]), "drive letter in name"),
    Case("slip_sibling", "zip slip into a sibling sharing the extraction folder's prefix (../safezip-x/...)",
         _with_member([(f"../safezip-sibling/{ESCAPE}", h.EVIL)]), "'..' in path (path traversal)"),
    Case("symlink_member", "a symlink member images/link.png -> /etc/passwd",
         _with_member([(h.symlink("images/link.png", "/etc/passwd"), b"/etc/passwd")]), "is a symbolic link",
         app=True),
    Case("ratio_bomb", "16 MiB annotations.json compressed about 1000:1", _raw(_ratio_bomb),
         "is over the limit of 200:1 (zip bomb?)", app=True),
    Case("overlap_bomb", "overlapping entries (a member's header inside another's data)",
         _raw(lambda s: h.overlap_zip(b"metadata.json", b"{}")), "overlaps the data of member 'annotations.json'"),
    Case("lying_sizes", "headers declare 100 bytes per member, the streams are longer",
         _raw(lambda s: h.patch_sizes(s.demo_zip.read_bytes(), 100)), "bytes its header declares"),
    Case("too_many_entries", "10,001 extra entries beside a real export", _raw(_too_many),
         "entries, over the limit of 10000"),
    Case("duplicate_names", "annotations.json twice",
         _with_member([("annotations.json", b'{"annotations": []}')]), "duplicates member 'annotations.json'"),
    Case("case_collision", "annotations.json and ANNOTATIONS.json",
         _with_member([("ANNOTATIONS.json", b'{"annotations": []}')]), "(ignoring case and Unicode form)"),
    Case("unicode_collision", "images/café.png in NFC and NFD forms",
         _with_member([("images/caf\u00e9.png", h.image_bytes("PNG")),
                       ("images/cafe\u0301.png", h.image_bytes("PNG"))]),
         "(ignoring case and Unicode form)"),
    Case("encrypted", "every member flagged as encrypted",
         _raw(lambda s: h.set_flag(s.demo_zip.read_bytes(), 0x1)), "is encrypted", app=True),
    Case("bad_utf8_name", "a member name flagged UTF-8 that is not UTF-8",
         _raw(lambda s: h.raw_zip([(b"annotations.json", b"{}"), (b"images/\xff\xfe.png", b"x")], flags=0x800)),
         "truncated or corrupt ZIP archive ('utf-8' codec can't decode"),
    Case("control_char_name", "a member name holding a control character",
         _with_member([("images/frame\x07.png", h.image_bytes("PNG"))]), "control character in name"),
    Case("empty_zip", "an empty archive (end record only)", _raw(lambda s: b"PK\x05\x06" + b"\x00" * 18),
         "ZIP holds nothing but no annotations.json"),
    Case("no_annotations", "an export without annotations.json",
         _raw(lambda s: h.zip_bytes([m for m in s.demo_members() if m[0] != "annotations.json"])),
         "but no annotations.json", app=True),
    Case("several_annotations", "two exports (job_a/, job_b/) in one ZIP", _several,
         "holds several SAM 2 demo exports"),
    Case("png_bomb", "images/ PNG whose header claims 100000 x 100000 pixels",
         _with_member([("images/frame_000099.png", h.png_header_only(100_000, 100_000))]),
         "image is over the pixel limit of 80000000", app=True),
    Case("svg_member", "an SVG frame in images/", _with_member([("images/frame_000099.svg", h.SVG)]),
         "unsupported image format '.svg'"),
    Case("tiff_member", "a TIFF frame in images/", _with_member([("images/frame_000099.tif", h.image_bytes("TIFF"))]),
         "unsupported image format '.tif'"),
]

VALIDATE_CASES = [  # validate converts a raw export into a temporary folder first: the same refusals, no report
    Case("validate_not_a_zip", "validate of a text file named .zip", _raw(lambda s: b"not a zip\n"),
         "export.zip: not a ZIP archive", verb="validate"),
    Case("validate_zip_slip", "validate of an export with a ../ member", _with_member([(f"../{ESCAPE}", h.EVIL)]),
         "'..' in path (path traversal)", verb="validate"),
    Case("validate_png_bomb", "validate of an export with a PNG bomb in images/",
         _with_member([("images/frame_000099.png", h.png_header_only(100_000, 100_000))]),
         "image is over the pixel limit of 80000000", verb="validate"),
]

JSON_CASES = [
    Case("malformed_json", "annotations.json cut mid-document", _annotations(lambda d: None, raw='{"annotations": ['),
         "annotations.json is not valid JSON (line 1", app=True),
    Case("wrong_type_json", "annotations.json is a JSON list", _annotations(lambda d: [1, 2, 3]),
         "annotations.json has list; expected a SAM 2 demo export"),
    Case("wrong_type_entries", "every annotation entry is a number", _annotations(lambda d: {**d, "annotations": [1]}),
         "lacks an integer frame_index"),
    Case("oversized_json", "a 600 MB COCO JSON (sparse file)", _big_json,
         "huge.json: JSON file is 572 MiB, over the 512"),
    Case("rle_not_numbers", "every mask_rle is 'x y'",
         _annotations(_each_object(lambda o: o.update(mask_rle="x y"))),
         "mask_rle is not a list of space-separated integers"),
    Case("rle_bad_counts", "every mask_rle has runs summing to 1000 (not a 256x256 grid)",
         _annotations(_each_object(lambda o: o.update(mask_rle="400 200 400"))),
         "runs cover 1000 pixels, not a 256x256 grid"),
    Case("rle_negative", "every mask_rle has a negative run", _annotations(
        _each_object(lambda o: o.update(mask_rle="65000 -10 546"))), "mask_rle negative run length"),
    Case("coco_rle_malformed", "stream masks with a malformed compressed-RLE string",
         _stream(lambda r: r.update(mask={"size": [48, 64], "counts": "\x7f\x7f"})), "RLE counts string is malformed"),
    Case("rle_size_mismatch", "stream masks 100x100 for 64x48 frames (other aspect)", _stream(_wrong_aspect),
         "(different aspect ratio)"),
    Case("frames_missing", "annotations reference frames 500+ of a 24-frame video", _annotations(_missing_frames),
         "is beyond the end of the video"),
    Case("frame_files_missing", "COCO frame files deleted", _coco(_all_frames(lambda p: p.unlink())),
         "image file not found"),
]

MEDIA_CASES = [
    Case("corrupt_images", "COCO frames replaced by random bytes",
         _coco(_all_frames(lambda p: p.write_bytes(os.urandom(2000)))), "is not a readable image"),
    Case("truncated_images", "COCO JPEG frames cut in half", _coco(_all_frames(_truncate)), "does not decode"),
    Case("png_bomb_frames", "COCO frames whose PNG headers claim 100000 x 100000 pixels",
         _coco(_renamed(".png", lambda p: h.png_header_only(100_000, 100_000))), "decompression bomb"),
    Case("tiff_frames", "COCO frames stored as TIFF", _coco(_renamed(".tif", lambda p: h.image_bytes("TIFF"))),
         "is TIFF data; only JPEG, PNG, WebP and BMP"),
    Case("svg_frames", "COCO frames stored as SVG", _coco(_renamed(".svg", lambda p: h.SVG)),
         "is not a readable image"),
    Case("sav_mask_bomb", "SA-V folder whose mask PNGs claim 100000 x 100000 pixels", _sav_mask_bomb,
         "mask 00000.png is not a readable image (DecompressionBombError)"),
    Case("video_garbage", "a session video that is random bytes", _video(lambda s: os.urandom(4096)),
         "video does not decode"),
    Case("video_truncated", "the session video cut to its first 30 % of bytes",
         _video(lambda s: s.stream_video.read_bytes()[: s.stream_video.stat().st_size * 3 // 10]),
         "sam2_stream.mp4: video does not decode"),
]

CONFIG_CASES = [
    Case("every_zero", "convert --every 0", _config(["{zip}", "--video", "{video}", "--every", "0"]),
         "--every must be a positive integer (got 0)"),
    Case("max_frames_negative", "convert --max-frames -3",
         _config(["{zip}", "--video", "{video}", "--max-frames", "-3"]),
         "--max-frames must be a positive integer (got -3)"),
    Case("unknown_task", "convert --tasks telepathy", _config(["{zip}", "--video", "{video}", "--tasks", "telepathy"]),
         "unknown task(s)"),
    Case("lr_out_of_range", "train --set training.learning_rate=-1", _config(
        ["--preset", "quick_test", "--data", "{folder}", "--set", "training.learning_rate=-1", "--check"]),
         "training.learning_rate: must be above 0", verb="train"),
    Case("sample_frames", "sample --frames 5", _config(["--frames", "5"]),
         "frames per video (--frames) must be between 8 and 20000 (got 5)", verb="sample"),
    Case("rule_severity", "validate --config with severity 'fatal'", _rules_file,
         "rule 'duplicate_frames': severity must be error, warning, info or off, got 'fatal'", verb="validate"),
]

CASES = [*ZIP_CASES, *VALIDATE_CASES, *JSON_CASES, *MEDIA_CASES, *CONFIG_CASES]
