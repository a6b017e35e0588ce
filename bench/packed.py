"""Benchmark: inference of a packed ResNet-20 (apot eval --packed's model) against FP32 (not a
test).

In one process on the CPU (``torch.set_num_threads(2)``), with no autograd, it times one
forward pass of a batch of 100 CIFAR-sized images through:
  * fp32: the float ResNet-20 (float first and last layers: a plain float network);
  * fake_quant: the 4-bit APoT model as training evaluates it (float weights, quantized on
    every forward);
  * packed_levels: the same model rebuilt from its packed file, levels arithmetic (the
    default of apot eval --packed: the fake-quantized model's logits bit for bit);
  * packed_integer: the same, integer arithmetic (integer codes summed exactly, one scale).
Variants run interleaved, round by round; each is timed by the median over the rounds. The
weights are random (timing does not depend on them); the packed file is written to a
temporary folder. The last line is exactly

    packed_levels_fp32_ratio=<packed levels / fp32 time> packed_integer_fp32_ratio=<packed integer / fp32 time> packed_fake_quant_ratio=<packed levels / fake-quant time>

Usage: python bench/packed.py [--rounds 30] [--batch 100]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from apot.deploy.packed_file import export_packed, load_packed
from apot.models import build_model


def timed(model: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    description = {"arch": "resnet20", "bits": 4, "scheme": "apot", "k": 2,
                   "first_last": "8bit"}
    fake_quant = build_model("resnet20", 10, 4).eval()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "best.pt"
        torch.save(fake_quant.state_dict(), source)
        out = Path(folder) / "packed.safetensors"
        export_packed(fake_quant, description, 10, source, out)
        models = {"fp32": build_model("resnet20", 10, 32, first_last="float").eval(),
                  "fake_quant": fake_quant,
                  "packed_levels": load_packed(out)[0],
                  "packed_integer": load_packed(out, "integer")[0]}
    x = torch.randn(args.batch, 3, 32, 32)
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for model in models.values():  # warm-up: first calls allocate and pick kernels
            model(x)
        for _ in range(args.rounds):
            for name, model in models.items():
                times[name].append(timed(model, x))
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in median.items():
        print(f"{name:15s} {seconds * 1000:8.1f} ms per batch of {args.batch} "
              f"({args.batch / seconds:8.0f} images/s)")
    print(f"packed_levels_fp32_ratio={median['packed_levels'] / median['fp32']:.2f} "
          f"packed_integer_fp32_ratio={median['packed_integer'] / median['fp32']:.2f} "
          f"packed_fake_quant_ratio={median['packed_levels'] / median['fake_quant']:.2f}")


if __name__ == "__main__":
    main()
