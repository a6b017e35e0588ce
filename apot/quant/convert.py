"""Float model -> quantized model, in place, by replacing layers (no training logic here)."""
from __future__ import annotations

from torch import nn

from apot.quant.levels import check_bits
from apot.quant.modules import EightBitConv2d, EightBitLinear, QuantConv2d, check_rules
from apot.quant.schemes import APOT, FLOAT_BITS

FIRST_LAST_POLICIES = ("8bit", "float")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def first_and_last(model: nn.Module) -> tuple[str, str]:
    """Names of the first Conv2d and the last Linear in module order (the input/output layers)."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not convs or not linears:
        raise ValueError("model needs at least one Conv2d and one Linear layer")
    return convs[0], linears[-1]


def quantize_model(model: nn.Module, bits: int, scheme: str = APOT, k: int = 2,
                   first_last: str = "8bit", rules: str = "cifar",
                   **alpha_init: float | None) -> nn.Module:
    """Replace a float model's layers by quantized ones and return the same model.

    Args:
        bits: bit-width of every inner conv's weights and input activations (2..8), or 32 to
            keep them float (the authors' "float" model, which still has 8-bit first/last
            layers unless ``first_last="float"``).
        scheme: a registered scheme's level sets (apot.quant.schemes).
        k: APoT base bit-width.
        first_last: "8bit" (authors' policy: first conv and last linear get 8-bit weights and
            full-precision inputs) or "float".
        rules: "cifar" or "imagenet": whose quantizer gradients (and default activation
            alpha init) the quantized convs use; see ``modules.QUANTIZER_RULES``.
        alpha_init: optional ``act_alpha`` / ``wgt_alpha`` initial clipping thresholds; a
            missing or ``None`` one takes the default (for ``act_alpha``: the rules' value).
    Existing parameters are kept, so a trained float model becomes its quantized
    initialization (the first step of the progressive FP32 -> 4 -> 3 -> 2 chain).
    """
    if bits != FLOAT_BITS:
        check_bits(bits)
    if first_last not in FIRST_LAST_POLICIES:
        raise ValueError(f"first_last must be one of {FIRST_LAST_POLICIES}, got {first_last!r}")
    check_rules(rules)  # also for float models, so that a typo never passes silently
    if any(isinstance(m, (QuantConv2d, EightBitConv2d, EightBitLinear)) for m in model.modules()):
        raise ValueError("model is already quantized; build a float model and convert it once")
    first, last = first_and_last(model)
    for name, module in list(model.named_modules()):
        if name == first:
            if first_last == "8bit":
                _set_submodule(model, name, EightBitConv2d.from_float(module))
        elif name == last:
            if first_last == "8bit":
                _set_submodule(model, name, EightBitLinear.from_float(module))
        elif isinstance(module, nn.Conv2d) and bits != FLOAT_BITS:
            _set_submodule(model, name, QuantConv2d.from_float(
                module, bits=bits, scheme=scheme, k=k, rules=rules, **alpha_init))
    return model
