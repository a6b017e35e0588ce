"""A quantized model as integer codes, and the layers that compute from those codes (torch).

``pack_model`` turns a fake-quantized model (``QuantConv2d``, ``EightBitConv2d``,
``EightBitLinear`` layers holding float weights) into arrays: per quantized conv, its weights'
b-bit sign-and-magnitude codes (``packing.pack_codes``) and its two clipping thresholds; per
8-bit layer, its integer codes round(w / max(w) * 127) and max(w); and the float parts
(batch-norm, biases). ``unpack_model`` builds the network back from those arrays alone.

The rebuilt quantized convolutions compute in one of two arithmetics (``ARITHMETICS``):

* "levels": each weight code becomes its level value, alpha * sign * level, the very float the
  fake-quantized model computes; activations are quantized as there; the convolution runs in
  float32. The logits are the trained model's, bit for bit.
* "integer": the input's activation codes (the integer code of each activation's level,
  ``schemes.level_codes``) convolved with the weights' signed codes, then one multiplication by
  alpha_a * alpha_w / (D_a * D_w): what integer hardware computes. The sums are exact (float32
  while every sum stays below 2^24, float64 below 2^53). They differ from the float model's
  rounded sums by float rounding, which can move an activation of a later layer across a level
  threshold: a few predictions in ten thousand change. Level sets whose sums are too wide
  (PoT from 5 bits) use the levels; ``PackedQuantConv2d.arithmetic`` says which ran.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from apot.deploy.bitpack import pack_codes, sign_magnitude, split_sign_magnitude, unpack_codes
from apot.quant.convert import _set_submodule
from apot.quant.functional import normalize_weight, quantize_activation, shared_projector
from apot.quant.modules import EightBitConv2d, EightBitLinear, QuantConv2d
from apot.quant.schemes import level_codes

QUANT_CONV, EIGHT_BIT_CONV, EIGHT_BIT_LINEAR = "quant_conv", "eight_bit_conv", "eight_bit_linear"
EIGHT_BIT_STEPS = 127  # the authors' 8-bit layers: round(w / max(w) * 127)
# Keys of each layer's arrays: "<layer>.<suffix>".
CODES, WEIGHT_ALPHA, ACT_ALPHA, SCALE = "codes", "weight_alpha", "act_alpha", "scale"
# The arrays each kind of packed layer is stored as, and the state-dict entries they replace.
LAYER_ARRAYS = {QUANT_CONV: (CODES, WEIGHT_ALPHA, ACT_ALPHA), EIGHT_BIT_CONV: (CODES, SCALE),
                EIGHT_BIT_LINEAR: (CODES, SCALE)}
REPLACED_STATE = {QUANT_CONV: ("weight", "weight_quantizer.alpha", "act_quantizer.alpha"),
                  EIGHT_BIT_CONV: ("weight",), EIGHT_BIT_LINEAR: ("weight",)}
LAYER_KINDS = tuple(LAYER_ARRAYS)
FLOAT32_EXACT, FLOAT64_EXACT = 1 << 24, 1 << 53  # integers every sum below is exact in


@dataclass(frozen=True)
class CodeTable:
    """A magnitude level set as integers: ``levels[i] == codes[i] / divisor`` (float32 levels,
    in ``schemes.magnitude_levels`` order)."""
    scheme: str
    magnitude_bits: int
    k: int
    codes: tuple[int, ...]

    @property
    def divisor(self) -> int:
        return self.codes[-1]

    @property
    def levels(self) -> torch.Tensor:
        return torch.tensor([c / self.divisor for c in self.codes], dtype=torch.float64).float()

    def record(self) -> dict:
        """The table as the packed file's header stores it."""
        return {"scheme": self.scheme, "magnitude_bits": self.magnitude_bits, "k": self.k,
                "codes": list(self.codes)}


def code_table(scheme: str, magnitude_bits: int, k: int) -> CodeTable:
    return CodeTable(scheme, magnitude_bits, k,
                     tuple(c.code for c in level_codes(scheme, magnitude_bits, k)))


def _magnitude_index(magnitude: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index in float32 ``levels`` (sorted, distinct) of each element, which must be a level."""
    if levels.unique().numel() != levels.numel():
        raise ValueError("the level set has levels float32 cannot tell apart")
    index = torch.searchsorted(levels, magnitude.contiguous()).clamp(max=levels.numel() - 1)
    if not torch.equal(levels[index], magnitude):
        raise ValueError("a quantized weight is not one of its level set's values")
    return index


def weight_alpha(layer: QuantConv2d) -> torch.Tensor:
    """The layer's weight clipping threshold as a positive number. Training can drive the
    learned alpha below 0 (seen on 2-bit uniform fine-tunes); the weight quantizer is odd in
    alpha (alpha * sign(c) * Pi(|c|), c = clip(w / alpha): both signs flip together), so |alpha|
    gives the very same weights, and the packed file keeps its rule that alpha > 0."""
    return layer.weight_quantizer.alpha.detach().abs()


def weight_codes(layer: QuantConv2d) -> np.ndarray:
    """Sign-and-magnitude codes (int64, shaped like the weight) of the layer's quantized
    weights: the values its ``WeightQuantizer`` computes, as level indices."""
    quantizer = layer.weight_quantizer
    table = code_table(quantizer.scheme, quantizer.bits - 1, quantizer.k)
    with torch.no_grad():
        clipped = (normalize_weight(layer.weight) / weight_alpha(layer)).clamp(-1, 1)
        magnitude = quantizer.projector(clipped.abs())
    index = _magnitude_index(magnitude, table.levels)
    return sign_magnitude((clipped < 0).numpy(), index.numpy(), quantizer.bits - 1)


def eight_bit_codes(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(integer codes, max(w) as a float32 array of one value) of an 8-bit layer's weights.

    The codes are int8 unless the weights go below -max(w) (the authors' rounding does not
    clip the negative side), which needs int16; a wider range is refused.
    """
    w = weight.detach()
    top = w.max()
    codes = w.div(top).mul(EIGHT_BIT_STEPS).round()
    if not torch.isfinite(codes).all() or codes.abs().max() > np.iinfo(np.int16).max:
        raise ValueError("8-bit layer weights out of range (max(w) <= 0 or far below -max(w))")
    dtype = np.int8 if codes.min() >= np.iinfo(np.int8).min else np.int16
    return codes.numpy().astype(dtype), top.reshape(1).numpy().astype(np.float32)


def pack_model(model: nn.Module) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """(arrays by key, layer records by layer name) of a fake-quantized model.

    Records: {"kind", "shape" (the weight's), "width" (bits per code, quantized convs)}.
    Every state-dict entry that no layer packs (batch-norm, biases) is kept as float32, but
    batch-norm's ``num_batches_tracked`` counters, which inference never reads.
    """
    arrays: dict[str, np.ndarray] = {}
    layers: dict[str, dict] = {}
    for name, module in model.named_modules():
        shape = list(getattr(module, "weight", torch.empty(0)).shape)
        if isinstance(module, QuantConv2d):
            codes = weight_codes(module)
            arrays[f"{name}.{CODES}"] = pack_codes(codes, module.bits)
            arrays[f"{name}.{WEIGHT_ALPHA}"] = _scalar(weight_alpha(module))
            arrays[f"{name}.{ACT_ALPHA}"] = _scalar(module.act_quantizer.alpha)
            layers[name] = {"kind": QUANT_CONV, "shape": shape, "width": module.bits}
        elif isinstance(module, (EightBitConv2d, EightBitLinear)):
            arrays[f"{name}.{CODES}"], arrays[f"{name}.{SCALE}"] = eight_bit_codes(module.weight)
            kind = EIGHT_BIT_CONV if isinstance(module, EightBitConv2d) else EIGHT_BIT_LINEAR
            layers[name] = {"kind": kind, "shape": shape}
    for key, value in float_parts(model).items():
        if not value.is_floating_point():
            raise ValueError(f"state-dict entry {key} is not a float tensor: cannot pack it")
        arrays[key] = value.detach().float().cpu().numpy()
    return arrays, layers


def float_parts(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries a packed file keeps as float32 arrays under their own names:
    those no packed layer replaces (batch-norm, biases, float first/last layers), less
    batch-norm's ``num_batches_tracked`` counters, which inference never reads."""
    replaced = {f"{name}.{entry}" for name, kind in packable_layers(model)
                for entry in REPLACED_STATE[kind]}
    return {key: value for key, value in model.state_dict().items()
            if key not in replaced and not key.endswith("num_batches_tracked")}


def layer_array_keys(name: str, kind: str) -> list[str]:
    """The keys of the arrays a packed layer ``name`` of ``kind`` is stored as."""
    return [f"{name}.{suffix}" for suffix in LAYER_ARRAYS[kind]]


def _scalar(value: torch.Tensor) -> np.ndarray:
    return value.detach().float().cpu().reshape(1).numpy()


ARITHMETICS = ("levels", "integer")


class PackedQuantConv2d(nn.Module):
    """A quantized convolution computed from its weights' codes.

    ``arithmetic="levels"``: the codes become the level values alpha * sign * level (the
    floats the fake-quantized layer computes its weights as, bit for bit) and the convolution
    runs in float32 as the trained model's does: the same logits. ``"integer"``: the input's
    activation codes convolved with the weights' signed integer codes, summed exactly, then
    scaled once by alpha_a * alpha_w / (D_a * D_w); where the sums could exceed 2^53 the layer
    uses the levels (``self.arithmetic`` says which ran). Input float32 (N, C, H, W); output
    float32 (N, O, H', W'), in the normalized-weight domain as ``QuantConv2d``'s.
    """

    def __init__(self, conv: nn.Conv2d, signed_codes: torch.Tensor, weight_alpha: float,
                 act_alpha: float, bits: int, scheme: str, k: int, bias: torch.Tensor | None,
                 arithmetic: str = "levels"):
        super().__init__()
        if arithmetic not in ARITHMETICS:
            raise ValueError(f"arithmetic must be one of {ARITHMETICS}, got {arithmetic!r}")
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        self.bits, self.scheme, self.k = bits, scheme, k
        self.act_projector = shared_projector(scheme, bits, k)
        weight_table, act_table = code_table(scheme, bits - 1, k), code_table(scheme, bits, k)
        self.register_buffer("weight_alpha", torch.tensor(weight_alpha), persistent=False)
        self.register_buffer("act_alpha", torch.tensor(act_alpha), persistent=False)
        self.register_buffer("bias", bias, persistent=False)
        negative, index = signed_codes < 0, signed_codes.abs()
        largest_sum = signed_codes[0].numel() * act_table.divisor * weight_table.divisor
        if (arithmetic == "integer" and largest_sum < FLOAT64_EXACT
                and act_table.divisor < FLOAT32_EXACT // 2):
            dtype = torch.float32 if largest_sum < FLOAT32_EXACT else torch.float64
            self.arithmetic = f"integer/{str(dtype).removeprefix('torch.')}"
            integer = torch.tensor(weight_table.codes, dtype=dtype)[index]
            self.register_buffer("weight", torch.where(negative, -integer, integer),
                                 persistent=False)
            self.act_divisor = act_table.divisor
            self.scale = (float(act_alpha) * float(weight_alpha)
                          / (act_table.divisor * weight_table.divisor))
        else:
            self.arithmetic = "levels/float32"
            # WeightQuantFn's own steps: level * sign, then * alpha
            signed_level = weight_table.levels[index].mul(torch.where(negative, -1.0, 1.0))
            self.register_buffer("weight", signed_level * self.weight_alpha, persistent=False)

    def activation_codes(self, x: torch.Tensor) -> torch.Tensor:
        """The integer code of each activation's level, as floats of the weights' dtype.

        level * D is within D * 2^-24 of the code (level is code / D rounded to float32), so
        rounding it gives the code exactly while D < 2^23 (checked in ``__init__``).
        """
        level = self.act_projector((x / self.act_alpha).clamp_(max=1))
        return level.to(self.weight.dtype).mul_(self.act_divisor).round_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arithmetic == "levels/float32":
            quantized = quantize_activation(x, self.act_alpha, self.act_projector)
            return F.conv2d(quantized, self.weight, self.bias, self.stride, self.padding,
                            self.dilation, self.groups)
        acc = F.conv2d(self.activation_codes(x), self.weight, None, self.stride, self.padding,
                       self.dilation, self.groups)
        out = acc.mul_(self.scale).to(x.dtype)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scheme={self.scheme}, k={self.k}, {self.arithmetic}"


class PackedEightBitLayer(nn.Module):
    """An 8-bit first or last layer computed from its integer codes: its weight is
    code / 127 * max(w), the authors' quantized value exactly. Input and output are float."""

    def __init__(self, layer: nn.Module, codes: torch.Tensor, top: torch.Tensor,
                 bias: torch.Tensor | None):
        super().__init__()
        self.conv = isinstance(layer, nn.Conv2d)
        if self.conv:
            self.stride, self.padding = layer.stride, layer.padding
            self.dilation, self.groups = layer.dilation, layer.groups
        weight = codes.float().div(EIGHT_BIT_STEPS).mul(top)  # eight_bit_weight's own steps
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation,
                            self.groups)
        return F.linear(x, self.weight, self.bias)


def unpack_model(skeleton: nn.Module, arrays: dict[str, np.ndarray], layers: dict[str, dict],
                 scheme: str, k: int, arithmetic: str = "levels") -> nn.Module:
    """Put the packed layers of ``layers`` into ``skeleton`` (a model built with the file's
    description, whose float weights are all replaced) and load its float parts.

    Raises ValueError naming the first mismatch between the arrays and the model.
    """
    expected = {name: kind for name, kind in packable_layers(skeleton)}
    if expected != {name: record["kind"] for name, record in layers.items()}:
        raise ValueError("its layers are not those of the model its header describes")
    used: set[str] = set()
    for name, record in layers.items():
        module = skeleton.get_submodule(name)
        if list(module.weight.shape) != record["shape"]:
            raise ValueError(f"layer {name} has shape {record['shape']}, the model "
                             f"{list(module.weight.shape)}")
        bias = None
        if module.bias is not None:
            bias = torch.from_numpy(_float32(_take(arrays, f"{name}.bias", used), f"{name}.bias"))
        if record["kind"] == QUANT_CONV:
            codes = _take(arrays, f"{name}.{CODES}", used)
            signed = _signed_codes(name, codes, record, module.weight_quantizer.bits)
            _set_submodule(skeleton, name, PackedQuantConv2d(
                module, signed, _one(arrays, f"{name}.{WEIGHT_ALPHA}", used),
                _one(arrays, f"{name}.{ACT_ALPHA}", used), module.bits, scheme, k, bias,
                arithmetic))
        else:
            codes = _take(arrays, f"{name}.{CODES}", used)
            if codes.dtype not in (np.int8, np.int16) or list(codes.shape) != record["shape"]:
                raise ValueError(f"layer {name}'s codes are not int8/int16 of its shape")
            top = torch.tensor(_one(arrays, f"{name}.{SCALE}", used))
            # int16 holds both code dtypes exactly, at a quarter of int64's memory
            _set_submodule(skeleton, name, PackedEightBitLayer(
                module, torch.from_numpy(codes.astype(np.int16)), top, bias))
    _load_float_parts(skeleton, arrays, used)
    return skeleton.eval()


def packable_layers(model: nn.Module):
    """(name, kind) of each layer of ``model`` that a packed file stores as codes."""
    for name, module in model.named_modules():
        if isinstance(module, QuantConv2d):
            yield name, QUANT_CONV
        elif isinstance(module, EightBitConv2d):
            yield name, EIGHT_BIT_CONV
        elif isinstance(module, EightBitLinear):
            yield name, EIGHT_BIT_LINEAR


def _take(arrays: dict[str, np.ndarray], key: str, used: set[str]) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"it has no tensor {key}")
    used.add(key)
    return arrays[key]


def _float32(value: np.ndarray, key: str) -> np.ndarray:
    if value.dtype != np.float32:
        raise ValueError(f"tensor {key} must be float32, is {value.dtype}")
    return value.copy()  # writable, owned by the model


def _one(arrays: dict[str, np.ndarray], key: str, used: set[str]) -> float:
    value = _take(arrays, key, used)
    if value.dtype != np.float32 or value.size != 1 or not np.isfinite(value).all():
        raise ValueError(f"{key} must be one finite float32 value")
    return float(value.reshape(()))


def _signed_codes(name: str, packed: np.ndarray, record: dict, bits: int) -> torch.Tensor:
    """Signed magnitude indices (int64, the weight's shape) of the quantized conv ``name``."""
    width = record.get("width")
    # bool is an int to Python, and "4" == 4 is False but reads as 4 in a message: show repr
    if not isinstance(width, int) or isinstance(width, bool) or width != bits:
        raise ValueError(f"layer {name} has codes of width {width!r}; the model's quantized "
                         f"convs are {bits}-bit (width {bits}, an integer)")
    count = int(np.prod(record["shape"]))
    negative, index = split_sign_magnitude(unpack_codes(packed, bits, count), bits - 1)
    signed = np.where(negative, -index, index).reshape(record["shape"])
    return torch.from_numpy(signed)


def _load_float_parts(model: nn.Module, arrays: dict[str, np.ndarray], used: set[str]) -> None:
    """Load batch-norm and other float tensors; every array must be used exactly once."""
    state = {}
    for key, value in arrays.items():
        if key not in used:
            state[key] = torch.from_numpy(_float32(value, key))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of the wrong shape
        raise ValueError(str(exc).strip().splitlines()[-1].strip()) from None
    missing = [key for key in missing if not key.endswith("num_batches_tracked")]
    if unexpected:
        raise ValueError(f"it has tensors the model does not: {', '.join(sorted(unexpected))}")
    if missing:
        raise ValueError(f"it lacks tensors of the model: {', '.join(sorted(missing))}")
