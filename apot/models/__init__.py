"""Model registry: ``build_model(arch, ...)`` gives a float or quantized network."""
from __future__ import annotations

from typing import Callable

import torchvision
from torch import nn

from ..quant.convert import FLOAT_BITS, quantize_model
from .cifar_resnet import DEPTHS, CifarResNet


def _cifar(depth: int) -> Callable[[int], nn.Module]:
    return lambda num_classes: CifarResNet(depth, num_classes)


def _imagenet(name: str) -> Callable[[int], nn.Module]:
    # torchvision's layout (7x7 stem, max-pool, 1x1-conv + BN downsample), random init:
    # pretrained weights come from a checkpoint file, never from the network at run time.
    return lambda num_classes: getattr(torchvision.models, name)(weights=None,
                                                                 num_classes=num_classes)


# arch name -> (constructor taking num_classes, default number of classes, input size)
ARCHS: dict[str, tuple[Callable[[int], nn.Module], int, int]] = {
    **{f"resnet{d}": (_cifar(d), 10, 32) for d in DEPTHS},
    "resnet18": (_imagenet("resnet18"), 1000, 224),
    "resnet34": (_imagenet("resnet34"), 1000, 224),
    "resnet50": (_imagenet("resnet50"), 1000, 224),  # for the paper's 22 % cost claim
}


def build_model(arch: str, num_classes: int | None = None, bits: int = FLOAT_BITS,
                scheme: str = "apot", k: int = 2, first_last: str = "8bit",
                rules: str = "cifar", **alpha_init: float | None) -> nn.Module:
    """Build ``arch``; with bits < 32 (or first_last="8bit") convert it to quantized form.

    ``bits=32, first_last="float"`` is a plain float network; ``bits=32, first_last="8bit"``
    is the authors' float baseline (8-bit first and last layers). ``rules`` ("cifar" or
    "imagenet") and ``act_alpha`` / ``wgt_alpha`` (``None``: the rules' default) go to
    ``quantize_model``.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    make, default_classes, _ = ARCHS[arch]
    model = make(num_classes or default_classes)
    if bits == FLOAT_BITS and first_last == "float":
        return model
    return quantize_model(model, bits, scheme, k, first_last, rules, **alpha_init)
