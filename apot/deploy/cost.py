"""Cost model: per-layer MACs of a real model, and what its multiplications cost per scheme.

The accounting, stated once (the report prints the same text from ``ACCOUNTING``):

* MACs are counted on the model object itself: a forward pass of one input image
  (3 x 32 x 32 for CIFAR, 3 x 224 x 224 for ImageNet) with hooks on every Conv2d and Linear;
  a layer's MACs = output elements x input channels per group x kernel area (Linear: in x out).
  Element-wise operations are counted apart, as common FLOP counters (ptflops) do: batch norm
  2 per element, ReLU 1, pooling 1 per input element (residual additions are not counted).
* FixOPs follow the paper's Table 3: one FixOP is one 8-bit x 8-bit MAC. Float layers and
  the 8-bit first conv / last linear count 1 per MAC (their inputs stay full precision); a
  uniform layer with b_w-bit weights and b_a-bit activations counts b_w * b_a / 64 per MAC.
  This reproduces the paper's uniform ResNet-18 figures (781M at 5 bits, 357M at 3 bits).
* PoT and APoT FixOPs (our rule: the paper does not state its own). A shift-add multiplier
  does one shifted add per power-of-two term of its multiplier, the weight. A uniform weight's
  B = b_w - 1 magnitude bits carry B/2 set bits on average; a PoT or APoT weight carries the
  mean term count of its level set (schemes.mean_terms). A PoT/APoT MAC costs the uniform
  b_w * b_a / 64 times the ratio of the two means (0.75 for APoT at 5 and 3 bits, 0.833 at
  4 bits), every level counted as equally used (FixOPs compare level sets, not models).
* Shifts and adds per MAC, for an integer activation times a weight with t terms: t shifts
  and t - 1 adds for the product, plus 1 add to accumulate it. When the activation is itself a
  PoT/APoT code with t_a terms (the authors' layers quantize both), the expanded product has
  t * t_a terms: t * t_a shifts and t * t_a - 1 adds. Worst case: the largest t in the set;
  expected: the mean over level usage (every level equally used, or a checkpoint's actual
  weight levels; activation levels always equally used). Zero operands are not skipped: every
  MAC accumulates. Float and 8-bit layers are counted as multiplies.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn

from apot.engine.threads import use_threads
from apot.layout import file_sha256
from apot.models import ARCHS, build_model, load_model
from apot.quant.functional import normalize_weight
from apot.quant.modules import EightBitConv2d, EightBitLinear, QuantConv2d
from apot.quant.schemes import APOT, FLOAT_BITS, POT, UNIFORM, scheme_names, term_distribution

ACCOUNTING = __doc__.split("The accounting, stated once", 1)[1].split("\n", 1)[1].strip()
FIXOP_BITS = 8  # one FixOP = one 8-bit x 8-bit MAC


@dataclass
class LayerCount:
    """One Conv2d/Linear layer for one input image. ``kind``: first8 | last8 | quantized |
    float. Bits are None for layers that are not quantized (float inputs / weights)."""
    name: str
    kind: str
    macs: int
    weights: int
    weight_bits: int | None
    act_bits: int | None


def _layer_kind(module: nn.Module) -> tuple[str, int | None, int | None]:
    if isinstance(module, QuantConv2d):
        return "quantized", module.weight_quantizer.bits, module.act_quantizer.bits
    if isinstance(module, EightBitConv2d):
        return "first8", 8, None
    if isinstance(module, EightBitLinear):
        return "last8", 8, None
    return "float", None, None


ELEMENTWISE = (nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def elementwise_ops(module: nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Operations of a batch-norm, ReLU or pooling call (ptflops' convention)."""
    if isinstance(module, nn.BatchNorm2d):
        return output[0].numel() * (2 if module.affine else 1)
    if isinstance(module, nn.ReLU):
        return output[0].numel()
    return inputs[0][0].numel()  # pooling: one per input element


def count_layers(model: nn.Module, input_size: int) -> tuple[list[LayerCount], int]:
    """Per-layer MACs of ``model`` for one 3 x input_size x input_size image, in call order,
    and the element-wise operations (batch norm, ReLU, pooling) of the same forward pass."""
    counts: list[LayerCount] = []
    other = [0]
    names = {module: name for name, module in model.named_modules()}

    def count_elementwise(module: nn.Module, inputs, output: torch.Tensor) -> None:
        other[0] += elementwise_ops(module, inputs, output)

    def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] \
                * module.kernel_size[1]
        else:
            per_output = module.in_features
        kind, w_bits, a_bits = _layer_kind(module)
        counts.append(LayerCount(names[module], kind, output[0].numel() * per_output,
                                 module.weight.numel(), w_bits, a_bits))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles += [m.register_forward_hook(count_elementwise) for m in model.modules()
                if isinstance(m, ELEMENTWISE)]
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, input_size, input_size))
        model.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    return counts, other[0]


def _mean(dist: Mapping[int, float], f=lambda t: t) -> float:
    return sum(p * f(t) for t, p in dist.items())


def weight_scheme(scheme: str, weight_bits: int) -> str:
    """2-bit weights have one magnitude bit: every scheme is the ternary set (authors' code)."""
    return UNIFORM if weight_bits == 2 else scheme


def mac_cost(scheme: str, weight_bits: int, act_bits: int, k: int = 2,
             weight_usage: Sequence[float] | None = None) -> dict:
    """Cost of one MAC of a quantized layer (b_w-bit signed weights, b_a-bit activations).

    ``weight_usage``: counts of each weight magnitude level (in ``level_codes`` order), or None
    for equal use. Activation levels are taken as equally used. Returns FixOPs (uniform and
    this scheme), term means, and worst/expected shifts and adds (see module docstring).
    """
    w_scheme = weight_scheme(scheme, weight_bits)
    w_dist = term_distribution(w_scheme, weight_bits - 1, k, weight_usage)
    # FixOPs compare level sets, not models: equal level use on both sides, always.
    w_equal = term_distribution(w_scheme, weight_bits - 1, k, None)
    uniform_w = term_distribution(UNIFORM, weight_bits - 1, k, None)
    a_dist = term_distribution(scheme, act_bits, k, None)
    uniform_fixops = weight_bits * act_bits / FIXOP_BITS**2
    term_ratio = _mean(w_equal) / _mean(uniform_w)
    w_max, a_max = max(w_dist), max(a_dist)
    both = {tw * ta: 0.0 for tw in w_dist for ta in a_dist}
    for tw, pw in w_dist.items():
        for ta, pa in a_dist.items():
            both[tw * ta] += pw * pa
    return {
        "fixops_uniform": uniform_fixops,
        "fixops": uniform_fixops * term_ratio,
        "weight_terms_mean": _mean(w_dist),
        "uniform_weight_bits_mean": _mean(uniform_w),
        "term_ratio": term_ratio,
        "integer_activation": {
            "shifts_worst": w_max, "shifts_expected": _mean(w_dist),
            "adds_worst": max(w_max - 1, 0) + 1,
            "adds_expected": _mean(w_dist, lambda t: max(t - 1, 0)) + 1,
        },
        "code_activation": {
            "shifts_worst": w_max * a_max, "shifts_expected": _mean(both),
            "adds_worst": max(w_max * a_max - 1, 0) + 1,
            "adds_expected": _mean(both, lambda t: max(t - 1, 0)) + 1,
        },
    }


def weight_usage(layer: QuantConv2d) -> list[int]:
    """How many of the layer's weights fall on each magnitude level (``level_codes`` order)."""
    quantizer = layer.weight_quantizer
    with torch.no_grad():
        scaled = (normalize_weight(layer.weight) / quantizer.alpha).abs().clamp(max=1)
        index = quantizer.projector.table.index(scaled.float()).long().flatten()
    n_levels = len(quantizer.projector.table)
    if n_levels != 2 ** (quantizer.bits - 1):
        raise ValueError(f"{quantizer.bits}-bit weight levels merge in float32; no usage counts")
    return torch.bincount(index, minlength=n_levels).tolist()


def network_cost(arch: str, bits: int, scheme: str = APOT, k: int = 2,
                 first_last: str = "8bit", model: nn.Module | None = None,
                 num_classes: int | None = None) -> dict:
    """Totals and per-layer costs of ``arch`` at ``bits`` (32: float inner layers).

    With ``model`` (e.g. loaded from a checkpoint) its weights' level usage gives the
    expected counts; otherwise every level counts as equally used.
    """
    _, _, input_size = ARCHS[arch]
    if model is None:
        model = build_model(arch, num_classes, bits, scheme, k, first_last)
        usage_from = "equal"
    else:
        usage_from = "checkpoint"
    modules = dict(model.named_modules())
    layers = []
    totals = {"macs": 0, "quantized_macs": 0, "multiplies": 0, "fixops": 0.0,
              "fixops_uniform": 0.0}
    counters = {f"{view}_{what}": 0.0 for view in ("integer_activation", "code_activation")
                for what in ("shifts_worst", "shifts_expected", "adds_worst", "adds_expected")}
    # (float and 8-bit layers add nothing here: they are counted as multiplies)
    counted, elementwise = count_layers(model, input_size)
    for layer in counted:
        row = asdict(layer)
        totals["macs"] += layer.macs
        if layer.kind == "quantized":
            usage = weight_usage(modules[layer.name]) if usage_from == "checkpoint" else None
            cost = mac_cost(scheme, layer.weight_bits, layer.act_bits, k, usage)
            row.update(fixops_per_mac=cost["fixops"], term_ratio=cost["term_ratio"],
                       weight_terms_mean=cost["weight_terms_mean"], weight_usage=usage)
            totals["quantized_macs"] += layer.macs
            totals["fixops"] += cost["fixops"] * layer.macs
            totals["fixops_uniform"] += cost["fixops_uniform"] * layer.macs
            for view in ("integer_activation", "code_activation"):
                for what, value in cost[view].items():
                    counters[f"{view}_{what}"] += value * layer.macs
        else:
            row.update(fixops_per_mac=1.0)
            totals["multiplies"] += layer.macs
            totals["fixops"] += layer.macs
            totals["fixops_uniform"] += layer.macs
        layers.append(row)
    views = {view: {what: {case: round(counters[f"{view}_{what}_{case}"])
                           for case in ("worst", "expected")} for what in ("shifts", "adds")}
             for view in ("integer_activation", "code_activation")}
    return {"arch": arch, "bits": bits, "scheme": scheme, "k": k, "first_last": first_last,
            "input": [3, input_size, input_size], "weight_usage": usage_from,
            **{key: round(value) for key, value in totals.items()},
            "elementwise_ops": elementwise,
            # the primary view: integer activations times decomposed weights
            **views["integer_activation"], "code_activation": views["code_activation"],
            "layers": layers}


def multiply_table(k: int = 2, magnitude_bits: Sequence[int] = (2, 3, 4, 5, 6)) -> list[dict]:
    """Shift-add steps of one multiplication by a B-bit operand: uniform fixed point (one step
    per set bit, B at worst) against APoT (one per term, ceil(B/k) at worst), every level
    equally likely for the expected counts. Adds = steps - 1."""
    rows = []
    for bits in magnitude_bits:
        uniform = term_distribution(UNIFORM, bits, k, None)
        apot = term_distribution(APOT, bits, k, None)
        rows.append({"bits": bits, "k": k,
                     "uniform_worst": max(uniform), "apot_worst": max(apot),
                     "worst_ratio": max(uniform) / max(apot),
                     "uniform_adds_worst": max(uniform) - 1, "apot_adds_worst": max(apot) - 1,
                     "uniform_expected": _mean(uniform), "apot_expected": _mean(apot),
                     "expected_ratio": _mean(uniform) / _mean(apot)})
    return rows


def summary_row(cost: dict) -> dict:
    """The totals of ``network_cost`` without the per-layer list."""
    return {key: value for key, value in cost.items() if key != "layers"}


# Configurations of the paper's cost claims (Table 3 and the abstract); the report compares
# them with the cited figures in cited.yaml.
PAPER_CONFIGS = (("resnet18", 32, APOT), ("resnet18", 5, UNIFORM), ("resnet18", 5, POT),
                 ("resnet18", 5, APOT), ("resnet18", 3, UNIFORM), ("resnet18", 3, APOT),
                 ("resnet50", 4, UNIFORM), ("resnet50", 4, APOT))


def cost_tables(models: Sequence[tuple[str, int]], k: int = 2, first_last: str = "8bit") -> dict:
    """Everything the report's cost section shows: the paper's configurations, every
    (arch, bits) of the study in each scheme (bits 32: once), and the multiply table."""
    def row(arch: str, bits: int, scheme: str, first_last_: str = first_last) -> dict:
        return summary_row(network_cost(arch, bits, scheme, k, first_last_))

    study = []
    for arch, bits in sorted(set(models), key=lambda m: (m[0], -m[1])):
        schemes = (APOT,) if bits == FLOAT_BITS else scheme_names()
        study.extend(row(arch, bits, scheme) for scheme in schemes)
    return {"accounting": ACCOUNTING,
            "paper": [row(arch, bits, scheme, "8bit") for arch, bits, scheme in PAPER_CONFIGS],
            "study": study, "multiply": multiply_table(k)}


def model_cost(model: dict, checkpoint: Path | None = None, layers: bool = False,
               threads: int | None = None) -> dict:
    """``apot cost``: the operation counts of the model ``model`` ({"arch", "bits", "scheme",
    "k", "first_last"}), expected over ``checkpoint``'s weight levels when given (else every
    level equally used); the per-layer rows with ``layers``, else the summary row."""
    use_threads(threads)
    net = load_model(checkpoint, model)[0] if checkpoint is not None else None
    cost = network_cost(model["arch"], model["bits"], model["scheme"], model["k"],
                        model["first_last"], net)
    if checkpoint is not None:
        cost["checkpoint"] = str(checkpoint)
        cost["checkpoint_sha256"] = file_sha256(checkpoint)
    return cost if layers else summary_row(cost)
