"""Activation clipping thresholds set from data: the alpha that quantizes a layer's inputs with
the least squared error, found on a grid.

The authors start every activation threshold at a constant (8.0 CIFAR, 6.0 ImageNet) and let
RCF learn it over hundreds of epochs; their released CIFAR-10 ResNet-20 models end at 1.0-2.4.
A fine-tune of one epoch per step cannot travel that far (measured: 6-7.5 after two epochs, and
a 2-bit step at 37.8 % top-1 with activation levels {0, 1.75, 3.5, 7}). Calibrating the start
is a documented deviation for short fine-tunes only; alpha is still learned afterwards.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
from torch import nn

from apot.quant.functional import quantize_activation
from apot.quant.modules import ActivationQuantizer

GRID = 64              # candidate thresholds per layer, from max/GRID to the layer's maximum
SAMPLES = 1 << 18      # inputs per layer the error is measured on (a fixed random subset)


def best_alpha(x: torch.Tensor, quantizer: ActivationQuantizer, grid: int = GRID) -> float:
    """The threshold in (0, max(x)] on a ``grid``-point grid whose quantization of ``x`` has
    the least squared error (ties: the smaller threshold)."""
    top = float(x.max())
    if top <= 0:
        return float(quantizer.alpha)
    errors = []
    for i in range(1, grid + 1):
        alpha = torch.tensor(top * i / grid, dtype=x.dtype, device=x.device)
        errors.append(float((quantize_activation(x, alpha, quantizer.projector) - x)
                            .double().pow(2).sum()))
    return top * (min(range(grid), key=errors.__getitem__) + 1) / grid


@torch.no_grad()
def calibrate_activation_alphas(model: nn.Module, batches: Iterable, seed: int = 0) -> dict:
    """Set every activation quantizer's alpha of ``model`` to ``best_alpha`` of its inputs.

    The inputs are recorded in one pass over ``batches`` through a copy of the model in
    training mode (batch statistics: a float parent's running statistics do not fit the
    normalized quantized weights) with activation quantization switched off, so every layer
    sees the activations its float parent would give it. ``model`` itself is changed only in
    its thresholds. Returns {quantizer name: alpha}.
    """
    probe = copy.deepcopy(model).train()
    recorded: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for name, module in probe.named_modules():
        if isinstance(module, ActivationQuantizer):
            def keep(mod, args, out, name=name):
                recorded.setdefault(name, []).append(args[0].detach().flatten())
                return args[0]  # no quantization while recording
            hooks.append(module.register_forward_hook(keep))
    for x, _ in batches:
        probe(x)
    for hook in hooks:
        hook.remove()
    generator = torch.Generator().manual_seed(seed)
    found = {}
    quantizers = dict(model.named_modules())
    for name, parts in recorded.items():
        x = torch.cat(parts)
        if x.numel() > SAMPLES:
            x = x[torch.randperm(x.numel(), generator=generator)[:SAMPLES].to(x.device)]
        quantizer = quantizers[name]
        found[name] = best_alpha(x.contiguous(), quantizer)
        quantizer.alpha.fill_(found[name])
    return found
