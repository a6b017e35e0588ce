"""A fake-quantized ResNet as an ONNX graph whose quantized convolutions run on integers.

Every level set this study uses at 2-5 bits (APoT weights to 6 bits) is a set of integers times
one scale (``schemes.level_codes``: level = code / D), so a quantized convolution
conv(alpha_a * a / D_a, alpha_w * s / D_w) is alpha_a * alpha_w / (D_a * D_w) times the integer
convolution of the activation codes a (0..D_a, uint8) with the signed weight codes s
(-D_w..D_w, int8). The graph keeps those integers: the weight codes are the packed file's
(``quant.packed.weight_codes`` mapped through its code table), the activation codes are the
projection's level codes. Batch norm is folded into each convolution's per-channel scale and
bias. Two forms (``FORMS``):

* ``qdq``: QuantizeLinear / DequantizeLinear around each quantized convolution (int8 weights per
  channel: the codes times qdq_weight_factor; uint8 codes per tensor; int32 bias), the pattern ONNX Runtime fuses into its integer
  QLinearConv kernel. That kernel must requantize its output to uint8, which the fake-quantized
  model never does: where the output feeds the next activation quantizer directly (a block's
  first convolution), the requantization *is* that quantizer's grid (alpha / D for uniform
  levels: exact up to float rounding; alpha / 255 and a 256-entry lookup to the level codes for
  non-uniform ones); where it feeds the residual addition (a block's last convolution, a
  shortcut projection), it is an 8-bit grid over the range batch norm's statistics give
  (``OUTPUT_RANGE_SIGMAS``). The residual stream itself (each block's output) is uint8 too
  (``Stream``), over a range from batch norm's statistics carried through the shortcuts, so
  that the runtime adds in integers (QLinearAdd) and requantizes a block's output to the next
  quantizer's grid in integers: float residual additions cost it transposes and
  (de)quantizations around every block; the stream starts with an exact 1x1 identity
  convolution on integers, so that the runtime keeps it channels-last from the first block on.
  Both approximations are measured by ``apot eval --onnx``.
* ``integer``: ConvInteger on the same integers (exact int32 sums), then the fake-quantized
  model's float epilogue (scale, batch norm, residual, ReLU) and its activation quantizer in
  float32 with the projection's own decision thresholds: the checkpoint's top-1.

The first and last layers follow the model's rule (8-bit weights round(w / max(w) * 127), float
inputs), as float operations on dequantized integers. Float inner convolutions (a 32-bit model)
export as float Conv with batch norm folded; ``float`` (FLOAT_FORM) exports any model so, a
quantized one with its quantized weights and unquantized activations: the float32 baseline
through the same exporter.
Level sets whose codes need more than int8 weights or uint8 activations are refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from apot.deploy.bitpack import split_sign_magnitude
from apot.deploy.packed_layers import EIGHT_BIT_STEPS, code_table, weight_alpha, weight_codes
from apot.errors import UserError
from apot.quant.modules import EightBitConv2d, EightBitLinear, QuantConv2d
from apot.quant.schemes import INT8_WEIGHT_MAX, UINT8_CODE_MAX, integer_range_problem

FORMS = ("qdq", "integer")
# the same network in float32 (quantized convs with their quantized weights, activations not
# quantized): a float model's export, and a quantized model's float speed baseline
FLOAT_FORM = "float"
ONNX_FORMS = (*FORMS, FLOAT_FORM)
OPSET = 21                    # int16 DequantizeLinear (8-bit layers below -max(w)), per-axis
INPUT, OUTPUT = "images", "logits"
# where a requantized convolution output feeds a residual addition, its 8-bit grid spans batch
# norm's mean +- this many standard deviations (per channel, the widest channel); the uint8
# residual stream's grid spans [0, mean + this many standard deviations] of its sum
OUTPUT_RANGE_SIGMAS = 6.0
LOOKUP_STEPS = 255            # qdq grid of a non-uniform activation quantizer's input
# how the qdq form maps that grid to level codes: "steps", a sum of uint8 clips (fast), or
# "gather", a 256-entry table read with Gather (bench/onnx.py measures both)
PROJECTIONS = ("steps", "gather")
METADATA_PREFIX = "apot."
# the qdq form's 1x1 identity convolution at the start of the residual stream (see
# Exporter.integer_identity): not one of the model's convolutions, so not counted as one
IDENTITY_CONV = "stream_identity"


@dataclass
class Stream:
    """The qdq form's residual stream: a block output as uint8 (zero point 0, which is the
    block's ReLU) of ``scale``, and its per-channel mean and variance (float64 (C,)) as batch
    norm's statistics give them, which set the next block output's range."""
    q: str
    scale: float
    mean: np.ndarray
    var: np.ndarray


@dataclass
class Graph:
    """Nodes and initializers of the graph being built, with unique names."""
    nodes: list
    initializers: list
    count: int = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper
        name = self.name(stem)
        # np.array keeps a 0-d scale 0-d (ascontiguousarray makes it shape (1,)): ONNX Runtime
        # fuses DequantizeLinear / QuantizeLinear around an Add only with scalar scales
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, inputs: list[str], stem: str | None = None, **attrs) -> str:
        from onnx import helper
        out = self.name(stem or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


# ------------------------------------------------------------------ integers of the model
def folded_bn(bn: nn.BatchNorm2d | None, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) float64 (C,) of batch norm in eval mode: bn(y) = scale * y + shift."""
    if bn is None:
        return np.ones(channels), np.zeros(channels)
    var = bn.running_var.detach().double().numpy()
    gamma = bn.weight.detach().double().numpy() if bn.weight is not None else np.ones(channels)
    beta = bn.bias.detach().double().numpy() if bn.bias is not None else np.zeros(channels)
    scale = gamma / np.sqrt(var + bn.eps)
    return scale, beta - bn.running_mean.detach().double().numpy() * scale


def signed_weight_codes(layer: QuantConv2d) -> tuple[np.ndarray, int]:
    """(int64 signed codes shaped like the weight, D_w) of a quantized conv: the packed file's
    sign-and-magnitude codes mapped through its code table."""
    quantizer = layer.weight_quantizer
    table = code_table(quantizer.scheme, quantizer.bits - 1, quantizer.k)
    negative, index = split_sign_magnitude(weight_codes(layer), quantizer.bits - 1)
    codes = np.asarray(table.codes, dtype=np.int64)[index]
    return np.where(negative, -codes, codes), table.divisor


def check_integer_range(name: str, layer: QuantConv2d) -> None:
    """Refuse (UserError) a layer whose level codes do not fit int8 weights / uint8 codes."""
    q = layer.weight_quantizer
    problem = integer_range_problem(q.scheme, q.bits, q.k)
    if problem:
        raise UserError(f"layer {name}: {problem}; ONNX export covers level sets that fit "
                        f"8-bit integers")


def bn_moments(bn: nn.BatchNorm2d | None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance) float64 (C,) of a batch-normed output as training leaves it: beta and
    gamma squared. The qdq form's 8-bit ranges come from them (the exporter has no data)."""
    if bn is None or bn.weight is None:
        raise UserError("ONNX qdq export needs batch norm after each block's convolutions")
    return bn.bias.detach().double().numpy(), bn.weight.detach().double().numpy() ** 2


def qdq_weight_factor(divisor: int) -> int:
    """The factor the qdq form stores a layer's weight codes with: the largest that keeps
    them int8 (codes up to ``divisor``)."""
    return INT8_WEIGHT_MAX // divisor


def qdq_activation_factor(divisor: int) -> int:
    """The factor the qdq form stores a layer's activation codes with (codes up to
    ``divisor``): the largest that keeps them uint8, for the same reason as the weights'."""
    return UINT8_CODE_MAX // divisor


def activation_alpha(name: str, layer: QuantConv2d) -> float:
    alpha = float(layer.act_quantizer.alpha.detach())
    if not math.isfinite(alpha) or alpha <= 0:
        raise UserError(f"layer {name}: activation clipping threshold {alpha} is not positive; "
                        f"the checkpoint is damaged")
    return alpha


def lookup_table(layer: QuantConv2d) -> np.ndarray:
    """uint8 (256,): the level code of the nearest level to m / LOOKUP_STEPS, for m = 0..255,
    by the layer's own projection (a grid of alpha / 255: code 255 is alpha, the clip)."""
    a = layer.act_quantizer
    table = code_table(a.scheme, a.bits, a.k)
    grid = torch.clamp(torch.arange(256, dtype=torch.float32) / LOOKUP_STEPS, max=1)
    index = torch.searchsorted(table.levels, a.projector(grid))
    return np.asarray(table.codes, dtype=np.uint8)[index.numpy()]


def quantized_weight(layer: QuantConv2d) -> torch.Tensor:
    """The float weights a quantized conv computes with (alpha_w * sign * level)."""
    with torch.no_grad():
        return layer.weight_quantizer(layer.weight)


def eight_bit_integers(weight: torch.Tensor) -> tuple[np.ndarray, float]:
    """(int8/int16 codes, step max(w) / 127) of an 8-bit layer (the authors' rounding)."""
    from apot.deploy.packed_layers import eight_bit_codes
    codes, top = eight_bit_codes(weight)
    return codes, float(top[0]) / EIGHT_BIT_STEPS


# ------------------------------------------------------------------ graph pieces
class Exporter:
    """Builds the graph of one model in one form (module doc)."""

    def __init__(self, model: nn.Module, form: str, output_sigmas: float = OUTPUT_RANGE_SIGMAS,
                 projection: str = "steps"):
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}")
        self.model, self.form, self.sigmas = model, form, output_sigmas
        self.projection = projection
        self.g = Graph([], [])
        self.integer_layers = 0

    # activation quantizers ----------------------------------------------------------
    def codes_from_float(self, x: str, name: str, layer: QuantConv2d) -> str:
        """uint8 activation codes of float tensor ``x`` for quantized conv ``layer``."""
        alpha = activation_alpha(name, layer)
        a = layer.act_quantizer
        table = code_table(a.scheme, a.bits, a.k)
        if self.form == "integer":
            return self._exact_codes(x, alpha, layer, table)
        q = self.g.op("QuantizeLinear", [x, self.g.const("a_scale", np.float32(
            self.grid_step(alpha, layer))), self.g.const("a_zero", np.uint8(0))])
        return self.codes_from_grid(q, layer)

    def codes_from_stream(self, x: "str | Stream", name: str, layer: QuantConv2d) -> str:
        """uint8 activation codes for ``layer`` of the residual stream ``x`` (a float tensor
        in the integer and float forms): DequantizeLinear of ``x`` plus DequantizeLinear of a
        uint8 zero, quantized to the quantizer's grid, which ONNX Runtime fuses into one
        QLinearAdd: the requantization stays in integers, channels-last."""
        if not isinstance(x, Stream):
            return self.codes_from_float(x, name, layer)
        zero = self.g.op("DequantizeLinear", [self.g.const("zero", np.uint8(0)),
                                              self.g.const("zero_scale", np.float32(1.0)),
                                              self.g.const("zero_zero", np.uint8(0))])
        step = self.grid_step(activation_alpha(name, layer), layer)
        q = self.g.op("QuantizeLinear", [self.g.op("Add", [self.stream_float(x), zero]),
                                         self.g.const("a_scale", np.float32(step)),
                                         self.g.const("a_zero", np.uint8(0))])
        return self.codes_from_grid(q, layer)

    @staticmethod
    def grid_step(alpha: float, layer: QuantConv2d) -> float:
        """The qdq grid a quantizer's input is rounded to: its own levels' step alpha / D
        (uniform levels), or alpha / LOOKUP_STEPS for the lookup of non-uniform ones."""
        a = layer.act_quantizer
        if a.projector.rounds:
            return alpha / code_table(a.scheme, a.bits, a.k).divisor
        return alpha / LOOKUP_STEPS

    def codes_from_grid(self, q: str, layer: QuantConv2d) -> str:
        """The level codes (times qdq_activation_factor) of uint8 grid values ``q``."""
        a = layer.act_quantizer
        if not a.projector.rounds:
            return self.lookup(q, layer)
        divisor = code_table(a.scheme, a.bits, a.k).divisor
        codes = self.clip_codes(q, divisor)
        factor = qdq_activation_factor(divisor)
        return codes if factor == 1 else self.g.op(
            "Mul", [codes, self.g.const("code_factor", np.uint8(factor))], stem="codes")

    # the residual stream (qdq form) ----------------------------------------------------
    def stream_float(self, x: "str | Stream") -> str:
        """``x`` as float: a DequantizeLinear of its own per consumer (the QDQ convention)."""
        if not isinstance(x, Stream):
            return x
        return self.g.op("DequantizeLinear", [x.q, self.g.const("stream_scale",
                                                                np.float32(x.scale)),
                                              self.g.const("stream_zero", np.uint8(0))])

    def to_stream(self, total: str, mean: np.ndarray, var: np.ndarray) -> Stream:
        """The block output ReLU(``total``) as uint8 over [0, widest channel's mean +
        sigmas * std]; no Relu node: the uint8 zero point 0 clips at 0 as ReLU does."""
        high = max(1e-6, float((mean + self.sigmas * np.sqrt(var)).max()))
        return self.stream_of(total, float(np.float32(high / 255.0)), mean, var)

    def stream_of(self, y: str, scale: float, mean: np.ndarray, var: np.ndarray) -> Stream:
        """Float ``y`` quantized to the stream's uint8 grid of ``scale`` (zero point 0)."""
        q = self.g.op("QuantizeLinear", [y, self.g.const("stream_scale", np.float32(scale)),
                                         self.g.const("stream_zero", np.uint8(0))])
        return Stream(q, scale, mean, var)

    def integer_identity(self, x: Stream, channels: int) -> Stream:
        """``x`` through a 1x1 integer convolution with identity weights and the same scale in
        and out, which changes no value (the requantization multiplies by exactly 1). It makes
        the stream start at an integer kernel: ONNX Runtime's layout pass otherwise keeps the
        first stage's stream channels-first, as the float first convolution leaves it, and
        wraps each channels-last integer convolution it feeds in transposes (docs/onnx.md)."""
        eye = np.eye(channels, dtype=np.int8).reshape(channels, channels, 1, 1)
        w = self.g.op("DequantizeLinear", [self.g.const("identity_w", eye),
                                           self.g.const("identity_scale", np.float32(1.0)),
                                           self.g.const("identity_zero", np.int8(0))])
        y = self.g.op("Conv", [self.stream_float(x), w], stem=IDENTITY_CONV)
        return self.stream_of(y, x.scale, x.mean, x.var)

    def clip_codes(self, q: str, top: int) -> str:
        if top >= UINT8_CODE_MAX:
            return q
        return self.g.op("Clip", [q, self.g.const("lo", np.uint8(0)),
                                  self.g.const("hi", np.uint8(top))], stem="clip_codes")

    def lookup(self, q: str, layer: QuantConv2d) -> str:
        """uint8 level codes of uint8 grid values ``q`` (lookup_table), in the exporter's
        PROJECTIONS form."""
        a = layer.act_quantizer
        factor = qdq_activation_factor(code_table(a.scheme, a.bits, a.k).divisor)
        table = (lookup_table(layer).astype(np.int64) * factor).astype(np.uint8)
        if self.projection == "gather":
            index = self.g.op("Cast", [q], stem="lookup_index", to=6)  # int32
            return self.g.op("Gather", [self.g.const("levels_lut", table), index], stem="codes")
        return self.step_sum(q, table)

    def step_sum(self, q: str, table: np.ndarray) -> str:
        """The lookup as a sum of steps in uint8 arithmetic, which wraps modulo 256:

            code(m) = sum_j step_j * [m >= first_j]
                    = sum_j step_j * clip(m, first_j - 1, first_j) - sum_j step_j * (first_j - 1)

        with first_j the first grid value of level j + 1 and step_j its code minus level j's.
        Every term and partial sum is exact modulo 256, and the result (a code below 256) is
        exact. Steps of one size share one multiplication. Clip, Add and Mul on uint8 are
        vectorized passes; ONNX Runtime's Gather copies element by element."""
        firsts = np.flatnonzero(np.diff(table.astype(np.int64))) + 1
        steps = np.diff(table.astype(np.int64))[firsts - 1]
        by_step: dict[int, list[str]] = {}
        for first in firsts:
            clipped = self.g.op("Clip", [q, self.g.const("lo", np.uint8(first - 1)),
                                         self.g.const("hi", np.uint8(first))], stem="step")
            by_step.setdefault(int(steps[list(firsts).index(first)]), []).append(clipped)
        offset = -int(np.sum(steps * (firsts - 1))) % 256
        total = self.g.const("offset", np.uint8(offset))
        for step, clips in by_step.items():
            part = clips[0]
            for clip in clips[1:]:
                part = self.g.op("Add", [part, clip], stem="steps")
            if step != 1:
                part = self.g.op("Mul", [part, self.g.const("step", np.uint8(step))])
            total = self.g.op("Add", [total, part], stem="codes")
        return total

    def _exact_codes(self, x: str, alpha: float, layer: QuantConv2d, table) -> str:
        """The fake-quantized model's own float32 steps: min(x / alpha, 1), then rounding
        (uniform) or its float32 decision thresholds (ties to the lower level)."""
        projector = layer.act_quantizer.projector
        u = self.g.op("Min", [self.g.op("Div", [x, self.g.const("alpha", np.float32(alpha))]),
                              self.g.const("one", np.float32(1.0))])
        if projector.rounds:
            steps = np.float32(table.divisor)
            code = self.g.op("Round", [self.g.op("Mul", [self.g.op(
                "Max", [u, self.g.const("zero", np.float32(0))]), self.g.const("steps", steps)])])
            return self.g.op("Cast", [code], stem="codes", to=2)  # uint8
        thresholds = projector.table.thresholds.numpy().astype(np.float32)
        steps = np.diff(np.asarray(table.codes, dtype=np.float32)).reshape(-1, 1)
        above = self.g.op("Cast", [self.g.op("Greater", [
            self.g.op("Unsqueeze", [u, self.g.const("axis", np.array([-1], np.int64))]),
            self.g.const("thresholds", thresholds)])], to=1)
        code = self.g.op("MatMul", [above, self.g.const("code_steps", steps)])
        code = self.g.op("Squeeze", [code, self.g.const("axis", np.array([-1], np.int64))])
        return self.g.op("Cast", [code], stem="codes", to=2)

    # convolutions --------------------------------------------------------------------
    def quant_conv(self, codes: str, name: str, layer: QuantConv2d, bn, after: dict) -> str:
        """Conv of uint8 ``codes`` with the layer's integer weights, batch norm folded.

        ``after``: what the output feeds. {"relu": True, "next": (name, QuantConv2d)}: a ReLU
        and then that layer's activation quantizer (the output is its uint8 codes), or
        {"relu": False}: a residual addition (the output is float32, dequantized from the
        8-bit grid of ``output_range`` in the qdq form)."""
        weights, w_div = signed_weight_codes(layer)
        a = layer.act_quantizer
        a_div = code_table(a.scheme, a.bits, a.k).divisor
        alpha_a, alpha_w = activation_alpha(name, layer), float(weight_alpha(layer))
        bn_scale, bn_shift = folded_bn(bn, layer.out_channels)
        a_scale = alpha_a / a_div
        if self.form == "qdq":
            a_scale /= qdq_activation_factor(a_div)
        attrs = dict(strides=list(layer.stride), pads=[*layer.padding, *layer.padding],
                     dilations=list(layer.dilation), group=layer.groups)
        self.integer_layers += 1
        if self.form == "integer":
            scale = a_scale * alpha_w / w_div * bn_scale
            return self._integer_conv(codes, name, weights.astype(np.int8), scale, bn_shift,
                                      attrs, after)
        # A channel with a negative batch-norm scale stores its integers negated, so that
        # every per-channel scale is positive. The QDQ convention quantizes the bias in int32
        # units of input scale x weight scale: with the codes themselves (D_w = 1, D_a = 4 at 2
        # bits) a unit is a whole level of each, and rounding the bias to it moved 2-bit
        # outputs by dozens of output grid steps. Both codes times a common factor
        # (qdq_weight_factor, qdq_activation_factor: up to the int8 and uint8 ranges) make
        # the unit that much finer; the sums stay exact.
        flip = np.where(bn_scale < 0, -1, 1)
        factor = qdq_weight_factor(w_div)
        w_int = (weights * flip[:, None, None, None] * factor).astype(np.int8)
        w_scale = alpha_w / (w_div * factor) * np.abs(bn_scale)
        x = self.g.op("DequantizeLinear", [codes, self.g.const("a_scale", np.float32(a_scale)),
                                           self.g.const("a_zero", np.uint8(0))])
        w = self.g.op("DequantizeLinear", [self.g.const(f"{name}.w", w_int),
                                           self.g.const("w_scale", w_scale.astype(np.float32)),
                                           self.g.const("w_zero", np.zeros(len(w_int), np.int8))],
                      axis=0)
        bias_scale = (np.float32(a_scale) * w_scale.astype(np.float32)).astype(np.float32)
        bias_int = np.round(bn_shift / bias_scale.astype(np.float64)).astype(np.int32)
        b = self.g.op("DequantizeLinear", [self.g.const(f"{name}.b", bias_int),
                                           self.g.const("b_scale", bias_scale),
                                           self.g.const("b_zero", np.zeros(len(w_int), np.int32))],
                      axis=0)
        y = self.g.op("Conv", [x, w, b], stem=f"{name}.conv", **attrs)
        if after["relu"]:
            next_name, next_layer = after["next"]
            y = self.g.op("Relu", [y])
            return self.codes_from_float(y, next_name, next_layer)  # Q after Relu: fused
        low, high = self.output_range(bn)
        scale = np.float32((high - low) / 255.0)
        zero = np.uint8(np.clip(round(-low / float(scale)), 0, 255))
        q = self.g.op("QuantizeLinear", [y, self.g.const("y_scale", scale),
                                         self.g.const("y_zero", zero)])
        return self.g.op("DequantizeLinear", [q, self.g.const("y_scale", scale),
                                              self.g.const("y_zero", zero)])

    def output_range(self, bn) -> tuple[float, float]:
        """The 8-bit grid's range of a batch-normed output: per channel beta +- sigmas *
        |gamma| (the output's mean and spread in training), widest channel; includes 0."""
        mean, var = bn_moments(bn)
        spread = self.sigmas * np.sqrt(var)
        return min(0.0, float((mean - spread).min())), max(1e-6, float((mean + spread).max()))

    def _integer_conv(self, codes: str, name: str, w_int: np.ndarray, scale: np.ndarray,
                      shift: np.ndarray, attrs: dict, after: dict) -> str:
        acc = self.g.op("ConvInteger", [codes, self.g.const(f"{name}.w", w_int),
                                        self.g.const("a_zero", np.uint8(0)),
                                        self.g.const("w_zero", np.int8(0))], **attrs)
        shape = (1, -1, 1, 1)
        y = self.g.op("Add", [self.g.op("Mul", [
            self.g.op("Cast", [acc], to=1),
            self.g.const("scale", scale.astype(np.float32).reshape(shape))]),
            self.g.const("shift", shift.astype(np.float32).reshape(shape))])
        if after["relu"]:
            next_name, next_layer = after["next"]
            return self.codes_from_float(self.g.op("Relu", [y]), next_name, next_layer)
        return y

    def float_conv(self, x: str, conv: nn.Conv2d, bn) -> str:
        """A float (or 8-bit-weight) conv with batch norm folded, on float input."""
        scale, shift = folded_bn(bn, conv.out_channels)
        if isinstance(conv, EightBitConv2d):
            codes, step = eight_bit_integers(conv.weight)
            w = self.g.op("DequantizeLinear", [self.g.const("w8", codes),
                                               self.g.const("w8_scale", np.float32(step))])
            w = self.g.op("Mul", [w, self.g.const("bn_scale",
                                                  scale.astype(np.float32).reshape(-1, 1, 1, 1))])
        else:
            weight = (quantized_weight(conv) if isinstance(conv, QuantConv2d)
                      else conv.weight.detach()).double().numpy()
            w = self.g.const("w", (weight * scale[:, None, None, None]).astype(np.float32))
        bias = shift + (0 if conv.bias is None else conv.bias.detach().double().numpy() * scale)
        return self.g.op("Conv", [x, w, self.g.const("b", bias.astype(np.float32))],
                         strides=list(conv.stride), pads=[*conv.padding, *conv.padding],
                         dilations=list(conv.dilation), group=conv.groups)

    def linear(self, x: str, fc: nn.Linear) -> str:
        if isinstance(fc, EightBitLinear):
            codes, step = eight_bit_integers(fc.weight)
            w = self.g.op("DequantizeLinear", [self.g.const("fc8", codes),
                                               self.g.const("fc8_scale", np.float32(step))])
        else:
            w = self.g.const("fc", fc.weight.detach().float().numpy())
        bias = (np.zeros(fc.out_features, np.float32) if fc.bias is None
                else fc.bias.detach().float().numpy())
        return self.g.op("Gemm", [x, w, self.g.const("fc_b", bias)], stem=OUTPUT, transB=1)

    # the network ------------------------------------------------------------------------
    def block(self, x: "str | Stream", prefix: str, block: nn.Module) -> "str | Stream":
        """One residual block (BasicBlock: conv1, conv2; Bottleneck: conv1..conv3), input and
        output float (after its ReLU), or the uint8 Stream in the qdq form."""
        pairs = [(f"{prefix}.conv{i}", getattr(block, f"conv{i}"), getattr(block, f"bn{i}"))
                 for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
        if block.downsample is not None:
            conv, bn = block.downsample[0], block.downsample[1]
            shortcut = self.conv_to_float(x, f"{prefix}.downsample.0", conv, bn)
        else:
            shortcut = self.stream_float(x)
        out = x
        codes = None
        for i, (name, conv, bn) in enumerate(pairs):
            last = i == len(pairs) - 1
            if not isinstance(conv, QuantConv2d) or self.form == FLOAT_FORM:
                out = self.float_conv(self.stream_float(out), conv, bn)
                out = out if last else self.g.op("Relu", [out])
                continue
            if codes is None:
                codes = self.codes_from_stream(out, name, conv)
            if last:
                out = self.quant_conv(codes, name, conv, bn, {"relu": False})
            else:
                next_name, next_conv, _ = pairs[i + 1]
                if isinstance(next_conv, QuantConv2d):
                    codes = self.quant_conv(codes, name, conv, bn,
                                            {"relu": True, "next": (next_name, next_conv)})
                else:  # a float conv follows: hand it floats
                    raise UserError(f"{name}: a quantized conv followed by a float conv is "
                                    f"not a model this project builds")
        total = self.g.op("Add", [out, shortcut])
        if not isinstance(x, Stream):
            return self.g.op("Relu", [total])
        # the sum's moments: the last batch norm's plus the shortcut's (an identity passes the
        # block input's on, its mean at least 0 after the ReLU)
        mean, var = bn_moments(pairs[-1][2])
        passed = (bn_moments(block.downsample[1]) if block.downsample is not None
                  else (np.maximum(x.mean, 0), x.var))
        return self.to_stream(total, mean + passed[0], var + passed[1])

    def conv_to_float(self, x: "str | Stream", name: str, conv: nn.Conv2d, bn) -> str:
        if isinstance(conv, QuantConv2d) and self.form != FLOAT_FORM:
            return self.quant_conv(self.codes_from_stream(x, name, conv), name, conv, bn,
                                   {"relu": False})
        return self.float_conv(self.stream_float(x), conv, bn)

    def network(self) -> str:
        m = self.model
        x = self.g.op("Relu", [self.float_conv(INPUT, m.conv1, m.bn1)])
        if hasattr(m, "maxpool"):
            x = self.g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2],
                          pads=[1, 1, 1, 1])
        if self.form == "qdq":
            x = self.integer_identity(self.to_stream(x, *bn_moments(m.bn1)),
                                      m.conv1.out_channels)
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for i, block in enumerate(getattr(m, stage, [])):
                x = self.block(x, f"{stage}.{i}", block)
        x = self.g.op("Flatten", [self.g.op("GlobalAveragePool", [self.stream_float(x)])])
        return self.linear(x, m.fc)


def build_onnx(model: nn.Module, form: str, input_size: int, metadata: dict[str, str],
               output_sigmas: float = OUTPUT_RANGE_SIGMAS, projection: str = "steps"):
    """The ONNX ModelProto of ``model`` (eval mode) in ``form`` (FORMS, or FLOAT_FORM for a
    model without quantized convs). Input ``images`` (N, 3, S, S) float32, normalized as in
    training; output ``logits`` (N, classes)."""
    from onnx import TensorProto, helper

    if form not in ONNX_FORMS:
        raise UserError(f"unknown ONNX form {form!r}; choose one of {', '.join(ONNX_FORMS)}")
    if form != FLOAT_FORM:
        for name, layer in model.named_modules():
            if isinstance(layer, QuantConv2d):
                check_integer_range(name, layer)
    exporter = Exporter(model.eval(), form, output_sigmas, projection)
    with torch.no_grad():
        logits = exporter.network()
    if form != FLOAT_FORM and exporter.integer_layers == 0:
        raise UserError("the model has no quantized convolution to run on integers; "
                        "--onnx-form float exports it in float32")
    classes = model.fc.out_features
    graph = helper.make_graph(
        exporter.g.nodes, "quantized_network",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", 3, input_size,
                                                                  input_size])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["N", classes])],
        exporter.g.initializers)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="apot-repro")
    onnx_model.ir_version = 10
    helper.set_model_props(onnx_model, {f"{METADATA_PREFIX}{k}": str(v)
                                        for k, v in {**metadata, "form": form,
                                                     "quantized_convs": exporter.integer_layers,
                                                     "num_classes": classes}.items()})
    # the output is named by its producing node: rename it to the public name
    for node in onnx_model.graph.node:
        node.output[:] = [OUTPUT if o == logits else o for o in node.output]
    onnx_model.graph.output[0].name = OUTPUT
    return onnx_model


def write_onnx(model, out: Path) -> bytes:
    """Check ``model`` (onnx.checker, full) and write it to ``out`` atomically; its bytes."""
    import onnx

    from apot.layout import write_bytes_atomic

    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    write_bytes_atomic(out, data)
    return data


def export_onnx(model: nn.Module, description: dict, num_classes: int, source: Path,
                out: Path, form: str, input_size: int) -> dict:
    """Write ``model`` (described by ``description``: arch, bits, scheme, k, first_last) as an
    ONNX model in ``form`` to ``out``, checked and atomically. Returns what ``apot export``
    prints."""
    import hashlib

    from apot.deploy.packed_file import float32_size
    from apot.models import DESCRIPTION_FIELDS
    from apot.layout import file_sha256

    described = {field: description[field] for field in DESCRIPTION_FIELDS}
    checkpoint_sha256 = file_sha256(source)
    metadata = {**described, "checkpoint": source.name, "checkpoint_sha256": checkpoint_sha256}
    onnx_model = build_onnx(model, form, input_size, metadata)
    data = write_onnx(onnx_model, out)
    float_bytes = float32_size(model)
    return {**described, "format": "onnx", "onnx_form": form, "checkpoint": str(source),
            "checkpoint_sha256": checkpoint_sha256, "out": str(out), "onnx_bytes": len(data),
            "onnx_sha256": hashlib.sha256(data).hexdigest(), "float32_bytes": float_bytes,
            "size_ratio": round(len(data) / float_bytes, 4),
            "quantized_layers": int(_prop(onnx_model, "quantized_convs")),
            "opset": OPSET}


def _prop(model, key: str) -> str:
    return next(p.value for p in model.metadata_props if p.key == METADATA_PREFIX + key)
