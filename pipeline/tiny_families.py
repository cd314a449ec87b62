"""Offline tiny twins of the other registry families: each family's own config, model and processor classes.

Each builder returns (model, processor) at the sizes of pipeline/tiny.py (64 px frames, a 2-layer text model, a
locally trained BPE tokenizer) with the family's real special tokens and real chat template (pipeline/chat_templates
.py), so a twin takes the code path of a real checkpoint of its family: processor, template, collator, answer-only
loss, generation and the family's coordinate convention. Where a processor class needs torchvision (video), the
image-only variant from pipeline/tiny.py is used; image processors are always the PIL ones.
"""

from __future__ import annotations

from typing import Any

from . import chat_templates
from .coords import Qwen25VL
from .tiny_parts import (
    IMAGE_SIZE,
    QWEN_SPECIAL,
    TEXT,
    VISION,
    _text_config,
    build_tokenizer,
    image_only_processor_class,
)

PALIGEMMA_SPECIAL = (["<pad>", "<eos>", "<bos>", "<unk>", "<image>"] + [f"<loc{i:04d}>" for i in range(1024)]
                     + [f"<seg{i:03d}>" for i in range(128)])
# BART's specials, then the task and location tokens Florence-2 adds (florence-community/Florence-2-base).
FLORENCE2_TASK_TOKENS = ["<od>", "</od>", "<ocr>", "</ocr>", "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>",
                         "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>", "<sep>", "<region_cap>",
                         "</region_cap>", "<region_to_desciption>", "</region_to_desciption>", "<proposal>",
                         "</proposal>", "<poly>", "</poly>", "<and>"]
FLORENCE2_SPECIAL = (["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<image>"] + FLORENCE2_TASK_TOKENS
                     + [f"<loc_{i}>" for i in range(1000)])
LLAVA_ONEVISION_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]

QWEN_PATCH, QWEN_MERGE = 8, 2  # tiny Qwen2-VL / Qwen3-VL: one token per 16x16 px (relative conventions)
QWEN25_PATCH = 14  # tiny Qwen2.5-VL keeps the real 28 px grid: its answers are pixels of that grid
_QWEN25 = Qwen25VL()  # the convention's grid: the real min_pixels and the one Qwen image cap
QWEN_MIN_PIXELS, QWEN_MAX_PIXELS = _QWEN25.min_pixels, _QWEN25.max_pixels
ONEVISION_TILE, ONEVISION_PATCH, ONEVISION_GRID = 32, 8, 2  # 4x4 tokens per 32 px tile, up to 2x2 tiles


def _qwen_ids(tok: Any) -> dict[str, Any]:
    return {name: tok.convert_tokens_to_ids(token) for name, token in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}


def _qwen_vision() -> dict[str, Any]:
    return {"depth": 2, "hidden_size": VISION["hidden_size"], "intermediate_size": VISION["intermediate_size"],
            "num_heads": VISION["num_attention_heads"], "out_hidden_size": TEXT["hidden_size"]}


def _qwen_rope(head_dim: int, theta: float = 10.0, **extra: Any) -> dict[str, Any]:
    # As tiny-qwen2-vl: a small theta so every mrope section turns over ~100 positions.
    return {"rope_type": "default", "rope_theta": theta, "mrope_section": [head_dim // 6] * 3, **extra}


def _qwen_image_processor(patch: int, min_pixels: int, max_pixels: int) -> Any:
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=patch, merge_size=QWEN_MERGE, temporal_patch_size=2,
                                    size={"shortest_edge": min_pixels, "longest_edge": max_pixels})


def build_qwen2_5_vl() -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tok = build_tokenizer(QWEN_SPECIAL, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                          chat_template=chat_templates.QWEN2_5_VL)
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    factor = QWEN25_PATCH * QWEN_MERGE
    config = Qwen2_5_VLConfig(
        vision_config={**_qwen_vision(),
                       "patch_size": QWEN25_PATCH, "spatial_merge_size": QWEN_MERGE, "temporal_patch_size": 2,
                       "window_size": 2 * factor, "fullatt_block_indexes": [1]},
        text_config=_text_config(tok, rope_parameters=_qwen_rope(head_dim)), **_qwen_ids(tok),
    )
    # The real pixel budget (the one Qwen image cap): coords.Qwen25VL writes answers on the same smart_resize grid, so a
    # 64 px frame becomes 56x56 px, 2x2 tokens, and its answers are pixels 0..56.
    image_processor = _qwen_image_processor(QWEN25_PATCH, QWEN_MIN_PIXELS, QWEN_MAX_PIXELS)
    processor = image_only_processor_class(Qwen2_5_VLProcessor)(image_processor, tok,
                                                                chat_template=chat_templates.QWEN2_5_VL)
    return Qwen2_5_VLForConditionalGeneration(config), processor


def build_qwen3_vl() -> Any:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    tok = build_tokenizer(QWEN_SPECIAL + ["<think>", "</think>", "<tool_call>", "</tool_call>"], bos=None,
                          eos="<|im_end|>", pad="<|endoftext|>", chat_template=chat_templates.QWEN3_VL)
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    grid = IMAGE_SIZE // QWEN_PATCH
    config = Qwen3VLConfig(
        vision_config={**_qwen_vision(),
                       "patch_size": QWEN_PATCH, "spatial_merge_size": QWEN_MERGE, "temporal_patch_size": 2,
                       "num_position_embeddings": grid * grid, "deepstack_visual_indexes": [0]},
        text_config={**_text_config(tok, rope_parameters=_qwen_rope(head_dim, mrope_interleaved=True)),
                     "head_dim": head_dim},
        **_qwen_ids(tok),
    )
    image_processor = _qwen_image_processor(QWEN_PATCH, (IMAGE_SIZE // 2) ** 2, IMAGE_SIZE**2)
    processor = image_only_processor_class(Qwen3VLProcessor)(image_processor, tok,
                                                             chat_template=chat_templates.QWEN3_VL)
    return Qwen3VLForConditionalGeneration(config), processor


def build_paligemma() -> Any:
    from transformers import (
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
    )

    tok = build_tokenizer(PALIGEMMA_SPECIAL, bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>",
                          extra_special={"image_token": "<image>"})
    patch = 16
    tokens = (IMAGE_SIZE // patch) ** 2
    head_dim = TEXT["hidden_size"] // TEXT["num_attention_heads"]
    config = PaliGemmaConfig(
        vision_config={"model_type": "siglip_vision_model", **VISION, "image_size": IMAGE_SIZE, "patch_size": patch,
                       "projection_dim": TEXT["hidden_size"], "vision_use_head": False},
        text_config={"model_type": "gemma", **_text_config(tok, rope_parameters={"rope_type": "default",
                                                                                   "rope_theta": 100.0}),
                     "head_dim": head_dim},
        image_token_index=tok.convert_tokens_to_ids("<image>"), projection_dim=TEXT["hidden_size"],
        vocab_size=len(tok), hidden_size=TEXT["hidden_size"], tie_word_embeddings=False,
    )
    config.get_text_config().num_image_tokens = tokens
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = tokens  # type: ignore[attr-defined]  # what PaliGemmaProcessor reads
    processor = PaliGemmaProcessor(image_processor, tok)
    return PaliGemmaForConditionalGeneration(config), processor


def build_florence2() -> Any:
    from transformers import (
        CLIPImageProcessorPil,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    tok = build_tokenizer(FLORENCE2_SPECIAL, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=False,
                          extra_special={"image_token": "<image>"})
    dim = TEXT["hidden_size"]
    # DaViT: two stages of strides 4 and 2 -> an 8x8 grid of 64 px frames, plus the pooled token.
    vision = {"depths": [1, 1], "patch_size": [7, 3], "patch_stride": [4, 2], "patch_padding": [3, 1],
              "patch_prenorm": [False, True], "embed_dim": [32, 64], "num_heads": [2, 4], "num_groups": [2, 4],
              "window_size": 4, "projection_dim": dim, "max_position_embeddings": 16, "drop_path_rate": 0.0}
    heads = TEXT["num_attention_heads"]
    text = {"model_type": "bart", "vocab_size": len(tok), "d_model": dim, "encoder_layers": 2, "decoder_layers": 2,
            "encoder_attention_heads": heads, "decoder_attention_heads": heads,
            "encoder_ffn_dim": TEXT["intermediate_size"], "decoder_ffn_dim": TEXT["intermediate_size"],
            "max_position_embeddings": TEXT["max_position_embeddings"], "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id,
            "decoder_start_token_id": tok.eos_token_id, "forced_eos_token_id": tok.eos_token_id,
            "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "scale_embedding": False}
    config = Florence2Config(vision_config=vision, text_config=text,
                             image_token_id=tok.convert_tokens_to_ids("<image>"))
    grid = IMAGE_SIZE // 8
    image_processor = CLIPImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                            image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    image_processor.image_seq_length = grid * grid + 1  # type: ignore[attr-defined]  # read by Florence2Processor
    processor = Florence2Processor(image_processor, tok)
    return Florence2ForConditionalGeneration(config), processor


def build_llava_onevision() -> Any:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        LlavaOnevisionProcessor,
    )

    tok = build_tokenizer(LLAVA_ONEVISION_SPECIAL, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                          chat_template=chat_templates.LLAVA_ONEVISION)
    pinpoints = [[r * ONEVISION_TILE, c * ONEVISION_TILE] for r in range(1, ONEVISION_GRID + 1)
                 for c in range(1, ONEVISION_GRID + 1)]
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", **VISION, "image_size": ONEVISION_TILE,
                       "patch_size": ONEVISION_PATCH, "vision_use_head": False},
        text_config={"model_type": "qwen2", **_text_config(tok, rope_parameters={"rope_type": "default",
                                                                                   "rope_theta": 100.0})},
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=pinpoints,
        vision_aspect_ratio="anyres_max_9",
    )
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": ONEVISION_TILE, "width": ONEVISION_TILE}, image_grid_pinpoints=pinpoints,
        do_pad=True)
    processor = image_only_processor_class(LlavaOnevisionProcessor)(
        image_processor, tok, chat_template=chat_templates.LLAVA_ONEVISION,
        num_image_tokens=(ONEVISION_TILE // ONEVISION_PATCH) ** 2, vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9")
    return LlavaOnevisionForConditionalGeneration(config), processor


BUILDERS = {"tiny-qwen2.5-vl": build_qwen2_5_vl, "tiny-qwen3-vl": build_qwen3_vl, "tiny-paligemma": build_paligemma,
            "tiny-florence2": build_florence2, "tiny-llava-onevision": build_llava_onevision}
