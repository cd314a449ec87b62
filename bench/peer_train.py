"""Our `train` against LLaMA-Factory on the same rows and starting weights: whole-command samples/s and the ratio.

    python bench/peer_train.py --data DATASET --lf-python /tmp/lfvenv/bin/python --steps 100
    python bench/peer_train.py --data DATASET          # without a peer venv: prints how to make one

Both tools train tiny-llava (full fine-tuning, batch 32, lr 2e-3 cosine, warm-up 5 %, cutoff 256 tokens) on the
training rows our `train` builds from DATASET (its splits/train.jsonl, grounding), starting from the same folder
(STUDIO_HOME/models/tiny-llava). LLaMA-Factory gets the rows as a ShareGPT file with absolute image paths and
the `llava` template. Each round runs `python -m pipeline train ...` and `llamafactory-cli train ...` as separate
commands, alternating which goes first; the clock covers the whole command (start-up, tokenization, training,
saving). samples/s = steps x batch / wall seconds; the result is the median of the round ratios, with `uptime`'s
load printed so runs on a shared machine can be judged. The last line is `ratio=<ours/LLaMA-Factory>`.

The peer venv (its pins conflict with ours, so never install it into the project's venv):

    python -m venv /tmp/lfvenv && /tmp/lfvenv/bin/pip install "llamafactory==0.9.5"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
MODEL = "tiny-llava"
SETUP = ("no --lf-python given: LLaMA-Factory is optional (its pins conflict with ours). Make a separate venv:\n"
         "    python -m venv /tmp/lfvenv && /tmp/lfvenv/bin/pip install 'llamafactory==0.9.5'\n"
         "then: python bench/peer_train.py --data DATASET --lf-python /tmp/lfvenv/bin/python")


def training_rows(data: Path) -> list[dict[str, Any]]:
    """The rows our `train` trains on (the same plan, so the same examples in the same order)."""
    from pipeline.config import set_field
    from pipeline.presets import get_preset
    from pipeline.train import plan_run

    cfg = get_preset("cpu_demo", model=MODEL, data=str(data), out=str(data.parent / "peer-plan-unused"))
    set_field(cfg, "data.tasks", ["grounding"])
    return plan_run(cfg, check_folder=False).train_rows


def lf_dataset(rows: list[dict[str, Any]], folder: Path) -> None:
    """ShareGPT rows + dataset_info.json for LLaMA-Factory."""
    folder.mkdir(parents=True, exist_ok=True)
    items = [{"messages": [{"role": "user", "content": "<image>\n" + row["prompt"]},
                           {"role": "assistant", "content": row["answer"]}], "images": [row["image"]]}
             for row in rows]
    (folder / "studio_rows.json").write_text(json.dumps(items), encoding="utf-8")
    info = {"studio_rows": {"file_name": "studio_rows.json", "formatting": "sharegpt",
                            "columns": {"messages": "messages", "images": "images"},
                            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                     "assistant_tag": "assistant"}}}
    (folder / "dataset_info.json").write_text(json.dumps(info), encoding="utf-8")


def lf_config(model: Path, data: Path, out: Path, steps: int, batch: int) -> Path:
    import yaml

    cfg = {"model_name_or_path": str(model), "stage": "sft", "do_train": True, "finetuning_type": "full",
           "dataset": "studio_rows", "dataset_dir": str(data), "template": "llava", "cutoff_len": 256,
           "overwrite_cache": True, "preprocessing_num_workers": 1, "dataloader_num_workers": 0,
           "output_dir": str(out), "overwrite_output_dir": True, "logging_steps": 10, "save_strategy": "no",
           "per_device_train_batch_size": batch, "gradient_accumulation_steps": 1, "learning_rate": 2e-3,
           "max_steps": steps, "lr_scheduler_type": "cosine", "warmup_ratio": 0.05, "weight_decay": 0.0,
           "report_to": "none", "bf16": False, "fp16": False, "use_cpu": True, "seed": 42,
           "disable_tqdm": True}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    started = time.monotonic()
    with open(log, "w") as handle:
        done = subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{cmd[0]} ... failed ({done.returncode}); see {log}:\n" + log.read_text()[-3000:])
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a converted dataset with splits/ (e.g. the demo's)")
    parser.add_argument("--lf-python", metavar="PATH", help="python of a venv with llamafactory 0.9.5")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="OMP/torch threads of both tools (default 1)")
    args = parser.parse_args()
    if not args.lf_python:
        print(SETUP)
        return 0
    from pipeline.models import resolve_model_path

    data = Path(args.data).expanduser().resolve()
    model = Path(resolve_model_path(MODEL))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "DISABLE_VERSION_CHECK": "1",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    rows = training_rows(data)
    print(f"{len(rows)} training rows of {data}, model {model}, {args.steps} steps x batch {args.batch}, "
          f"{os.getloadavg()[0]:.2f} load", flush=True)
    with tempfile.TemporaryDirectory(prefix="peer-train-") as tmp:
        root = Path(tmp)
        lf_dataset(rows, root / "lf-data")
        ratios = []
        speeds: dict[str, list[float]] = {"ours": [], "llamafactory": []}
        for n in range(args.rounds):
            order = ("ours", "llamafactory") if n % 2 == 0 else ("llamafactory", "ours")
            for side in order:
                out = root / f"{side}-{n}"
                if side == "ours":
                    cmd = [sys.executable, "-m", "pipeline", "train", "--preset", "cpu_demo", "--model", MODEL,
                           "--data", str(data), "--out", str(out), "--max-steps", str(args.steps),
                           "--set", f"training.batch_size={args.batch}",
                           "--set", f"training.save_steps={args.steps}", "--set", "training.geometry_eval_samples=0",
                           "--set", "training.eval_steps=0", "--set", "training.best_metric=eval_loss",
                           "--set", "training.best_mode=min"]
                else:
                    cmd = [args.lf_python, "-m", "llamafactory.cli", "train",
                           str(lf_config(model, root / "lf-data", out, args.steps, args.batch))]
                seconds = timed(cmd, env, root / f"{side}-{n}.log")
                speed = args.steps * args.batch / seconds
                speeds[side].append(speed)
                print(f"round {n + 1} {side:13} {speed:8.2f} samples/s ({seconds:.1f} s whole command, load "
                      f"{os.getloadavg()[0]:.2f})", flush=True)
                shutil.rmtree(out, ignore_errors=True)
            ratios.append(speeds["ours"][-1] / speeds["llamafactory"][-1])
    print(f"median ours={statistics.median(speeds['ours']):.2f} llamafactory="
          f"{statistics.median(speeds['llamafactory']):.2f} samples/s (whole command); round ratios "
          f"{', '.join(f'{r:.3f}' for r in ratios)}")
    print(f"ratio={statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
