#!/usr/bin/env bash
# The GPU check (not a test; CI has no GPU): CUDA-vs-CPU agreement tests, the epoch benchmark on
# cuda, and one real epoch of `apot train` FP32 then 4-bit APoT on full CIFAR-10.
# Usage: APOT_DATA_MIRROR=<folder with cifar-10-images.tar.gz> bash bench/gpu_check.sh [WORKDIR]
# Prints nvidia-smi's device line, pytest's summary, epoch.py's lines, and each run's history.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/unit/test_cuda.py
start=$(date +%s)
python3 -m apot prepare-data --dataset cifar10 --out "$work/cifar10"
echo "prepare-data: $(( $(date +%s) - start )) s"
python3 bench/epoch.py --data "$work/cifar10" --device cuda --steps 100
common=(--arch resnet20 --data "$work/cifar10" --device cuda --epochs 2 --milestones 1 --no-progress)
python3 -m apot train "${common[@]}" --out "$work/fp32"
python3 -m apot train "${common[@]}" --out "$work/apot4" --bits 4 --lr 0.04 \
    --weight-decay 1e-4 --init "$work/fp32/best.pt"
for run in fp32 apot4; do echo "== $run history.csv"; cat "$work/$run/history.csv"; done
