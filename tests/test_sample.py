"""The built-in sample: every format decodes back to the truth, the demo ZIP carries the real exporter's defects."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pipeline.cli import main
from pipeline.errors import UserError
from pipeline.masks import mask_bbox, resize_mask, runs_to_mask
from pipeline.sample import LABELS, generate_sample

REAL_JOB = "sam2_demo_fork_export/c6709f62-6eaa-4bd2-b423-320a10eb5397"


@pytest.fixture(scope="module")
def truth(sample_dir: Path) -> dict[str, Any]:
    return json.loads((sample_dir / "sample_truth.json").read_text())


@pytest.fixture(scope="module")
def demo(sample_dir: Path, truth: dict[str, Any]) -> dict[str, Any]:
    """The first demo session: its truth, annotations.json, metadata.json and ZIP member names."""
    session = truth["sam2_demo_zip"][0]
    with zipfile.ZipFile(sample_dir / session["file"]) as archive:
        return {"truth": session, "names": archive.namelist(),
                "annotations": json.loads(archive.read("annotations.json")),
                "metadata": json.loads(archive.read("metadata.json")),
                "annotations_text": archive.read("annotations.json").decode()}


def schema(value: Any) -> Any:
    """Keys in order and value types, recursively (a list by its first item)."""
    if isinstance(value, dict):
        return [(key, schema(item)) for key, item in value.items()]
    if isinstance(value, list):
        return ["list", schema(value[0]) if value else None]
    return type(value).__name__


def decode_video(path: Path) -> tuple[float, int, int, int, list[np.ndarray]]:
    """(fps, frame count, width, height, RGB frames) measured with PyAV."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return float(stream.average_rate), len(frames), stream.codec_context.width, stream.codec_context.height, frames


def coco_decode(segmentation: Any, height: int, width: int) -> np.ndarray:
    if isinstance(segmentation, list):
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)))
    if isinstance(segmentation["counts"], list):
        return mask_utils.decode(mask_utils.frPyObjects(segmentation, height, width))
    return mask_utils.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()})


def assert_box_close(got: list[int], want: list[int], tol_x: int, tol_y: int, where: str) -> None:
    dx = max(abs(got[0] - want[0]), abs(got[2] - want[2]))
    dy = max(abs(got[1] - want[1]), abs(got[3] - want[3]))
    assert dx <= tol_x and dy <= tol_y, f"{where}: box {got} vs truth {want}"


# ---------------------------------------------------------------- the files


def test_sample_writes_every_format_into_the_folder(sample_dir: Path, truth: dict[str, Any]) -> None:
    session = truth["sam2_demo_zip"][0]
    assert session["file"].startswith("sam2_export_") and session["file"].endswith(".zip")
    assert session["video"].startswith("session_") and session["video"].endswith(".mp4")
    for name in (session["file"], session["video"], truth["sav"]["file"], truth["sav"]["video"],
                 "coco_instances.json", "sam2_stream.jsonl", "sam2_stream.mp4", "labels.json", "sample_truth.json"):
        assert (sample_dir / name).is_file() and (sample_dir / name).stat().st_size > 0, name
    assert truth["sav"]["file"] == f"{truth['sav']['video_id']}_manual.json"
    assert len(list((sample_dir / "coco_frames").glob("*.jpg"))) == len(truth["coco"]["frames"]) == 12
    assert json.loads((sample_dir / "labels.json").read_text()) == truth["labels"]
    assert set(truth["labels"].values()) <= set(LABELS) and truth["labels"]["0"] == "circle"


def test_videos_decode_with_right_count_fps_and_size(sample_dir: Path, truth: dict[str, Any]) -> None:
    for entry in (truth["sam2_demo_zip"][0], truth["sav"], truth["sam2_stream"]):
        fps, count, width, height, _ = decode_video(sample_dir / entry["video"])
        assert (fps, count, width, height) == (24.0, 72, 320, 180), entry["video"]
    names = {truth["sam2_demo_zip"][0]["video"], truth["sav"]["video"], truth["sam2_stream"]["video"]}
    assert len(names) == 3


# ---------------------------------------------------------------- SAM 2 demo-export ZIP


def test_demo_zip_has_the_real_exporters_layout_keys_and_types(fixtures_dir: Path, demo: dict[str, Any]) -> None:
    real_ann = json.loads((fixtures_dir / REAL_JOB / "annotations.json").read_text())
    real_meta = json.loads((fixtures_dir / REAL_JOB / "metadata.json").read_text())
    ours = demo["annotations"]
    assert list(ours) == list(real_ann) == ["video", "export_config", "annotations"]
    assert schema(ours["video"]) == schema(real_ann["video"])
    assert schema(ours["export_config"]) == schema(real_ann["export_config"])
    assert list(ours["annotations"][0]) == list(real_ann["annotations"][0])
    ours_frame = next(frame for frame in ours["annotations"] if frame["objects"])
    assert schema(ours_frame) == schema(real_ann["annotations"][0])
    assert schema(demo["metadata"]) == schema(real_meta)
    assert demo["annotations_text"].startswith('{\n  "video": {\n    "filename": "session_')  # indent=2 as real
    real_zip = next((fixtures_dir / "sam2_demo_fork_export").glob("sam2_export_*.zip"))
    with zipfile.ZipFile(real_zip) as archive:
        assert archive.namelist() == demo["names"][:2] == ["annotations.json", "metadata.json"]
    assert all(name.startswith("images/frame_") and name.endswith(".png") for name in demo["names"][2:])
    assert ours["video"]["filename"] == demo["truth"]["video"]
    assert ours["export_config"]["frame_indices"] == list(range(0, 72, 5))


def test_demo_zip_decodes_back_to_truth_within_the_grid_tolerance(demo: dict[str, Any]) -> None:
    session = demo["truth"]
    width, height = session["width"], session["height"]
    tol_x, tol_y = math.ceil(width / 256), math.ceil(height / 256)
    truth_frames = {frame["frame_index"]: frame for frame in session["frames"]}
    checked = 0
    for frame in demo["annotations"]["annotations"]:
        want = truth_frames[frame["frame_index"]]["objects"]
        assert [obj["object_id"] for obj in frame["objects"]] == [obj["object_id"] for obj in want]
        for obj, exact in zip(frame["objects"], want, strict=True):
            grid = runs_to_mask([int(r) for r in obj["mask_rle"].split()], 256, 256, order="C")
            assert mask_bbox(grid) == exact["bbox_256"] and int(grid.sum()) == exact["area_256"] == obj["area"]
            full = resize_mask(grid, height, width)  # non-uniform: x*W/256, y*H/256
            got, want = mask_bbox(full), exact["bbox"]
            assert_box_close(got, want, tol_x, tol_y, f"frame {frame['frame_index']}")
            assert got[:2] <= want[:2] and got[2] >= want[2] and got[3] >= want[3]  # no sliver lost on the grid
            assert obj["label"] == f"object_{obj['object_id']}" and exact["label"] == LABELS[obj["object_id"]]
            checked += 1
    assert checked >= 20


def test_demo_zip_runs_are_row_major_on_the_256_grid_and_bbox_is_transposed(demo: dict[str, Any]) -> None:
    objects = [(obj, exact) for frame, truth_frame in zip(demo["annotations"]["annotations"],
                                                          demo["truth"]["frames"], strict=True)
               for obj, exact in zip(frame["objects"], truth_frame["objects"], strict=True)]
    column_major_matches = 0
    for obj, exact in objects:
        runs = [int(r) for r in obj["mask_rle"].split()]
        assert sum(runs) == 65536 and "size" not in obj
        x1, y1, x2, y2 = exact["bbox_256"]
        assert mask_bbox(runs_to_mask(runs, 256, 256, order="C")) == [x1, y1, x2, y2]
        column_major_matches += mask_bbox(runs_to_mask(runs, 256, 256, order="F")) == [x1, y1, x2, y2]
        assert obj["bbox"] == [y1, x1, y2 - y1, x2 - x1]  # [y, x, h, w] of the real mask, in grid units
    assert column_major_matches <= len(objects) // 10
    assert sum(obj["bbox"] != [e["bbox_256"][0], e["bbox_256"][1], e["bbox_256"][2] - e["bbox_256"][0],
                               e["bbox_256"][3] - e["bbox_256"][1]] for obj, e in objects) >= 0.9 * len(objects)


def test_demo_zip_claims_30_fps_for_a_24_fps_video(sample_dir: Path, demo: dict[str, Any]) -> None:
    ann, meta = demo["annotations"], demo["metadata"]
    fps, count, *_ = decode_video(sample_dir / ann["video"]["filename"])
    assert (fps, count) == (24.0, 72)
    assert ann["video"]["source_fps"] == meta["video"]["fps"] == 30.0
    assert ann["video"]["total_frames"] == count  # the frame count itself is right
    assert ann["video"]["duration_sec"] == round(72 / 30, 3) != 72 / 24
    for frame in ann["annotations"]:
        assert frame["timestamp_sec"] == round(frame["frame_index"] / 30, 3)
    assert ann["annotations"][1]["timestamp_sec"] != round(ann["annotations"][1]["frame_index"] / 24, 3)
    assert ann["export_config"]["target_fps"] == 6.0


def test_demo_zip_confidence_is_constant_and_empty_frames_have_no_png(demo: dict[str, Any]) -> None:
    frames = demo["annotations"]["annotations"]
    assert {obj["confidence"] for frame in frames for obj in frame["objects"]} == {0.95}
    empty = [frame["frame_index"] for frame in frames if not frame["objects"]]
    assert empty and empty[0] == 0
    pngs = {f"images/frame_{frame['frame_index']:06d}.png" for frame in frames if frame["objects"]}
    assert set(demo["names"][2:]) == pngs
    stats = demo["metadata"]["statistics"]
    assert stats["total_frames"] == len(frames) and stats["objects_per_frame"] == stats["total_objects"] / len(frames)


def test_demo_overlay_png_is_not_the_clean_frame(sample_dir: Path, demo: dict[str, Any]) -> None:
    _, _, width, height, video = decode_video(sample_dir / demo["truth"]["video"])
    frame = next(f for f in demo["annotations"]["annotations"] if len(f["objects"]) >= 2)
    with zipfile.ZipFile(sample_dir / demo["truth"]["file"]) as archive:
        with archive.open(f"images/frame_{frame['frame_index']:06d}.png") as handle:
            overlay = np.asarray(Image.open(handle).convert("RGB")).astype(int)
    assert overlay.shape == (height, width, 3)
    clean = video[frame["frame_index"]].astype(int)
    union = np.zeros((height, width), bool)
    for obj in frame["objects"]:
        union |= resize_mask(runs_to_mask([int(r) for r in obj["mask_rle"].split()], 256, 256), height, width) > 0
    diff = np.abs(overlay - clean).max(axis=2)
    assert diff[union].mean() > 30  # tinted
    assert np.median(diff[~union]) < 10  # same frame elsewhere (only compression noise)


# ---------------------------------------------------------------- SA-V, COCO, stream


def test_sav_manual_json_matches_the_real_file_and_decodes_to_truth(fixtures_dir: Path, sample_dir: Path,
                                                                     truth: dict[str, Any]) -> None:
    real = json.loads((fixtures_dir / "sav_example" / "sav_000001_manual.json").read_text())
    entry = truth["sav"]
    doc = json.loads((sample_dir / entry["file"]).read_text())
    assert list(doc) == list(real)
    for key in real:
        assert schema(doc[key]) == schema(real[key]), key
    assert doc["video_frame_count"] == 72.0 and doc["video_width"] == 320.0 and doc["video_height"] == 180.0
    assert len(doc["masklet"]) == len(entry["frames"]) == 18  # every 4th frame of 72
    assert doc["masklet_num"] == len(doc["masklet_id"]) == len(doc["masklet"][0])
    zero_rles = 0
    for frame, row in zip(entry["frames"], doc["masklet"], strict=True):
        assert frame["frame_index"] == 4 * frame["sav_index"]
        visible = {obj["object_id"]: obj for obj in frame["objects"]}
        for object_id, rle in zip(doc["masklet_id"], row, strict=True):
            assert rle["size"] == [180, 320] and isinstance(rle["counts"], str)
            mask = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            if object_id not in visible:
                assert not mask.any()
                zero_rles += 1
                continue
            assert_box_close(mask_bbox(mask), visible[object_id]["bbox"], 1, 1, f"SA-V frame {frame['frame_index']}")
            assert int(mask.sum()) == visible[object_id]["area"]
    assert zero_rles > 0  # invisible objects are all-zero RLEs, never omitted


def test_coco_mixes_segmentation_kinds_and_decodes_to_truth(sample_dir: Path, truth: dict[str, Any]) -> None:
    doc = json.loads((sample_dir / "coco_instances.json").read_text())
    assert [c["name"] for c in doc["categories"]] == list(LABELS)
    assert all("attributes" in ann for ann in doc["annotations"])  # an extra key readers must ignore
    anns = {(ann["image_id"], ann["category_id"] - 1): ann for ann in doc["annotations"]}
    kinds = set()
    for frame in truth["coco"]["frames"]:
        image = next(img for img in doc["images"] if img["id"] == frame["image_id"])
        with Image.open(sample_dir / image["file_name"]) as jpeg:
            assert jpeg.format == "JPEG" and jpeg.size == (image["width"], image["height"]) == (320, 180)
        for obj in frame["objects"]:
            ann = anns[(frame["image_id"], obj["object_id"])]
            seg = ann["segmentation"]
            kind = "polygon" if isinstance(seg, list) else "uncompressed_rle" if isinstance(seg["counts"], list) \
                else "rle"
            assert kind == obj["segmentation"] and ann["iscrowd"] == int(kind == "uncompressed_rle")
            kinds.add(kind)
            mask = coco_decode(seg, 180, 320)
            assert_box_close(mask_bbox(mask), obj["bbox"], 1, 1, f"COCO annotation {ann['id']}")
            x1, y1, x2, y2 = obj["bbox"]
            assert ann["bbox"] == [x1, y1, x2 - x1, y2 - y1] and ann["area"] == obj["area"]
    assert kinds == {"polygon", "rle", "uncompressed_rle"}
    assert len(doc["annotations"]) == len(anns) == sum(len(f["objects"]) for f in truth["coco"]["frames"])


def test_stream_jsonl_is_forward_then_backward_and_decodes_to_truth(sample_dir: Path, truth: dict[str, Any]) -> None:
    entry = truth["sam2_stream"]
    lines = [json.loads(line) for line in (sample_dir / "sam2_stream.jsonl").read_text().splitlines()]
    order = [line["frame_index"] for line in lines]
    click = entry["click_frame"]
    assert order == list(range(click, 72)) + list(range(click - 1, -1, -1)) and click > 0
    truth_frames = {frame["frame_index"]: frame["objects"] for frame in entry["frames"]}
    for line in lines:
        visible = {obj["object_id"]: obj for obj in truth_frames[line["frame_index"]]}
        for result in line["results"]:
            assert list(result) == ["object_id", "mask"] and result["mask"]["size"] == [180, 320]
            mask = mask_utils.decode({"size": result["mask"]["size"], "counts": result["mask"]["counts"].encode()})
            if result["object_id"] in visible:
                want = visible[result["object_id"]]
                assert_box_close(mask_bbox(mask), want["bbox"], 1, 1, f"stream frame {line['frame_index']}")
                assert int(mask.sum()) == want["area"]
            else:
                assert not mask.any()


def test_shapes_occlude_each_other_and_masks_cover_only_visible_pixels(sample_dir: Path,
                                                                       truth: dict[str, Any]) -> None:
    import cv2

    entry = truth["sam2_stream"]
    _, _, _, _, video = decode_video(sample_dir / entry["video"])
    lines = {json.loads(line)["frame_index"]: json.loads(line)
             for line in (sample_dir / "sam2_stream.jsonl").read_text().splitlines()}
    occluded_frames = [f["frame_index"] for f in entry["frames"] if any(o["occluded"] for o in f["objects"])]
    assert occluded_frames, "no occlusion in the stream video"
    for index in occluded_frames[:8]:
        masks = {r["object_id"]: mask_utils.decode({"size": r["mask"]["size"], "counts": r["mask"]["counts"].encode()})
                 for r in lines[index]["results"]}
        assert int(sum(masks.values()).max()) <= 1  # visible masks never overlap
        boxes = [mask_bbox(m) for m in masks.values() if m.any()]
        assert any(_boxes_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        for object_id, mask in masks.items():
            core = cv2.erode(mask, np.ones((5, 5), np.uint8)) > 0
            if core.sum() < 10:
                continue
            colour = np.array(entry["colours"][str(object_id)])
            distance = np.abs(video[index][core].astype(int) - colour).max(axis=1)
            assert np.percentile(distance, 95) < 40, f"frame {index} object {object_id}"
    # the demo sessions and the SA-V video have occlusions too
    for section in (truth["sam2_demo_zip"][0]["frames"], truth["sav"]["frames"]):
        assert any(obj["occluded"] for frame in section for obj in frame["objects"])


def _boxes_overlap(a: list[int], b: list[int]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


# ---------------------------------------------------------------- determinism, API, CLI


def assert_same_video(a: Path, b: Path, min_psnr: float = 32.0) -> None:
    """Same frame count and size, and every decoded frame within `min_psnr` dB of the other's."""
    with av.open(str(a)) as ca, av.open(str(b)) as cb:
        frames_a = [f.to_ndarray(format="rgb24").astype(np.float64) for f in ca.decode(video=0)]
        frames_b = [f.to_ndarray(format="rgb24").astype(np.float64) for f in cb.decode(video=0)]
    assert len(frames_a) == len(frames_b) and frames_a[0].shape == frames_b[0].shape, a.name
    for x, y in zip(frames_a, frames_b, strict=True):
        mse = float(((x - y) ** 2).mean())
        assert mse == 0 or 10 * np.log10(255**2 / mse) >= min_psnr, a.name


def test_same_seed_gives_identical_files_and_several_sessions(tmp_path: Path) -> None:
    kwargs = {"frames": 16, "videos": 2, "width": 64, "height": 36, "export_every": 2, "seed": 7}
    first = generate_sample(tmp_path / "a", **kwargs)
    second = generate_sample(tmp_path / "b", **kwargs)
    names = sorted(str(p.relative_to(first.out_dir)) for p in first.files)
    assert names == sorted(str(p.relative_to(second.out_dir)) for p in second.files)
    for name in names:
        if name.endswith(".mp4"):  # x264's bytes vary now and then for identical input: compare the pictures
            assert_same_video(first.out_dir / name, second.out_dir / name)
        else:
            assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes(), name
    assert len(first.demo_zips) == len(set(first.demo_zips)) == 2 and len(set(first.demo_videos)) == 2
    for path in (*first.demo_zips, *first.demo_videos, first.sav_json, first.sav_video, first.coco_json,
                 first.stream_jsonl, first.stream_video, first.labels_json, first.truth_json):
        assert path.is_file() and path.parent == first.out_dir
    assert first.truth["sam2_demo_zip"][0]["frame_indices"] == list(range(0, 16, 2))
    other = generate_sample(tmp_path / "c", **{**kwargs, "seed": 8})
    assert other.truth_json.read_bytes() != first.truth_json.read_bytes()


def test_objects_caps_the_shapes_of_every_video(tmp_path: Path) -> None:
    info = generate_sample(tmp_path / "one", frames=24, videos=3, width=64, height=64, export_every=1, objects=1)
    labels = {o["label"] for video in info.truth["sam2_demo_zip"] for f in video["frames"] for o in f["objects"]}
    assert labels == {"circle"} and info.truth["generator"]["objects"] == 1
    assert json.loads(info.labels_json.read_text()) == {"0": "circle"}
    assert main(["sample", "--out", str(tmp_path / "cli"), "--frames", "8", "--size", "64x64", "--objects", "2"]) == 0
    truth = json.loads((tmp_path / "cli" / "sample_truth.json").read_text())
    assert truth["generator"]["objects"] == 2 and {o["label"] for f in truth["sam2_demo_zip"][0]["frames"]
                                                    for o in f["objects"]} <= {"circle", "square"}


def test_bad_arguments_raise_user_errors_and_leave_nothing(tmp_path: Path) -> None:
    for kwargs, text in (({"frames": 3}, "--frames"), ({"width": 321}, "--size"), ({"videos": 0}, "--videos"),
                         ({"videos": 1025}, r"between 1 and 1024 \(got 1025\)"), ({"export_every": 0}, "--every"),
                         ({"seed": -1}, "seed"), ({"objects": 5}, "objects")):
        with pytest.raises(UserError, match=text):
            generate_sample(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        generate_sample(tmp_path / "full", frames=8)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_writes_all_files_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sample"
    code = main(["sample", "--out", str(out), "--frames", "16", "--videos", "2", "--every", "3",
                 "--size", "96x64", "--seed", "3"])
    printed = capsys.readouterr().out
    assert code == 0
    truth = json.loads((out / "sample_truth.json").read_text())
    assert truth["generator"] == {"tool": "sam2-vlm-studio sample", "seed": 3, "frames": 16, "videos": 2,
                                  "width": 96, "height": 64, "fps": 24, "export_every": 3}
    for session in truth["sam2_demo_zip"]:
        assert (out / session["file"]).is_file() and (out / session["video"]).is_file()
        assert session["file"] in printed and session["video"] in printed
    for name in ("coco_instances.json", "sam2_stream.jsonl", "labels.json", "sample_truth.json", truth["sav"]["file"]):
        assert (out / name).is_file() and name in printed


def test_cli_bad_size_is_one_error_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for size in ("abc", "321x180", "10x10"):
        assert main(["sample", "--out", str(tmp_path / "x"), "--size", size]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and "--size" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    result = subprocess.run([sys.executable, "-m", "pipeline", "sample", "--out", str(tmp_path / "y"), "--size",
                             "320by180"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2 and result.stderr.startswith("error: --size") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_training_scale_sample_has_every_frame_of_four_videos(tmp_path: Path) -> None:
    info = generate_sample(tmp_path / "train", frames=240, videos=4, export_every=1, width=128, height=72)
    assert len(info.demo_zips) == 4
    for session in info.truth["sam2_demo_zip"]:
        assert len(session["frames"]) == 240
        with zipfile.ZipFile(info.out_dir / session["file"]) as archive:
            annotations = json.loads(archive.read("annotations.json"))
        assert annotations["export_config"]["frame_indices"] == list(range(240))
        assert sum(bool(f["objects"]) for f in annotations["annotations"]) == len(archive.namelist()) - 2
    counts = {len(f["objects"]) for s in info.truth["sam2_demo_zip"] for f in s["frames"]}
    assert {0, 1, 2} <= counts
    fps, count, width, height, _ = decode_video(info.demo_videos[0])
    assert (fps, count, width, height) == (24.0, 240, 128, 72)
