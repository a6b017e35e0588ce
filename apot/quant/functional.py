"""Autograd operations of APoT quantization (torch, no modules, no state).

The projection onto a level set is the hot path: it runs on every activation of every
quantized layer, forward, in training. ``LevelTable`` makes it an exact, cheap table look-up:

1. For each pair of neighbouring float32 levels (a, b) it finds, once, the decision threshold
   t: the largest float32 x for which a brute-force argmin over |x - level| (computed in
   float32, ties to the lower level) still picks a. Since fl(x - a) and fl(b - x) are monotone
   in x, "x > t" reproduces that argmin exactly, round-off included.
2. Non-negative float32 numbers sort like their bit patterns, so ``bits >> shift`` cuts [0, 1]
   into buckets that are fine near zero and coarse near one, much as the levels are. The shift
   is chosen so that no bucket holds more than one threshold, so one comparison with the
   bucket's threshold decides between the two levels a bucket can map to.

The result equals the brute-force argmin bit for bit (tested property), with two table
gathers and no N x L broadcast. Sets whose thresholds are too close for a small table (only 8-bit PoT,
whose levels reach 2^-254) fall back to ``torch.bucketize`` on the same thresholds.

Levels are the correctly rounded float32 values of the exact fractions; levels that float32
cannot tell apart merge (8-bit PoT keeps 151 of its 256: 2^-150 .. 2^-254 round to 0). NaN and
+inf inputs project to the top level (the authors' argmin gives 0); a diverging run shows up in
the loss and the alpha gradients, not here.
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from apot.quant import cpu_fused, cuda_fused
from apot.quant.memory import dense, shaped_like, storage_flat
from apot.quant.schemes import get_scheme, magnitude_levels

_MAX_BUCKETS = 1 << 18


_ONE_BITS = int(np.float32(1.0).view(np.int32))


def _decision_threshold(low: np.float32, high: np.float32) -> np.float32:
    """Largest float32 x in [low, high) that the float32 argmin still rounds to ``low``."""
    def picks_high(x: np.float32) -> bool:
        return bool(np.float32(x - low) > np.float32(high - x))

    x = np.float32((np.float64(low) + np.float64(high)) / 2)
    while picks_high(x):
        x = np.nextafter(x, np.float32(-np.inf))
    while not picks_high(np.nextafter(x, np.float32(np.inf))):
        x = np.nextafter(x, np.float32(np.inf))
    return x


def _bucket_shift(threshold_bits: np.ndarray) -> int | None:
    """Largest shift giving at most one threshold per bucket and a table of bounded size."""
    for shift in range(23, -1, -1):
        if (_ONE_BITS >> shift) + 1 > _MAX_BUCKETS:
            return None
        buckets = threshold_bits >> shift
        if np.all(np.diff(buckets) > 0):
            return shift
    return None


class LevelTable:
    """Non-negative levels (sorted, float32) with an exact nearest-level projection.

    Args:
        levels: sorted non-negative levels in [0, 1] (exact fractions or floats); the largest
            must be 1 so that every input is clamped into the table's range first.
    """

    def __init__(self, levels: Sequence[Fraction | float]):
        values = np.unique(np.asarray([float(v) for v in levels], dtype=np.float32))
        if values.size == 0 or values[0] < 0 or values[-1] != np.float32(1.0):
            raise ValueError("LevelTable needs sorted non-negative levels whose maximum is 1")
        self.levels = torch.from_numpy(values.copy())
        thresholds = np.array([_decision_threshold(a, b) for a, b in zip(values[:-1], values[1:])],
                              dtype=np.float32)
        self.thresholds = torch.from_numpy(thresholds)
        self.shift = _bucket_shift(thresholds.view(np.int32).astype(np.int64))
        self._bucket_threshold = self._pair_level = self._pair_index = None
        if self.shift is not None:
            self._build_buckets(values, thresholds)
        self._on_device: dict[torch.device, tuple] = {}

    def _build_buckets(self, values: np.ndarray, thresholds: np.ndarray) -> None:
        """Per bucket b: the threshold that may cut it, and the levels on either side of it.

        Level index of a bucket's first float = number of thresholds strictly below it; the
        only threshold that can lie inside the bucket is the next one (``_bucket_shift``).
        Entry 2b of the pair tables is that lower level, 2b+1 the one above it.
        """
        bits = thresholds.view(np.int32).astype(np.int64)
        n_buckets = (_ONE_BITS >> self.shift) + 1
        starts = np.arange(n_buckets, dtype=np.int64) << self.shift
        low = np.searchsorted(bits, starts, side="left")
        high = np.minimum(low + 1, values.size - 1)
        next_threshold = np.append(thresholds, np.float32(np.inf))[low]
        # int32 and float32 throughout: these tables are read once per input element.
        self._bucket_threshold = torch.from_numpy(next_threshold.astype(np.float32))
        pairs = np.stack([low, high], axis=1).reshape(-1)
        self._pair_index = torch.from_numpy(pairs.astype(np.int32))
        self._pair_level = torch.from_numpy(values[pairs].astype(np.float32))

    def __len__(self) -> int:
        return self.levels.numel()

    def tensors(self, device: torch.device) -> tuple:
        """The table's tensors on ``device``, copied there once."""
        if device not in self._on_device:
            tensors = (self.levels, self.thresholds, self._bucket_threshold, self._pair_level,
                       self._pair_index)
            self._on_device[device] = tuple(None if t is None else t.to(device) for t in tensors)
        return self._on_device[device]

    @staticmethod
    def _check_input(x: torch.Tensor) -> None:
        if x.dtype != torch.float32:
            raise TypeError(f"LevelTable works on float32 tensors, got {x.dtype} "
                            f"(Projector converts other dtypes)")

    def _pair_slot(self, flat: torch.Tensor, bucket_threshold: torch.Tensor):
        """Slot 2 * bucket + (x above the bucket's threshold) of flat float32 ``flat`` (<= 1).

        Returns the slots (int32) and a spare float32 buffer of the same length, so that the
        caller can gather into it: on CPU a fresh large tensor costs page faults, and this
        path runs on every activation.
        """
        bucket = (flat.view(torch.int32) >> self.shift).clamp_(0, bucket_threshold.numel() - 1)
        spare = bucket_threshold.index_select(0, bucket)
        above = flat > spare
        return torch.add(above, bucket, alpha=2, out=bucket), spare

    def index(self, x: torch.Tensor) -> torch.Tensor:
        """Index (integer tensor shaped like float32 ``x``) of each element's nearest level.

        Elements below 0 map to level 0; ``x`` must not exceed 1 (clamp first).
        """
        self._check_input(x)
        levels, thresholds, bucket_threshold, _, pair_index = self.tensors(x.device)
        if bucket_threshold is None:
            return torch.bucketize(x, thresholds)
        x = dense(x)
        slot, _ = self._pair_slot(storage_flat(x), bucket_threshold)
        return shaped_like(pair_index.index_select(0, slot), x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest level to each element of float32 ``x`` (x <= 1), ties to the lower level."""
        self._check_input(x)
        levels, thresholds, bucket_threshold, pair_level, _ = self.tensors(x.device)
        x = dense(x)
        if bucket_threshold is None:
            slot = torch.bucketize(storage_flat(x), thresholds)
            return shaped_like(levels.index_select(0, slot), x)
        slot, spare = self._pair_slot(storage_flat(x), bucket_threshold)
        return shaped_like(torch.index_select(pair_level, 0, slot, out=spare), x)


def project_bruteforce(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Reference projection: argmin over |x - level| for every level (N x L memory, slow).

    This is how the authors' code projects; kept for tests and the benchmark. ``levels`` must
    be sorted ascending so that ties go to the lower level (argmin returns the first minimum).
    """
    flat = x.reshape(-1)
    idx = (flat.unsqueeze(0) - levels.unsqueeze(1)).abs().argmin(dim=0)
    return levels[idx].view(x.shape)  # (in standard layout: a reference, not a fast path)


def uniform_round(x: torch.Tensor, magnitude_bits: int) -> torch.Tensor:
    """Uniform projection of x <= 1: round(x * (2^B-1)) / (2^B-1), half to even, negatives to 0.

    The authors' uniform quantizer is this formula (not an argmin), so exact ties at grid
    midpoints round half to even like ``torch.round``. Inputs below 0 go to level 0, as with the
    table projection (the authors' code assumes post-ReLU inputs and does not clamp them).
    """
    steps = float(2**magnitude_bits - 1)
    return x.clamp(min=0).mul_(steps).round_().div_(steps)


class Projector:
    """Maps clipped, normalized magnitudes in [0, 1] to levels: table or uniform formula."""

    def __init__(self, scheme: str, magnitudes: Sequence[Fraction], magnitude_bits: int,
                 bruteforce: bool = False):
        self.scheme = scheme
        self.rounds = get_scheme(scheme).fixed_point  # evenly spaced: rounding, no table
        self.magnitude_bits = magnitude_bits
        self.bruteforce = bruteforce
        self.table = LevelTable(magnitudes)

    @property
    def fusable(self) -> bool:
        """Whether a fused kernel (``cpu_fused``, ``cuda_fused``) can project for it: a table
        with buckets, not the rounding formula, the brute-force reference or bucketize."""
        return not self.rounds and not self.bruteforce and self.table.shift is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:  # the table works on float32 bit patterns
            return self(x.float()).to(x.dtype)
        if self.rounds:
            return uniform_round(x, self.magnitude_bits)
        if self.bruteforce:
            return project_bruteforce(x, self.table.levels.to(x.device))
        return self.table.project(x)


def quantize_activation(x: torch.Tensor, alpha: torch.Tensor, project: Projector) -> torch.Tensor:
    """Value of the activation quantizer without autograd bookkeeping (evaluation)."""
    if cpu_fused.usable(x, project):
        return cpu_fused.activation_forward(dense(x), alpha, project.table)[0]
    if cuda_fused.usable(x, project):
        return cuda_fused.activation_forward(dense(x), alpha, project.table)[0]
    return project((x / alpha).clamp_(max=1)).mul_(alpha)


def activation_parts(x: torch.Tensor, alpha: torch.Tensor, project: Projector) -> tuple:
    """(alpha * Pi(clip(x / alpha, max=1)), inside mask, d output / d alpha), all like ``x``.

    inside: 1.0 where x / alpha <= 1, else 0.0 (NaN included); d output / d alpha:
    Pi(x/alpha) - x/alpha inside, 1 elsewhere. On the CPU one fused loop computes all three
    (``cpu_fused``), on CUDA one fused kernel (``cuda_fused``); these torch operations are
    their reference, bit for bit.
    """
    x = dense(x)  # element-wise ops keep x's memory format
    if cpu_fused.usable(x, project):
        return cpu_fused.activation_forward(x, alpha, project.table)
    if cuda_fused.usable(x, project):
        return cuda_fused.activation_forward(x, alpha, project.table)
    # Buffers are reused in place where the math allows: every fresh activation-sized tensor
    # costs memory traffic, and this runs on every quantized layer.
    scaled = x / alpha
    inside = torch.le(scaled, 1, out=torch.empty_like(scaled))
    clipped = scaled.clamp_(max=1)
    q = project(clipped)
    d_alpha = torch.sub(q, clipped, out=clipped).masked_fill_(inside == 0, 1.0)
    return q.mul_(alpha), inside, d_alpha


@lru_cache(maxsize=None)
def shared_projector(scheme: str, magnitude_bits: int, k: int = 2) -> Projector:
    """One projector per (scheme, B, k): the tables are built once and shared by all layers."""
    return Projector(scheme, magnitude_levels(scheme, magnitude_bits, k), magnitude_bits)


class ActivationQuantFn(torch.autograd.Function):
    """RCF activation quantizer: alpha * Pi(clip(x / alpha, max=1)).

    Gradients as the authors' CIFAR code defines them:
      d out / d x     = 1 where x <= alpha, 0 where x > alpha (straight-through inside);
      d out / d alpha = 1 where x > alpha, Pi(x/alpha) - x/alpha elsewhere.
    Shapes: x any shape, float32; alpha a scalar tensor. Returns a tensor shaped like x.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, project: Projector) -> torch.Tensor:
        out, inside, d_alpha = activation_parts(x, alpha, project)
        ctx.save_for_backward(inside, d_alpha)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        inside, d_alpha = ctx.saved_tensors
        grad_out = dense(grad_out)
        grad_x = grad_out * inside
        if grad_out.stride() == d_alpha.stride():  # same memory order: a dot product in place
            grad_alpha = torch.dot(storage_flat(grad_out), storage_flat(d_alpha))
        else:
            grad_alpha = (grad_out * d_alpha).sum()
        return grad_x, grad_alpha.reshape(()), None


class WeightQuantFn(torch.autograd.Function):
    """RCF weight quantizer on normalized weights: alpha * sign(c) * Pi(|c|), c = clip(w/alpha).

    d out / d alpha = sign(w) where |w| > alpha, Pi(w/alpha) - w/alpha elsewhere (Pi here is
    the signed projection), in both of the authors' code trees.
    d out / d w = 1 everywhere by default (the authors' CIFAR code, and their ImageNet code's
    2-bit "calibrated gradient"); with ``clip_grad`` it is 0 where |w| > alpha (their ImageNet
    code at 3+ bits, whose clamp sits before the straight-through estimator).
    Weight tensors are small, so clarity wins over speed.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor, alpha: torch.Tensor, project: Projector,
                clip_grad: bool = False) -> torch.Tensor:
        scaled = w / alpha
        clipped = scaled.clamp(-1, 1)
        q = project(clipped.abs()).mul_(clipped.sign())
        ctx.save_for_backward(scaled, q)
        ctx.clip_grad = clip_grad
        return q * alpha

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        scaled, q = ctx.saved_tensors
        outside = scaled.abs() > 1
        d_alpha = torch.where(outside, scaled.sign(), q - scaled)
        grad_w = grad_out.masked_fill(outside, 0.0) if ctx.clip_grad else grad_out.clone()
        return grad_w, (grad_out * d_alpha).sum().reshape(()), None, None


def normalize_weight(w: torch.Tensor, stats_grad: bool = False) -> torch.Tensor:
    """Per-tensor weight normalization (w - mean) / std, std unbiased, no epsilon.

    By default mean and std are taken from ``w.detach()`` (constants for autograd), as in the
    authors' CIFAR code, so d out / d w = 1 / std. ``stats_grad=True`` keeps them in the graph,
    as the authors' ImageNet code (``weight.mean()``, ``weight.std()``) does; the value is the
    same bit for bit, only the gradient differs.
    """
    data = w if stats_grad else w.detach()
    return (w - data.mean()) / data.std()


def eight_bit_weight(w: torch.Tensor) -> torch.Tensor:
    """The authors' first/last-layer weight quantizer with a straight-through gradient.

    round(w / max(w) * 127) / 127 * max(w): note max(w), not max|w|, and no clipping of the
    negative side (values below -max(w) keep more than 8 bits), exactly as their code.
    """
    top = w.detach().max()
    q = w.detach().div(top).mul(127).round().div(127).mul(top)
    return w + (q - w.detach())
