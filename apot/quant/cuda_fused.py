"""The activation quantizer's forward pass as one Triton kernel on CUDA, bit-identical to torch.

On CUDA, the torch version of ``ActivationQuantFn.forward`` launches about eleven kernels per
quantized layer (divide, compare, clamp, shift, two table gathers, ...), and a small network
such as ResNet-20 at batch 128 is bound by those launches, not by the GPU's arithmetic. This
kernel does the same float32 operations as ``cpu_fused`` and the torch path, in the same order,
element by element, in one launch: an IEEE division (``div_rn``, as torch's ``x / alpha``), the
clamp, the bucket from the bit pattern, two table gathers, one multiply and one subtraction. No
two of them can be contracted into a fused multiply-add, so the results are bit for bit those of
the torch path. alpha is read from device memory, so that a launch never waits for the host.

The torch path stays the reference and serves every other case (CPU, other dtypes, the uniform
formula, the bucketize fallback). Triton is imported only when a CUDA tensor comes through, so
the CPU path never loads it and the package works without it.

The kernel is off unless ``APOT_CUDA_FUSED=1`` is set: it was written, and tested under Triton's
interpreter, without a GPU to compile it on, so CUDA training keeps the torch path until the
GPU check (``bench/gpu_check.sh``, which sets it) has passed on a real GPU.

Tests run this kernel on the CPU too, through Triton's interpreter (``TRITON_INTERPRET=1``,
``build_kernel``), against the torch path; on a GPU, ``tests/unit/test_cuda_fused.py`` compares
the compiled kernel too.
"""
from __future__ import annotations

import importlib.util
import os
from functools import lru_cache

import torch

from apot.quant.memory import storage_flat

BLOCK = 1024  # elements per program: a multiple of the warp size, enough work per launch

ENABLED = os.environ.get("APOT_CUDA_FUSED", "0") == "1"  # see the module's docstring


@lru_cache(maxsize=None)
def available() -> bool:
    """Whether Triton can be imported (it comes with torch's CUDA builds)."""
    return importlib.util.find_spec("triton") is not None


def usable(x: torch.Tensor, projector) -> bool:
    """Whether the fused kernel can quantize ``x`` with ``projector`` (else: the torch path)."""
    return (x.is_cuda and ENABLED and x.dtype == torch.float32 and projector.fusable
            and available())


def build_kernel():
    """The Triton kernel, compiled for the GPU; or run by Triton's interpreter on any tensor,
    when ``TRITON_INTERPRET=1`` is set both here and when it is launched (tests)."""
    import triton
    import triton.language as tl

    @triton.jit
    def activation_forward_kernel(x_ptr, alpha_ptr, bucket_threshold_ptr, pair_level_ptr,
                                  out_ptr, inside_ptr, d_alpha_ptr, n, top, shift,
                                  BLOCK: tl.constexpr):
        # The steps of ActivationQuantFn.forward and LevelTable.project, per element.
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        alpha = tl.load(alpha_ptr)
        scaled = tl.div_rn(x, alpha)
        is_inside = scaled <= 1.0
        clipped = tl.where(scaled > 1.0, 1.0, scaled)  # NaN stays NaN, as with clamp(max=1)
        bucket = clipped.to(tl.int32, bitcast=True) >> shift
        bucket = tl.minimum(tl.maximum(bucket, 0), top)
        threshold = tl.load(bucket_threshold_ptr + bucket, mask=mask, other=0.0)
        slot = 2 * bucket + (clipped > threshold).to(tl.int32)
        level = tl.load(pair_level_ptr + slot, mask=mask, other=0.0)
        tl.store(out_ptr + offsets, level * alpha, mask=mask)
        tl.store(inside_ptr + offsets, is_inside.to(tl.float32), mask=mask)
        tl.store(d_alpha_ptr + offsets, tl.where(is_inside, level - clipped, 1.0), mask=mask)

    return activation_forward_kernel


compiled_kernel = lru_cache(maxsize=None)(build_kernel)


def activation_forward(x: torch.Tensor, alpha: torch.Tensor, table, kernel=None) -> tuple:
    """(output, inside mask, d output / d alpha), each shaped and laid out like ``x``.

    ``x``: dense float32 tensor (contiguous or channels-last); ``alpha``: scalar float32 tensor
    on the same device; ``table``: the projector's ``LevelTable`` (with buckets); ``kernel``:
    the kernel to launch (default: the compiled one; tests pass one ``build_kernel`` made under
    Triton's interpreter).
    """
    kernel = kernel or compiled_kernel()
    out, inside, d_alpha = (torch.empty_like(x) for _ in range(3))
    _, _, bucket_threshold, pair_level, _ = table.tensors(x.device)
    n = x.numel()
    if n:
        flat = [storage_flat(t) for t in (x, out, inside, d_alpha)]
        grid = ((n + BLOCK - 1) // BLOCK,)
        kernel[grid](flat[0], alpha.detach().reshape(1), bucket_threshold, pair_level, *flat[1:],
                     n, bucket_threshold.numel() - 1, table.shift, BLOCK=BLOCK)
    return out, inside, d_alpha
