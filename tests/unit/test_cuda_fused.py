"""The fused CUDA kernel of the activation quantizer (Triton) equals the torch operations bit for
bit. On the CPU it runs under Triton's interpreter (TRITON_INTERPRET=1), which executes the same
kernel with NumPy: that checks its logic, not the GPU's code generation, which the tests marked
cuda check where a GPU is present (bench/gpu_check.sh)."""
import os
from unittest import mock

import pytest
import torch
from activations import awkward_inputs
from helpers import torch_path
from hypothesis import given, settings
from hypothesis import strategies as st

from apot.quant import cpu_fused, cuda_fused
from apot.quant.functional import (ActivationQuantFn, Projector, activation_parts,
                                   quantize_activation, shared_projector)
from apot.quant.schemes import magnitude_levels

needs_triton = pytest.mark.skipif(not cuda_fused.available(),
                                  reason="Triton is not installed (it comes with torch's CUDA "
                                         "builds)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def interpreted_forward(x, alpha, table) -> tuple:
    """``cuda_fused.activation_forward`` with the kernel run by Triton's interpreter, on CPU
    tensors. Triton reads the variable when the kernel is built and again when it is
    launched."""
    with mock.patch.dict(os.environ, {"TRITON_INTERPRET": "1"}):
        return cuda_fused.activation_forward(x, alpha, table, kernel=cuda_fused.build_kernel())


def assert_same(ours, reference, x):
    for a, b in zip(ours, reference):
        assert a.stride() == b.stride() == x.stride()
        assert torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0))


@needs_triton
@pytest.mark.parametrize("scheme", ["apot", "pot"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("channels_last", [False, True])
def test_kernel_equals_torch_ops_bit_for_bit(monkeypatch, scheme, bits, channels_last):
    projector = shared_projector(scheme, bits)
    if projector.table.shift is None:
        pytest.skip("no bucket table for this set (torch's bucketize fallback)")
    alpha = torch.tensor(2.7)
    x = awkward_inputs(projector, 2.7, shape=(4, 8, 9, 9))  # 2,592: three programs, one partial
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ours = interpreted_forward(x, alpha, projector.table)
    assert_same(ours, torch_path(monkeypatch, activation_parts, x, alpha, projector), x)


@needs_triton
@settings(max_examples=15, deadline=None)
@given(alpha=st.floats(0.0625, 16.0, width=32), scale=st.floats(0.01, 30.0),
       bits=st.sampled_from([2, 3, 4, 5]), seed=st.integers(0, 2**16))
def test_kernel_equals_torch_for_any_alpha(alpha, scale, bits, seed):
    projector = shared_projector("apot", bits)
    x = torch.randn(3000, generator=torch.Generator().manual_seed(seed)).mul(scale).relu()
    alpha_t = torch.tensor(alpha)
    ours = interpreted_forward(x, alpha_t, projector.table)
    cpu_fused.AVAILABLE = False
    try:
        reference = activation_parts(x, alpha_t, projector)
    finally:
        cpu_fused.AVAILABLE = True
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))


@needs_triton
def test_an_empty_tensor_launches_nothing():
    projector = shared_projector("apot", 4)
    out = interpreted_forward(torch.empty(0, 3), torch.tensor(1.0), projector.table)
    assert [t.shape for t in out] == [torch.Size([0, 3])] * 3


def test_the_kernel_serves_only_cuda_float32_table_projections(monkeypatch):
    apot4 = shared_projector("apot", 4)
    x = torch.zeros(2, 3)
    monkeypatch.setattr(cuda_fused, "ENABLED", True)  # APOT_CUDA_FUSED=1
    assert not cuda_fused.usable(x, apot4)  # the CPU never reaches Triton
    if not torch.cuda.is_available():
        return
    x = x.cuda()
    assert cuda_fused.usable(x, apot4) == cuda_fused.available()
    assert not cuda_fused.usable(x.double(), apot4)
    assert not cuda_fused.usable(x, shared_projector("uniform", 4))  # the rounding formula
    assert not cuda_fused.usable(x, Projector("apot", magnitude_levels("apot", 4), 4,
                                              bruteforce=True))
    assert not cuda_fused.usable(x, shared_projector("pot", 8))  # no bucket table
    monkeypatch.setattr(cuda_fused, "ENABLED", False)  # the default: APOT_CUDA_FUSED unset
    assert not cuda_fused.usable(x, apot4)


@needs_cuda
@needs_triton
@pytest.mark.parametrize("scheme", ["apot", "pot"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5])
@pytest.mark.parametrize("channels_last", [False, True])
def test_compiled_kernel_equals_torch_ops_on_the_gpu(monkeypatch, scheme, bits, channels_last):
    monkeypatch.setattr(cuda_fused, "ENABLED", True)
    projector = shared_projector(scheme, bits)
    alpha = torch.tensor(2.7, device="cuda")
    x = awkward_inputs(projector, 2.7, shape=(16, 32, 17, 17)).cuda()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert cuda_fused.usable(x, projector)
    ours = activation_parts(x, alpha, projector)
    assert_same(ours, torch_path(monkeypatch, activation_parts, x, alpha, projector), x)
    assert torch.equal(quantize_activation(x, alpha, projector).nan_to_num(-7.0),
                       ours[0].nan_to_num(-7.0))


@needs_cuda
@needs_triton
def test_compiled_kernel_gradients_equal_torch_path_on_the_gpu(monkeypatch):
    monkeypatch.setattr(cuda_fused, "ENABLED", True)
    projector = shared_projector("apot", 4)
    gen = torch.Generator().manual_seed(1)
    x0 = (torch.randn(16, 16, 8, 8, generator=gen) * 5).relu().cuda()
    grad = torch.randn(x0.shape, generator=gen).cuda()

    def run():
        x = x0.clone().requires_grad_()
        alpha = torch.tensor(3.0, device="cuda", requires_grad=True)
        ActivationQuantFn.apply(x, alpha, projector).backward(grad)
        return x.grad, alpha.grad

    ours, reference = run(), torch_path(monkeypatch, run)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))
