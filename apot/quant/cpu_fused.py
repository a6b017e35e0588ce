"""The activation quantizer's forward pass as one fused CPU loop (numba), bit-identical to torch.

On the CPU, the torch version of ``ActivationQuantFn.forward`` makes about eleven passes over an
activation tensor (divide, compare, clamp, shift, two serial table gathers, ...), and in a
4-bit ResNet-20 training step those passes cost more than half as much as the convolutions.
This loop does the same float32 operations, in the same order, element by element, in one
parallel pass: the results are bit for bit those of the torch path (tested), only faster.
The torch path stays the reference and serves every other case (CUDA, other dtypes, the
uniform formula, the bucketize fallback), and the whole package works without numba.
"""
from __future__ import annotations

import numpy as np
import torch

try:
    import numba
except ImportError:  # the torch path then serves the CPU too
    numba = None

AVAILABLE = numba is not None


def usable(x: torch.Tensor, projector) -> bool:
    """Whether the fused loop can quantize ``x`` with ``projector`` (else: the torch path)."""
    return (AVAILABLE and x.device.type == "cpu" and x.dtype == torch.float32
            and projector.fusable)


if AVAILABLE:
    @numba.njit(cache=True)
    def _float_bits(value):
        """Bit pattern of a float32 as int32 (a separate function: numba's parallel loops
        cannot take ``.view`` of a scalar)."""
        return np.float32(value).view(np.int32)

    @numba.njit(parallel=True, cache=True)
    def _activation_forward(x, alpha, shift, bucket_threshold, pair_level, out, inside, d_alpha):
        """For each element: the steps of ``ActivationQuantFn.forward`` and ``LevelTable``.

        x, out, inside, d_alpha: 1-D float32 arrays of one length; alpha: float32 scalar.
        """
        one = np.float32(1.0)
        top = bucket_threshold.size - 1
        for i in numba.prange(x.size):
            scaled = x[i] / alpha
            is_inside = scaled <= one
            clipped = one if scaled > one else scaled  # NaN stays NaN, as with clamp(max=1)
            bucket = _float_bits(clipped) >> shift
            bucket = 0 if bucket < 0 else (top if bucket > top else bucket)
            slot = 2 * bucket + (1 if clipped > bucket_threshold[bucket] else 0)
            level = pair_level[slot]
            out[i] = level * alpha
            inside[i] = one if is_inside else np.float32(0.0)
            d_alpha[i] = level - clipped if is_inside else one


def activation_forward(x: torch.Tensor, alpha: torch.Tensor, table) -> tuple:
    """(output, inside mask, d output / d alpha), each shaped and laid out like ``x``.

    ``x``: dense float32 CPU tensor (contiguous or channels-last); ``alpha``: scalar tensor;
    ``table``: the projector's ``LevelTable`` (with buckets).
    """
    out, inside, d_alpha = (torch.empty_like(x) for _ in range(3))
    _, _, bucket_threshold, pair_level, _ = table.tensors(x.device)
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
    _activation_forward(_flat_array(x), np.float32(alpha.item()), table.shift,
                        bucket_threshold.numpy(), pair_level.numpy(), _flat_array(out),
                        _flat_array(inside), _flat_array(d_alpha))
    return out, inside, d_alpha


def _flat_array(x: torch.Tensor) -> np.ndarray:
    """numpy view of a dense tensor's storage in memory order (shares memory)."""
    return x.detach().as_strided((x.numel(),), (1,)).numpy()
