"""Training-format writers: LLaVA JSON, LLaMA-Factory sharegpt (+ dataset_info.json), chat messages JSONL, HF datasets.

Image paths in every file are relative to the dataset folder (the folder holding records.jsonl and images/), which
is also where dataset_info.json lives, so LLaMA-Factory's `--dataset_dir DATASET` resolves them (its media_dir
defaults to dataset_dir). The HF copy embeds the image bytes, so `hf/` loads from anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .atomic import atomic_output_dir, atomic_write_text
from .clips import ClipOptions
from .errors import UserError
from .records import FrameRecord
from .tasks import Example, build_examples

IMAGE_TOKEN = "<image>"
DATASET_INFO = "dataset_info.json"
SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}
FILE_SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}  # split key -> file name
HF_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # file name -> DatasetDict split


def _human(example: Example) -> str:
    """The user turn: one `<image>` line per image (a clip's frames in time order), then the prompt."""
    frames = example.frames
    text = f"{IMAGE_TOKEN}\n" * len(frames) + example.prompt
    if text.count(IMAGE_TOKEN) != len(frames) or IMAGE_TOKEN in example.answer:
        raise UserError(f"example {example.id}: the prompt or answer contains {IMAGE_TOKEN}, which would not match "
                        f"its {len(frames)} image(s) (rename the label)")
    return text


def llava_rows(examples: Iterable[Example]) -> list[dict[str, Any]]:
    """LLaVA list items: id, image (a list of images for a clip), conversations [human '<image>\\n...', gpt]."""
    return [{"id": ex.id, "image": ex.images if ex.images else ex.image, "conversations": [
        {"from": "human", "value": _human(ex)}, {"from": "gpt", "value": ex.answer}]} for ex in examples]


def sharegpt_rows(examples: Iterable[Example]) -> list[dict[str, Any]]:
    """LLaMA-Factory sharegpt items: conversations (from/value) and images (one `<image>` per image)."""
    return [{"conversations": [{"from": "human", "value": _human(ex)}, {"from": "gpt", "value": ex.answer}],
             "images": ex.frames} for ex in examples]


def messages_rows(examples: Iterable[Example]) -> list[dict[str, Any]]:
    """TRL / transformers chat items: messages with one {"type": "image"} part per image, and the images list."""
    rows = []
    for ex in examples:
        _human(ex)
        parts: list[dict[str, Any]] = [{"type": "image"} for _ in ex.frames]
        rows.append({"id": ex.id, "messages": [
            {"role": "user", "content": [*parts, {"type": "text", "text": ex.prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": ex.answer}]}], "images": ex.frames})
    return rows


def dataset_info_entry(file_name: str) -> dict[str, Any]:
    """A LLaMA-Factory dataset_info.json entry for one sharegpt file."""
    return {"file_name": file_name, "formatting": "sharegpt",
            "columns": {"messages": "conversations", "images": "images"}, "tags": dict(SHAREGPT_TAGS)}


def check_image_tokens(rows: list[dict[str, Any]], source: str) -> None:
    """Every row must hold as many `<image>` tokens as images; a mismatch is a UserError naming the row."""
    for row in rows:
        turns = row.get("conversations") or []
        tokens = sum(turn["value"].count(IMAGE_TOKEN) for turn in turns)
        if not turns:
            tokens = sum(part.get("type") == "image" for msg in row["messages"] for part in msg["content"])
        image = row.get("images", row.get("image"))
        images = len(image) if isinstance(image, list) else 1
        if tokens != images:
            raise UserError(f"row {row.get('id', '?')}: {tokens} image placeholders for {images} images", source)


def _dump_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"


def _dump_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _hf_features(multi: bool = False) -> Any:
    """The HF columns; with clips (`multi`) also `images`, a sequence of images (a clip's frames in order)."""
    from datasets import Features, Image, Value

    text = Value("string")
    part = {"type": text, "text": text}
    return Features({
        "id": text, "record_id": text, "task": text, "image": Image(), "prompt": text, "answer": text,
        "width": Value("int32"), "height": Value("int32"), "truth": text,
        "messages": [{"role": text, "content": [part]}], **({"images": [Image()]} if multi else {}),
    })


def _hf_split(dataset_dir: Path, examples: list[Example], multi: bool = False) -> Any:
    from datasets import Dataset

    columns: dict[str, list[Any]] = {name: [] for name in _hf_features(multi)}
    for ex in examples:
        for name in ("id", "record_id", "task", "prompt", "answer", "width", "height"):
            columns[name].append(getattr(ex, name))
        columns["image"].append(str((dataset_dir / ex.image).resolve()))  # save_to_disk embeds the bytes
        columns["truth"].append(json.dumps(ex.truth))
        parts: list[dict[str, Any]] = [{"type": "image", "text": None} for _ in ex.frames]
        columns["messages"].append([
            {"role": "user", "content": [*parts, {"type": "text", "text": ex.prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": ex.answer}]}])
        if multi:
            columns["images"].append([str((dataset_dir / image).resolve()) for image in ex.frames])
    return Dataset.from_dict(columns, features=_hf_features(multi))


_EXAMPLES_PER_SHARD = 100


def write_hf(dataset_dir: Path, split_examples: dict[str, list[Example]]) -> Path:
    """DatasetDict (Image column, bytes embedded) saved under dataset_dir/hf, replacing an older one whole."""
    from datasets import DatasetDict

    multi = any(ex.images for exs in split_examples.values() for ex in exs)
    dataset = DatasetDict({name: _hf_split(dataset_dir, exs, multi) for name, exs in split_examples.items()})
    # Small shards keep the peak memory of embedding image bytes flat as datasets grow; an empty split still needs
    # one shard, or it does not load back.
    shards = {name: max(1, -(-len(split) // _EXAMPLES_PER_SHARD)) for name, split in dataset.items()}
    with atomic_output_dir(dataset_dir / "hf", overwrite=True) as tmp:
        dataset.save_to_disk(str(tmp), num_shards=shards)
    return dataset_dir / "hf"


def _check_images(dataset_dir: Path, records: list[FrameRecord]) -> None:
    for record in records:
        path = dataset_dir / record.image
        if not path.is_file():
            raise UserError(f"record {record.id}: image {record.image} is missing", path)


def _update_dataset_info(dataset_dir: Path, entries: dict[str, dict[str, Any]]) -> Path:
    path = dataset_dir / DATASET_INFO
    info: dict[str, Any] = {}
    if path.is_file():
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(f"not valid JSON ({exc.msg}); remove it to regenerate", path) from None
    info.update(entries)
    atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    return path


def _normalise_splits(splits: dict[str, list[FrameRecord]]) -> dict[str, list[FrameRecord]]:
    if set(splits) == {"all"}:
        return dict(splits)
    bad = [name for name in splits if name not in FILE_SPLITS]
    if bad or not splits:
        raise UserError(f"splits must be {{'all'}} or a subset of train/val/test, got {sorted(splits)}")
    return {FILE_SPLITS[name]: records for name, records in splits.items()}


def write_training_formats(dataset_dir: str | Path, splits: dict[str, list[FrameRecord]], *, convention: str,
                           tasks: list[str], seed: int = 0, max_pixels: int | None = None,
                           clips: ClipOptions | None = None, fps: dict[str, float] | None = None
                           ) -> dict[str, list[Path]]:
    """Write LLaVA, sharegpt (+ dataset_info.json), messages JSONL and hf/ for {"all": records} or train/val/test;
    `max_pixels` is the Qwen image cap the answers of pixel-grid conventions are written for (dataset.json's); video
    tasks cut clips inside each split, so a clip never straddles two."""
    dataset_dir = Path(dataset_dir)
    splits = _normalise_splits(splits)
    every = [record for records in splits.values() for record in records]
    _check_images(dataset_dir, every)
    label_set = sorted({label for record in every for label in record.labels})
    examples = {name: build_examples(records, tasks, convention, seed=seed, label_set=label_set, max_pixels=max_pixels,
                                     clips=clips, fps=fps)
                for name, records in splits.items()}

    layout = {"all": ("llava.json", "sharegpt.json", "messages.jsonl")}
    texts: dict[str, dict[Path, str]] = {"llava": {}, "sharegpt": {}, "messages": {}}
    entries = {}
    for name, exs in examples.items():
        llava_file, sharegpt_file, messages_file = layout.get(
            name, (f"llava/{name}.json", f"sharegpt/{name}.json", f"messages/{name}.jsonl"))
        rows = {"llava": llava_rows(exs), "sharegpt": sharegpt_rows(exs), "messages": messages_rows(exs)}
        for kind, file in zip(rows, (llava_file, sharegpt_file, messages_file), strict=True):
            check_image_tokens(rows[kind], file)
        texts["llava"][dataset_dir / llava_file] = _dump_json(rows["llava"])
        texts["sharegpt"][dataset_dir / sharegpt_file] = _dump_json(rows["sharegpt"])
        texts["messages"][dataset_dir / messages_file] = _dump_jsonl(rows["messages"])
        entries["sam2" if name == "all" else f"sam2_{name}"] = dataset_info_entry(sharegpt_file)

    written: dict[str, list[Path]] = {}
    for kind, files in texts.items():  # everything is built and checked before the first file is written
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        written[kind] = list(files)
    written["sharegpt"].append(_update_dataset_info(dataset_dir, entries))
    hf_names = {"all": "train", **HF_SPLITS}
    written["hf"] = [write_hf(dataset_dir, {hf_names[name]: exs for name, exs in examples.items()})]
    return written
