"""Tensors as their memory: element-wise kernels run over a dense tensor's storage in order and
give back outputs in the input's memory format (standard or channels-last)."""
from __future__ import annotations

import torch


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself if its elements fill its memory densely (contiguous in the standard or the
    channels-last format), else a contiguous copy. Element-wise work then runs in storage order,
    and outputs keep the input's memory format (a channels-last network stays channels-last)."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def storage_flat(x: torch.Tensor) -> torch.Tensor:
    """1-D view of a dense tensor's elements in memory order."""
    return x.as_strided((x.numel(),), (1,))


def shaped_like(flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View a fresh 1-D tensor with the shape and memory layout of dense tensor ``x``."""
    return flat.as_strided(x.size(), x.stride(), 0)
