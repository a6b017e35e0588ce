"""Activation inputs that probe a quantizer's edges, shared by the fused-kernel tests."""
import numpy as np
import torch

from apot.quant.functional import Projector


def awkward_inputs(projector: Projector, alpha: float, shape=(4, 8, 6, 6)) -> torch.Tensor:
    """Random activations plus every decision threshold (times alpha) and its neighbours,
    NaN, infinities, negatives, signed zeros and subnormals."""
    gen = torch.Generator().manual_seed(0)
    t = projector.table.thresholds * alpha
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -1.0, -0.0, 0.0, alpha,
                            alpha * 2, 1e-40, -1e-40, 3e38])
    edges = torch.cat([t, torch.nextafter(t, torch.tensor(np.inf)),
                       torch.nextafter(t, torch.tensor(-np.inf)), special])
    x = (torch.randn(shape, generator=gen) * alpha).relu()
    flat = x.view(-1)
    flat[:edges.numel()] = edges
    return x
