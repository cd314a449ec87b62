"""convert(): several inputs -> one dataset, sampling, labels, atomic output; the CLI's bad-input table (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.dataset import open_dataset
from pipeline.errors import UserError
from pipeline.ingest import convert, detect, select_frames
from pipeline.masks import encode_rle

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def truth(sample_dir: Path) -> dict:
    return json.loads((sample_dir / "sample_truth.json").read_text())


def cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline", "convert", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_several_inputs_make_one_dataset(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    demo, sav, coco, stream = (truth[k] for k in ("sam2_demo_zip", "sav", "coco", "sam2_stream"))
    inputs = [sample_dir / demo[0]["file"], sample_dir / sav["file"], sample_dir / coco["file"],
              sample_dir / stream["file"], sample_dir / stream["file"]]
    out = tmp_path / "ds"
    summary = convert(inputs, out, labels=sample_dir / "labels.json", tasks=["grounding", "counting"],
                      convention="qwen2_vl", max_frames=10)
    records = open_dataset(out).records()
    assert len({r.id for r in records}) == len(records) == summary.frames
    assert summary.videos == [demo[0]["video_id"], sav["video_id"], "coco_frames", "sam2_stream", "sam2_stream-2"]
    assert all(r.id == f"{r.video_id}:{r.frame_index:06d}" for r in records)
    assert all((out / r.image).is_file() for r in records)
    assert set(summary.labels) <= {"circle", "square", "triangle", "star"}
    assert summary.objects == sum(len(r.objects) for r in records) == sum(summary.labels.values())
    meta = json.loads((out / "dataset.json").read_text())
    assert [s["format"] for s in meta["sources"]] == ["sam2_demo_zip", "sav", "coco", "sam2_stream", "sam2_stream"]
    assert meta["frames"] == summary.frames and meta["labels"] == dict(sorted(summary.labels.items()))
    assert meta["convention"] == "qwen2_vl" and meta["tasks"] == ["grounding", "counting"]
    assert any("already used" in w for w in meta["warnings"])
    assert all(set(i) == {"rule", "severity", "source", "video_id", "frame_index", "object_id", "message"}
               for i in meta["issues"])
    llava = json.loads((out / "llava.json").read_text())
    assert isinstance(llava, list) and llava and "<|box_start|>" in " ".join(
        row["conversations"][1]["value"] for row in llava)
    for name in ("sharegpt.json", "dataset_info.json", "messages.jsonl", "hf", "records.jsonl", "images"):
        assert (out / name).exists(), name
    assert not list(tmp_path.glob(".ds.tmp-*"))


def test_every_and_max_frames(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    assert select_frames([0, 4, 8, 12, 16], every=2, max_frames=2) == [0, 8]
    out = tmp_path / "ds"
    summary = convert([sample_dir / truth["sam2_stream"]["file"]], out, every=5, max_frames=4)
    assert [r.frame_index for r in open_dataset(out).records()] == [0, 5, 10, 15] and summary.frames == 4
    assert sorted(p.name for p in (out / "images" / "sam2_stream").iterdir()) == \
           ["000000.jpg", "000005.jpg", "000010.jpg", "000015.jpg"]
    again = convert([sample_dir / truth["sam2_stream"]["file"]], out, every=5, max_frames=3, overwrite=True)
    assert again.frames == 3 and len(open_dataset(out).records()) == 3
    with pytest.raises(UserError, match="no visible object in any selected frame"):
        convert([sample_dir / truth["sam2_stream"]["file"]], tmp_path / "x", max_frames=1)
    with pytest.raises(UserError, match="--every"):
        convert([sample_dir / truth["sam2_stream"]["file"]], tmp_path / "x", every=0)
    with pytest.raises(UserError, match="--max-frames"):
        convert([sample_dir / truth["sam2_stream"]["file"]], tmp_path / "x", max_frames=0)
    with pytest.raises(UserError, match="unknown task"):
        convert([sample_dir / truth["sam2_stream"]["file"]], tmp_path / "x", tasks=["dance"])
    assert not (tmp_path / "x").exists()


def test_failure_leaves_no_output(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    stream = [json.loads(line) for line in (sample_dir / truth["sam2_stream"]["file"]).read_text().splitlines()]
    for record in stream:
        for result in record["results"]:
            result["mask"] = {"size": [180, 320], "counts": "0"}  # all empty, and invalid
    path = tmp_path / "in" / "sam2_stream.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(json.dumps(r) for r in stream))
    shutil.copy(sample_dir / truth["sam2_stream"]["video"], path.parent)
    expected = r"no usable annotation: frame 0, object 0: RLE runs cover 0 pixels, size 180x320 needs 57600 \(and \d+ "
    with pytest.raises(UserError, match=expected):
        convert([path], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
    with pytest.raises(UserError, match="output folder already exists"):
        convert([sample_dir / truth["sam2_stream"]["file"]], path.parent)
    with pytest.raises(UserError, match="output folder holds the input"):
        convert([path], path.parent, overwrite=True)
    assert path.is_file()


def test_detect_for_the_app(sample_dir: Path, truth: dict) -> None:
    found = detect(sample_dir / truth["sav"]["file"])
    assert found.format == "sav" and "annotated frames" in found.details


def test_family_resolution() -> None:
    from pipeline.registry import resolve_convention

    assert resolve_convention("qwen2_5_vl") == "qwen2_5_vl"
    assert resolve_convention("qwen2.5-vl-3b") == "qwen2_5_vl"
    assert resolve_convention("Qwen/Qwen2-VL-2B-Instruct") == "qwen2_vl"
    assert resolve_convention("tiny-smolvlm") == "json"
    assert resolve_convention("smolvlm") == "json"
    assert resolve_convention("tiny") == "json"
    with pytest.raises(UserError, match="unknown --family"):
        resolve_convention("gpt-17")


def test_cli_success_prints_summary(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n0,ball\n1,box\n2,tri\n3,star\n")
    demo = truth["sam2_demo_zip"][0]
    result = cli(sample_dir / demo["file"], "--labels", labels, "--family", "tiny-smolvlm", "--every", "2",
                 "--out", tmp_path / "ds", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "frames from 1 video(s)" in result.stdout and "files: dataset.json" in result.stdout
    assert "convert:" in result.stderr and "Traceback" not in result.stderr
    records = open_dataset(tmp_path / "ds").records()
    assert [r.frame_index for r in records] == demo["frame_indices"][::2]
    assert {o.label for r in records for o in r.objects} <= {"ball", "box", "tri", "star"}
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["family"] == "tiny-smolvlm"


def _bad_inputs(sample_dir: Path, truth: dict, work: Path) -> list[tuple[str, list, str, str]]:
    """(case, CLI arguments, file the error must name, text it must contain)."""
    stream = truth["sam2_stream"]
    lines = [json.loads(line) for line in (sample_dir / stream["file"]).read_text().splitlines()][:3]
    (work / "fake.zip").write_bytes(b"not a zip at all")
    (work / "bad.json").write_text('{"images": [1,')
    (work / "list.json").write_text("[1, 2, 3]")
    (work / "keys.json").write_text('{"images": [], "info": {}}')
    for record in lines:
        for result in record["results"]:
            result["mask"] = {"size": [180, 320], "counts": "#bad"}
    (work / "rle.jsonl").write_text("\n".join(map(json.dumps, lines)))
    for record in lines:
        for result in record["results"]:
            result["mask"] = encode_rle(np.ones((100, 100), dtype=np.uint8))
    (work / "size.jsonl").write_text("\n".join(map(json.dumps, lines)))
    (work / "alone.jsonl").write_text(json.dumps(lines[0]))
    (work / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 200)
    coco = json.loads((sample_dir / truth["coco"]["file"]).read_text())
    for image in coco["images"]:
        image["file_name"] = f"gone/missing_{image['id']:06d}.jpg"  # found nowhere, not even by its base name
    (work / "coco.json").write_text(json.dumps(coco))
    video = sample_dir / stream["video"]
    return [
        ("non-zip .zip", [work / "fake.zip"], "fake.zip", "not a ZIP archive"),
        ("bad JSON", [work / "bad.json"], "bad.json", "not valid JSON"),
        ("wrong-type JSON", [work / "list.json"], "list.json", "JSON is a list of numbers"),
        ("JSON missing keys", [work / "keys.json"], "keys.json", "needs ['annotations']"),
        ("invalid RLE", [work / "rle.jsonl", "--video", video], "rle.jsonl", "RLE counts string is malformed"),
        ("RLE size mismatch", [work / "size.jsonl", "--video", video], "size.jsonl", "different aspect ratio"),
        ("missing video", [work / "alone.jsonl"], "alone.jsonl", "no video found"),
        ("video does not decode", [work / "alone.jsonl", "--video", work / "broken.mp4"], "broken.mp4",
         "video does not decode"),
        ("missing COCO image", [work / "coco.json", "--images", sample_dir], "coco.json", "image file not found"),
        ("missing input", [work / "absent.zip"], "absent.zip", "no such file or folder"),
    ]


def test_cli_bad_inputs_exit_2_with_one_error_line(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    cases = _bad_inputs(sample_dir, truth, work)
    before, sample_before = snapshot(tmp_path), snapshot(sample_dir)
    for case, args, name, text in cases:
        out = tmp_path / "out"
        result = cli(*args, "--out", out, cwd=work)
        errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
        assert result.returncode == 2, (case, result.stderr)
        assert len(errors) == 1 and errors[0].startswith("error: "), (case, result.stderr)
        assert name in errors[0] and text in errors[0], (case, errors[0])
        assert "Traceback" not in result.stderr and result.stdout == "", case
        assert not out.exists(), case
    assert snapshot(tmp_path) == before and snapshot(sample_dir) == sample_before  # nothing written anywhere
