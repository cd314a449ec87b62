"""Training-loop overhead of the pipeline against the best-practice raw loop: Trainer + PEFT fed PRE-TOKENIZED rows.

    python bench/train_overhead.py --quick        # ~2 minutes on 2 CPU cores
    python bench/train_overhead.py --steps 400 --rounds 5 --model tiny-qwen2-vl
    python bench/train_overhead.py --quick --workers 1   # also the pipeline with 1 DataLoader worker

The raw side is what a careful user writes by hand: token ids and label masks made once before the loop (the same
ids as the pipeline's, as tensors), a collator that only processes images and pads (pad_sequence), a stock Trainer
with save/log off. The pipeline side is `run_training` as a user runs it: its own tokenization cache, progress,
TensorBoard and end-of-run checkpoint. Both run in this process, one torch thread, after a short warm-up of each;
rounds alternate the sides. Throughput is samples per CPU second of `trainer.train()` (callbacks, background writer
threads and the pipeline's end-of-run checkpoint included): on a shared machine, wall time mostly measures the
neighbours. Each round's pipeline/raw ratio compares neighbouring runs; the median round ratio is the result (the
wall-clock median is printed too; with --workers, worker processes' CPU is not in CPU seconds, so compare their
wall-clock ratio). The last line is `ratio=<pipeline/raw>`; the goal is >= 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230)}


def make_dataset(root: Path, frames: int = 32, size: int = 64) -> Path:
    """A converted dataset folder of 64 px frames, one coloured square each."""
    import numpy as np
    from PIL import Image, ImageDraw

    from pipeline.masks import encode_rle
    from pipeline.records import FrameRecord, ObjectAnn, write_records

    rng = random.Random(0)
    (root / "images" / "v0").mkdir(parents=True)
    records = []
    for i in range(frames):
        label, side = list(COLOURS)[i % 3], rng.randint(12, 24)
        x, y = rng.randint(0, size - side), rng.randint(0, size - side)
        image = Image.new("RGB", (size, size), (235, 235, 235))
        ImageDraw.Draw(image).rectangle([x, y, x + side - 1, y + side - 1], fill=COLOURS[label])
        image.save(root / f"images/v0/{i:06d}.jpg")
        mask = np.zeros((size, size), np.uint8)
        mask[y:y + side, x:x + side] = 1
        records.append(FrameRecord(f"v0-{i}", "bench", "v0", i, f"images/v0/{i:06d}.jpg", size, size,
                                   [ObjectAnn(0, label, [x, y, x + side, y + side], side * side, encode_rle(mask))]))
    write_records(records, root / "records.jsonl")
    meta = {"labels": {c: frames // 3 for c in COLOURS}, "tasks": ["grounding"], "seed": 0}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def pipeline_config(model: str, data: Path, out: Path, steps: int, batch: int) -> Any:
    """The pipeline side: a LoRA config as a user would run it (progress, TensorBoard, checkpoint at the end)."""
    from pipeline.config import set_field
    from pipeline.presets import get_preset

    cfg = get_preset("balanced", model=model, data=str(data), out=str(out))
    for key, value in {"training.max_steps": steps, "training.batch_size": batch, "training.grad_accum": 1,
                       "training.learning_rate": 1e-3, "training.logging_steps": 10, "training.save_steps": steps,
                       "training.eval_steps": 0, "data.max_length": 256, "training.warmup_ratio": 0.0}.items():
        set_field(cfg, key, value)
    return cfg


def run_pipeline(cfg: Any) -> tuple[float, float]:
    """(samples per CPU second, samples per wall second) of the pipeline's training loop."""
    from pipeline.train import run_training

    result = run_training(cfg)
    samples = cfg.training.max_steps * cfg.training.batch_size
    return samples / result.metrics["train_cpu_seconds"], float(result.metrics["train_samples_per_second"])


def pretokenize(processor: Any, rows: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """The raw side's data: per row input_ids and labels as tensors, made once before the loop."""
    import torch

    from pipeline.tokenize_cache import tokenize_rows

    out = []
    for row, tok in zip(rows, tokenize_rows(processor, rows, max_length=max_length), strict=True):
        ids = tok["prompt_ids"] + tok["answer_ids"]
        labels = [-100] * len(tok["prompt_ids"]) + tok["answer_ids"]
        out.append({"image": row["image"], "input_ids": torch.tensor(ids), "labels": torch.tensor(labels),
                    **{k: torch.tensor(v + [0] * len(tok["answer_ids"])) for k, v in tok["extra"].items()}})
    return out


class RawCollator:
    """Best practice for pre-tokenized rows: open the images, run the image processor, pad_sequence the tensors."""

    def __init__(self, processor: Any) -> None:
        from pipeline.tokenize_cache import image_kwargs

        self.processor, self.kwargs = processor, image_kwargs(processor)
        self.pad = processor.tokenizer.pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from PIL import Image
        from torch.nn.utils.rnn import pad_sequence

        images = []
        for row in rows:
            with Image.open(row["image"]) as img:
                images.append([img.convert("RGB")])
        out = dict(self.processor.image_processor(images, **self.kwargs))
        out.pop("rows", None), out.pop("cols", None)
        ids = pad_sequence([r["input_ids"] for r in rows], batch_first=True, padding_value=self.pad)
        for key in rows[0]:
            if key not in ("image", "input_ids", "labels"):
                out[key] = pad_sequence([r[key] for r in rows], batch_first=True)
        return {**out, "input_ids": ids, "attention_mask": (pad_sequence(
            [r["input_ids"].new_ones(len(r["input_ids"])) for r in rows], batch_first=True)),
            "labels": pad_sequence([r["labels"] for r in rows], batch_first=True, padding_value=-100)}


def run_raw(cfg: Any, rows: list[dict[str, Any]], out: Path) -> tuple[float, float]:
    """The baseline: the few lines anyone would write with transformers + peft on pre-tokenized rows."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, Trainer, TrainingArguments

    from pipeline.models import load_processor, resolve_model_path
    from pipeline.registry import get_spec

    path = resolve_model_path(cfg.model.name)
    processor = load_processor(cfg.model.name)
    data = pretokenize(processor, rows, cfg.data.max_length)  # before the loop, as best practice has it
    model = AutoModelForImageTextToText.from_pretrained(path)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(get_spec(cfg.model.name).lora_targets), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    t = cfg.training
    args = TrainingArguments(
        output_dir=str(out), max_steps=t.max_steps, per_device_train_batch_size=t.batch_size,
        learning_rate=t.learning_rate, lr_scheduler_type=t.scheduler, logging_steps=t.logging_steps,
        save_strategy="no", report_to="none", remove_unused_columns=False, use_cpu=True, seed=t.seed,
        disable_tqdm=True, label_names=["labels"], dataloader_num_workers=cfg.hardware.num_workers)
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=RawCollator(processor))
    cpu_started = time.process_time()
    output = trainer.train()
    samples = t.max_steps * t.batch_size
    return samples / (time.process_time() - cpu_started), float(output.metrics["train_samples_per_second"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 steps x 3 rounds")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--model", default="tiny-smolvlm")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--workers", type=int, default=0,
                        help="also run the pipeline with this many DataLoader workers (side pipeline-wN)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    steps, rounds = (200, 3) if args.quick else (args.steps, args.rounds)

    with tempfile.TemporaryDirectory(prefix="train-overhead-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("STUDIO_HOME", str(root / "home"))
        import logging

        import transformers

        data = make_dataset(root / "data")
        from pipeline.dataset import open_dataset
        from pipeline.registry import get_spec
        from pipeline.tasks import build_examples

        spec = get_spec(args.model)
        rows = [{"id": ex.id, "image": str(data / ex.image), "prompt": ex.prompt, "answer": ex.answer}
                for ex in build_examples(open_dataset(data).records(), ["grounding"], spec.convention, seed=0)]
        sides = ["raw", "pipeline"] + ([f"pipeline-w{args.workers}"] if args.workers else [])
        results: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
        for n in range(rounds + 1):  # round 0 warms up both sides (lazy imports, tiny model build)
            for side in sides:
                cfg = pipeline_config(args.model, data, root / f"{side}-{n}", steps if n else 10, args.batch)
                if side.startswith("pipeline-w"):
                    cfg.hardware.num_workers = args.workers
                started = time.monotonic()
                speed = run_raw(cfg, rows, root / f"{side}-{n}") if side == "raw" else run_pipeline(cfg)
                transformers.utils.logging.set_verbosity_warning()
                logging.getLogger("pipeline").setLevel(logging.WARNING)
                label = "warm-up" if n == 0 else f"round {n}"
                print(f"{label:8} {side:8} {speed[0]:8.2f} samples/CPU-s {speed[1]:8.2f} samples/s "
                      f"({time.monotonic() - started:.1f} s)", flush=True)
                if n:
                    results[side].append(speed)
    cpu = statistics.median(p[0] / r[0] for p, r in zip(results["pipeline"], results["raw"], strict=True))
    wall = statistics.median(p[1] / r[1] for p, r in zip(results["pipeline"], results["raw"], strict=True))
    raw, pipe = (statistics.median(s[0] for s in results[side]) for side in ("raw", "pipeline"))
    print(f"model={args.model} steps={steps} batch={args.batch} threads={args.threads} rounds={rounds}: median "
          f"raw={raw:.2f} pipeline={pipe:.2f} samples/CPU-s; median wall-clock ratio {wall:.3f}")
    if args.workers:
        side = f"pipeline-w{args.workers}"
        workers = statistics.median(w[1] / p[1] for w, p in zip(results[side], results["pipeline"], strict=True))
        print(f"workers: {side}/pipeline median wall-clock ratio {workers:.3f} (> 1: workers help)")
    print(f"ratio={cpu:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
