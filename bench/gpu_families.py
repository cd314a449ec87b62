"""GPU check per family: one real-size config of every registry family, random weights, the real processor path.

    python bench/gpu_families.py               # on a CUDA GPU (bash bench/gpu_check.sh runs it); nothing downloads
    python bench/gpu_families.py --dry-run     # CPU: every real-size config built on the meta device, params checked
    python bench/gpu_families.py --cpu-smoke   # CPU: the same steps on the offline tiny twins, in seconds

Each family's real-size model is its offline twin's config (so the locally trained tokenizer's special-token ids
stay valid) with the published sizes of the registry entry put in, and its processor set to the real image size.
Per family: a batch of 64x64-px-drawn frames scaled to the real input size goes through the processor, the
collator (answer-only labels in the family's convention), LoRA on the registry's targets, a few AdamW steps in
bf16, then greedy generation of a few tokens. Prints tokens/s, peak memory, loss and the answer's length.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
GIB = 2**30

QWEN25_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "patch_size": 14,
                 "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31]}
SIGLIP_SO400M = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
                 "patch_size": 14}


TIED = {"qwen2-vl-2b", "qwen2.5-vl-3b", "qwen3-vl-2b", "paligemma2-3b", "llava-onevision-0.5b"}  # published configs


def _rope(head_dim: int, theta: float, sections: list[int], **extra: Any) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": theta, "mrope_section": sections, **extra}


# registry key of the real entry -> (twin, image side, text / vision / top-level overrides, processor settings)
REAL: dict[str, dict[str, Any]] = {
    "smolvlm-256m": {"twin": "tiny-smolvlm", "side": 512,
                     "text": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                              "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49280,
                              "rope_parameters": {"rope_type": "default", "rope_theta": 100000.0}},
                     "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                "num_attention_heads": 12, "patch_size": 16, "image_size": 512},
                     "top": {"scale_factor": 4}, "processor": {"image_seq_len": 64}},
    "llava-1.5-7b": {"twin": "tiny-llava", "side": 336,
                     "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                              "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
                              "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
                     "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                "num_attention_heads": 16, "patch_size": 14, "image_size": 336,
                                "projection_dim": 768},
                     "top": {"image_seq_length": 576, "vision_feature_layer": -2},
                     "processor": {"patch_size": 14}},
    "qwen2-vl-2b": {"twin": "tiny-qwen2-vl", "side": 448,
                    "text": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                             "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                             "rope_parameters": _rope(128, 1e6, [16, 24, 24])},
                    "vision": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14,
                               "hidden_size": 1536},
                    "image_processor": {"patch_size": 14}},
    "qwen2.5-vl-3b": {"twin": "tiny-qwen2.5-vl", "side": 448,
                      "text": {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                               "num_attention_heads": 16, "num_key_value_heads": 2, "vocab_size": 151936,
                               "rope_parameters": _rope(128, 1e6, [16, 24, 24])},
                      "vision": {**QWEN25_VISION, "out_hidden_size": 2048}},
    "qwen3-vl-2b": {"twin": "tiny-qwen3-vl", "side": 448,
                    "text": {"hidden_size": 2048, "intermediate_size": 6144, "num_hidden_layers": 28,
                             "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128,
                             "vocab_size": 151936,
                             "rope_parameters": _rope(128, 5e6, [24, 20, 20], mrope_interleaved=True)},
                    "vision": {"depth": 24, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
                               "patch_size": 16, "out_hidden_size": 2048, "num_position_embeddings": 2304,
                               "deepstack_visual_indexes": [5, 11, 17]},
                    "image_processor": {"patch_size": 16}},
    "paligemma2-3b": {"twin": "tiny-paligemma", "side": 224,
                      "text": {"hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                               "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                               "vocab_size": 257216, "num_image_tokens": 256},
                      "vision": {**SIGLIP_SO400M, "image_size": 224, "projection_dim": 2304},
                      "top": {"projection_dim": 2304, "hidden_size": 2304, "vocab_size": 257216},
                      "processor": {"image_seq_length": 256}},
    "florence2-base": {"twin": "tiny-florence2", "side": 768,
                       "text": {"d_model": 768, "encoder_layers": 6, "decoder_layers": 6,
                                "encoder_attention_heads": 12, "decoder_attention_heads": 12,
                                "encoder_ffn_dim": 3072, "decoder_ffn_dim": 3072, "vocab_size": 51289},
                       "vision": {"depths": [1, 1, 9, 1], "patch_size": [7, 3, 3, 3], "patch_stride": [4, 2, 2, 2],
                                  "patch_padding": [3, 1, 1, 1], "patch_prenorm": [False, True, True, True],
                                  "embed_dim": [128, 256, 512, 1024], "num_heads": [4, 8, 16, 32],
                                  "num_groups": [4, 8, 16, 32], "window_size": 12, "projection_dim": 768,
                                  "max_position_embeddings": 50},
                       "processor": {"num_image_tokens": 577}},
    "llava-onevision-0.5b": {"twin": "tiny-llava-onevision", "side": 384,
                             "text": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                                      "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151647,
                                      "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}},
                             "vision": {**SIGLIP_SO400M, "image_size": 384},
                             "top": {"image_grid_pinpoints": [[384 * r, 384 * c] for r in range(1, 7)
                                                              for c in range(1, 7)]},
                             "processor": {"num_image_tokens": 729}},
}


def real_config(key: str) -> Any:
    """The twin's config with the real entry's published sizes (derived fields such as head_dim recomputed)."""
    from transformers import AutoConfig

    from pipeline.tiny import ensure_tiny_model

    spec = REAL[key]
    config = AutoConfig.from_pretrained(ensure_tiny_model(spec["twin"]))
    values = config.to_dict()
    text_key = "text_config"
    for part, overrides in ((text_key, spec.get("text", {})), ("vision_config", spec.get("vision", {}))):
        derived = {"layer_types", "head_dim"} - set(overrides)
        values[part] = {k: v for k, v in values[part].items() if k not in derived} | overrides
    values.update(spec.get("top", {}))
    if key in TIED:
        values["tie_word_embeddings"] = values[text_key]["tie_word_embeddings"] = True
    values.pop("transformers_version", None)
    return type(config).from_dict(values)


def count_params(key: str) -> int:
    """Parameters of the real-size model, built on the meta device (no memory, no weights)."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(real_config(key))
    return sum(p.numel() for p in model.parameters())


def real_processor(key: str) -> Any:
    """The twin's processor (its tokenizer and template) at the real input size."""
    from pipeline.models import load_processor

    spec = REAL[key]
    processor = load_processor(spec["twin"])
    image_processor, side = processor.image_processor, spec["side"]
    if hasattr(image_processor, "merge_size"):  # Qwen: the real patch, the real pixel budget
        for name, value in spec.get("image_processor", {}).items():
            setattr(image_processor, name, value)
    elif key == "smolvlm-256m":
        image_processor.size = {"longest_edge": side}
        image_processor.max_image_size = {"longest_edge": side}
    else:
        image_processor.size = {"height": side, "width": side}
        if hasattr(image_processor, "crop_size"):
            image_processor.crop_size = {"height": side, "width": side}
        if hasattr(image_processor, "image_grid_pinpoints"):
            image_processor.image_grid_pinpoints = spec["top"]["image_grid_pinpoints"]
    for name, value in spec.get("processor", {}).items():
        setattr(processor, name, value)
        if name == "image_seq_length":
            image_processor.image_seq_length = value
    return processor


def examples(key: str, count: int, side: int) -> list[dict[str, Any]]:
    from PIL import Image

    from pipeline.coords import get_convention
    from pipeline.registry import get_spec

    conv = get_convention(get_spec(key).convention)
    rows = []
    for i in range(count):
        image = Image.new("RGB", (side, side), (30, 30, 30))
        box = [side * 0.1 * (1 + i % 3), side * 0.2, side * 0.6, side * 0.7]
        image.paste((230, 40, 40), tuple(int(v) for v in box))
        rows.append({"image": image, "prompt": "Find every circle in the image.",
                     "answer": conv.encode_boxes([("circle", box)], side, side)})
    return rows


def run_family(key: str, smoke: bool, steps: int, batch_size: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from pipeline.collate import VisionLanguageCollator, answer_start, build_generation_inputs, decode_answers
    from pipeline.models import load_model, load_processor
    from pipeline.registry import get_spec

    spec, twin = get_spec(key), REAL[key]["twin"]
    cuda = torch.cuda.is_available() and not smoke
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    if smoke:
        model, processor, side = load_model(twin, device="cpu"), load_processor(twin), 64
    else:
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(real_config(key), dtype=dtype)
        processor, side = real_processor(key), REAL[key]["side"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=spec.lora_targets))
    rows = examples(key, batch_size, side)
    batch = VisionLanguageCollator(processor)(rows)
    batch = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model.train()
    losses, started = [], time.perf_counter()
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    model.eval()
    inputs = build_generation_inputs(processor, [r["image"] for r in rows[:2]], [r["prompt"] for r in rows[:2]])
    inputs = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answers = decode_answers(processor, output, answer_start(model, inputs))
    image_tokens = int((batch["input_ids"][0] == processor.image_token_id).sum())
    row = {"model": key if not smoke else twin, "family": spec.family, "convention": spec.convention,
           "params": sum(p.numel() for p in model.parameters()), "image_tokens": image_tokens,
           "registry_tokens": get_spec(twin if smoke else key).vision_tokens(side, side),
           "seq": int(batch["input_ids"].shape[1]),
           "tokens_per_s": batch["input_ids"].numel() * steps / seconds, "loss": losses[-1],
           "peak_gib": torch.cuda.max_memory_allocated() / GIB if cuda else 0.0,
           "answer_tokens": max(len(a) for a in answers)}
    del model, optimizer, batch
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="meta-device params of every real-size config (CPU)")
    mode.add_argument("--cpu-smoke", action="store_true", help="the same steps on the offline tiny twins (CPU)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--only", nargs="*", choices=list(REAL), help="these registry keys only")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    import torch

    from pipeline.registry import get_spec

    keys = args.only or list(REAL)
    rows: list[dict[str, Any]] = []
    if args.dry_run:
        print("| model | family | params (meta) | registry params | ratio |\n|---|---|---|---|---|")
        for key in keys:
            params, published = count_params(key), get_spec(key).params
            rows.append({"model": key, "params": params, "registry": published})
            print(f"| {key} | {get_spec(key).family} | {params / 1e9:.2f} B | {published / 1e9:.2f} B | "
                  f"{params / published:.2f} |", flush=True)
    else:
        if not args.cpu_smoke and not torch.cuda.is_available():
            print("error: no CUDA GPU here (--dry-run or --cpu-smoke check the code on CPU)", file=sys.stderr)
            return 2
        print("| model | convention | image tokens (registry) | seq | tokens/s | peak GiB | loss |")
        print("|---|---|---|---|---|---|---|")
        for key in keys:
            row = run_family(key, args.cpu_smoke, args.steps, args.batch)
            rows.append(row)
            print(f"| {row['model']} | {row['convention']} | {row['image_tokens']} ({row['registry_tokens']}) | "
                  f"{row['seq']} | {row['tokens_per_s']:.0f} | {row['peak_gib']:.1f} | {row['loss']:.3f} |",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
