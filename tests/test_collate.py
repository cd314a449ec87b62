"""Vision-language collator: loss on answers only, padding, max_length errors, generation inputs, decoding."""

from __future__ import annotations

import logging

import pytest
import torch
from PIL import Image

from pipeline.collate import IGNORE, VisionLanguageCollator, build_generation_inputs, decode_answers
from pipeline.errors import UserError
from pipeline.models import load_processor
from pipeline.tiny import TINY_MODELS

LONG = '[{"bbox_2d": [12, 5, 40, 33], "label": "circle"}, {"bbox_2d": [1, 2, 3, 4], "label": "star"}]'


@pytest.fixture(scope="module")
def processors():
    return {key: load_processor(key) for key in TINY_MODELS[:3]}


def _rows() -> list[dict]:
    return [{"id": "frame-1", "image": Image.new("RGB", (128, 72), (200, 30, 30)),
             "prompt": "Find every circle in the image and answer with boxes as JSON.", "answer": LONG},
            {"id": "frame-2", "image": Image.new("RGB", (64, 64), (0, 0, 200)), "prompt": "How many cars?",
             "answer": "3"}]


def _answer_text(processor, labels_row) -> str:
    return processor.tokenizer.decode(labels_row[labels_row != IGNORE].tolist(), skip_special_tokens=False)


@pytest.mark.parametrize("key", TINY_MODELS[:3])  # every twin: tests/test_families.py
def test_labels_are_exactly_the_answer_and_end_of_turn(processors, key):
    processor = processors[key]
    collator = VisionLanguageCollator(processor)
    batch = collator(_rows())
    end = processor.tokenizer.convert_ids_to_tokens(collator.end_ids)
    assert end == [{"tiny-smolvlm": "<end_of_utterance>", "tiny-llava": "</s>", "tiny-qwen2-vl": "<|im_end|>"}[key]]
    for row, answer in zip(batch["labels"], [LONG, "3"], strict=True):
        assert _answer_text(processor, row).strip() == answer + end[0]
    image_ids = batch["input_ids"] == processor.image_token_id
    assert image_ids.any() and (batch["labels"][image_ids] == IGNORE).all()
    # Every labelled position holds the same token as the input (the model shifts internally).
    labelled = batch["labels"] != IGNORE
    assert torch.equal(batch["labels"][labelled], batch["input_ids"][labelled])
    assert "pixel_values" in batch and batch["input_ids"].shape == batch["attention_mask"].shape


def test_variable_lengths_are_right_padded(processors):
    processor = processors["tiny-smolvlm"]
    batch = VisionLanguageCollator(processor)(_rows())
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert lengths[0] > lengths[1] and batch["input_ids"].shape[1] == lengths[0]
    pad = processor.tokenizer.pad_token_id
    short = batch["input_ids"][1]
    assert (short[lengths[1]:] == pad).all() and (batch["labels"][1, lengths[1]:] == IGNORE).all()
    assert (batch["attention_mask"][1, : lengths[1]] == 1).all()


def test_qwen_extra_tensors_follow_the_sequence(processors):
    batch = VisionLanguageCollator(processors["tiny-qwen2-vl"])(_rows())
    assert batch["image_grid_thw"].shape == (2, 3)
    assert batch["mm_token_type_ids"].shape == batch["input_ids"].shape
    image = batch["input_ids"] == processors["tiny-qwen2-vl"].image_token_id
    assert torch.equal(batch["mm_token_type_ids"].bool(), image)


def test_image_paths_relative_to_a_root(processors, tmp_path):
    Image.new("RGB", (80, 60), (10, 200, 10)).save(tmp_path / "f.png")
    collator = VisionLanguageCollator(processors["tiny-llava"], image_root=tmp_path)
    batch = collator([{"image": "f.png", "prompt": "Find the car.", "answer": "none"}])
    assert batch["pixel_values"].shape == (1, 3, 64, 64)
    with pytest.raises(UserError, match="frame-9: cannot read image"):
        collator([{"id": "frame-9", "image": "missing.png", "prompt": "Find the car.", "answer": "none"}])
    with pytest.raises(UserError, match="example 0: record has no 'prompt'"):
        collator([{"image": "f.png", "answer": "none"}])


def test_max_length_never_cuts_image_tokens(processors, caplog):
    collator = VisionLanguageCollator(processors["tiny-llava"], max_length=40)  # 64 image tokens alone
    with pytest.raises(UserError, match=r"frame-1: prompt needs \d+ tokens \(64 image tokens\).*max_length 40"):
        collator(_rows())
    full = VisionLanguageCollator(processors["tiny-llava"])(_rows()[:1])
    prompt_len = int((full["labels"][0] == IGNORE).sum())
    limit = prompt_len + 5
    with caplog.at_level(logging.WARNING, logger="pipeline.collate"):
        batch = VisionLanguageCollator(processors["tiny-llava"], max_length=limit)(_rows()[:1])
    assert batch["input_ids"].shape[1] == limit and int((batch["labels"] != IGNORE).sum()) == 5
    assert "frame-1: answer truncated" in caplog.text
    with pytest.raises(UserError, match="no room for the answer"):
        VisionLanguageCollator(processors["tiny-llava"], max_length=prompt_len)(_rows()[:1])


def test_rows_without_answer_have_no_labels(processors):
    rows = [{**row, "answer": None} for row in _rows()]
    for row in rows:
        del row["answer"]
    batch = VisionLanguageCollator(processors["tiny-smolvlm"])(rows)
    assert (batch["labels"] == IGNORE).all()


def test_tokenizer_only_mode(processors):
    tok = processors["tiny-qwen2-vl"].tokenizer
    batch = VisionLanguageCollator(tokenizer=tok)([{"prompt": "How many cars?", "answer": "3"},
                                                  {"prompt": "Name the shape.", "answer": "circle"}])
    assert "pixel_values" not in batch
    assert tok.decode(batch["labels"][0][batch["labels"][0] != IGNORE].tolist()) == "3<|im_end|>"
    assert tok.decode(batch["labels"][1][batch["labels"][1] != IGNORE].tolist()) == "circle<|im_end|>"
    assert tok.convert_tokens_to_ids("<|image_pad|>") not in batch["input_ids"].tolist()[0]


def test_generation_inputs_are_left_padded(processors):
    processor = processors["tiny-smolvlm"]
    rows = _rows()
    inputs = build_generation_inputs(processor, [r["image"] for r in rows], [r["prompt"] for r in rows])
    mask = inputs["attention_mask"]
    assert (mask[:, -1] == 1).all() and mask[1, 0] == 0 and mask[0, 0] == 1
    text = processor.tokenizer.decode(inputs["input_ids"][1][mask[1].bool()])
    assert text.endswith("Assistant:") and "How many cars?" in text


def test_decode_answers_cuts_at_end_of_turn_and_keeps_box_tokens(processors):
    processor = processors["tiny-qwen2-vl"]
    tok = processor.tokenizer
    answer = "<|object_ref_start|>car<|object_ref_end|><|box_start|>(10,20),(30,40)<|box_end|>"
    prompt = tok("prompt text", add_special_tokens=False)["input_ids"]
    generated = tok(answer, add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    rows = [prompt + generated, prompt + tok("none", add_special_tokens=False)["input_ids"]]
    width = max(map(len, rows)) + 2
    output = torch.tensor([row + [tok.pad_token_id] * (width - len(row)) for row in rows])
    assert decode_answers(processor, output, len(prompt)) == [answer, "none"]
