"""Video-native tasks: clips of K frames, track / visibility / count_unique, multi-image rows in every writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.clips import (
    ClipOptions,
    baseline_answer,
    build_clips,
    check_clip_options,
    clip_groups,
    metrics,
    parse_frame_lines,
    parse_frames,
    score,
)
from pipeline.coords import get_convention
from pipeline.dataset import open_dataset
from pipeline.errors import UserError
from pipeline.masks import encode_rle
from pipeline.records import FrameRecord, ObjectAnn

SAV = "sav_example/sav_000001_manual.json"
VIDEO_TASKS = ["track", "visibility", "count_unique"]


def llamafactory_sharegpt_problems(dataset_dir: Path, entry: str) -> list[str]:
    """LLaMA-Factory's own acceptance rules for a sharegpt file, as its loader applies them (data/parser.py,
    converter.py SharegptDatasetConverter, mm_plugin.py): dataset_info entry with formatting sharegpt and the
    column / tag names; turns alternate user (odd) / assistant (even) with an even count; image paths resolve
    under media_dir (= dataset_dir); the `<image>` placeholders over all messages equal the number of images."""
    info = json.loads((dataset_dir / "dataset_info.json").read_text())[entry]
    problems = []
    if info.get("formatting") != "sharegpt":
        problems.append("formatting is not sharegpt")
    columns, tags = info["columns"], info["tags"]
    rows = json.loads((dataset_dir / info["file_name"]).read_text())
    for n, row in enumerate(rows):
        messages = row[columns["messages"]]
        accept = ((tags["user_tag"],), (tags["assistant_tag"],))
        if any(m[tags["role_tag"]] not in accept[i % 2] for i, m in enumerate(messages)) or len(messages) % 2:
            problems.append(f"row {n}: invalid role tags or message count")
        images = row.get(columns["images"]) or []
        images = images if isinstance(images, list) else [images]
        if sum(m[tags["content_tag"]].count("<image>") for m in messages) != len(images):
            problems.append(f"row {n}: the number of images does not match the number of <image> tokens")
        problems += [f"row {n}: {p} not in media_dir" for p in images if not (dataset_dir / p).is_file()]
    return problems


@pytest.fixture(scope="module")
def sav_dataset(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SA-V annotation with an mp4 of its first 61 frames (the real video is not in the fixtures)."""
    from pipeline.ingest import convert
    from pipeline.video import write_video

    folder = tmp_path_factory.mktemp("sav")
    write_video([np.full((848, 480, 3), 4 * i, np.uint8) for i in range(61)], folder / "sav_000001.mp4", fps=24)
    convert(fixtures_dir / SAV, folder / "ds", video=folder / "sav_000001.mp4", tasks=VIDEO_TASKS, max_frames=16,
            labels={0: "dog", 1: "person", 2: "ball", 3: "cat", 4: "tree"})
    return folder / "ds"


def test_sav_video_converts_to_multi_frame_examples(sav_dataset: Path) -> None:
    meta = open_dataset(sav_dataset).meta
    assert meta["clips"] == {"frames": 4, "stride": None} and meta["videos"][0]["fps"] == 24.0
    rows = json.loads((sav_dataset / "sharegpt.json").read_text())
    assert len(rows) == 35  # 3 clips (frames 0-36, 12-48, 24-60 at 12 frames = 0.5 s) x (5 + 4 + 4 - ...)
    assert all(len(r["images"]) == 4 and r["conversations"][0]["value"].count("<image>") == 4 for r in rows)
    assert llamafactory_sharegpt_problems(sav_dataset, "sam2") == []
    first = [r for r in rows if r["images"][0].endswith("000000.jpg")]
    assert first[0]["images"] == [f"images/sav_000001/{f:06d}.jpg" for f in (0, 12, 24, 36)]
    llava = json.loads((sav_dataset / "llava.json").read_text())
    dog = next(r for r in llava if "-track-" in r["id"] and "dog" in r["conversations"][0]["value"])
    lines = dog["conversations"][1]["value"].splitlines()
    # SA-V marks the dog invisible at annotated frame 6 (video frame 24): the family's "none" answer (json: [])
    assert lines[0].startswith("Frame 2: [{") and lines[1] == "Frame 3: []" and lines[2].startswith("Frame 4: [{")
    ball = next(r for r in llava if "-visibility-" in r["id"] and "ball" in r["conversations"][0]["value"])
    assert ball["conversations"][1]["value"] == "1, 2, 3"  # invisible at video frames 32-40
    llava = json.loads((sav_dataset / "llava.json").read_text())
    counts = [r["conversations"][1]["value"] for r in llava if "-count_unique-" in r["id"]
              and r["image"][0].endswith("000000.jpg")]
    assert counts == ["1"] * 4  # dog, ball, person, tree: one SAM 2 id each (the cat first appears at frame 452)


def test_every_writer_holds_every_image(sav_dataset: Path) -> None:
    from datasets import load_from_disk

    llava = json.loads((sav_dataset / "llava.json").read_text())
    assert all(isinstance(r["image"], list) and len(r["image"]) == 4 for r in llava)
    assert all(r["conversations"][0]["value"].count("<image>") == 4 for r in llava)
    messages = [json.loads(line) for line in (sav_dataset / "messages.jsonl").read_text().splitlines()]
    parts = messages[0]["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image"] * 4 + ["text"] and len(messages[0]["images"]) == 4
    hf = load_from_disk(str(sav_dataset / "hf"))["train"]
    assert len(hf) == 35 and len(hf[0]["images"]) == 4 and hf[0]["images"][0].size == (480, 848)
    from pipeline.quality import run_rules

    report = run_rules(sav_dataset, {"image_token_budget": {"severity": "off"}})
    assert not [f for f in report.findings if f.rule == "placeholder_mismatch"]


def _rec(video: str, index: int, objects: list[tuple[int, str, list[int]]]) -> FrameRecord:
    anns = []
    for oid, label, (x1, y1, x2, y2) in objects:
        mask = np.zeros((40, 60), np.uint8)
        mask[y1:y2, x1:x2] = 1
        anns.append(ObjectAnn(oid, label, [x1, y1, x2, y2], int(mask.sum()), encode_rle(mask)))
    return FrameRecord(f"{video}:{index:06d}", "test", video, index, f"images/{video}/{index:06d}.jpg", 60, 40, anns)


def test_clips_follow_the_stride_and_stop_at_holes() -> None:
    records = [_rec("v", i, [(0, "car", [i, 5, i + 10, 15])]) for i in (0, 2, 4, 6, 8, 10, 12, 20, 22, 24, 26)]
    clips = build_clips(records, ClipOptions(3, 4))
    assert [c.frame_indices for c in clips] == [[0, 4, 8], [4, 8, 12], [8, 12, 20], [12, 20, 24]]
    holes = [_rec("v", i, []) for i in (0, 4, 8, 9, 30, 34, 38)]  # 9 -> 30 is more than two strides
    assert [c.frame_indices for c in build_clips(holes, ClipOptions(3, 4))] == [[0, 4, 8], [30, 34, 38]]
    # the default stride is half a second at the video's fps: 4 frames at 8 fps
    assert [c.frame_indices for c in build_clips(records, ClipOptions(3), {"v": 8.0})][0] == [0, 4, 8]
    with pytest.raises(UserError, match="--clip-frames"):
        check_clip_options(1, None)
    with pytest.raises(UserError, match="--clip-stride"):
        check_clip_options(4, 0)


def test_clips_never_straddle_splits() -> None:
    records = [_rec("v", i, [(0, "car", [i, 5, i + 10, 15])]) for i in range(0, 40, 2)]
    meta = {"tasks": ["track"], "clips": {"frames": 3, "stride": 4}}
    groups = clip_groups(records, meta, [])
    for clip in build_clips(records, ClipOptions(3, 4)):
        members = [i for i, r in enumerate(records) if r in clip.records]
        assert any(set(members) <= set(g) for g in groups)
    assert clip_groups(records, {"tasks": ["grounding"]}, [[0, 1]]) == [[0, 1]]


def test_scores_and_honest_baselines() -> None:
    conv = get_convention("json")
    records = [_rec("v", 0, [(0, "car", [0, 0, 10, 10])]), _rec("v", 4, [(0, "car", [20, 0, 30, 10])]),
               _rec("v", 8, []), _rec("v", 12, [(0, "car", [40, 0, 50, 10])])]
    from pipeline.tasks import build_examples

    examples = build_examples(records, VIDEO_TASKS, "json", clips=ClipOptions(4, 4))
    track, visibility, unique = (next(e for e in examples if e.task == t) for t in VIDEO_TASKS)
    assert track.truth["boxes"] == [[20, 0, 30, 10], None, [40, 0, 50, 10]] and len(track.images) == 4
    _, perfect = score("track", track.truth, track.answer, conv, 60, 40)
    assert perfect["iou"] == pytest.approx(1.0, abs=0.05)
    assert perfect["track_lost"] == 0 and perfect["track_ghosts"] == 0
    copy = baseline_answer("track", track.truth, conv, 60, 40)
    assert parse_frame_lines(copy).keys() == {2, 3, 4}
    _, copied = score("track", track.truth, copy, conv, 60, 40)
    assert copied["iou"] == 0.0 and copied["track_lost"] == 2 and copied["track_ghosts"] == 1
    assert visibility.answer == "1, 2, 4" and parse_frames("Frames 1, 2 and 4.", 4) == [1, 2, 4]
    _, always = score("visibility", visibility.truth, baseline_answer("visibility", visibility.truth, conv, 60, 40),
                      conv, 60, 40)
    assert always["visibility_f1"] == pytest.approx(2 * 3 / 7)
    assert baseline_answer("count_unique", unique.truth, conv, 60, 40, {"car": 2, "": 1}) == "2"
    rows = [{"task": "track", **copied}, {"task": "track", **perfect}, {"task": "visibility", **always},
            {"task": "count_unique", "score": 0.0, "unique_error": 1}, {"task": "count_unique", "score": 1.0,
                                                                       "unique_error": 0}]
    m = metrics(rows)
    assert m["track_miou"] == pytest.approx(0.5, abs=0.03) and m["track_lost_rate"] == pytest.approx(0.5)
    assert m["unique_accuracy"] == 0.5 and m["unique_mae"] == 0.5 and m["visibility_f1"] == pytest.approx(6 / 7)


def test_single_image_families_are_refused_and_every_image_counts(sav_dataset: Path) -> None:
    from pipeline.config import TrainConfig
    from pipeline.hardware import Hardware
    from pipeline.plan import validate_config

    cpu = Hardware(device="cpu")
    cfg = TrainConfig.model_validate({"model": {"name": "paligemma2-3b"}, "data": {"path": str(sav_dataset)}})
    errors, _ = validate_config(cfg, cpu)
    assert any("takes one image per example" in e and "track" in e for e in errors), errors
    cfg = TrainConfig.model_validate({"model": {"name": "florence2-base"},
                                      "data": {"path": str(sav_dataset), "tasks": ["grounding"]}})
    assert not any("one image per example" in e for e in validate_config(cfg, cpu)[0])
    # tiny-smolvlm: 16 image tokens per image at its 64 px size, so a clip of 4 needs 64 of max_length 80
    cfg = TrainConfig.model_validate({"model": {"name": "tiny-smolvlm"},
                                      "data": {"path": str(sav_dataset), "max_length": 80}})
    errors, warnings = validate_config(cfg, cpu)
    assert not errors and any("after 64 image tokens" in w for w in warnings), (errors, warnings)


@pytest.mark.parametrize("family", ["paligemma", "tiny-florence2", "paligemma2-3b"])
def test_convert_refuses_video_tasks_for_a_single_image_family(family: str, fixtures_dir: Path,
                                                                tmp_path: Path) -> None:
    """The rule of the training config, already at convert (CLI and app): one line, nothing written."""
    from pipeline.ingest import check_video_options, convert

    with pytest.raises(UserError, match=r"^tasks track, count_unique show the model 3 frames per example, but "
                                        rf"{family}.* takes one image per example"):
        convert(fixtures_dir / SAV, tmp_path / "ds", tasks=["grounding", "track", "count_unique"], family=family,
                clip_frames=3)
    assert not (tmp_path / "ds").exists()
    check_video_options(["grounding"], family)  # frame tasks stay fine
    check_video_options(["track"], "json")  # a convention several families share: the training config decides
    with pytest.raises(UserError, match="--keep-share only applies with --drop-fragments"):
        check_video_options(["track"], "tiny-smolvlm", keep_share=0.1)


def test_collator_and_model_take_a_clip() -> None:
    import torch
    from PIL import Image

    from pipeline.collate import VisionLanguageCollator, build_generation_inputs
    from pipeline.models import load_model, load_processor

    processor = load_processor("tiny-smolvlm")
    frames = [Image.new("RGB", (64, 64), (60 * i, 20, 20)) for i in range(3)]
    batch = VisionLanguageCollator(processor, max_length=256)([
        {"id": "clip", "images": frames, "prompt": "Track the circle.", "answer": "Frame 2: []\nFrame 3: []"},
        {"id": "one", "image": frames[0], "prompt": "Find the circle.", "answer": "[]"}])
    image_id = processor.image_token_id
    assert [int((row == image_id).sum()) for row in batch["input_ids"]] == [48, 16]
    assert int((batch["labels"] == image_id).sum()) == 0
    model = load_model("tiny-smolvlm")
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)
    inputs = build_generation_inputs(processor, [frames, frames], ["Track it.", "Track it."])
    assert int((inputs["input_ids"] == image_id).sum()) == 2 * 48


@pytest.mark.parametrize("key", ["tiny-smolvlm", "tiny-qwen2-vl"])
def test_the_token_cache_takes_a_clip(key: str, tmp_path: Path) -> None:
    """Training tokenizes once (tokenize_cache): a clip row's `images` give the same batch as the in-loop collator."""
    import torch
    from PIL import Image

    from pipeline.collate import VisionLanguageCollator
    from pipeline.models import load_processor
    from pipeline.tokenize_cache import TokenizedCollator, tokenize_rows

    processor = load_processor(key)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"f{i}.png"))
        Image.new("RGB", (64, 64), (60 * i, 20, 20)).save(paths[-1])
    rows = [{"id": "clip", "image": paths[0], "images": paths, "prompt": "Track the circle.",
             "answer": "Frame 2: []\nFrame 3: []"},
            {"id": "one", "image": paths[0], "prompt": "Find the circle.", "answer": "[]"}]
    tokens = tokenize_rows(processor, rows, max_length=512)
    cached = TokenizedCollator(processor)([{**row, **tok} for row, tok in zip(rows, tokens, strict=True)])
    direct = VisionLanguageCollator(processor, max_length=512)(rows)
    assert sorted(cached) == sorted(direct)
    for name in cached:
        assert torch.equal(cached[name], direct[name]), name
