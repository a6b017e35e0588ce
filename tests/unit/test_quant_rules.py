"""Quantizer rules: "cifar" (the authors' CIFAR code) vs "imagenet" (their ImageNet code).

The "imagenet" weight gradients are checked against a direct autograd rendering of the
authors' ImageNet ``quant_layer.py`` (facts §3.2-3.4), written here without our autograd
functions; forward values must be the same bit for bit under both rules.
"""
import pytest
import torch

from apot.models import build_model
from apot.quant.convert import quantize_model
from apot.quant.functional import (WeightQuantFn, normalize_weight, project_bruteforce,
                                   shared_projector)
from apot.quant.modules import (ACT_ALPHA_INIT_BY_RULES, QUANTIZER_RULES, WGT_ALPHA_INIT,
                                QuantConv2d, WeightQuantizer)

SCHEMES = ["apot", "pot", "uniform"]
BITS = [2, 3, 4, 5]
ALPHA = 1.2  # small enough that about a quarter of the normalized weights lie outside +-alpha


def weight_and_grad(seed: int = 0):
    """A conv weight of a realistic shape and scale, and an upstream gradient for it."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(16, 8, 3, 3, generator=gen) * 0.05 + 0.01,
            torch.randn(16, 8, 3, 3, generator=gen))


def straight_through(hard: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Value ``hard``, gradient of ``x``: the authors' ``(xhard - x).detach() + x``."""
    return (hard - x).detach() + x


def authors_imagenet_weight(weight, alpha, bits, scheme, levels):
    """The authors' ImageNet weight path (QuantConv2d.forward of their quant_layer.py)."""
    mean = weight.mean()  # weight normalization inside autograd, unbiased std, no epsilon
    std = weight.std()
    w = weight.add(-mean).div(std)
    if bits == 2:
        return calibrated_ternary(w, alpha)
    data = (w / alpha).clamp(-1, 1)  # the clamp sits before the STE: clipped weight gradient
    if scheme == "uniform":  # uniform_quantization(is_weight=True)
        steps = 2 ** (bits - 1) - 1
        data = data * steps
        return straight_through(data.round(), data) / steps * alpha
    # apot_quantization / power_quant(is_weight=True): nearest magnitude, times the sign
    hard = project_bruteforce(data.abs(), levels).mul(data.sign())
    return straight_through(hard, data) * alpha


def calibrated_ternary(w, alpha):
    """The authors' 2-bit ``uq_with_calibrated_graditens``: round(clamp(w / alpha)) * alpha.

    Its backward passes the weight gradient unclipped and gives alpha sign(w) outside,
    round(w/alpha) - w/alpha inside. Rendered with autograd: alpha sees the clamped STE
    (which yields exactly that), the weight an identity path that adds 0 to the value.
    """
    data = (w.detach() / alpha).clamp(-1, 1)
    return straight_through(data.round(), data) * alpha + (w - w.detach())


def cifar_weight(weight, alpha, bits, scheme, levels):
    """Today's ("cifar") gradients: detached mean/std, weight STE never clipped."""
    w = (weight - weight.detach().mean()) / weight.detach().std()
    data = (w.detach() / alpha).clamp(-1, 1)
    if bits == 2 or scheme != "uniform":
        hard = project_bruteforce(data.abs(), levels).mul(data.sign())
    else:
        steps = 2 ** (bits - 1) - 1
        hard = (data * steps).round() / steps
    return straight_through(hard, data) * alpha + (w - w.detach())


def gradients(fn, weight, grad):
    """(output, d weight, d alpha) of ``fn(weight, alpha)`` for upstream gradient ``grad``;
    ``fn`` may be a WeightQuantizer, whose own parameter is then the alpha."""
    weight = weight.clone().requires_grad_()
    if isinstance(fn, WeightQuantizer):
        alpha, out = fn.alpha, fn(weight)
    else:
        alpha = torch.tensor(ALPHA, requires_grad=True)
        out = fn(weight, alpha)
    out.backward(grad)
    return out.detach(), weight.grad, alpha.grad


def ours(bits, scheme, rules):
    quantizer = WeightQuantizer(bits, scheme, alpha=ALPHA, rules=rules)
    return quantizer, quantizer.projector.table.levels


def test_some_normalized_weights_lie_outside_alpha():
    """Precondition of the clipped-STE tests: the clipping must bite."""
    weight, _ = weight_and_grad()
    outside = (normalize_weight(weight).abs() > ALPHA).float().mean()
    assert 0.1 < outside < 0.5


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", BITS)
def test_imagenet_gradients_equal_authors_imagenet_code(bits, scheme):
    weight, grad = weight_and_grad(bits)
    quantize, levels = ours(bits, scheme, "imagenet")
    out, d_weight, d_alpha = gradients(quantize, weight, grad)
    ref_out, ref_d_weight, ref_d_alpha = gradients(
        lambda w, a: authors_imagenet_weight(w, a, bits, scheme, levels), weight, grad)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(d_weight, ref_d_weight)
    torch.testing.assert_close(d_alpha, ref_d_alpha)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", BITS)
def test_cifar_gradients_are_unchanged(bits, scheme):
    weight, grad = weight_and_grad(bits)
    quantize, levels = ours(bits, scheme, "cifar")
    out, d_weight, d_alpha = gradients(quantize, weight, grad)
    _, ref_d_weight, ref_d_alpha = gradients(
        lambda w, a: cifar_weight(w, a, bits, scheme, levels), weight, grad)
    # unclipped STE through constant mean/std: exactly the upstream gradient / std
    assert torch.equal(d_weight, grad / weight.std())
    torch.testing.assert_close(d_weight, ref_d_weight)
    torch.testing.assert_close(d_alpha, ref_d_alpha)


@pytest.mark.parametrize("clip_grad", [False, True])
def test_weight_ste_clipping_flag(clip_grad):
    """d out / d (normalized w): 0 outside +-alpha with ``clip_grad`` (ImageNet code, 3+ bits),
    1 everywhere without (CIFAR code; ImageNet 2-bit). Which bit-widths clip under which rules
    is checked against the authors' code above."""
    weight, grad = weight_and_grad()
    normalized = normalize_weight(weight).requires_grad_()
    WeightQuantFn.apply(normalized, torch.tensor(ALPHA), shared_projector("apot", 3),
                        clip_grad).backward(grad)
    outside = normalized.detach().abs() > ALPHA
    assert outside.any() and torch.equal(normalized.grad[~outside], grad[~outside])
    expected = torch.zeros_like(grad) if clip_grad else grad
    assert torch.equal(normalized.grad[outside], expected[outside])


@pytest.mark.parametrize("bits", [2, 4])
def test_imagenet_gradient_flows_through_weight_normalization(bits):
    """The normalized weight ignores a shift and a scale of w, so with mean and std in the graph
    the gradient is orthogonal to the all-ones direction and to w - mean(w); with constants
    (cifar) it is not."""
    weight, grad = weight_and_grad(bits)
    for rules, orthogonal in (("imagenet", True), ("cifar", False)):
        quantize, _ = ours(bits, "apot", rules)
        _, d_weight, _ = gradients(quantize, weight, grad)
        scale = d_weight.norm() * weight.norm()
        along_shift = d_weight.sum().abs() / d_weight.norm() / weight.numel() ** 0.5
        along_scale = (d_weight * (weight - weight.mean())).sum().abs() / scale
        assert (max(along_shift, along_scale) < 1e-5) == orthogonal, rules


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_forward_is_bit_identical_between_rules(bits, scheme):
    weight, _ = weight_and_grad(bits)
    cifar = WeightQuantizer(bits, scheme, alpha=ALPHA, rules="cifar")
    imagenet = WeightQuantizer(bits, scheme, alpha=ALPHA, rules="imagenet")
    default = WeightQuantizer(bits, scheme, alpha=ALPHA)
    leaf = weight.clone().requires_grad_()
    assert torch.equal(imagenet(leaf), cifar(weight))
    assert torch.equal(default(weight), cifar(weight))
    assert torch.equal(normalize_weight(leaf, stats_grad=True), normalize_weight(weight))


def test_quant_conv_forward_is_bit_identical_between_rules():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 6, 6, generator=gen).relu() * 3
    convs = [QuantConv2d(8, 16, 3, padding=1, bits=3, act_alpha=4.0, rules=r)
             for r in QUANTIZER_RULES]
    convs[1].weight = convs[0].weight
    assert torch.equal(convs[0](x), convs[1](x))


def test_activation_alpha_init_follows_rules_and_an_explicit_value_wins():
    assert ACT_ALPHA_INIT_BY_RULES == {"cifar": 8.0, "imagenet": 6.0}
    for rules, act in ACT_ALPHA_INIT_BY_RULES.items():
        for conv in (QuantConv2d(4, 4, 3, rules=rules),
                     QuantConv2d(4, 4, 3, rules=rules, act_alpha=None, wgt_alpha=None)):
            assert conv.act_quantizer.alpha.item() == act
            assert conv.weight_quantizer.alpha.item() == WGT_ALPHA_INIT == 3.0
        assert conv.rules == conv.weight_quantizer.rules == rules
        assert f"rules={rules}" in repr(conv)
        explicit = QuantConv2d(4, 4, 3, rules=rules, act_alpha=8.0, wgt_alpha=2.0)
        assert explicit.act_quantizer.alpha.item() == 8.0
        assert explicit.weight_quantizer.alpha.item() == 2.0


@pytest.mark.parametrize("act_alpha, expected", [(None, 6.0), (8.0, 8.0), (5.0, 5.0)])
def test_build_model_passes_rules_and_alpha_init(act_alpha, expected):
    model = build_model("resnet20", bits=4, rules="imagenet", act_alpha=act_alpha,
                        wgt_alpha=3.0)
    convs = [m for m in model.modules() if isinstance(m, QuantConv2d)]
    assert len(convs) == 20
    assert all(c.rules == "imagenet" for c in convs)
    assert all(c.act_quantizer.alpha.item() == expected for c in convs)
    assert all(c.weight_quantizer.alpha.item() == 3.0 for c in convs)
    default = build_model("resnet20", bits=4, act_alpha=None)
    assert all(m.rules == "cifar" and m.act_quantizer.alpha.item() == 8.0
               for m in default.modules() if isinstance(m, QuantConv2d))


def test_unknown_rules_raise_a_clear_error():
    message = "unknown quantizer rules 'tf'; choose one of cifar, imagenet"
    with pytest.raises(ValueError, match=message):
        WeightQuantizer(4, rules="tf")
    with pytest.raises(ValueError, match=message):
        QuantConv2d(4, 4, 3, rules="tf")
    with pytest.raises(ValueError, match=message):
        build_model("resnet20", bits=4, rules="tf")
    with pytest.raises(ValueError, match=message):  # also where no conv gets quantized
        quantize_model(build_model("resnet20", first_last="float"), bits=32, rules="tf")
