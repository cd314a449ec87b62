"""SAM 2 demo stream reader: out-of-order and repeated frames, bad lines, bad RLEs, size checks, video lookup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.masks import decode_rle, encode_rle, resize_mask
from pipeline.sources import IssueLog, ReadOptions, open_source
from pipeline.sources.common import check_rle, decode_counts


def read_source(path, **options):
    log = IssueLog()
    videos = tuple(Path(v) for v in options.pop("videos", ()))
    with open_source(path, ReadOptions(videos=videos, **options), log) as src:
        frames = [(f.frame_index, f.width, f.height, f.objects) for vid, idx in src.plan().items()
                  for f in src.frames(vid, idx)]
        info = src.info()
    return frames, log, info


@pytest.fixture(scope="module")
def truth(sample_dir: Path) -> dict:
    return json.loads((sample_dir / "sample_truth.json").read_text())["sam2_stream"]


def _lines(sample_dir: Path, truth: dict) -> list[dict]:
    return [json.loads(line) for line in (sample_dir / truth["file"]).read_text().splitlines()]


def test_stream_out_of_order_matches_truth(sample_dir: Path, truth: dict) -> None:
    lines = _lines(sample_dir, truth)
    assert [r["frame_index"] for r in lines] != sorted(r["frame_index"] for r in lines)  # forward then backward
    frames, log, info = read_source(sample_dir / truth["file"])
    assert [f[0] for f in frames] == list(range(truth["frame_count"]))
    for (index, width, height, objects), expected in zip(frames, truth["frames"], strict=True):
        assert (width, height) == (truth["width"], truth["height"])
        assert [(o.object_id, o.bbox, o.area) for o in objects] == \
               [(o["object_id"], o["bbox"], o["area"]) for o in expected["objects"]], index
    assert log.issues == []  # empty masks are objects out of view: no issue
    assert info["fps_video"] == pytest.approx(24.0) and Path(info["video"]).name == truth["video"]


def test_stream_repeats_keep_last_and_bad_lines_are_issues(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    lines = _lines(sample_dir, truth)
    first = next(r for r in lines if any(decode_rle(x["mask"]).any() for x in r["results"]))
    index = first["frame_index"]
    target = next(x for x in first["results"] if decode_rle(x["mask"]).any())
    mask = decode_rle(target["mask"])
    mask[:] = 0
    mask[10:20, 30:50] = 1
    repeat = {"frame_index": index, "results": [{"object_id": target["object_id"], "mask": encode_rle(mask)}]}
    bad_rle = {"frame_index": 71, "results": [{"object_id": 0, "mask": {"size": [180, 320], "counts": "0\x7f"}},
                                              {"object_id": "x", "mask": {}}]}
    text = "\n".join(json.dumps(r) for r in lines) + "\n{broken\n" + json.dumps({"frame_index": -3}) + "\n"
    text += json.dumps(repeat) + "\n" + json.dumps(bad_rle) + "\n"
    path = tmp_path / "session.jsonl"
    path.write_text(text)
    frames, log, _ = read_source(path, videos=[sample_dir / truth["video"]])  # the name differs: the only --video
    by_index = {f[0]: f for f in frames}
    got = [(o.object_id, o.bbox, o.area) for o in by_index[index][3]]
    assert got == [(target["object_id"], [30, 10, 50, 20], 200)]
    found = sorted((i["rule"], i["frame_index"] or -1) for i in log.issues)
    assert found == [("invalid_record", -1), ("invalid_record", -1), ("invalid_record", 71), ("invalid_rle", 71)]
    assert any("not JSON" in i["message"] for i in log.issues)


def test_stream_mask_size_checks(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    lines = _lines(sample_dir, truth)
    record = next(r for r in lines if sum(decode_rle(x["mask"]).any() for x in r["results"]) >= 2)
    full = [x for x in record["results"] if decode_rle(x["mask"]).any()]
    full[0]["mask"] = encode_rle(resize_mask(decode_rle(full[0]["mask"]), 360, 640))  # 2x: resized back
    full[1]["mask"] = encode_rle(resize_mask(decode_rle(full[1]["mask"]), 180, 180))  # other aspect: skipped
    path = tmp_path / "sam2_stream.jsonl"
    path.write_text(json.dumps(record) + "\n")
    shutil.copy(sample_dir / truth["video"], tmp_path / "sam2_stream.mp4")  # found beside by name
    frames, log, _ = read_source(path)
    assert [(i["rule"], i["severity"]) for i in log.issues] == [("mask_size_mismatch", "warning"),
                                                                ("mask_size_mismatch", "error")]
    expected = {o["object_id"]: o["bbox"] for o in truth["frames"][record["frame_index"]]["objects"]}
    got = {o.object_id: o.bbox for o in frames[0][3]}
    assert full[1]["object_id"] not in got
    assert all(abs(a - b) <= 1 for a, b in zip(got[full[0]["object_id"]], expected[full[0]["object_id"]],
                                               strict=True))


def test_stream_errors(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    path = tmp_path / "alone.jsonl"
    shutil.copy(sample_dir / truth["file"], path)
    with pytest.raises(UserError, match="no video found") as err:
        read_source(path)
    assert "--video" in str(err.value) and "alone.jsonl" in str(err.value)
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"frame_index": 1, "results": 5}\n[1, 2]\n')
    with pytest.raises(UserError, match="no usable SAM 2 stream record"):
        read_source(junk, videos=[sample_dir / truth["video"]])


def test_stream_line_over_the_cap_is_refused(sample_dir: Path, truth: dict, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.sources import sam2_stream

    lines = (sample_dir / truth["file"]).read_text().splitlines()
    cap = max(len(line) for line in lines) + 1
    monkeypatch.setattr(sam2_stream, "MAX_LINE_CHARS", cap)
    path = tmp_path / "session.jsonl"
    path.write_text("\n".join([*lines[:2], " " * cap + lines[2], *lines[3:]]) + "\n")
    with pytest.raises(UserError, match=f"line 3 is longer than {cap:,} characters") as refused:
        read_source(path, videos=[sample_dir / truth["video"]])
    assert str(refused.value).startswith(f"{path}: ")
    path.write_text("\n".join(lines) + "\n")  # the same lines within the cap read fine
    assert read_source(path, videos=[sample_dir / truth["video"]])[0]


def test_stream_frames_beyond_the_video(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    lines = _lines(sample_dir, truth)
    late = dict(lines[0], frame_index=truth["frame_count"] + 10)
    path = tmp_path / "late.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in (lines[0], late)))
    frames, log, _ = read_source(path, videos=[sample_dir / truth["video"]])
    assert [f[0] for f in frames] == [lines[0]["frame_index"]]
    assert [(i["rule"], i["frame_index"]) for i in log.issues] == [("missing_frame", late["frame_index"])]
    assert "beyond the end of the video" in log.issues[0]["message"]


def test_stream_json_list_is_accepted(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    path = tmp_path / "sam2_stream.json"
    path.write_text(json.dumps(_lines(sample_dir, truth)[:5]))
    frames, log, info = read_source(path, videos=[sample_dir / truth["video"]])
    assert len(frames) == 5 and log.issues == [] and info["format"] == "sam2_stream"


def test_rle_checks_agree_with_pycocotools(sample_dir: Path, truth: dict) -> None:
    from pycocotools import mask as mask_utils

    from pipeline.masks import mask_to_runs

    for record in _lines(sample_dir, truth)[:10]:
        for result in record["results"]:
            rle = result["mask"]
            runs = decode_counts(rle["counts"])
            assert runs == mask_to_runs(decode_rle(rle), "F") and check_rle(rle) is None
            assert sum(runs) == 180 * 320
    assert check_rle({"size": [2, 2], "counts": [1, 1, 1]}) == "RLE runs cover 3 pixels, size 2x2 needs 4"
    assert check_rle({"size": [2, 2], "counts": [4]}) is None
    assert check_rle({"size": [2], "counts": "0"}).startswith("RLE size")
    assert check_rle({"counts": "0"}).startswith("not an RLE")
    assert check_rle({"size": [2, 2], "counts": 7}).startswith("RLE counts must be")
    assert check_rle({"size": [0, 2], "counts": ""}).endswith("is empty")
    assert check_rle({"size": [4, 4], "counts": "4\x00"}) == "RLE counts string is malformed"
    assert check_rle({"size": [4, 4], "counts": "3"}) == "RLE runs cover 3 pixels, size 4x4 needs 16"
    assert decode_counts("`") is None  # continuation bit set on the last character
    assert decode_counts("`0") == [16] and check_rle({"size": [4, 4], "counts": "`0"}) is None  # empty 4x4
    assert mask_utils.area({"size": [4, 4], "counts": b"`0"}) == 0
