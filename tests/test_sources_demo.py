"""SAM 2 demo-fork export reader: defects corrected (row-major 256 grid, resize, boxes, fps), frames, real fixtures."""

from __future__ import annotations

import json
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.dataset import open_dataset
from pipeline.errors import UserError
from pipeline.ingest import convert
from pipeline.masks import decode_rle, mask_bbox, resize_mask, runs_to_mask
from pipeline.sources import IssueLog, ReadOptions, open_source

FORK = "sam2_demo_fork_export"
JOB = "c6709f62-6eaa-4bd2-b423-320a10eb5397"
FIXTURE_ZIP = "sam2_export_31e95181-6046-4ade-a792-a92b5027b88f.zip"


def read_source(path, **options):
    """Every frame a reader yields (objects only; images closed) and the issue log."""
    log = IssueLog()
    videos = tuple(Path(v) for v in options.pop("videos", ()))
    with open_source(path, ReadOptions(videos=videos, **options), log) as src:
        frames = []
        for vid, indices in src.plan().items():
            for frame in src.frames(vid, indices):
                frames.append((vid, frame.frame_index, frame.width, frame.height, frame.objects))
                if frame.image_path is not None:
                    frame.image.close()
        src.finish()
        info = src.info()
    return frames, log, info


def rules(log: IssueLog) -> dict[str, int]:
    out: dict[str, int] = {}
    for issue in log.issues:
        out[issue["rule"]] = out.get(issue["rule"], 0) + 1
    return out


@pytest.fixture(scope="module")
def truth(sample_dir: Path) -> dict:
    return json.loads((sample_dir / "sample_truth.json").read_text())


def test_demo_zip_boxes_match_truth_within_grid_tolerance(sample_dir: Path, truth: dict) -> None:
    demo = truth["sam2_demo_zip"][0]
    frames, log, info = read_source(sample_dir / demo["file"], labels={0: "circle", 1: "square", 2: "triangle"})
    tol_x, tol_y = math.ceil(demo["width"] / 256), math.ceil(demo["height"] / 256)
    assert [f[1] for f in frames] == demo["frame_indices"]  # every listed frame, empty ones included
    checked = 0
    for (vid, index, width, height, objects), expected in zip(frames, demo["frames"], strict=True):
        assert (vid, index, width, height) == (demo["video_id"], expected["frame_index"], demo["width"],
                                               demo["height"])
        got = {o.object_id: o for o in objects}
        assert set(got) == {o["object_id"] for o in expected["objects"]}
        for obj in expected["objects"]:
            mine = got[obj["object_id"]]
            assert all(abs(a - b) <= tol_x for a, b in zip(mine.bbox[::2], obj["bbox"][::2], strict=True))
            assert all(abs(a - b) <= tol_y for a, b in zip(mine.bbox[1::2], obj["bbox"][1::2], strict=True))
            assert mine.label == obj["label"]
            mask = decode_rle(mine.rle)
            assert mask.shape == (demo["height"], demo["width"]) and int(mask.sum()) == mine.area
            assert mask_bbox(mask) == mine.bbox
            checked += 1
    assert checked > 10
    assert info["fps_claimed"] == 30.0 and info["fps_video"] == pytest.approx(24.0)
    assert rules(log) == {"fps_mismatch": 1, "bbox_mismatch": 1}  # the demo's hard-coded 30 fps, transposed bbox
    assert Path(info["video"]).name == demo["video"]


def test_demo_frames_are_clean_video_frames_not_overlays(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    from pipeline.video import iter_video_frames

    demo = truth["sam2_demo_zip"][0]
    out = tmp_path / "ds"
    summary = convert([sample_dir / demo["file"]], out, labels=sample_dir / "labels.json", max_frames=6)
    records = open_dataset(out).records()
    assert summary.frames == len(records) == 6
    wanted = {r.frame_index: r for r in records}
    for index, image in iter_video_frames(sample_dir / demo["video"], wanted):
        written = np.asarray(Image.open(out / wanted[index].image).convert("RGB"), dtype=float)
        assert np.abs(written - np.asarray(image, dtype=float)).mean() < 3.0  # JPEG q95 of the clean frame
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["videos"][0]["fps"] == pytest.approx(24.0)
    assert meta["sources"][0]["overlay_frames"] is False
    assert {i["rule"] for i in meta["issues"]} == {"fps_mismatch", "bbox_mismatch"}


def test_unreadable_videos_all_say_video_does_not_decode(tmp_path: Path) -> None:
    """Random bytes and a real MP4 holding only audio get the same leading words, whatever FFmpeg made of them."""
    import av

    from pipeline.errors import UserError
    from pipeline.video import iter_video_frames, probe_video

    audio_only = tmp_path / "audio.mp4"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(bytes(range(256)) * 16)
    for path, detail in ((audio_only, "(the file has no video stream)"), (garbage, "video does not decode")):
        for read in (probe_video, lambda p: list(iter_video_frames(p))):
            with pytest.raises(UserError, match="video does not decode") as refused:
                read(path)
            assert str(refused.value).startswith(f"{path}: ") and detail in str(refused.value)


def test_demo_nested_zip_and_unzipped_folder_read_the_same(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    demo = truth["sam2_demo_zip"][0]
    reference, _, _ = read_source(sample_dir / demo["file"])
    nested = tmp_path / "rezipped.zip"
    folder = tmp_path / "job"
    with zipfile.ZipFile(sample_dir / demo["file"]) as src, zipfile.ZipFile(nested, "w") as dst:
        src.extractall(folder)
        for name in src.namelist():
            dst.writestr(f"export/{name}", src.read(name))
        dst.writestr("__MACOSX/export/._annotations.json", b"junk")
        dst.writestr("export/.DS_Store", b"junk")
    video = sample_dir / demo["video"]
    for path in (nested, folder, folder / "annotations.json"):
        frames, _, _ = read_source(path, videos=[video])
        assert [(f[1], [(o.object_id, o.bbox) for o in f[4]]) for f in frames] == \
               [(f[1], [(o.object_id, o.bbox) for o in f[4]]) for f in reference]


def test_demo_without_video_refuses_and_overlays_only_on_request(sample_dir: Path, truth: dict,
                                                                 tmp_path: Path) -> None:
    demo = truth["sam2_demo_zip"][0]
    alone = tmp_path / demo["file"]
    shutil.copy(sample_dir / demo["file"], alone)
    with pytest.raises(UserError, match="overlays") as err:
        read_source(alone)
    assert "--video" in str(err.value) and demo["video"] in str(err.value) and str(alone) in str(err.value)
    frames, log, info = read_source(alone, allow_overlay_frames=True)
    with_objects = [f["frame_index"] for f in demo["frames"] if f["objects"]]
    assert [f[1] for f in frames] == with_objects  # the exporter writes PNGs only for frames with objects
    assert info["overlay_frames"] is True and rules(log)["overlay_frames"] == 1
    assert rules(log)["missing_frame"] == len(demo["frames"]) - len(with_objects)
    assert all(i["severity"] == "info" for i in log.issues if i["rule"] == "missing_frame")  # no object, no PNG


def test_zip_without_annotations_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(UserError, match=r"ZIP holds \['readme.txt'\] but no annotations.json"):
        read_source(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(UserError, match="other.zip"):
        read_source(path)


def test_fixture_job_folder_needs_video(fixtures_dir: Path) -> None:
    with pytest.raises(UserError, match="--video") as err:
        read_source(fixtures_dir / FORK / JOB)
    assert "overlays" in str(err.value) and JOB in str(err.value)


def test_fixture_job_folder_overlay_frame_mask_is_row_major(fixtures_dir: Path, tmp_path: Path) -> None:
    job = fixtures_dir / FORK / JOB
    annotations = json.loads((job / "annotations.json").read_text())
    assert len(annotations["annotations"]) == 48
    out = tmp_path / "ds"
    summary = convert([job], out, allow_overlay_frames=True)
    assert (summary.frames, summary.objects, summary.labels) == (1, 1, {"object_0": 1})
    record = open_dataset(out).records()[0]
    assert (record.frame_index, record.width, record.height) == (0, 1280, 720)
    mask = decode_rle(record.objects[0].rle).astype(bool)
    runs = [int(v) for v in annotations["annotations"][0]["objects"][0]["mask_rle"].split()]
    assert sum(runs) == 256 * 256
    expected = resize_mask(runs_to_mask(runs, 256, 256, "C"), 720, 1280)
    assert np.array_equal(mask, expected.astype(bool))
    overlay = np.asarray(Image.open(job / "images" / "frame_000000.png").convert("RGB"), dtype=float)
    green = overlay[..., 1] - (overlay[..., 0] + overlay[..., 2]) / 2  # the exporter's tint of object 0
    assert green[mask].mean() - green[~mask].mean() > 40  # row-major decoding lies on the tinted region
    meta = json.loads((out / "dataset.json").read_text())
    found = {i["rule"] for i in meta["issues"]}
    assert {"overlay_frames", "missing_frame", "bbox_mismatch"} <= found
    assert sum(i["rule"] == "missing_frame" for i in meta["issues"]) == 47  # only frame_000000.png was kept


def test_fixture_zip_without_images_explains_video_is_needed(fixtures_dir: Path) -> None:
    for allow in (False, True):
        with pytest.raises(UserError, match="holds no frames") as err:
            read_source(fixtures_dir / FORK / FIXTURE_ZIP, allow_overlay_frames=allow)
        assert "--video" in str(err.value) and FIXTURE_ZIP in str(err.value)


def test_fixture_zip_with_frame_folder_corrects_every_defect(fixtures_dir: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(fixtures_dir / FORK / FIXTURE_ZIP) as archive:
        annotations = json.loads(archive.read("annotations.json"))
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    blank = Image.new("RGB", (1280, 720))
    for entry in annotations["annotations"]:
        blank.save(frames_dir / f"{entry['frame_index']:05d}.jpg", quality=50)
    frames, log, info = read_source(fixtures_dir / FORK / FIXTURE_ZIP, videos=[frames_dir])
    assert len(frames) == 42 and all((f[2], f[3]) == (1280, 720) for f in frames)
    transposed = 0
    for (_, index, _, _, objects), entry in zip(frames, annotations["annotations"], strict=True):
        raw = entry["objects"][0]
        grid = runs_to_mask([int(v) for v in raw["mask_rle"].split()], 256, 256, "C")
        assert [o.object_id for o in objects] == [0] and index == entry["frame_index"]
        assert objects[0].bbox == mask_bbox(resize_mask(grid, 720, 1280))
        gx1, gy1, gx2, gy2 = mask_bbox(grid)
        transposed += raw["bbox"] == [gy1, gx1, gy2 - gy1, gx2 - gx1]  # the stored box is the transposed grid box
    assert transposed >= 40
    assert rules(log) == {"bbox_mismatch": 1}
    assert info["format"] == "sam2_demo_zip" and "256x256" in info["corrections"][0]


def test_demo_bad_objects_become_issues(sample_dir: Path, truth: dict, tmp_path: Path) -> None:
    demo = truth["sam2_demo_zip"][0]
    job = tmp_path / "job"
    with zipfile.ZipFile(sample_dir / demo["file"]) as archive:
        archive.extractall(job)
    doc = json.loads((job / "annotations.json").read_text())
    entries = [e for e in doc["annotations"] if e["objects"]]
    entries[0]["objects"][0]["mask_rle"] = "12 x 4"
    entries[1]["objects"][0]["mask_rle"] = "100 20 30"
    entries[2]["objects"][0]["mask_rle"] = "65536"
    entries[3]["objects"][0].pop("object_id")
    doc["annotations"].append({"frame_index": "soon"})
    doc["annotations"].append(dict(entries[4]))  # listed twice: the last entry wins
    (job / "annotations.json").write_text(json.dumps(doc))
    frames, log, _ = read_source(job, videos=[sample_dir / demo["video"]])
    found = rules(log)
    assert found["invalid_rle"] == 2 and found["empty_mask"] == 1 and found["invalid_record"] == 3
    assert len(frames) == len(demo["frames"])
    messages = " ".join(i["message"] for i in log.issues)
    assert "not a list of space-separated integers" in messages and "not a 256x256 grid" in messages
