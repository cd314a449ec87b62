"""GPU check: LoRA / QLoRA training steps on random-initialised models sized like SmolVLM-256M and Qwen2-VL-2B.

    bash bench/gpu_check.sh                 # on a CUDA machine; nothing is downloaded
    python bench/gpu_check.py --cpu-smoke   # the same code paths on shrunken models, on CPU, in seconds

Per case: tokens/s, MFU (6 x params x tokens/s over the GPU's bf16 peak), measured peak memory (allocator reserve
plus the CUDA context) against pipeline.memory.estimate_memory (goal: within 15%), including the real peak of the
ultra_low_memory_8gb preset. Models are built from a config, saved once to a temporary folder and loaded back
through the pipeline's own model code (pipeline.train_setup.build_model), so QLoRA goes through bitsandbytes for real.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
GIB = 2**30
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
               "A10": 125.0, "4090": 165.0, "3090": 71.0, "T4": 65.0}

# Published shapes (config.json of the Hub repos), and shrunken ones for --cpu-smoke.
SHAPES: dict[str, dict[str, Any]] = {
    "smolvlm-256m": {"family": "idefics3", "image": 512, "scale": 4,
                     "text": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                              "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49280},
                     "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                                "num_attention_heads": 12, "patch_size": 16}},
    "qwen2-vl-2b": {"family": "qwen2_vl", "image": 448,
                    "text": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                             "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936},
                    "vision": {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "patch_size": 14}},
}
SMOKE = {"smolvlm-256m": {"image": 64, "scale": 2,
                          "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                   "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000},
                          "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                     "num_attention_heads": 2, "patch_size": 16}},
         "qwen2-vl-2b": {"image": 56,
                         "text": {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000},
                         "vision": {"depth": 2, "embed_dim": 32, "num_heads": 2, "mlp_ratio": 2, "patch_size": 14}}}


@dataclass
class Case:
    shape: str
    method: str
    batch: int
    length: int
    checkpointing: bool
    preset: str | None = None


def build_config(name: str, shape: dict[str, Any]) -> Any:
    """A transformers config of the real architecture with the given sizes."""
    from transformers import Idefics3Config, Qwen2VLConfig

    text = {**shape["text"], "tie_word_embeddings": name == "qwen2-vl-2b", "max_position_embeddings": 8192,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    if shape["family"] == "idefics3":
        vision = {**shape["vision"], "image_size": shape["image"]}
        return Idefics3Config(vision_config=vision, text_config={"model_type": "llama", **text},
                              scale_factor=shape["scale"], image_token_id=text["vocab_size"] - 1)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    sections = [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]  # [16, 24, 24] for 128-dim heads
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": sections}
    vision = {**shape["vision"], "hidden_size": text["hidden_size"], "spatial_merge_size": 2, "temporal_patch_size": 2}
    return Qwen2VLConfig(vision_config=vision, text_config={**text, "rope_parameters": rope},
                         image_token_id=text["vocab_size"] - 1, video_token_id=text["vocab_size"] - 2,
                         vision_start_token_id=text["vocab_size"] - 3, vision_end_token_id=text["vocab_size"] - 4)


def save_random_model(name: str, shape: dict[str, Any], folder: Path, dtype: Any) -> Path:
    """Random weights for the config, saved like a Hub checkpoint (so 4-bit loading is the real path)."""
    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(build_config(name, shape), dtype=dtype)
    model.save_pretrained(folder)
    del model
    gc.collect()
    return folder


def image_tokens(shape: dict[str, Any], side: int) -> tuple[int, dict[str, Any]]:
    """Image tokens of one square image and the pixel inputs' geometry."""
    patch = shape["vision"]["patch_size"]
    if shape["family"] == "idefics3":
        return (shape["image"] // patch) ** 2 // shape["scale"] ** 2, {"side": shape["image"]}
    grid = max(2, round(side / (patch * 2)) * 2)  # smart_resize: sides in multiples of 28 px
    return grid * grid // 4, {"grid": grid}


def synthetic_batch(shape: dict[str, Any], config: Any, case: Case, side: int, device: str) -> dict[str, Any]:
    """input_ids with the image tokens in place, pixel inputs, labels on the last quarter of the tokens."""
    import torch

    tokens, geo = image_tokens(shape, side)
    vocab, b, n = shape["text"]["vocab_size"], case.batch, case.length
    ids = torch.randint(10, vocab - 10, (b, n))
    ids[:, 1:1 + tokens] = config.image_token_id
    labels = ids.clone()
    labels[:, : max(1 + tokens, n - n // 4)] = -100
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    if shape["family"] == "idefics3":
        s = geo["side"]
        batch["pixel_values"] = torch.randn(b, 1, 3, s, s)
        batch["pixel_attention_mask"] = torch.ones(b, 1, s, s, dtype=torch.bool)
    else:
        grid, patch = geo["grid"], shape["vision"]["patch_size"]
        batch["pixel_values"] = torch.randn(b * grid * grid, 3 * 2 * patch * patch)
        batch["image_grid_thw"] = torch.tensor([[1, grid, grid]] * b)
        batch["mm_token_type_ids"] = (ids == config.image_token_id).int()
    return {k: v.to(device) for k, v in batch.items()}


def train_config(case: Case, folder: Path, side: int) -> Any:
    from pipeline.config import TrainConfig
    from pipeline.presets import get_preset

    cfg = get_preset(case.preset, model=case.shape) if case.preset else TrainConfig()
    cfg.model.name = str(folder)
    cfg.training.method, cfg.training.batch_size = case.method, case.batch
    cfg.training.gradient_checkpointing, cfg.data.max_length = case.checkpointing, case.length
    cfg.data.max_image_size = side
    return cfg


def peak_flops(device_name: str) -> float | None:
    override = os.environ.get("GPU_PEAK_TFLOPS")
    if override:
        return float(override) * 1e12
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS.items() if key in device_name), None)


def train_steps(model: Any, batch: dict[str, Any], optimizer: Any, autocast: Any, steps: int) -> list[float]:
    """Plain forward / backward / AdamW steps; returns the losses."""
    losses = []
    for _ in range(steps):
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def run_case(case: Case, folder: Path, shape: dict[str, Any], hw: Any, steps: int, context: int) -> dict[str, Any]:
    """Train `steps` steps (after 2 warm-up steps that create the optimizer state); measure speed and peak."""
    import torch

    from pipeline.memory import estimate_memory
    from pipeline.registry import get_spec
    from pipeline.train_setup import build_model

    cuda = hw.device == "cuda"
    side = shape["image"] if not case.preset else min(shape["image"], 384)
    cfg = train_config(case, folder, side)
    spec = get_spec(case.shape)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(cfg, spec, hw, "cuda" if cuda else "cpu")
    model.train()
    batch = synthetic_batch(shape, model.config, case, side, "cuda" if cuda else "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    train_steps(model, batch, optimizer, autocast, 2)
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    losses = train_steps(model, batch, optimizer, autocast, steps)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    total = sum(p.numel() * (2 if hasattr(p, "quant_state") else 1) for p in model.parameters())
    vision = sum(p.numel() * (2 if hasattr(p, "quant_state") else 1) for n, p in model.named_parameters()
                 if "vision" in n or "visual" in n)
    tied = bool(getattr(model.config.get_text_config(), "tie_word_embeddings", False) or
                getattr(model.config, "tie_word_embeddings", False))
    text = model.config.get_text_config()
    sized = replace(spec, params=total, vision_params=vision, hidden_size=text.hidden_size,
                    num_layers=text.num_hidden_layers, vocab_size=text.vocab_size)
    estimate = estimate_memory(sized, method=case.method, batch_size=case.batch, seq_len=case.length,
                               image_size=side, gradient_checkpointing=case.checkpointing, precision="bf16",
                               lora_r=cfg.lora.r, lora_dropout=cfg.lora.dropout, tied_embeddings=tied,
                               device="cuda" if cuda else "cpu")
    measured = torch.cuda.max_memory_reserved() + context if cuda else 0
    tokens_per_s = case.batch * case.length * steps / seconds
    flops = peak_flops(torch.cuda.get_device_name() if cuda else "")
    del model, optimizer, batch
    gc.collect()
    return {"case": case.preset or f"{case.shape} {case.method}", "method": case.method, "batch": case.batch,
            "length": case.length, "ckpt": case.checkpointing, "params": total, "tokens_per_s": tokens_per_s,
            "mfu": 6 * total * tokens_per_s / flops if flops else None, "loss": losses[-1],
            "peak_gib": measured / GIB, "estimate_gib": estimate.total / GIB,
            "ratio": estimate.total / measured if measured else None, "parts": estimate.gib()}


def cases(smoke: bool) -> list[Case]:
    if smoke:
        return [Case("smolvlm-256m", "lora", 2, 64, False), Case("qwen2-vl-2b", "qlora", 1, 64, True)]
    return [Case("smolvlm-256m", "lora", 4, 1024, False), Case("smolvlm-256m", "qlora", 4, 1024, True),
            Case("qwen2-vl-2b", "lora", 2, 1024, True), Case("qwen2-vl-2b", "qlora", 2, 1024, True),
            Case("qwen2-vl-2b", "qlora", 1, 1024, True, preset="ultra_low_memory_8gb")]


def table(rows: list[dict[str, Any]]) -> str:
    head = "| case | batch x len | ckpt | tokens/s | MFU | peak GiB | estimate GiB | est/peak | within 15% |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "n/a"
        ok = "n/a" if not r["ratio"] else ("yes" if abs(r["ratio"] - 1) <= 0.15 else "NO")
        lines.append(f"| {r['case']} | {r['batch']} x {r['length']} | {'on' if r['ckpt'] else 'off'} | "
                     f"{r['tokens_per_s']:.0f} | {mfu} | {r['peak_gib']:.2f} | {r['estimate_gib']:.2f} | "
                     f"{ratio} | {ok} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="shrunken models on CPU: checks the code paths")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args()
    import torch

    from pipeline.hardware import detect_hardware

    hw = detect_hardware()
    if hw.device != "cuda" and not args.cpu_smoke:
        print("error: no CUDA GPU here (use --cpu-smoke to check the code paths on CPU)", file=sys.stderr)
        return 2
    context = 0
    if hw.device == "cuda":
        torch.cuda.init()
        free, total = torch.cuda.mem_get_info()
        context = total - free - torch.cuda.memory_reserved()
        print(f"{torch.cuda.get_device_name()}: {total / GIB:.1f} GiB, CUDA context {context / GIB:.2f} GiB",
              flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        saved: dict[str, Path] = {}
        for case in cases(args.cpu_smoke):
            shape = {**SHAPES[case.shape], **(SMOKE[case.shape] if args.cpu_smoke else {})}
            if case.shape not in saved:
                dtype = torch.bfloat16 if hw.device == "cuda" else torch.float32
                saved[case.shape] = save_random_model(case.shape, shape, Path(tmp) / case.shape, dtype)
            row = run_case(case, saved[case.shape], shape, hw, args.steps, context)
            rows.append(row)
            print(f"{row['case']}: {row['tokens_per_s']:.0f} tokens/s, peak {row['peak_gib']:.2f} GiB, "
                  f"estimate {row['estimate_gib']:.2f} GiB, loss {row['loss']:.3f}", flush=True)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
