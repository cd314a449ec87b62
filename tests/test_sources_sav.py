"""SA-V reader: manual/auto masklets, frame 4k mapping, invisible objects, frame folders, val/test layout, fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.errors import UserError
from pipeline.masks import decode_rle
from pipeline.sources import IssueLog, ReadOptions, open_source
from pipeline.video import iter_video_frames

SAV = "sav_example"


def read_source(path, **options):
    log = IssueLog()
    videos = tuple(Path(v) for v in options.pop("videos", ()))
    with open_source(path, ReadOptions(videos=videos, **options), log) as src:
        frames = []
        for vid, indices in src.plan().items():
            for frame in src.frames(vid, indices):
                frames.append((vid, frame.frame_index, frame.width, frame.height, frame.objects))
                if frame.image_path is not None:
                    frame.image.close()
        info = src.info()
    return frames, log, info


@pytest.fixture(scope="module")
def truth(sample_dir: Path) -> dict:
    return json.loads((sample_dir / "sample_truth.json").read_text())["sav"]


def _same_as_truth(frames: list, truth: dict) -> None:
    assert [f[1] for f in frames] == [f["frame_index"] for f in truth["frames"]]
    for (_, index, width, height, objects), expected in zip(frames, truth["frames"], strict=True):
        assert (width, height) == (truth["width"], truth["height"])
        assert [(o.object_id, o.bbox, o.area) for o in objects] == \
               [(o["object_id"], o["bbox"], o["area"]) for o in expected["objects"]], index


def test_sav_json_with_video_is_exact(sample_dir: Path, truth: dict) -> None:
    frames, log, info = read_source(sample_dir / truth["file"])
    _same_as_truth(frames, truth)
    assert all(f[1] % 4 == 0 for f in frames)
    assert any(not f[4] for f in frames)  # all-zero masks mean "not visible": no object, no issue
    assert log.issues == []
    assert {o.label for f in frames for o in f[4]} == {f"object_{i}" for i in truth["masklet_id"]}
    assert info["fps_claimed"] == pytest.approx(24.0) and info["fps_video"] == pytest.approx(24.0)


def test_sav_labels_and_frame_folder_beside(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    shutil.copy(sample_dir / truth["file"], tmp_path / truth["file"])
    folder = tmp_path / truth["video_id"]
    folder.mkdir()
    for index, image in iter_video_frames(sample_dir / truth["video"], [f["frame_index"] for f in truth["frames"]]):
        image.save(folder / f"{index:05d}.jpg", quality=95)
    frames, _, info = read_source(tmp_path / truth["file"], labels={0: "circle", 1: "square"})
    _same_as_truth(frames, truth)
    assert Path(info["video"]) == folder
    labels = {o.object_id: o.label for f in frames for o in f[4]}
    assert labels[0] == "circle" and labels[1] == "square" and labels.get(2, "object_2") == "object_2"


def test_sav_without_video_names_what_to_pass(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    shutil.copy(sample_dir / truth["file"], tmp_path / truth["file"])
    with pytest.raises(UserError, match="--video") as err:
        read_source(tmp_path / truth["file"])
    assert f"{truth['video_id']}.mp4" in str(err.value) and truth["file"] in str(err.value)


def test_sav_val_layout(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    doc = json.loads((sample_dir / truth["file"]).read_text())
    vid = truth["video_id"]
    jpegs, annotations = tmp_path / "JPEGImages_24fps" / vid, tmp_path / "Annotations_6fps" / vid
    jpegs.mkdir(parents=True)
    for index, image in iter_video_frames(sample_dir / truth["video"]):
        image.save(jpegs / f"{index:05d}.jpg", quality=95)
    for k, row in enumerate(doc["masklet"]):
        for oid, rle in zip(doc["masklet_id"], row, strict=True):
            (annotations / f"{oid:03d}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(decode_rle(rle) * 255).save(annotations / f"{oid:03d}" / f"{4 * k:05d}.png")
    frames, log, info = read_source(tmp_path)
    _same_as_truth(frames, truth)
    assert info["format"] == "sav" and log.issues == []


def test_sav_bad_rows_and_rles_become_issues(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    from pipeline.masks import encode_rle, resize_mask

    doc = json.loads((sample_dir / truth["file"]).read_text())
    visible = [(k, j) for k, row in enumerate(doc["masklet"]) for j, rle in enumerate(row)
               if decode_rle(rle).any()]
    (k1, j1), (k2, j2), (k3, j3) = visible[0], visible[5], visible[10]
    doc["masklet"][k1][j1] = {"size": doc["masklet"][k1][j1]["size"], "counts": "~~~~"}
    half = resize_mask(decode_rle(doc["masklet"][k2][j2]), 90, 160)  # same aspect: resized, with a warning
    doc["masklet"][k2][j2] = encode_rle(half)
    doc["masklet"][k3][j3] = encode_rle(resize_mask(decode_rle(doc["masklet"][k3][j3]), 100, 100))
    doc["masklet"][1] = doc["masklet"][1][:-1]  # a missing mask: that object is not visible, the row is flagged
    path = tmp_path / truth["file"]
    path.write_text(json.dumps(doc))
    frames, log, _ = read_source(path, videos=[sample_dir / truth["video"]])
    assert len(frames) == len(truth["frames"])
    found = sorted((i["rule"], i["severity"], i["frame_index"]) for i in log.issues)
    assert found == sorted([("invalid_rle", "error", 4 * k1), ("mask_size_mismatch", "warning", 4 * k2),
                            ("mask_size_mismatch", "error", 4 * k3), ("invalid_record", "warning", 4)])
    resized = {o.object_id: o for o in frames[k2][4]}[doc["masklet_id"][j2]]
    expected = {o["object_id"]: o for o in truth["frames"][k2]["objects"]}[doc["masklet_id"][j2]]
    assert all(abs(a - b) <= 2 for a, b in zip(resized.bbox, expected["bbox"], strict=True))
    assert doc["masklet_id"][j3] not in {o.object_id for o in frames[k3][4]}
    assert doc["masklet_id"][j1] not in {o.object_id for o in frames[k1][4]}


def test_fixture_manual_and_auto_masklets(fixtures_dir: Path, tmp_path: Path) -> None:
    manual = fixtures_dir / SAV / "sav_000001_manual.json"
    doc = json.loads(manual.read_text())
    assert (len(doc["masklet"]), len(doc["masklet_id"])) == (121, 5)
    frames_dir = tmp_path / "blank"
    frames_dir.mkdir()
    blank = Image.new("RGB", (480, 848))  # portrait, like the real video (not in the fixture)
    for k in range(121):
        blank.save(frames_dir / f"{4 * k:05d}.jpg", quality=30)
    frames, log, info = read_source(manual, videos=[frames_dir])
    assert len(frames) == 121 and frames[-1][1] == 480
    assert all((f[2], f[3]) == (480, 848) for f in frames) and log.issues == []
    for k in (0, 60, 120):
        visible = {oid: rle for oid, rle in zip(doc["masklet_id"], doc["masklet"][k], strict=True)
                   if mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode()}) > 0}
        objects = {o.object_id: o for o in frames[k][4]}
        assert set(objects) == set(visible)
        for oid, rle in visible.items():
            coco = {"size": rle["size"], "counts": rle["counts"].encode()}
            x, y, w, h = mask_utils.toBbox(coco)
            assert objects[oid].bbox == [int(x), int(y), int(x + w), int(y + h)]
            assert objects[oid].area == int(mask_utils.area(coco))
    assert sum(1 for f in frames if 3 in {o.object_id for o in f[4]}) == 121 - 113  # first appears at k=113
    both, _, info = read_source(manual, videos=[frames_dir], include_auto=True)
    ids = {o.object_id for f in both for o in f[4]}
    assert ids == {0, 1, 2, 3, 4} | {1000 + i for i in range(9)}
    assert "auto masklets" in " ".join(info["corrections"])


def test_fixture_auto_file_alone_and_fps_claim(fixtures_dir: Path, tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for k in (0, 1):
        Image.new("RGB", (480, 848)).save(frames_dir / f"{4 * k:05d}.jpg")
    frames, log, info = read_source(fixtures_dir / SAV / "sav_000001_auto.json", videos=[frames_dir])
    assert len(frames) == 2 and info["fps_claimed"] == pytest.approx(24.0)
    assert {o.object_id for f in frames for o in f[4]} <= set(range(9))
    assert sum(i["rule"] == "missing_frame" for i in log.issues) == 119
    mask = decode_rle(frames[0][4][0].rle)
    assert mask.shape == (848, 480) and np.count_nonzero(mask) == frames[0][4][0].area
