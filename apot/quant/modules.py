"""Quantizer modules and quantized layers (torch modules; the math lives in functional.py).

Naming: ``bits`` is the bit-width b of the stored code, as the paper counts it. Weights are
signed (sign + b-1 magnitude bits), activations unsigned (b magnitude bits).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from apot.quant.functional import (ActivationQuantFn, WeightQuantFn, eight_bit_weight,
                                   normalize_weight, quantize_activation, shared_projector)
from apot.quant.levels import check_bits, check_k
from apot.quant.schemes import APOT, check_scheme

ACT_ALPHA_INIT = 8.0   # authors' CIFAR value (ImageNet: 6.0)
WGT_ALPHA_INIT = 3.0   # about 3 sigma after weight normalization, in both code trees

# The authors' two quantizer implementations. Forward values are identical; they differ in
# the weight gradient and the activation alpha init:
#   "cifar":    WN mean/std detached; weight STE never clipped.
#   "imagenet": WN mean/std in the graph; weight STE clipped outside +-alpha from 3 bits on,
#               unclipped at 2 bits (their "calibrated gradient").
QUANTIZER_RULES = ("cifar", "imagenet")
ACT_ALPHA_INIT_BY_RULES = {"cifar": ACT_ALPHA_INIT, "imagenet": 6.0}


def check_rules(rules: str) -> None:
    """Raise ValueError naming the allowed values unless ``rules`` is one of them."""
    if rules not in QUANTIZER_RULES:
        raise ValueError(f"unknown quantizer rules {rules!r}; choose one of "
                         f"{', '.join(QUANTIZER_RULES)}")


class ActivationQuantizer(nn.Module):
    """Unsigned b-bit RCF quantizer with a learnable clipping threshold ``alpha`` (scalar)."""

    def __init__(self, bits: int, scheme: str = APOT, k: int = 2,
                 alpha: float = ACT_ALPHA_INIT):
        super().__init__()
        check_bits(bits)
        check_scheme(scheme)
        check_k(k)
        self.bits, self.scheme, self.k = bits, scheme, k
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.projector = shared_projector(scheme, bits, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (x.requires_grad or self.alpha.requires_grad):
            return ActivationQuantFn.apply(x, self.alpha, self.projector)
        return quantize_activation(x, self.alpha, self.projector)  # saves nothing for backward

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scheme={self.scheme}, k={self.k}"


class WeightQuantizer(nn.Module):
    """Signed b-bit quantizer: per-tensor weight normalization, then RCF with ``alpha``.

    At 2 bits there is one magnitude bit, so every scheme gives the ternary set {-1, 0, 1}
    (times alpha), the authors' 2-bit weights. ``rules`` picks the gradients of the authors'
    "cifar" or "imagenet" code (see ``QUANTIZER_RULES``); the value is the same for both.
    """

    def __init__(self, bits: int, scheme: str = APOT, k: int = 2,
                 alpha: float = WGT_ALPHA_INIT, rules: str = "cifar"):
        super().__init__()
        check_bits(bits)
        check_scheme(scheme)
        check_k(k)
        check_rules(rules)
        if bits < 2:
            raise ValueError("signed weights need at least 2 bits (a sign and a magnitude bit)")
        self.bits, self.scheme, self.k, self.rules = bits, scheme, k, rules
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.projector = shared_projector(scheme, bits - 1, k)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        imagenet = self.rules == "imagenet"
        return WeightQuantFn.apply(normalize_weight(w, stats_grad=imagenet), self.alpha,
                                   self.projector, imagenet and self.bits > 2)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scheme={self.scheme}, k={self.k}, rules={self.rules}"


class QuantConv2d(nn.Conv2d):
    """Conv2d whose weights and input activations are both quantized to ``bits``.

    The output is in the normalized-weight domain (weights have unit std), as in the authors'
    code; the following BatchNorm absorbs the scale. ``act_alpha=None`` takes the rules'
    activation init (``ACT_ALPHA_INIT_BY_RULES``), ``wgt_alpha=None`` ``WGT_ALPHA_INIT``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias: bool = False, *, bits: int = 4,
                 scheme: str = APOT, k: int = 2, act_alpha: float | None = None,
                 wgt_alpha: float | None = None, rules: str = "cifar"):
        check_rules(rules)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias)
        if act_alpha is None:
            act_alpha = ACT_ALPHA_INIT_BY_RULES[rules]
        if wgt_alpha is None:
            wgt_alpha = WGT_ALPHA_INIT
        self.weight_quantizer = WeightQuantizer(bits, scheme, k, wgt_alpha, rules)
        # Activations follow the same rules in both code trees; only their alpha init differs.
        self.act_quantizer = ActivationQuantizer(bits, scheme, k, act_alpha)

    @property
    def bits(self) -> int:
        return self.weight_quantizer.bits

    @property
    def rules(self) -> str:
        return self.weight_quantizer.rules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.act_quantizer(x), self.weight_quantizer(self.weight),
                                  self.bias)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, **quant) -> "QuantConv2d":
        """A quantized copy of ``conv`` sharing its weight (and bias) tensors."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None, **quant)
        q.weight = conv.weight
        q.bias = conv.bias
        return q.to(conv.weight.device)


class EightBitConv2d(nn.Conv2d):
    """First layer: 8-bit weights (authors' max-based rounding), full-precision input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, eight_bit_weight(self.weight), self.bias)

    @classmethod
    def from_float(cls, conv: nn.Conv2d) -> "EightBitConv2d":
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                conv.dilation, conv.groups, conv.bias is not None)
        q.weight, q.bias = conv.weight, conv.bias
        return q


class EightBitLinear(nn.Linear):
    """Last layer: 8-bit weights (authors' max-based rounding), full-precision input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, eight_bit_weight(self.weight), self.bias)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> "EightBitLinear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        q.weight, q.bias = linear.weight, linear.bias
        return q
