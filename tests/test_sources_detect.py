"""Format detection (what was recognised, or why nothing matched) and the --labels file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.sources import detect_format
from pipeline.sources.labels import load_labels


def test_detects_every_generated_format(sample_dir: Path) -> None:
    truth = json.loads((sample_dir / "sample_truth.json").read_text())
    expected = {truth["sam2_demo_zip"][0]["file"]: "sam2_demo_zip", truth["sav"]["file"]: "sav",
                truth["coco"]["file"]: "coco", truth["sam2_stream"]["file"]: "sam2_stream"}
    for name, fmt in expected.items():
        found = detect_format(sample_dir / name)
        assert (found.format, found.path) == (fmt, sample_dir / name) and found.details


def test_detects_real_fixtures(fixtures_dir: Path) -> None:
    fork = fixtures_dir / "sam2_demo_fork_export"
    job = fork / "c6709f62-6eaa-4bd2-b423-320a10eb5397"
    assert detect_format(job).format == "sam2_demo_zip"
    assert detect_format(job / "annotations.json").details == "SAM 2 demo export annotations.json (48 frames)"
    assert detect_format(next(fork.glob("*.zip"))).format == "sam2_demo_zip"
    sav = detect_format(fixtures_dir / "sav_example" / "sav_000001_manual.json")
    assert sav.format == "sav" and "121 annotated frames" in sav.details and sav.data["masklet_num"] == 5
    assert detect_format(fixtures_dir / "sav_example" / "sav_000001_auto.json").format == "sav"


@pytest.mark.parametrize(("name", "content", "message"), [
    ("export.zip", b"this is not a zip", "not a ZIP archive"),
    ("clip.mp4", b"\x00\x00\x00\x18ftypmp42", "is a video"),
    ("notes.txt", b"hello", "not a ZIP, JSON or JSONL"),
    ("bad.json", b'{"images": [', "not valid JSON (line 1 column 13"),
    ("num.json", b"42", "JSON is a number, not an object"),
    ("list.json", b"[1, 2]", "JSON is a list of numbers"),
    ("coco.json", b'{"images": [], "licenses": []}', "looks like COCO instances JSON needs ['annotations']"),
    ("other.json", b'{"a": 1}', "JSON has keys ['a']; expected SAM 2 demo export"),
    ("s.jsonl", b'{"frame": 1}\n', "first record has ['frame']"),
    ("t.jsonl", b"{nope\n", "not valid JSON lines"),
    ("latin.json", b'{"\xff": 1}', "not UTF-8"),
    ("empty.json", b"", "not valid JSON"),
])
def test_rejections_say_why(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as err:
        detect_format(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_folders_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file or folder"):
        detect_format(tmp_path / "absent.zip")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(UserError, match=r"folder holds \['x.txt'\]"):
        detect_format(tmp_path)
    (tmp_path / "JPEGImages_24fps").mkdir()
    (tmp_path / "Annotations_6fps").mkdir()
    assert detect_format(tmp_path).format == "sav"
    nested = tmp_path / "job" / "inner"
    nested.mkdir(parents=True)
    (nested / "annotations.json").write_text("{}")
    assert detect_format(tmp_path / "job").format == "sam2_demo_zip"
    several = tmp_path / "lines.json"
    several.write_text('{"frame_index": 0, "results": []}\n{"frame_index": 1, "results": []}\n')
    assert detect_format(several).format == "sam2_stream"


def test_labels_json_csv_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('{"0": "circle", "1": " square "}')
    assert load_labels(path) == {0: "circle", 1: "square"}
    path.write_text('["cat", "dog"]')
    assert load_labels(path) == {0: "cat", 1: "dog"}
    csv = tmp_path / "labels.csv"
    csv.write_text("id,name\n0,circle\n# comment\n\n2,star, ignored\n")
    assert load_labels(csv) == {0: "circle", 2: "star"}
    for text, message in [('{"a": "x"}', "is not an integer"), ('{"0": ""}', "non-empty string"),
                          ("{oops", "not valid JSON"), ('"x"', "must map ids to names")]:
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            load_labels(path)
    for text, message in [("0\n", "needs 'id,name'"), ("id,name\n", "no 'id,name' line")]:
        csv.write_text(text)
        with pytest.raises(UserError, match=message):
            load_labels(csv)
    with pytest.raises(UserError, match="cannot read the labels file"):
        load_labels(tmp_path / "absent.csv")
