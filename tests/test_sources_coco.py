"""COCO and YouTube-VIS readers: polygons / RLE kinds, file-name keys, image lookup, stored boxes, bad entries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.masks import encode_rle, polygon_to_mask
from pipeline.sources import IssueLog, ReadOptions, open_source
from pipeline.sources.coco import frame_key, segmentation_rle


def read_source(path, **options):
    log = IssueLog()
    images = options.pop("images", None)
    with open_source(path, ReadOptions(images=Path(images) if images else None, **options), log) as src:
        frames = []
        for vid, indices in src.plan().items():
            for frame in src.frames(vid, indices):
                frames.append((vid, frame.frame_index, frame.width, frame.height, frame.objects))
                frame.image.close()
        info = src.info()
    return frames, log, info


@pytest.fixture(scope="module")
def truth(sample_dir: Path) -> dict:
    return json.loads((sample_dir / "sample_truth.json").read_text())["coco"]


def _check(frames: list, truth: dict, tolerance: int = 1) -> None:
    assert [f[1] for f in frames] == [f["frame_index"] for f in truth["frames"]]
    for (_, index, width, height, objects), expected in zip(frames, truth["frames"], strict=True):
        assert (width, height) == (truth["width"], truth["height"])
        got = {o.object_id: o for o in objects}
        assert set(got) == {o["object_id"] for o in expected["objects"]}, index
        for obj in expected["objects"]:
            assert got[obj["object_id"]].label == obj["label"]
            assert max(abs(a - b) for a, b in zip(got[obj["object_id"]].bbox, obj["bbox"], strict=True)) <= tolerance


def test_coco_all_segmentation_kinds_match_truth(sample_dir: Path, truth: dict) -> None:
    kinds = {o["segmentation"] for f in truth["frames"] for o in f["objects"]}
    assert kinds == {"polygon", "rle", "uncompressed_rle"}
    frames, log, info = read_source(sample_dir / truth["file"])
    _check(frames, truth)
    assert {f[0] for f in frames} == {"coco_frames"}  # frame_000012.jpg: the folder names the video
    assert log.issues == [] and info["format"] == "coco"


def test_coco_images_option_and_missing_image(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    doc = json.loads((sample_dir / truth["file"]).read_text())
    for image in doc["images"]:
        image["file_name"] = Path(image["file_name"]).name
    (tmp_path / "ann").mkdir()
    path = tmp_path / "ann" / "instances.json"
    path.write_text(json.dumps(doc))
    shutil.copytree(sample_dir / truth["images_dir"], tmp_path / "pictures")
    (tmp_path / "pictures" / Path(truth["frames"][2]["image"]).name).unlink()
    frames, log, _ = read_source(path, images=tmp_path / "pictures")
    assert len(frames) == len(truth["frames"]) - 1
    assert {f[0] for f in frames} == {"instances"}  # no folder in the names: the JSON file names the video
    assert [(i["rule"], i["frame_index"]) for i in log.issues] == [("missing_frame", truth["frames"][2]["frame_index"])]
    assert "image file not found" in log.issues[0]["message"]


def test_coco_never_reads_outside_its_images_folder(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    doc = json.loads((sample_dir / truth["file"]).read_text())
    outside = tmp_path / "secret.jpg"
    shutil.copy(sample_dir / truth["frames"][0]["image"], outside)
    doc["images"][0]["file_name"] = "../secret.jpg"
    doc["images"][1]["file_name"] = str(outside)
    (tmp_path / "json").mkdir()
    path = tmp_path / "json" / "coco.json"
    path.write_text(json.dumps(doc))
    shutil.copytree(sample_dir / truth["images_dir"], tmp_path / "json" / truth["images_dir"])
    frames, log, _ = read_source(path)
    assert len(frames) == len(truth["frames"]) - 2
    assert [i["rule"] for i in log.issues] == ["missing_frame", "missing_frame"]
    assert "not found" in log.issues[0]["message"] and "leads outside" in log.issues[1]["message"]


def test_coco_stored_boxes_and_bad_annotations(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    doc = json.loads((sample_dir / truth["file"]).read_text())
    anns = doc["annotations"]
    anns[0]["bbox"] = [anns[0]["bbox"][0] + 30, anns[0]["bbox"][1], anns[0]["bbox"][2], anns[0]["bbox"][3]]
    anns[1]["bbox"] = [300.0, 150.0, 100.0, 100.0]
    anns[2]["segmentation"] = {"size": [180, 320], "counts": "!!"}
    anns[3]["segmentation"] = []
    anns[4]["segmentation"] = [[1, 2, 3]]
    anns.append({"id": 999, "image_id": 12345, "category_id": 1, "segmentation": []})
    doc["images"].append({"file_name": 7})
    doc["unknown_key"] = {"ignored": True}
    path = tmp_path / "coco_variant.json"
    path.write_text(json.dumps(doc))
    frames, log, _ = read_source(path, images=sample_dir)
    rules = sorted((i["rule"], i["severity"]) for i in log.issues)
    assert rules == sorted([("bbox_mismatch", "warning"), ("bbox_out_of_bounds", "warning"), ("invalid_rle", "error"),
                            ("empty_mask", "warning"), ("invalid_rle", "error"), ("invalid_record", "error"),
                            ("invalid_record", "error")])
    assert sum(len(f[4]) for f in frames) == len(anns) - 1 - 3


def test_frame_keys_and_segmentation_kinds() -> None:
    assert frame_key("video_000123.jpg", 5, "coco") == ("video", 123)
    assert frame_key("clips/walk/frame_00012.png", 5, "coco") == ("walk", 12)
    assert frame_key("00012.jpg", 5, "coco") == ("coco", 12)
    assert frame_key("cat.jpg", 5, "coco") == ("cat", 5)
    assert frame_key("IMG1234.jpg", 5, "coco") == ("coco", 1234)  # a generic prefix names no video
    assert frame_key("clip7_0003.jpg", 5, "coco") == ("clip7", 3)
    square = [10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]
    polygon, problem = segmentation_rle([square], 40, 50)
    assert problem is None and polygon["size"] == [40, 50]
    uncompressed = {"size": [40, 50], "counts": [0, 2000]}
    assert segmentation_rle(uncompressed, 40, 50)[0] is not None
    assert segmentation_rle(encode_rle(polygon_to_mask(square, 40, 50)), 40, 50)[1] is None
    assert segmentation_rle(None, 40, 50) == (None, "has no segmentation")
    assert "neither polygons nor RLE" in segmentation_rle("abc", 40, 50)[1]


def _ytvis(sample_dir: Path, truth: dict) -> dict:
    """The sample's COCO frames as one YouTube-VIS video (one track per object, null where absent)."""
    coco = json.loads((sample_dir / truth["file"]).read_text())
    names = [image["file_name"] for image in coco["images"]]
    position = {image["id"]: i for i, image in enumerate(coco["images"])}
    tracks: dict[int, dict] = {}
    for ann in coco["annotations"]:
        oid = ann["attributes"]["track_id"]
        track = tracks.setdefault(oid, {"id": oid, "video_id": 7, "category_id": ann["category_id"],
                                        "segmentations": [None] * len(names), "bboxes": [None] * len(names)})
        track["segmentations"][position[ann["image_id"]]] = ann["segmentation"]
        track["bboxes"][position[ann["image_id"]]] = ann["bbox"]
    return {"videos": [{"id": 7, "width": 320, "height": 180, "length": len(names), "file_names": names}],
            "annotations": list(tracks.values()), "categories": coco["categories"], "info": {"extra": 1}}


def test_ytvis_matches_truth(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    doc = _ytvis(sample_dir, truth)
    path = tmp_path / "ytvis.json"
    path.write_text(json.dumps(doc))
    frames, log, info = read_source(path, images=sample_dir)
    _check(frames, truth)
    assert info["format"] == "ytvis" and log.issues == [] and {f[0] for f in frames} == {"coco_frames"}
    doc["annotations"][0]["segmentations"][3] = {"size": [180, 320], "counts": "bad!"}
    doc["annotations"].append({"id": 50, "video_id": 99, "segmentations": []})
    doc["videos"].append({"id": 8})
    path.write_text(json.dumps(doc))
    frames, log, _ = read_source(path, images=sample_dir)
    assert sorted(i["rule"] for i in log.issues) == ["invalid_record", "invalid_record", "invalid_rle"]


def test_coco_and_ytvis_unusable_files(tmp_path: Path) -> None:
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": [{"id": "x"}], "annotations": []}))
    with pytest.raises(UserError, match="no usable image"):
        read_source(path)
    path = tmp_path / "yt.json"
    path.write_text(json.dumps({"videos": [{"id": 1, "file_names": []}], "annotations": []}))
    with pytest.raises(UserError, match="no usable video"):
        read_source(path)
