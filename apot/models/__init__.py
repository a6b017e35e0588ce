"""Model registry: ``build_model(arch, ...)`` gives a float or quantized network, and
``load_model(checkpoint, ...)`` one with a checkpoint's weights."""
from __future__ import annotations

import os
from typing import Any, Callable

from torch import nn

from apot.errors import UserError
from apot.models.cifar_resnet import DEPTHS, CifarResNet
from apot.quant.convert import first_and_last, quantize_model
from apot.quant.schemes import APOT, FLOAT_BITS
from apot.storage.checkpoints import extract_state_dict, load_file, restore_model


def _cifar(depth: int) -> Callable[[int], nn.Module]:
    return lambda num_classes: CifarResNet(depth, num_classes)


def _imagenet(name: str) -> Callable[[int], nn.Module]:
    # torchvision's layout (7x7 stem, max-pool, 1x1-conv + BN downsample), random init:
    # pretrained weights come from a checkpoint file, never from the network at run time.
    def make(num_classes: int) -> nn.Module:
        import torchvision.models  # imported when needed: about 2 s that CIFAR jobs never use

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    return make


# arch name -> (constructor taking num_classes, default number of classes, input size)
ARCHS: dict[str, tuple[Callable[[int], nn.Module], int, int]] = {
    **{f"resnet{d}": (_cifar(d), 10, 32) for d in DEPTHS},
    "resnet18": (_imagenet("resnet18"), 1000, 224),
    "resnet34": (_imagenet("resnet34"), 1000, 224),
    "resnet50": (_imagenet("resnet50"), 1000, 224),  # for the paper's 22 % cost claim
}


def build_model(arch: str, num_classes: int | None = None, bits: int = FLOAT_BITS,
                scheme: str = APOT, k: int = 2, first_last: str = "8bit",
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


# What describes a model: build_model's arguments, as our checkpoints record them ("model").
DESCRIPTION_DEFAULTS = {"bits": FLOAT_BITS, "scheme": APOT, "k": 2, "first_last": "8bit"}
# what a model description names: the architecture and DESCRIPTION_DEFAULTS' fields
DESCRIPTION_FIELDS = ("arch", *DESCRIPTION_DEFAULTS)


def load_model(path: str | os.PathLike, description: dict[str, Any],
               num_classes: int | None = None) -> tuple[nn.Module, Any]:
    """The model of ``description`` ({"arch", "bits", "scheme", "k", "first_last"}; missing
    keys take DESCRIPTION_DEFAULTS) with the weights of checkpoint ``path``, and the stored
    checkpoint object. ``num_classes``: the classes the model must have; None takes the
    checkpoint's own. Raises UserError naming the mismatch when the checkpoint records another
    description, or holds another model."""
    full = {**DESCRIPTION_DEFAULTS, **description}
    stored = load_file(path)

    def build(classes: int | None) -> nn.Module:
        return build_model(full["arch"], classes, full["bits"], full["scheme"], full["k"],
                           full["first_last"])

    model = build(num_classes)
    saved = _saved_classes(stored, first_and_last(model)[1])
    if num_classes is None and saved is not None and saved != _classes_of(model):
        model = build(saved)
    elif num_classes is not None and saved is not None and saved != num_classes:
        raise UserError(f"{path} was trained for {saved} classes; the data has {num_classes}")
    restore_model(model, stored, full, source=str(path))
    return model, stored


def _classes_of(model: nn.Module) -> int:
    return model.get_submodule(first_and_last(model)[1]).out_features


def _saved_classes(stored: Any, last: str) -> int | None:
    """The number of classes of the checkpoint's last layer, if it can be told."""
    try:
        weight = extract_state_dict(stored).get(f"{last}.weight")
    except UserError:
        return None  # restore_model names the problem
    return None if weight is None or weight.dim() != 2 else weight.shape[0]
