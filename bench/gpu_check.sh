#!/usr/bin/env bash
# GPU check for a lent CUDA machine: LoRA/QLoRA steps on random-initialised SmolVLM-256M- and Qwen2-VL-2B-sized
# models (built from config: nothing downloads), tokens/s, MFU, measured peak memory vs the estimator, and the
# ultra_low_memory_8gb preset's real peak. Then one real-size config of every registry family (bench/gpu_families.py:
# random weights, the family's processor, collator and convention, LoRA steps, generation). Prints Markdown tables;
# writes them (and JSON) under $OUT when set.
#
#   bash bench/gpu_check.sh            # about 3-6 minutes on one H100
#   bash bench/gpu_check.sh --steps 10
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
export STUDIO_HOME="${STUDIO_HOME:-$(mktemp -d)}"
out="${OUT:-$(mktemp -d)}"
mkdir -p "$out"

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
else
  echo "nvidia-smi not found: this check needs a CUDA GPU (python bench/gpu_check.py --cpu-smoke runs on CPU)" >&2
fi
python -c "import torch, transformers, peft, bitsandbytes as bnb; print('torch', torch.__version__, 'cuda', \
torch.version.cuda, '| transformers', transformers.__version__, '| peft', peft.__version__, '| bitsandbytes', \
bnb.__version__)"
python bench/gpu_check.py --json "$out/gpu_check.json" "$@" | tee "$out/gpu_check.txt"
python bench/gpu_families.py --dry-run | tee "$out/gpu_families_params.txt"
python bench/gpu_families.py --json "$out/gpu_families.json" | tee "$out/gpu_families.txt"
