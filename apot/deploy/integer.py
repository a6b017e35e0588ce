"""Integer emulation of a quantized convolution, with shifts and additions only.

A ``QuantConv2d`` multiplies activations alpha_a * code_a / D_a by weights
alpha_w * sign * code_w / D_w, where the codes are integers (``schemes.level_codes``: each level
is code / D, D the set's largest code). This module takes both operands' integer codes from the
layer itself and computes

    acc[n, o, y, x] = sum over c, i, j of  sign_w * sum over terms s of (code_a << s)

where the terms s are the powers of two of the weight code: every product is a few shifts and
additions (a weight with t terms: t shifts, t - 1 additions), nothing is multiplied. It then
checks that ``acc`` equals the convolution of the integer codes computed with floats (exact in
float64 at these sizes), and that acc * alpha_a * alpha_w / (D_a * D_w) is the layer's own
float output up to float32 rounding: the cost model describes an arithmetic that really works.
"""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F

from apot.quant.functional import normalize_weight
from apot.quant.modules import QuantConv2d
from apot.quant.schemes import level_codes


def _level_index(values: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of each value in the sorted float32 ``levels`` (values must be levels exactly)."""
    index = torch.searchsorted(levels, values.contiguous())
    if not torch.equal(levels[index.clamp(max=levels.numel() - 1)], values):
        raise ValueError("a quantized value is not one of its level set's values")
    return index


def _code_tables(quantizer) -> tuple:
    """(float32 levels, int64 codes, int64 shifts (L, T), bool present (L, T), D) of a
    quantizer's magnitude set; row l lists the powers of two of code l."""
    codes = level_codes(quantizer.projector.scheme, quantizer.projector.magnitude_bits,
                        quantizer.k)
    width = max(1, max(c.terms for c in codes))
    shifts = torch.zeros(len(codes), width, dtype=torch.int64)
    present = torch.zeros(len(codes), width, dtype=torch.bool)
    for row, code in enumerate(codes):
        shifts[row, :code.terms] = torch.tensor(code.shifts, dtype=torch.int64)
        present[row, :code.terms] = True
    levels = torch.tensor([float(c.level) for c in codes], dtype=torch.float32)
    return levels, torch.tensor([c.code for c in codes]), shifts, present, codes[-1].code


def activation_codes(layer: QuantConv2d, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Integer codes (int64, like ``x``) of the layer's quantized input, and their divisor D."""
    quantizer = layer.act_quantizer
    levels, codes, _, _, divisor = _code_tables(quantizer)
    with torch.no_grad():
        level = quantizer.projector((x / quantizer.alpha).clamp(max=1))
    return codes[_level_index(level, levels)], divisor


def weight_terms(layer: QuantConv2d):
    """(sign (int64), shifts (..., T), present (..., T), codes, D) of the quantized weights."""
    quantizer = layer.weight_quantizer
    levels, codes, shifts, present, divisor = _code_tables(quantizer)
    with torch.no_grad():
        clipped = (normalize_weight(layer.weight) / quantizer.alpha).clamp(-1, 1)
        magnitude = quantizer.projector(clipped.abs())
    index = _level_index(magnitude, levels)
    sign = torch.where(clipped < 0, -1, 1).to(torch.int64)
    return sign, shifts[index], present[index], sign * codes[index], divisor


def shift_add_conv2d(act: torch.Tensor, sign: torch.Tensor, shifts: torch.Tensor,
                     present: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Convolution of int64 activations (N, C, H, W) with weights given as power-of-two terms.

    sign (O, C, kh, kw) in {-1, 1}; shifts/present (O, C, kh, kw, T). Only shifts, additions
    and negations (selecting + or - by the sign); no multiplication. Returns int64 (N, O, H', W').
    """
    n, _, h, w = act.shape
    out_ch, _, kh, kw, n_terms = shifts.shape
    padded = F.pad(act, (padding, padding, padding, padding))
    out_h, out_w = (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1
    acc = torch.zeros(n, out_ch, out_h, out_w, dtype=torch.int64)
    for i in range(kh):
        for j in range(kw):
            patch = padded[:, :, i:i + stride * (out_h - 1) + 1:stride,
                           j:j + stride * (out_w - 1) + 1:stride].unsqueeze(1)  # N,1,C,H',W'
            for t in range(n_terms):
                s = shifts[:, :, i, j, t][None, :, :, None, None]             # 1,O,C,1,1
                term = patch << s
                term = torch.where(sign[:, :, i, j][None, :, :, None, None] < 0, -term, term)
                term = torch.where(present[:, :, i, j, t][None, :, :, None, None], term, 0)
                acc += term.sum(dim=2)
    return acc


def emulate(layer: QuantConv2d, x: torch.Tensor) -> dict:
    """Run ``layer`` on ``x`` both ways; return the integer result and the three checks.

    Keys: ``acc`` (int64), ``scale`` (float), ``equals_integer_conv`` (bool: acc equals
    F.conv2d of the integer codes, in float64), ``max_relative_error`` (of scale * acc against
    the layer's float32 output, relative to that output's largest magnitude).
    """
    if layer.groups != 1 or layer.dilation != (1, 1) or layer.bias is not None:
        raise ValueError("emulation covers ungrouped, undilated convolutions without bias")
    if layer.stride[0] != layer.stride[1] or layer.padding[0] != layer.padding[1]:
        raise ValueError("emulation covers square strides and paddings")
    a_codes, a_div = activation_codes(layer, x)
    sign, shifts, present, w_codes, w_div = weight_terms(layer)
    headroom = (int(a_codes.max()).bit_length() + int(shifts.max()) + 1
                + (layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1]).bit_length())
    if headroom > 62:
        raise ValueError(f"products need up to {headroom} bits: too wide for int64 emulation")
    acc = shift_add_conv2d(a_codes, sign, shifts, present, layer.stride[0], layer.padding[0])
    exact = F.conv2d(a_codes.double(), w_codes.double(), stride=layer.stride,
                     padding=layer.padding)
    with torch.no_grad():
        layer_out = layer.eval()(x).double()
    scale = (Fraction(layer.act_quantizer.alpha.item()) * Fraction(
        layer.weight_quantizer.alpha.item()) / (a_div * w_div))
    scaled = acc.double() * float(scale)
    denominator = layer_out.abs().max().clamp(min=1e-30)
    return {"acc": acc, "scale": float(scale),
            "equals_integer_conv": bool(torch.equal(exact, acc.double())),
            "max_relative_error": float((scaled - layer_out).abs().max() / denominator)}
