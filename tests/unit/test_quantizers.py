"""Quantizer forward values and gradients: hand-computed cases and a reference formulation."""
import pytest
import torch
import torch.nn.functional as F

from apot.quant.functional import (ActivationQuantFn, Projector, WeightQuantFn, eight_bit_weight,
                                   normalize_weight, project_bruteforce)
from apot.quant.modules import ActivationQuantizer, QuantConv2d, WeightQuantizer
from apot.quant.schemes import magnitude_levels


def projector(bits, scheme="apot"):
    return Projector(scheme, magnitude_levels(scheme, bits), bits)


def test_activation_forward_and_gradients_by_hand():
    # 2-bit APoT activation levels {0, 1/4, 1/2, 1}; alpha = 2.
    x = torch.tensor([-1.0, 0.3, 0.6, 1.1, 3.0], requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    out = ActivationQuantFn.apply(x, alpha, projector(2))
    assert out.tolist() == [0.0, 0.5, 0.5, 1.0, 2.0]
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    # x: straight through inside the clipping range, zero above alpha.
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 0.0]
    # alpha: q(x/a) - x/a inside = [0.5, 0.1, -0.05, -0.05]; 1 outside.
    assert alpha.grad.item() == pytest.approx(0.5 * 1 + 0.1 * 2 - 0.05 * 3 - 0.05 * 4 + 5)


def test_weight_forward_and_gradients_by_hand():
    # 3-bit signed weights: sign + 2 magnitude bits {0, 1/4, 1/2, 1}; alpha = 2.
    w = torch.tensor([-3.0, -0.9, 0.2, 0.5, 2.5], requires_grad=True)
    alpha = torch.tensor(2.0, requires_grad=True)
    out = WeightQuantFn.apply(w, alpha, projector(2))
    assert out.tolist() == [-2.0, -1.0, 0.0, 0.5, 2.0]
    g = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    out.backward(g)
    assert w.grad.tolist() == g.tolist()  # the authors' CIFAR code never clips weight grads
    # alpha: sign(w) outside = -1, +1; inside q - w/a = -0.05, -0.1, 0.
    assert alpha.grad.item() == pytest.approx(-1 * 1 - 0.05 * 2 - 0.1 * 3 + 0 * 4 + 1 * 5)


def test_two_bit_weights_are_ternary_with_threshold_half_alpha():
    w = torch.tensor([-0.76, -0.74, 0.0, 0.75, 0.76, 3.0])  # 0.75 = alpha / 2: a tie, to 0
    out = WeightQuantFn.apply(w, torch.tensor(1.5), projector(1))
    assert out.tolist() == [-1.5, 0.0, 0.0, 0.0, 1.5, 1.5]


def reference_activation(x, alpha, levels):
    """The authors' formulation: divide, clamp at 1, brute-force argmin, rescale."""
    c = (x / alpha).clamp(max=1)
    return project_bruteforce(c, levels) * alpha


def reference_weight(w, alpha, levels):
    normalized = (w - w.detach().mean()) / w.detach().std()
    c = (normalized / alpha).clamp(-1, 1)
    return project_bruteforce(c.abs(), levels).mul(c.sign()) * alpha


@pytest.mark.parametrize("scheme", ["apot", "pot"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_activation_quantizer_equals_reference_bit_for_bit(scheme, bits):
    quantizer = ActivationQuantizer(bits, scheme, alpha=1.7)
    x = torch.randn(8, 16, 9, 9, generator=torch.Generator().manual_seed(bits)).relu() * 1.5
    levels = quantizer.projector.table.levels
    assert torch.equal(quantizer(x), reference_activation(x, quantizer.alpha.detach(), levels))


@pytest.mark.parametrize("scheme", ["apot", "pot"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_weight_quantizer_equals_reference_bit_for_bit(scheme, bits):
    quantizer = WeightQuantizer(bits, scheme, alpha=2.2)
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(bits)) * 0.1
    levels = quantizer.projector.table.levels
    assert torch.equal(quantizer(w), reference_weight(w, quantizer.alpha.detach(), levels))


def test_activation_alpha_gradient_equals_reference_formula():
    quantizer = ActivationQuantizer(4, alpha=2.0)
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 8, 16, 16, generator=gen) * 2).requires_grad_()
    g = torch.randn(x.shape, generator=gen)
    quantizer(x).backward(g)
    scaled = x.detach() / 2.0
    q = project_bruteforce(scaled.clamp(max=1), quantizer.projector.table.levels)
    expected = (g * torch.where(scaled > 1, torch.ones_like(q), q - scaled)).sum()
    assert quantizer.alpha.grad.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-4)
    assert torch.equal(x.grad, g * (scaled <= 1))


def test_weight_normalization_values_and_gradient():
    w = torch.tensor([1.0, 2.0, 4.0, 9.0], requires_grad=True)
    normalized = normalize_weight(w)
    mean, std = 4.0, torch.tensor([1.0, 2.0, 4.0, 9.0]).std().item()  # unbiased std
    assert normalized.tolist() == pytest.approx([(v - mean) / std for v in [1, 2, 4, 9]])
    normalized.sum().backward()
    # mean and std are constants for autograd (the authors' CIFAR code uses .data)
    assert w.grad.tolist() == pytest.approx([1 / std] * 4)


def test_eight_bit_first_last_layer_rule():
    w = torch.tensor([0.5, -0.7, 0.2, 1.0, -2.0], requires_grad=True)
    q = eight_bit_weight(w)
    # round(w / max(w) * 127) / 127 * max(w); max(w) = 1; half to even; no negative clipping
    assert q.tolist() == pytest.approx([64 / 127, -89 / 127, 25 / 127, 1.0, -2.0])
    q.sum().backward()
    assert w.grad.tolist() == [1.0] * 5  # straight-through


@pytest.mark.parametrize("scheme", ["apot", "pot", "uniform"])
def test_scheme_switch_outputs_lie_on_that_schemes_levels(scheme):
    quantizer = ActivationQuantizer(3, scheme, alpha=1.0)
    x = torch.rand(5000, generator=torch.Generator().manual_seed(3)) * 1.3
    levels = torch.tensor([float(v) for v in magnitude_levels(scheme, 3)])
    out = quantizer(x)
    assert torch.isin(out, levels).all()
    assert set(out.unique().tolist()) == set(levels.tolist())


def test_quant_conv_equals_conv_of_quantized_operands():
    gen = torch.Generator().manual_seed(0)
    conv = QuantConv2d(4, 6, 3, padding=1, bits=4)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    x = torch.randn(2, 4, 8, 8, generator=gen).relu() * 4
    expected = F.conv2d(conv.act_quantizer(x), conv.weight_quantizer(conv.weight), padding=1)
    assert torch.equal(conv(x), expected)


def test_quantizers_reject_bad_settings():
    with pytest.raises(ValueError, match="bits"):
        ActivationQuantizer(9)
    with pytest.raises(ValueError, match="at least 2 bits"):
        WeightQuantizer(1)
    with pytest.raises(ValueError, match="unknown scheme"):
        WeightQuantizer(4, "lloyd")


def test_evaluation_path_equals_training_path():
    quantizer = ActivationQuantizer(4, alpha=2.5)
    x = torch.randn(4, 8, 8, 8, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        evaluated = quantizer(x)
    trained = quantizer(x.clone().requires_grad_())
    assert trained.grad_fn is not None
    assert torch.equal(evaluated, trained.detach())
