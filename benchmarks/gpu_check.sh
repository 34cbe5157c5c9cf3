#!/usr/bin/env bash
# The GPU check of issue #22, in under 8 minutes on one GPU. Writes benchmarks/results/gpu_train_speed.{json,md}
# and benchmarks/results/gpu_check.{json,md}; commit them with the GPU's name in the message.
#   1. ViT-MAE-B/16 @512 training on synthetic crops, batch 4: crops/s and peak GPU memory, fp32 and bf16-mixed,
#      with and without activation checkpointing (model.grad_checkpointing).
#   2. Labeling speed per precision (fp32, TF32, bf16, channels_last) against the bf16/TF32 matmul rates measured
#      in the same run, and the training figures of step 1 against them.
#   3. A short train + label + evaluate on 60 dsb2018_dev images with the package defaults (vit-mae-base/16,
#      crop 512, random weights: the mIoU shows that the path works, not the quality).
# Usage: bash benchmarks/gpu_check.sh [DATA_DIR]   (default ../shared/data/dsb2018_dev)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${1:-../shared/data/dsb2018_dev}
export MAL_NO_PROGRESS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
started=$(date +%s)
timeout 300 "$PY" benchmarks/train_speed.py --device cuda --configs vit-mae-base/16@512 --batch-size 4 \
  --precisions fp32 bf16-mixed --grad-checkpointing off on --warmup 3 --steps 10 --name gpu_train_speed
timeout 300 "$PY" benchmarks/gpu_check.py --device cuda --config vit-mae-base/16@512 --batch-size 32 \
  --data "$DATA" --epochs 1
echo "gpu_check: $(( $(date +%s) - started )) s"
