"""Training-format writers: files reload, schemas, `<image>` counts, HF DatasetDict with decoded images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import UserError
from pipeline.formats import write_training_formats
from pipeline.masks import encode_rle, mask_bbox
from pipeline.records import FrameRecord, ObjectAnn
from pipeline.tasks import build_examples

W, H = 96, 64
TASKS = ["grounding", "referring", "counting", "listing", "polygon", "negative"]


def obj(object_id: int, label: str, x: int, y: int, w: int, h: int) -> ObjectAnn:
    mask = np.zeros((H, W), np.uint8)
    mask[y : y + h, x : x + w] = 1
    return ObjectAnn(object_id, label, mask_bbox(mask), int(mask.sum()), encode_rle(mask))


def make_dataset(root: Path, count: int = 6) -> list[FrameRecord]:
    """Records with real JPEG frames under root/images/vid/."""
    records = []
    for index in range(count):
        image = f"images/vid/{index:06d}.jpg"
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.full((H, W, 3), 40 * index % 255, np.uint8)
        Image.fromarray(pixels).save(root / image)
        objects = [obj(0, "circle", 5 + index, 5, 20, 20)]
        if index % 2:
            objects.append(obj(1, "square", 50, 30, 30, 25))
        records.append(FrameRecord(f"vid-{index:06d}", "test", "vid", index, image, W, H, objects))
    return records


def load_json(path: Path) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(data, list)
    return data


def check_llava(rows: list[dict], root: Path) -> None:
    for row in rows:
        assert set(row) == {"id", "image", "conversations"}
        human, gpt = row["conversations"]
        assert human["from"] == "human" and human["value"].startswith("<image>\n")
        assert human["value"].count("<image>") == 1 and "<image>" not in gpt["value"]
        assert gpt["from"] == "gpt" and gpt["value"]
        assert (root / row["image"]).is_file()


def check_sharegpt(rows: list[dict], root: Path) -> None:
    for row in rows:
        assert set(row) == {"conversations", "images"}
        tokens = sum(turn["value"].count("<image>") for turn in row["conversations"])
        assert tokens == len(row["images"]) == 1
        assert [turn["from"] for turn in row["conversations"]] == ["human", "gpt"]
        assert all((root / image).is_file() for image in row["images"])


def check_messages(path: Path, root: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert user["content"][0] == {"type": "image"} and user["content"][1]["type"] == "text"
        assert "<image>" not in user["content"][1]["text"]
        assert sum(part["type"] == "image" for part in user["content"]) == len(row["images"]) == 1
        assert assistant["content"][0]["type"] == "text"
        assert (root / row["images"][0]).is_file()
    return rows


SHAREGPT_ENTRY = {"formatting": "sharegpt", "columns": {"messages": "conversations", "images": "images"},
                  "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}


def test_all_records_layout(tmp_path: Path) -> None:
    records = make_dataset(tmp_path)
    written = write_training_formats(tmp_path, {"all": records}, convention="qwen2_5_vl", tasks=TASKS, seed=1)
    expected = build_examples(records, TASKS, "qwen2_5_vl", seed=1)
    assert written["llava"] == [tmp_path / "llava.json"] and written["hf"] == [tmp_path / "hf"]
    llava = load_json(tmp_path / "llava.json")
    check_llava(llava, tmp_path)
    assert [row["id"] for row in llava] == [e.id for e in expected]
    assert [row["conversations"][1]["value"] for row in llava] == [e.answer for e in expected]
    sharegpt = load_json(tmp_path / "sharegpt.json")
    check_sharegpt(sharegpt, tmp_path)
    assert len(sharegpt) == len(expected)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert info == {"sam2": {"file_name": "sharegpt.json", **SHAREGPT_ENTRY}}
    assert len(check_messages(tmp_path / "messages.jsonl", tmp_path)) == len(expected)


def test_hf_dataset_reloads_with_images(tmp_path: Path) -> None:
    from datasets import Image as ImageFeature
    from datasets import load_from_disk

    root = tmp_path / "data"
    records = make_dataset(root, count=3)
    write_training_formats(root, {"all": records}, convention="json", tasks=["grounding", "listing"])
    moved = tmp_path / "moved_hf"
    shutil.copytree(root / "hf", moved)
    shutil.rmtree(root / "images")  # the bytes are embedded: the copy loads without the frames
    dataset = load_from_disk(str(moved))
    assert list(dataset) == ["train"]
    train = dataset["train"]
    assert isinstance(train.features["image"], ImageFeature)
    assert len(train) == len(build_examples(records, ["grounding", "listing"], "json"))
    row = train[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (W, H)
    assert row["task"] == "grounding" and json.loads(row["truth"])["label"] == "circle"
    assert row["answer"].startswith('[{"label":"circle","box":[')
    assert row["messages"][0]["content"][0]["type"] == "image"
    assert row["messages"][1]["content"][0]["text"] == row["answer"]


def test_split_layout(tmp_path: Path) -> None:
    from datasets import load_from_disk

    records = make_dataset(tmp_path)
    write_training_formats(tmp_path, {"all": records}, convention="florence2", tasks=TASKS)
    splits = {"train": records[:4], "val": records[4:5], "test": records[5:]}
    written = write_training_formats(tmp_path, splits, convention="florence2", tasks=TASKS)
    for name, split in splits.items():
        llava = load_json(tmp_path / "llava" / f"{name}.json")
        check_llava(llava, tmp_path)
        assert {row["id"].split("-")[0] + "-" + row["id"].split("-")[1] for row in llava} == {r.id for r in split}
        check_sharegpt(load_json(tmp_path / "sharegpt" / f"{name}.json"), tmp_path)
        check_messages(tmp_path / "messages" / f"{name}.jsonl", tmp_path)
    info = json.loads((tmp_path / "dataset_info.json").read_text())
    assert set(info) == {"sam2", "sam2_train", "sam2_val", "sam2_test"}  # the 'all' entry is kept
    assert info["sam2_val"] == {"file_name": "sharegpt/val.json", **SHAREGPT_ENTRY}
    assert tmp_path / "dataset_info.json" in written["sharegpt"]
    dataset = load_from_disk(str(tmp_path / "hf"))
    assert sorted(dataset) == ["test", "train", "validation"]
    assert len(dataset["validation"]) == len(load_json(tmp_path / "llava" / "val.json"))
    assert set(dataset["train"]["record_id"]) == {r.id for r in records[:4]}
    # negatives draw from the labels of every split, so a val frame without 'square' can be asked about it
    val_negatives = [row for row in load_json(tmp_path / "llava" / "val.json") if "-negative-" in row["id"]]
    assert val_negatives and all(row["conversations"][1]["value"] == "none" for row in val_negatives)


def test_missing_image_writes_nothing(tmp_path: Path) -> None:
    records = make_dataset(tmp_path, count=2)
    (tmp_path / records[1].image).unlink()
    with pytest.raises(UserError, match="vid-000001.*missing"):
        write_training_formats(tmp_path, {"all": records}, convention="json", tasks=["grounding"])
    assert not (tmp_path / "llava.json").exists() and not (tmp_path / "hf").exists()


def test_image_token_mismatch_is_a_user_error(tmp_path: Path) -> None:
    records = make_dataset(tmp_path, count=1)
    records[0].objects[0].label = "<image>"
    with pytest.raises(UserError, match="<image>"):
        write_training_formats(tmp_path, {"all": records}, convention="llava", tasks=["grounding"])
    assert not (tmp_path / "llava.json").exists()


def test_bad_split_names(tmp_path: Path) -> None:
    records = make_dataset(tmp_path, count=1)
    for splits in ({"train": records, "holdout": []}, {"all": records, "train": records}, {}):
        with pytest.raises(UserError, match="splits"):
            write_training_formats(tmp_path, splits, convention="json", tasks=["grounding"])


def test_empty_split_still_reloads(tmp_path: Path) -> None:
    from datasets import load_from_disk

    records = make_dataset(tmp_path, count=2)
    write_training_formats(tmp_path, {"train": records, "val": [], "test": []}, convention="json", tasks=["listing"])
    assert load_json(tmp_path / "llava" / "val.json") == []
    assert (tmp_path / "messages" / "test.jsonl").read_text() == ""
    dataset = load_from_disk(str(tmp_path / "hf"))
    assert (len(dataset["train"]), len(dataset["validation"]), len(dataset["test"])) == (2, 0, 0)
