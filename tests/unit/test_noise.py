"""The statistical rule of the claims (apot/reporting/noise.py): t quantiles, paired test-set errors,
margins, collapse."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apot.reporting.noise import MIN_SEEDS, Noise, combine, paired_se, t_quantile, weighted_correct


@pytest.mark.parametrize("df, exact", [(1, 12.7062), (2, 4.3027), (10, 2.2281), (30, 2.0423),
                                       (31, 2.0395), (60, 2.0003), (120, 1.9799)])
def test_t_quantiles_match_the_exact_values(df, exact):
    assert t_quantile(df) == pytest.approx(exact, abs=1e-3)


def test_t_needs_a_degree_of_freedom():
    with pytest.raises(ValueError):
        t_quantile(0)


def test_two_models_give_the_mcnemar_standard_error():
    rng = np.random.default_rng(1)
    a, b = rng.random(5000) < 0.9, rng.random(5000) < 0.88
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    mcnemar = math.sqrt(only_a + only_b - (only_a - only_b) ** 2 / n) / n * 100
    # sd with n - 1: the McNemar form with n in the denominator, times sqrt(n / (n - 1))
    assert paired_se([weighted_correct([a, b], [1, -1])]) == pytest.approx(
        mcnemar * math.sqrt(n / (n - 1)))
    assert paired_se([weighted_correct([a, a], [1, -1])]) == 0.0  # no test-set noise


def test_test_se_needs_the_same_images():
    with pytest.raises(ValueError):
        weighted_correct([np.ones(10, bool), np.ones(9, bool)], [1, -1])
    with pytest.raises(ValueError):
        paired_se([np.ones(10), np.ones(9)])


def test_seeds_keep_the_images_difficulty_and_average_away_their_churn():
    rng = np.random.default_rng(2)
    a, b = rng.random(4000) < 0.9, rng.random(4000) < 0.9
    one = weighted_correct([a, b], [1, -1])
    # the same disagreements in every seed: the images themselves differ, seeds cannot help
    assert paired_se([one, one, one]) == pytest.approx(paired_se([one]))
    # disagreements that move from seed to seed (churn) average out
    other = weighted_correct([rng.random(4000) < 0.9, rng.random(4000) < 0.9], [1, -1])
    assert paired_se([one, other]) < 0.8 * paired_se([one])


def test_one_seed_has_no_seed_term_and_three_get_student_correction():
    one = combine([0.5], 0.2)
    assert one.seed_std is None and one.margin == pytest.approx(0.4)
    three = combine([0.4, 0.5, 0.6], 0.1)
    assert three.n == MIN_SEEDS and three.seed_std == pytest.approx(0.1)
    assert three.margin == pytest.approx(math.hypot(0.2, 4.303 * 0.1 / math.sqrt(3)))
    assert three.interval == pytest.approx((0.5 - three.margin, 0.5 + three.margin))
    with pytest.raises(ValueError):
        combine([], 0.1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=1, max_size=10), st.floats(0, 5))
def test_the_margin_is_at_least_twice_the_test_se(values, test_se):
    noise = combine(values, test_se)
    assert noise.margin >= 2 * noise.test_se - 1e-12
    low, high = noise.interval
    assert low <= noise.difference <= high


def _simulated(rng, images: int, seeds: int) -> Noise:
    """Two groups of models with the same expected top-1 on a population of images, tested on
    one fresh sample of it: images differ in difficulty and in which group they favour (by 15
    points either way, so the sample's own draw matters), each seed shifts its models'
    accuracy a little and draws its own borderline images (churn)."""
    difficulty = rng.beta(8, 2, images)
    favour = rng.choice([-0.15, 0.15], images)
    values, weighted = [], []
    for _ in range(seeds):
        shift_a, shift_b = rng.normal(0, 0.002, 2)
        a = rng.random(images) < np.clip(difficulty + favour + shift_a, 0, 1)
        b = rng.random(images) < np.clip(difficulty - favour + shift_b, 0, 1)
        values.append(100 * (a.mean() - b.mean()))
        weighted.append(weighted_correct([a, b], [1, -1]))
    return combine(values, paired_se(weighted))


def _coverage(intervals) -> float:
    intervals = list(intervals)
    return sum(low <= 0 <= high for low, high in intervals) / len(intervals)


@pytest.mark.parametrize("seeds", [3, 5])
def test_the_interval_covers_a_true_zero_difference_at_least_95_percent(seeds):
    # what the rule promises: with no real difference, "holds" or "fails" comes out at most
    # about 5 % of the time (conservatively: the churn counts in both terms)
    rng = np.random.default_rng(seeds)
    noises = [_simulated(rng, 2000, seeds) for _ in range(400)]
    assert _coverage(n.interval for n in noises) >= 0.95
    # the check has teeth: the same differences without the test-set term miss the 95 %
    seed_term_only = (Noise(n.difference, 0.0, n.seed_std, n.n).interval for n in noises)
    assert _coverage(seed_term_only) < 0.93
