"""How far a difference of test accuracies can move by chance: the statistical rule of the claims.

A comparison is a weighted sum of models' test top-1 (points), computed per seed:
  a top-1 difference   d_s = top1(A, s) - top1(B, s)
  a drop               d_s = top1(FP32, s) - top1(Q, s)
  a difference of drops, a released model's drop, ... likewise, with weights +1 / -1.
Models of one seed are paired (seed s of a chain starts from seed s of its FP32 step); a released
model (the authors') is one fixed model, the same for every seed.

The rule, stated once (docs/claims.md and the report's claims preamble quote it):
  difference  D = mean over the n paired seeds of d_s.
  test_se     the paired test-set standard error of D, from the images on which the models
              disagree: with c_s,i = sum_k w_k * correct_k,s,i the weighted correctness of image
              i for seed s, and m_i its mean over the n seeds, test_se = 100 * sd_i(m_i) /
              sqrt(N) over the N test images. For one seed and two models this is the McNemar
              standard error, sqrt(b + c - (b - c)^2 / N) / N with b, c the discordant images.
              Seeds share the test images, so averaging them keeps the images' own
              difficulty in test_se. What it averages away is the seed-to-seed churn (which
              borderline images each model happens to get right); that churn moves d_s from
              seed to seed, so seed_std already counts it.
  seed_std    the sample standard deviation of d_s over the seeds (n - 1 in the denominator).
  margin      sqrt((2 * test_se)^2 + (t(n - 1) * seed_std / sqrt(n))^2), with t(n - 1) Student's
              97.5 % quantile for n - 1 degrees of freedom: the small-sample correction (4.30
              for 3 seeds). With one seed there is no seed term.
  interval    D - margin to D + margin.
A comparison is decided only when each compared group has at least MIN_SEEDS completed seeds
and no failed seed: a difference beyond the margin then holds (or fails), one within it is
within noise. Otherwise it is inconclusive, whatever the interval; the interval is still shown.
No fixed floor stands in for a measurement.

Also here: when a run counts as collapsed (at or below chance plus its own binomial margin) and
when a model counts as converged (its last epoch improved its test top-1 by no more than the
comparison's margin).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SEEDS = 3          # completed seeds each compared group needs before a verdict is decided
Z = 2.0                # test-set term: about 95 % (and margin >= 2 * test_se by construction)
# Student's t, 97.5 % quantile, for 1..30 degrees of freedom (two-sided 95 %)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
RULE = ("margin = sqrt((2 x test_se)^2 + (t(n-1) x seed_std / sqrt(n))^2): test_se is the paired "
        "test-set standard error of the seed-averaged difference, from the images on which the "
        "compared models disagree (each image's weighted correctness averaged over the paired "
        "seeds); seed_std the standard deviation of the per-seed difference over the n "
        "paired seeds, with Student's 97.5 % quantile t(n-1) as the small-sample correction "
        f"(4.30 for 3 seeds). A comparison is decided only when every compared group has at "
        f"least {MIN_SEEDS} completed seeds and none failed; a difference beyond its margin "
        f"then holds or fails, one within it is within noise. A run at or below chance plus "
        f"2 binomial standard errors counts as collapsed: it is flagged and left out, and its "
        f"group counts as having a failed seed. A 'within' or 'reaches' comparison also needs "
        f"each judged model converged: its last epoch improved its test top-1 by no more than "
        f"the margin (a one-epoch run cannot show that).")


def t_quantile(df: int) -> float:
    """Student's t 97.5 % quantile for ``df`` >= 1 degrees of freedom (table to 30, then the
    Cornish-Fisher expansion around the normal quantile, within 0.001 of the exact value)."""
    if df < 1:
        raise ValueError("t needs at least 1 degree of freedom")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def weighted_correct(correct: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Per-image sum_k w_k * correct_k, float64 (N,), from the models' bool (N,) per-image
    correctness on the same N images (one seed's terms of a comparison)."""
    n = len(correct[0])
    if n < 2 or any(len(c) != n for c in correct):
        raise ValueError("paired models need the same two or more test images")
    return sum(w * c.astype(np.float64) for w, c in zip(weights, correct))


def paired_se(per_seed: list[np.ndarray]) -> float:
    """Paired test-set standard error (points) of the seed-averaged comparison, from each seed's
    (N,) weighted correctness (weighted_correct) on the same N images."""
    n = len(per_seed[0])
    if any(len(c) != n for c in per_seed):
        raise ValueError("paired seeds need the same test images")
    mean = np.mean(np.stack(per_seed), axis=0)
    return 100.0 * float(np.std(mean, ddof=1)) / math.sqrt(n)


@dataclass(frozen=True)
class Noise:
    """A comparison's difference and its noise, per the module's rule (points)."""
    difference: float
    test_se: float
    seed_std: float | None   # None with one seed
    n: int                   # paired seeds

    @property
    def margin(self) -> float:
        seed_term = (0.0 if self.seed_std is None
                     else t_quantile(self.n - 1) * self.seed_std / math.sqrt(self.n))
        return math.hypot(Z * self.test_se, seed_term)

    @property
    def interval(self) -> tuple[float, float]:
        return (self.difference - self.margin, self.difference + self.margin)


def combine(values: list[float], test_se: float) -> Noise:
    """The Noise of a comparison from its per-seed differences (points) and the paired
    test-set standard error of their mean (paired_se)."""
    if not values:
        raise ValueError("a comparison needs at least one seed")
    array = np.array(values, dtype=np.float64)
    seed_std = float(array.std(ddof=1)) if len(array) > 1 else None
    return Noise(difference=float(array.mean()), test_se=float(test_se), seed_std=seed_std,
                 n=len(array))


def chance_margin(classes: int, images: int) -> float:
    """Chance top-1 plus 2 binomial standard errors on ``images`` test images (points): a run at
    or below it has learnt nothing measurable (collapsed)."""
    p = 1.0 / classes
    return 100.0 * (p + Z * math.sqrt(p * (1 - p) / images))


def collapsed(top1: float, classes: int, images: int) -> bool:
    return top1 <= chance_margin(classes, images)
