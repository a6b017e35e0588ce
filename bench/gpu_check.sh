#!/usr/bin/env bash
# The GPU check (not a test; CI has no GPU): CUDA-vs-CPU agreement tests, the epoch benchmark on
# cuda, and bench/gpu.py: `apot train` epochs of the paper's CIFAR models on full CIFAR-10, 1, 2
# and 4 jobs sharing the GPU, and the paper preset's CIFAR runs in GPU-hours (its last line,
# which this script prints last again).
# Usage: APOT_DATA_MIRROR=<folder with cifar-10-images.tar.gz> bash bench/gpu_check.sh [WORKDIR]
# Prints nvidia-smi's device line, pytest's summary, epoch.py's lines, gpu.py's lines, the
# ResNet-20 runs' histories, and gpu.py's figures line.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/unit/test_cuda.py tests/unit/test_cuda_fused.py
start=$(date +%s)
python3 -m apot prepare-data --dataset cifar10 --out "$work/cifar10"
echo "prepare-data: $(( $(date +%s) - start )) s"
python3 bench/epoch.py --data "$work/cifar10" --device cuda --steps 100
# epoch.py above: the torch quantizer; gpu.py: the fused Triton one (apot/quant/cuda_fused.py)
APOT_CUDA_FUSED=1 python3 bench/gpu.py --data "$work/cifar10" --work "$work/gpu" | tee "$work/gpu.txt"
for run in resnet20-fp32 resnet20-quantized; do
  echo "== $run history.csv"; cat "$work/gpu/$run/history.csv"
done
tail -1 "$work/gpu.txt"   # the figures line, last
