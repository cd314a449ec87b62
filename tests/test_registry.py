"""Model registry: every entry is valid, image token rules match the transformers processors, remote-code gate."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest

from pipeline.errors import UserError
from pipeline.registry import (
    ALLOWLIST_ENV,
    CONVENTIONS,
    DEFAULT_MODEL,
    FAMILIES,
    QWEN_MAX_PIXELS,
    TOKEN_RULES,
    check_allowed,
    get_spec,
    list_specs,
    pinned_revision,
    smart_resize,
    with_image_cap,
)
from pipeline.tiny import TINY_MODELS

SIZES = [(64, 64), (1280, 720), (720, 1280), (848, 480), (333, 500), (4000, 3000)]
REQUIRED_HUB_IDS = [
    "HuggingFaceTB/SmolVLM-256M-Instruct", "HuggingFaceTB/SmolVLM-500M-Instruct",
    "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
    "Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct",
    "Qwen/Qwen3-VL-2B-Instruct", "llava-hf/llava-1.5-7b-hf", "llava-hf/llava-onevision-qwen2-0.5b-ov-hf",
    "google/paligemma2-3b-pt-224", "microsoft/Florence-2-base", "openbmb/MiniCPM-V-2_6",
    "THUDM/cogvlm2-llama3-chat-19B",
]


@pytest.mark.parametrize("spec", list_specs(), ids=lambda s: s.key)
def test_every_entry_has_valid_fields(spec):
    assert spec.family in FAMILIES and spec.convention in CONVENTIONS and spec.token_rule in TOKEN_RULES
    assert spec.params > spec.vision_params > 0
    assert spec.hidden_size > 0 and spec.num_layers > 0 and spec.vocab_size > 0 and spec.image_size > 0
    assert spec.lora_targets and all(isinstance(name, str) and name for name in spec.lora_targets)
    assert isinstance(spec.modules_to_save, list) and spec.license and spec.gpu_memory_class
    assert spec.revision is None or isinstance(spec.revision, str)
    if spec.tiny:
        real = {s.convention for s in list_specs() if s.family == spec.family and not s.tiny and s.enabled}
        assert spec.convention in real and spec.hub_id == spec.key and not spec.remote_code  # the family's own
    if spec.remote_code:
        assert not spec.enabled and "STUDIO_REMOTE_CODE_ALLOWLIST" in spec.disabled_reason
    else:
        assert spec.enabled and not spec.disabled_reason
    for width, height in SIZES:
        tokens = spec.vision_tokens(width, height)
        assert isinstance(tokens, int) and tokens > 0, (spec.key, width, height)


def test_registry_covers_required_models_with_unique_names():
    specs = list_specs()
    keys = [s.key for s in specs]
    assert len(set(keys)) == len(keys)
    assert {s.hub_id for s in specs} >= set(REQUIRED_HUB_IDS)
    assert DEFAULT_MODEL == "tiny-smolvlm" and get_spec(DEFAULT_MODEL).tiny
    assert [s.key for s in specs if s.tiny] == list(TINY_MODELS)
    assert get_spec("Qwen/Qwen2-VL-2B-Instruct").key == "qwen2-vl-2b"
    assert get_spec("microsoft/Florence-2-base").remote_code
    assert not get_spec("florence2-base").remote_code  # native in transformers 5


def test_unknown_model_lists_keys():
    with pytest.raises(UserError, match="unknown model 'nope/nothing'.*tiny-smolvlm.*qwen2-vl-2b"):
        get_spec("nope/nothing")


def test_fixed_token_counts_match_published_numbers():
    assert get_spec("llava-1.5-7b").vision_tokens(1280, 720) == 576
    assert get_spec("paligemma2-3b").vision_tokens(1280, 720) == 256
    assert get_spec("tiny-smolvlm").vision_tokens(1280, 720) == 16
    assert get_spec("tiny-llava").vision_tokens(100, 30) == 64
    # Qwen2-VL: one token per 28x28 px: 448x448 -> 16x16 tokens.
    assert get_spec("qwen2-vl-2b").vision_tokens(448, 448) == 256
    assert get_spec("qwen3-vl-2b").vision_tokens(512, 512) == 256
    # SmolVLM-256M: 1280x720 -> 2048x1152 -> 4x3 tiles of 512 px + the global image, 64 tokens each.
    assert get_spec("smolvlm-256m").vision_tokens(1280, 720) == 64 * 13
    with pytest.raises(UserError, match="positive"):
        get_spec("qwen2-vl-2b").vision_tokens(0, 10)


RESIZE_SIZES = sorted({(h, w) for h in (1, 2, 10, 13, 27, 28, 29, 55, 56, 100, 333, 480, 719, 720, 1080, 2160, 5000)
                       for w in (1, 10, 27, 28, 57, 200, 640, 1000, 1280, 1920, 3840, 9999)
                       if max(h, w) / min(h, w) <= 200})


@pytest.mark.parametrize("factor,min_pixels,max_pixels", [(28, 56 * 56, 28 * 28 * 16384), (16, 1024, 4096),
                                                           (32, 65_536, 16_777_216), (28, 56 * 56, QWEN_MAX_PIXELS),
                                                           (32, 65_536, QWEN_MAX_PIXELS), (14, 1, 100)])
def test_smart_resize_matches_transformers(factor, min_pixels, max_pixels):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as reference

    for height, width in RESIZE_SIZES:
        assert smart_resize(height, width, factor, min_pixels, max_pixels) == reference(
            height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels), (height, width)


def test_smart_resize_defaults_and_aspect_limit():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as reference

    assert smart_resize(10, 1000) == reference(10, 1000) == (28, 560)  # the case an older copy got wrong (28x1008)
    assert QWEN_MAX_PIXELS == 1_003_520 == reference.__defaults__[2]  # transformers' own default budget
    for height, width in ((10, 2010), (2010, 10), (1, 201)):
        with pytest.raises(ValueError, match="aspect ratio"):
            reference(height, width)
        with pytest.raises(UserError, match="aspect ratio over 200"):
            smart_resize(height, width)
    assert smart_resize(1, 200) == reference(1, 200)  # exactly 200 is allowed by both


def _qwen_image_processor(family: str, **config):
    """The image processor class transformers maps a Qwen family to (the PIL one: no torchvision needed)."""
    import transformers
    from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING_NAMES

    names = IMAGE_PROCESSOR_MAPPING_NAMES[family]
    name = names["pil"] if isinstance(names, dict) else names[-1]
    return getattr(transformers, name)(**config)


# family -> (the preprocessor_config.json values of its Hub checkpoints, the registry entry, factor)
HUB_QWEN = {
    "qwen2_vl": ({"min_pixels": 3136, "max_pixels": 12_845_056, "patch_size": 14, "merge_size": 2}, "qwen2-vl-2b"),
    "qwen2_5_vl": ({"min_pixels": 3136, "max_pixels": 12_845_056, "patch_size": 14, "merge_size": 2},
                   "qwen2.5-vl-3b"),
    "qwen3_vl": ({"size": {"shortest_edge": 65_536, "longest_edge": 16_777_216}, "patch_size": 16, "merge_size": 2},
                 "qwen3-vl-2b"),
}


@pytest.mark.parametrize("family", list(HUB_QWEN))
def test_real_qwen_processor_grid_is_the_grid_answers_are_written_on(family):
    """The studio's cap on the real transformers image processor gives exactly the grid conversion used."""
    import numpy as np
    from PIL import Image

    from pipeline.coords import get_convention
    from pipeline.models import apply_image_cap
    from pipeline.records import FrameRecord, ObjectAnn
    from pipeline.tasks import build_examples

    config, key = HUB_QWEN[family]
    image_processor = _qwen_image_processor(family, **config)
    processor = SimpleNamespace(image_processor=image_processor)
    apply_image_cap(processor, None, QWEN_MAX_PIXELS)  # what training, evaluation and export do
    spec = with_image_cap(get_spec(key), QWEN_MAX_PIXELS)
    patch, factor = image_processor.patch_size, image_processor.patch_size * image_processor.merge_size
    assert factor == spec.token_args["factor"]
    for width, height in [(1920, 1080), (1280, 720), (3840, 2160), (640, 480), (1000, 10), (300, 2000), (64, 64)]:
        image = Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8))
        grid = image_processor(images=[image], return_tensors="np")["image_grid_thw"][0]
        processed = (int(grid[1]) * patch, int(grid[2]) * patch)  # (height, width) the model sees
        assert processed == smart_resize(height, width, factor, spec.token_args["min_pixels"], QWEN_MAX_PIXELS)
        assert spec.vision_tokens(width, height) == int(grid[1] * grid[2]) // image_processor.merge_size**2
        if family == "qwen2_5_vl":  # absolute pixels on the resized grid: conversion must use the same grid
            assert get_convention(spec.convention).axes(width, height)[0].units == processed[1]
            record = FrameRecord("f", "s", "v", 0, "i.jpg", width, height,
                                 [ObjectAnn(1, "cat", [0, 0, width, height], width * height, {})])
            answer = build_examples([record], ["grounding"], spec.convention)[0].answer
            assert f"[0, 0, {processed[1]}, {processed[0]}]" in answer, answer


def test_smolvlm_tiles_match_idefics3_image_processor():
    from transformers import Idefics3ImageProcessorPil

    spec = get_spec("smolvlm-256m")
    processor = Idefics3ImageProcessorPil(size={"longest_edge": 2048}, max_image_size={"longest_edge": 512})
    for width, height in SIZES:
        _, rows, cols = processor.get_number_of_image_patches(height, width, {})
        assert spec.vision_tokens(width, height) == 64 * (rows * cols + 1)


def test_llava_onevision_anyres_matches_processor_formula():
    from transformers import LlavaOnevisionProcessor

    pinpoints = [[384 * r, 384 * c] for r in range(1, 7) for c in range(1, 7)]
    fake = SimpleNamespace(image_processor=SimpleNamespace(image_grid_pinpoints=pinpoints), num_image_tokens=729,
                           vision_aspect_ratio="anyres_max_9")
    fake._get_unpadded_features = functools.partial(LlavaOnevisionProcessor._get_unpadded_features, fake)
    spec = get_spec("llava-onevision-0.5b")
    for width, height in SIZES:
        expected = LlavaOnevisionProcessor._get_number_of_features(fake, height, width, 384, 384)
        assert spec.vision_tokens(width, height) == expected


def test_remote_code_refused_unless_exact_pair_allow_listed(monkeypatch):
    spec = get_spec("minicpm-v-2.6")
    monkeypatch.delenv(ALLOWLIST_ENV, raising=False)
    with pytest.raises(UserError, match="runs code from its Hub repo.*pin a revision"):
        check_allowed(spec)
    with pytest.raises(UserError, match="openbmb/MiniCPM-V-2_6@abc123 .*not allow-listed"):
        check_allowed(spec, revision="abc123")
    assert spec not in list_specs(include_disabled=False)

    monkeypatch.setenv(ALLOWLIST_ENV, "THUDM/cogvlm2-llama3-chat-19B@def, openbmb/MiniCPM-V-2_6@abc123")
    check_allowed(spec, revision="abc123")
    check_allowed(spec)  # the allow-listed revision is the one that gets loaded
    assert pinned_revision(spec) == "abc123"
    allowed = get_spec("minicpm-v-2.6")
    assert allowed.enabled and allowed.revision == "abc123" and allowed in list_specs(include_disabled=False)
    with pytest.raises(UserError, match="not allow-listed"):
        check_allowed(spec, revision="other")
    with pytest.raises(UserError, match="not allow-listed"):
        check_allowed(get_spec("cogvlm2-19b"), revision="abc123")
    check_allowed(get_spec("qwen2-vl-2b"))  # no remote code: always allowed
