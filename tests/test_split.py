"""Splits: stratified shares within 5 points, no video in two splits, guard gaps on one video, near-duplicates kept
together, seeded reproducibility, saved config reproduces the split, ratio errors and tiny datasets."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.cli import main
from pipeline.dataset import open_dataset
from pipeline.errors import UserError
from pipeline.masks import encode_rle
from pipeline.records import FrameRecord, ObjectAnn, read_records, write_records
from pipeline.split import SPLITS, parse_ratios, split_dataset

SIZE = 32


def build(root: Path, frames: list[tuple[str, int, list[str]]], copies: dict[int, int] | None = None) -> Path:
    """A dataset of noise frames (video_id, frame_index, labels); copies maps a frame to the one it duplicates."""
    rng = np.random.default_rng(0)
    records = []
    for n, (video, index, labels) in enumerate(frames):
        rel = f"images/{video}/{index:06d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        source = (copies or {}).get(n)
        if source is None:
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)).save(root / rel)
        else:
            shutil.copyfile(root / records[source].image, root / rel)
        objects = []
        for k, label in enumerate(labels):
            mask = np.zeros((SIZE, SIZE), np.uint8)
            mask[2 + k % 4 * 6 : 8 + k % 4 * 6, 4:12] = 1
            objects.append(ObjectAnn(k, label, [4, 2 + k % 4 * 6, 12, 8 + k % 4 * 6], 48, encode_rle(mask)))
        records.append(FrameRecord(f"{video}:{index:06d}", "test", video, index, rel, SIZE, SIZE, objects))
    write_records(records, root / "records.jsonl")
    meta = {"tool_version": "test", "convention": "json", "tasks": ["grounding"], "seed": 0, "sources": [],
            "issues": [], "labels": dict(Counter(label for _, _, labels in frames for label in labels))}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


def _shares(records: list[FrameRecord], assignment: dict[str, str], split: str) -> dict[str, float]:
    counts = Counter(label for r in records if assignment[r.id] == split for label in r.labels)
    total = sum(counts.values())
    return {label: n / total for label, n in counts.items()}


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 frames over 8 videos, 1-3 objects each from 4 labels of unequal frequency (stratifiable)."""
    rng = np.random.default_rng(3)
    frames = []
    for n in range(240):
        labels = list(rng.choice(["car", "person", "dog", "bike"], size=int(rng.integers(1, 4)), p=[.4, .3, .2, .1]))
        frames.append((f"video{n % 8}", n // 8 * 3, labels))
    return build(tmp_path_factory.mktemp("multi") / "ds", frames)


def test_stratified_keeps_each_label_share_within_5_points(multilabel: Path) -> None:
    result = split_dataset(multilabel, "stratified", (0.7, 0.15, 0.15), seed=1, write=False)
    records = open_dataset(multilabel).records()
    overall = _shares(records, dict.fromkeys(result.assignment, "all"), "all")
    for split in SPLITS:
        shares = _shares(records, result.assignment, split)
        assert all(abs(shares.get(label, 0) - share) <= 0.05 for label, share in overall.items()), split
    assert result.stratified_ok is True and result.max_deviation <= 0.05
    assert all(abs(result.counts[s] - target) <= 5 for s, target in zip(SPLITS, (168, 36, 36), strict=True))
    assert result.label_shares["overall"] == {k: round(v, 4) for k, v in sorted(overall.items())}


def test_random_is_seeded_and_reproducible(multilabel: Path) -> None:
    first = split_dataset(multilabel, "random", seed=5, write=False)
    again = split_dataset(multilabel, "random", seed=5, write=False)
    other = split_dataset(multilabel, "random", seed=6, write=False)
    assert first.assignment == again.assignment and first.digest == again.digest
    assert first.assignment != other.assignment
    assert [first.counts[s] for s in SPLITS] == [192, 24, 24]
    assert any("several splits" in note for note in first.notes)  # random mixes frames of one video


def test_temporal_never_puts_a_video_in_two_splits(multilabel: Path) -> None:
    result = split_dataset(multilabel, "temporal", seed=2, write=False)
    splits_of = {}
    for record in open_dataset(multilabel).records():
        splits_of.setdefault(record.video_id, set()).add(result.assignment[record.id])
    assert all(len(s) == 1 for s in splits_of.values())
    assert all(result.counts[s] > 0 for s in SPLITS) and result.counts["excluded"] == 0
    assert sorted(v for s in SPLITS for v in result.videos[s]) == sorted(splits_of)


def test_single_video_gets_contiguous_blocks_with_guard_gaps(tmp_path: Path) -> None:
    root = build(tmp_path / "ds", [("only", 2 * n, ["car"]) for n in range(100)])
    result = split_dataset(root, "temporal", (0.8, 0.1, 0.1), guard=6, write=False)
    frames = {s: sorted(int(rid.split(":")[1]) for rid, sp in result.assignment.items() if sp == s)
              for s in (*SPLITS, "excluded")}
    assert max(frames["train"]) < min(frames["val"]) and max(frames["val"]) < min(frames["test"])
    assert min(frames["val"]) - max(frames["train"]) > 6 and min(frames["test"]) - max(frames["val"]) > 6
    for split in SPLITS:  # contiguous: every annotated frame between first and last is in the block
        assert frames[split] == list(range(frames[split][0], frames[split][-1] + 1, 2))
    assert result.counts == {"train": 74, "val": 10, "test": 10, "excluded": 6} and result.guard == 6
    default = split_dataset(root, "temporal", write=False)
    assert default.guard == 4 and default.counts["excluded"] == 4  # two annotated steps per gap


def test_near_duplicates_stay_in_one_split(tmp_path: Path) -> None:
    frames = [(f"v{n % 5}", n, ["car" if n % 3 else "dog"]) for n in range(60)]
    copies = {11: 1, 21: 1, 32: 2, 43: 2, 59: 58}  # frame 1 appears three times, across videos
    root = build(tmp_path / "ds", frames, copies)
    groups = [{"v1:000001", "v1:000011", "v1:000021"}, {"v2:000002", "v2:000032", "v3:000043"},
              {"v3:000058", "v4:000059"}]
    for strategy in ("random", "stratified", "temporal"):
        for seed in range(3):
            result = split_dataset(root, strategy, seed=seed, write=False)
            for group in groups:
                assert len({result.assignment[rid] for rid in group}) == 1, (strategy, seed, group)
    one_video = build(tmp_path / "one", [("only", n, ["car"]) for n in range(40)], {35: 3})
    result = split_dataset(one_video, "temporal", guard=0, write=False)
    assert result.assignment["only:000035"] == result.assignment["only:000003"] == "train"
    assert any("moved" in note for note in result.notes)


def test_written_files_and_saved_config_reproduce_the_split(multilabel: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "ds"
    shutil.copytree(multilabel, root)
    result = split_dataset(root, "stratified", (0.8, 0.1, 0.1), seed=9)
    saved = yaml.safe_load((root / "split.yaml").read_text())
    assert {"strategy", "ratios", "seed", "counts", "label_shares", "notes", "tool_version"} <= set(saved)
    assert saved["counts"] == result.counts and saved["ratios"] == [0.8, 0.1, 0.1]
    by_file = {s: [r.id for r in read_records(root / "splits" / f"{s}.jsonl")] for s in SPLITS}
    assert sorted(i for ids in by_file.values() for i in ids) == sorted(result.assignment)
    for split in SPLITS:
        assert json.loads((root / "llava" / f"{split}.json").read_text())  # training formats per split
        assert (root / "messages" / f"{split}.jsonl").is_file() and (root / "sharegpt" / f"{split}.json").is_file()
    assert (root / "hf").is_dir() and not list(root.rglob(".*.tmp"))
    before = {s: (root / "splits" / f"{s}.jsonl").read_bytes() for s in SPLITS}
    assert main(["split", str(root), "--strategy", "random", "--seed", "1"]) == 0
    assert (root / "splits" / "train.jsonl").read_bytes() != before["train"]
    assert main(["split", str(root), "--config", str(tmp_path / "keep.yaml")]) == 2  # no such file
    shutil.copyfile(root / "split.yaml", tmp_path / "random.yaml")
    (tmp_path / "keep.yaml").write_text(yaml.safe_dump(saved))
    assert main(["split", str(root), "--config", str(tmp_path / "keep.yaml")]) == 0
    assert {s: (root / "splits" / f"{s}.jsonl").read_bytes() for s in SPLITS} == before
    again = split_dataset(root, config=tmp_path / "keep.yaml", write=False)
    assert again.assignment == result.assignment and not any("changed" in n for n in again.notes)
    out = capsys.readouterr().out
    assert "label share" in out and "stratified" in out


def test_ratio_errors_are_clear(multilabel: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match=r"ratios must sum to 1 \(0.8 \+ 0.1 \+ 0.2 = 1.1\)"):
        parse_ratios("0.8,0.1,0.2")
    with pytest.raises(UserError, match="three non-negative numbers"):
        parse_ratios("0.5,0.5")
    with pytest.raises(UserError, match="three numbers"):
        parse_ratios("a,b,c")
    with pytest.raises(UserError, match="train ratio"):
        parse_ratios("0,0.5,0.5")
    assert parse_ratios("0.7, 0.2, 0.1") == (0.7, 0.2, 0.1)
    assert main(["split", str(multilabel), "--ratios", "0.9,0.2,0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ratios must sum to 1") and err.count("\n") == 1
    with pytest.raises(UserError, match="unknown strategy"):
        split_dataset(multilabel, "by-moon", write=False)


def test_tiny_datasets_and_rare_labels_are_explained(tmp_path: Path) -> None:
    two = build(tmp_path / "two", [("a", 0, ["car"]), ("b", 0, ["car"])])
    for strategy in ("random", "stratified", "temporal"):
        result = split_dataset(two, strategy, write=False)
        assert sum(result.counts.values()) == 2 and result.counts["train"] >= 1
        assert any("is empty" in note for note in result.notes), strategy
    rare = build(tmp_path / "rare", [(f"v{n}", 0, ["car"] if n else ["unicorn"]) for n in range(20)])
    result = split_dataset(rare, "stratified", write=False)
    assert result.assignment["v0:000000"] == "train"
    assert any("'unicorn' (1 object(s)) is only in train" in note for note in result.notes)
    assert result.stratified_ok is False and any("could not all be kept" in n for n in result.notes)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "records.jsonl").write_text("")
    (tmp_path / "empty" / "dataset.json").write_text("{}")
    with pytest.raises(UserError, match="no records"):
        split_dataset(tmp_path / "empty", write=False)


def test_a_failed_split_writes_nothing(tmp_path: Path) -> None:
    root = build(tmp_path / "ds", [(f"v{n % 3}", n, ["car"]) for n in range(12)])
    (root / "images" / "v1" / "000004.png").unlink()
    with pytest.raises(UserError, match="missing"):
        split_dataset(root, "random")
    assert not (root / "splits").exists() and not (root / "split.yaml").exists()


def test_held_back_videos_form_their_own_split_and_can_be_trained_on(tmp_path: Path) -> None:
    """hold_out_videos moves whole train videos into a split of their own (seeded); data.train_split reads it."""
    from pipeline.config import TrainConfig
    from pipeline.holdout import hold_out_videos

    frames = [(f"video{n % 16}", n // 16, ["car"]) for n in range(160)]
    root = build(tmp_path / "ds", frames)
    split_dataset(root, "temporal", seed=1)
    before = open_dataset(root).split("train")
    counts = hold_out_videos(root, 0.3, "rl", seed=5)
    dataset = open_dataset(root)
    train, held = dataset.split("train"), dataset.split("rl")
    assert counts == {"train": len(train), "rl": len(held)} and len(train) + len(held) == len(before)
    assert {r.video_id for r in train}.isdisjoint({r.video_id for r in held})
    assert len({r.video_id for r in held}) == round(0.3 * len({r.video_id for r in before}))
    assert {r.id for r in dataset.train_val("rl")[0]} == {r.id for r in held}
    assert [r.id for r in dataset.train_val()[1]] == [r.id for r in dataset.split("val")]
    assert TrainConfig().data.train_split == "train"
    with pytest.raises(UserError, match="no nope split"):
        dataset.train_val("nope")
    with pytest.raises(UserError, match="between 0 and 1"):
        hold_out_videos(root, 1.0)
    with pytest.raises(UserError, match="a name of its own"):
        hold_out_videos(root, 0.3, "val")
