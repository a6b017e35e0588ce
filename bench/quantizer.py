"""Benchmark: APoT quantizer and ResNet-20 training-step cost on the CPU (not a test).

Times, in one process with torch.set_num_threads(2):
  * the 4-bit APoT activation quantizer, forward + backward, on a 128x16x32x32 input, with our
    table projection and with a reference-style projection (broadcast |x - level| over all
    levels, argmin: what the authors' code does);
  * one ResNet-20 training step (batch 128, SGD) in FP32 and in 4-bit APoT with either
    projection.
Both steps are also timed with channels-last input, the layout the training engine's loader
produces (faster for both, so the ratio differs). Measurements of the variants are interleaved
round by round and summarized by their median, so that a noisy neighbour slows all variants
alike. The last line is exactly
``quantizer_speedup=<reference / ours, fwd+bwd> step_ratio=<APoT-4 step / FP32 step>``.

Usage: python bench/quantizer.py [--rounds N]
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from apot.models import build_model
from apot.quant.functional import Projector
from apot.quant.modules import ActivationQuantizer, QuantConv2d


def use_reference_projection(module: torch.nn.Module) -> torch.nn.Module:
    """Switch every quantizer in ``module`` to the broadcast-argmin projection."""
    for m in module.modules():
        if hasattr(m, "projector") and isinstance(m.projector, Projector):
            old = m.projector
            m.projector = Projector(old.scheme, old.table.levels.tolist(), old.magnitude_bits,
                                    bruteforce=True)
    return module


def quantizer_case(reference: bool) -> Callable[[], None]:
    quantizer = ActivationQuantizer(bits=4)
    if reference:
        use_reference_projection(quantizer)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 16, 32, 32, generator=generator).relu_().mul_(3.0)
    grad = torch.randn(x.shape, generator=generator)

    def run() -> None:
        inp = x.detach().requires_grad_()
        quantizer(inp).backward(grad)
    return run


def step_case(bits: int, reference: bool = False,
              channels_last: bool = False) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model("resnet20", bits=bits, first_last="8bit" if bits < 32 else "float")
    if reference:
        use_reference_projection(model)
    assert (bits < 32) == any(isinstance(m, QuantConv2d) for m in model.modules())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(128, 3, 32, 32, generator=generator)
    if channels_last:  # the layout apot.data.loader.TensorLoader feeds the training engine
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (128,), generator=generator)

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return run


def interleaved_medians(cases: dict[str, Callable[[], None]], rounds: int,
                        warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each case, calling them in turn for ``rounds`` rounds."""
    for run in cases.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per measurement")
    args = parser.parse_args()
    torch.set_num_threads(2)

    quant = interleaved_medians({"ours": quantizer_case(False),
                                 "reference": quantizer_case(True)}, args.rounds)
    steps = interleaved_medians({"fp32": step_case(32), "apot4": step_case(4),
                                 "apot4_reference": step_case(4, reference=True),
                                 "fp32_channels_last": step_case(32, channels_last=True),
                                 "apot4_channels_last": step_case(4, channels_last=True)},
                                max(3, args.rounds // 2))
    print(f"activation quantizer fwd+bwd 128x16x32x32, 4-bit APoT: "
          f"ours {quant['ours'] * 1e3:.2f} ms, reference {quant['reference'] * 1e3:.2f} ms")
    for name, seconds in steps.items():
        print(f"resnet20 training step, batch 128, {name}: {seconds * 1e3:.1f} ms "
              f"({seconds / steps['fp32']:.2f} x fp32)")
    print(f"channels_last_step_ratio="
          f"{steps['apot4_channels_last'] / steps['fp32_channels_last']:.2f} "
          f"(the training engine's layout; the line below uses the standard layout)")
    print(f"quantizer_speedup={quant['reference'] / quant['ours']:.2f} "
          f"step_ratio={steps['apot4'] / steps['fp32']:.2f}")


if __name__ == "__main__":
    main()
