"""The fused CPU loop of the activation quantizer equals the torch operations bit for bit."""
import pytest
import torch
from activations import awkward_inputs
from helpers import torch_path
from hypothesis import given, settings
from hypothesis import strategies as st

from apot.quant import cpu_fused
from apot.quant.functional import (ActivationQuantFn, Projector, activation_parts,
                                   quantize_activation, shared_projector)
from apot.quant.schemes import magnitude_levels


@pytest.mark.parametrize("scheme", ["apot", "pot"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_forward_equals_torch_ops_bit_for_bit(monkeypatch, scheme, bits, channels_last):
    projector = shared_projector(scheme, bits)
    if not cpu_fused.usable(torch.zeros(1), projector):
        pytest.skip("no bucket table for this set (torch's bucketize fallback)")
    alpha = torch.tensor(2.7)
    x = awkward_inputs(projector, 2.7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    fused = activation_parts(x, alpha, projector)
    reference = torch_path(monkeypatch, activation_parts, x, alpha, projector)
    for ours, ref in zip(fused, reference):
        assert ours.stride() == ref.stride() == x.stride()
        assert torch.equal(ours.nan_to_num(-7.0), ref.nan_to_num(-7.0))
    assert torch.equal(quantize_activation(x, alpha, projector).nan_to_num(-7.0),
                       fused[0].nan_to_num(-7.0))


@settings(max_examples=40, deadline=None)
@given(alpha=st.floats(0.0625, 16.0, width=32), scale=st.floats(0.01, 30.0),
       bits=st.sampled_from([2, 3, 4, 5]), seed=st.integers(0, 2**16))
def test_fused_equals_torch_for_any_alpha(alpha, scale, bits, seed):
    projector = shared_projector("apot", bits)
    x = torch.randn(3000, generator=torch.Generator().manual_seed(seed)).mul(scale).relu()
    alpha_t = torch.tensor(alpha)
    fused = activation_parts(x, alpha_t, projector)
    cpu_fused.AVAILABLE = False
    try:
        reference = activation_parts(x, alpha_t, projector)
    finally:
        cpu_fused.AVAILABLE = True
    for ours, ref in zip(fused, reference):
        assert torch.equal(ours, ref)


def test_fused_gradients_equal_torch_path(monkeypatch):
    projector = shared_projector("apot", 4)
    x0 = (torch.randn(16, 16, 8, 8, generator=torch.Generator().manual_seed(1)) * 5).relu()
    grad = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))

    def run():
        x = x0.clone().requires_grad_()
        alpha = torch.tensor(3.0, requires_grad=True)
        ActivationQuantFn.apply(x, alpha, projector).backward(grad)
        return x.grad, alpha.grad

    fused, reference = run(), torch_path(monkeypatch, run)
    assert all(torch.equal(a, b) for a, b in zip(fused, reference))


def test_fused_loop_is_used_only_where_it_applies():
    apot4 = shared_projector("apot", 4)
    x = torch.zeros(2, 3)
    assert cpu_fused.usable(x, apot4)
    assert not cpu_fused.usable(x.double(), apot4)
    assert not cpu_fused.usable(x, shared_projector("uniform", 4))  # the rounding formula
    assert not cpu_fused.usable(x, Projector("apot", magnitude_levels("apot", 4), 4,
                                              bruteforce=True))
    assert not cpu_fused.usable(x, shared_projector("pot", 8))  # no bucket table
    if torch.cuda.is_available():
        assert not cpu_fused.usable(x.cuda(), apot4)


def test_numba_is_installed():
    # numba is a declared dependency: without it training silently runs the slow path.
    assert cpu_fused.AVAILABLE, "numba is missing: pip install numba (see pyproject.toml)"
