"""Benchmark: one CIFAR-10 training epoch of ResNet-20 (batch 128), three data paths (not a test).

In one process, on one device (CPU by default, ``torch.set_num_threads(2)``), it times training
steps fed by:
  * ours: apot.data.loader.TensorLoader (uint8 tensors in memory, batched crop/flip/normalize);
  * reference: the usual pipeline: a torchvision-style dataset of PIL images with
    RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize, DataLoader with
    2 worker processes, shuffled; its batches are converted to the channels-last layout that
    ours produces, so that the comparison is about the data path, not the convolutions;
  * compute-only: the same steps on normalized batches already in memory (no augmentation);
and a 4-bit APoT model fed by our loader. Variants run in interleaved blocks of 10 steps, at
least 50 timed steps each, and an epoch (50,000 images, 391 steps) is extrapolated from the
mean step time. The last line is exactly
``loader_speedup=<ours / reference images per s, FP32> loader_overhead=<our epoch time /
compute-only epoch time, FP32> apot_fp32_epoch_ratio=<APoT-4 epoch / FP32 epoch, our loader>``.

Usage: python bench/epoch.py [--data PREPARED_CIFAR10] [--steps 50] [--device cpu|cuda]
Without --data it prepares CIFAR-10 from $APOT_DATA_MIRROR (default ../shared/data) into a
temporary folder first (about 10 s).
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from PIL import Image

from apot.data.datasets import CIFAR_MEAN, CIFAR_STD
from apot.data.loader import TensorLoader
from apot.data.prepare import load_prepared, prepare_dataset
from apot.models import build_model

BATCH, EPOCH_IMAGES, BLOCK = 128, 50_000, 10


class PILDataset(torch.utils.data.Dataset):
    """torchvision's CIFAR10 way: uint8 HWC arrays in memory, a PIL image per item."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = labels.tolist()
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                    T.ToTensor(), T.Normalize(CIFAR_MEAN, CIFAR_STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def forever(make_epoch) -> Iterator:
    epoch = 0
    while True:
        yield from make_epoch(epoch)
        epoch += 1


class Variant:
    """A model + optimizer fed by an endless batch iterator; ``steps(n)`` returns seconds."""

    def __init__(self, bits: int, batches: Iterator, device: torch.device):
        torch.manual_seed(0)
        self.model = build_model("resnet20", bits=bits,
                                 first_last="8bit" if bits < 32 else "float").to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.batches, self.device = batches, device
        self.seconds, self.count = 0.0, 0

    def steps(self, n: int, timed: bool = True) -> None:
        start = time.perf_counter()
        for _ in range(n):
            x, y = next(self.batches)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x), y).backward()
            self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        if timed:
            self.seconds += time.perf_counter() - start
            self.count += n

    def epoch_seconds(self) -> float:
        return self.seconds / self.count * math.ceil(EPOCH_IMAGES / BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="prepared CIFAR-10 folder (apot prepare-data)")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per variant")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    device = torch.device(args.device)

    data = args.data
    if data is None:
        data = tempfile.mkdtemp(prefix="apot-bench-")
        mirror = os.environ.get("APOT_DATA_MIRROR") or str(Path(__file__).resolve().parents[2]
                                                            / "shared" / "data")
        prepare_dataset("cifar10", data, mirror=mirror)
    images, labels, _ = load_prepared(data, "train")

    ours = TensorLoader(images, labels, BATCH, True, device)
    reference = torch.utils.data.DataLoader(PILDataset(images, labels), batch_size=BATCH,
                                            shuffle=True, num_workers=2, drop_last=True,
                                            persistent_workers=True)
    # Compute only: distinct batches made before timing (as many as the variant will use),
    # so that none is served from cache more than the loader's own batches are.
    batches = ours.epoch(99)
    fixed = [next(batches) for _ in range(3 + BLOCK * math.ceil(args.steps / BLOCK))]
    variants = {
        "ours": Variant(32, forever(ours.epoch), device),
        # same memory layout as ours, so that the comparison is about the data pipeline only
        "reference": Variant(32, ((x.contiguous(memory_format=torch.channels_last), y)
                                  for x, y in forever(lambda e: iter(reference))), device),
        "compute_only": Variant(32, forever(lambda e: iter(fixed)), device),
        "apot4_ours": Variant(4, forever(ours.epoch), device),
    }
    for variant in variants.values():
        variant.steps(3, timed=False)  # warm-up (and the reference's worker start-up)
    for _ in range(math.ceil(args.steps / BLOCK)):
        for variant in variants.values():
            variant.steps(BLOCK)

    epoch = {name: v.epoch_seconds() for name, v in variants.items()}
    for name, seconds in epoch.items():
        print(f"{name:13s} epoch {seconds:7.1f} s  ({EPOCH_IMAGES / seconds:6.1f} images/s, "
              f"{variants[name].count} timed steps on {device})")
    print(f"loader_speedup={epoch['reference'] / epoch['ours']:.2f} "
          f"loader_overhead={epoch['ours'] / epoch['compute_only']:.3f} "
          f"apot_fp32_epoch_ratio={epoch['apot4_ours'] / epoch['ours']:.2f}")


if __name__ == "__main__":
    main()
