"""Tokenization before the loop: cached token rows collate to exactly what the in-loop collator builds."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image

from pipeline.collate import VisionLanguageCollator
from pipeline.dataset import cache_path
from pipeline.errors import UserError
from pipeline.models import load_processor
from pipeline.tiny import TINY_MODELS
from pipeline.tokenize_cache import TokenizedCollator, cached_tokenize, tokenize_rows

PROMPTS = ["Find every circle in the image and answer with boxes as JSON.", "How many cars?",
           "What is the object at [10, 20, 30, 40]?", "Detect star."]
ANSWERS = ['[{"bbox_2d": [12, 5, 40, 33], "label": "circle"}]', "3", "car", '[{"label": "star", "box": [1,2,3,4]}]']
SIZES = [(128, 72), (64, 64), (50, 90), (200, 200), (64, 64), (33, 47)]


@pytest.fixture(scope="module")
def processors():
    return {key: load_processor(key) for key in TINY_MODELS}


def _rows(tmp_path) -> list[dict]:
    rows = []
    for i, size in enumerate(SIZES):
        path = tmp_path / f"f{i}.png"
        Image.new("RGB", size, (40 * i % 255, 90, 200)).save(path)
        rows.append({"id": f"frame-{i}", "image": str(path), "prompt": PROMPTS[i % 4], "answer": ANSWERS[i % 4]})
    return rows


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# Florence-2 is an encoder-decoder: it trains on the in-loop collator (decoder labels), never on the token cache
DECODER_ONLY = [key for key in TINY_MODELS if key != "tiny-florence2"]


@pytest.mark.parametrize("key", DECODER_ONLY)
def test_token_rows_collate_to_what_the_in_loop_collator_builds(processors, key, tmp_path):
    processor = processors[key]
    rows = _rows(tmp_path)
    tokens = tokenize_rows(processor, rows, max_length=512)
    collate = TokenizedCollator(processor)
    for start in (0, 3):
        batch = rows[start: start + 3]
        fed = [{**row, **tok} for row, tok in zip(batch, tokens[start: start + 3], strict=True)]
        _same(collate(fed), VisionLanguageCollator(processor, max_length=512)(batch))


@pytest.mark.parametrize("key", ["tiny-smolvlm", "tiny-llava"])
def test_the_image_cap_is_applied_to_the_size_the_tokens_are_made_for(processors, key, tmp_path):
    processor = processors[key]
    rows = _rows(tmp_path)
    tokens = tokenize_rows(processor, rows, cap=48)
    capped = []
    for row in rows:
        image = Image.open(row["image"]).convert("RGB")
        image.thumbnail((48, 48))
        capped.append({**row, "image": image})
    fed = [{**row, **tok} for row, tok in zip(capped, tokens, strict=True)]
    _same(TokenizedCollator(processor)(fed), VisionLanguageCollator(processor)(capped))


def test_cache_is_written_once_and_keyed_by_the_tokenizer_and_rows(processors, tmp_path, monkeypatch):
    rows = _rows(tmp_path)
    first = cached_tokenize(processors["tiny-smolvlm"], rows, tmp_path, convention="json")
    files = list(cache_path(tmp_path, "tokens").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["rows"] == first
    monkeypatch.setattr("pipeline.tokenize_cache._tokenize", lambda *a: pytest.fail("tokenized again"))
    assert cached_tokenize(processors["tiny-smolvlm"], rows, tmp_path, convention="json") == first
    monkeypatch.undo()
    cached_tokenize(processors["tiny-llava"], rows, tmp_path, convention="json")  # another tokenizer
    cached_tokenize(processors["tiny-smolvlm"], rows, tmp_path, convention="llava")  # another convention
    cached_tokenize(processors["tiny-smolvlm"], rows[:-1], tmp_path, convention="json")  # other rows
    assert len(list(cache_path(tmp_path, "tokens").glob("*.json"))) == 4


def test_pad_to_a_multiple_of_8_adds_only_padding(processors, tmp_path):
    processor = processors["tiny-llava"]
    rows = _rows(tmp_path)[:2]
    fed = [{**row, **tok} for row, tok in zip(rows, tokenize_rows(processor, rows), strict=True)]
    plain, padded = TokenizedCollator(processor)(fed), TokenizedCollator(processor, pad_to_multiple_of=8)(fed)
    width = plain["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] % 8 == 0 and padded["input_ids"].shape[1] >= width
    assert torch.equal(padded["input_ids"][:, :width], plain["input_ids"])
    assert (padded["labels"][:, width:] == -100).all() and (padded["attention_mask"][:, width:] == 0).all()


def test_max_length_errors_name_the_row_before_training(processors, tmp_path, caplog):
    rows = _rows(tmp_path)
    with pytest.raises(UserError, match="frame-0.*max_length|max_length.*frame-0"):
        tokenize_rows(processors["tiny-llava"], rows, max_length=20)
    with caplog.at_level(logging.WARNING):
        tokens = tokenize_rows(processors["tiny-llava"], rows[1:2], max_length=95)
    assert len(tokens[0]["prompt_ids"]) + len(tokens[0]["answer_ids"]) <= 95
