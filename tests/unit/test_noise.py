"""The statistical rule of the claims (apot/noise.py): t quantiles, paired test-set errors,
margins, collapse."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apot.noise import MIN_SEEDS, Noise, chance_margin, collapsed, combine, t_quantile
from apot.noise import paired_se


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
    assert paired_se([a, b], [1, -1]) == pytest.approx(mcnemar * math.sqrt(n / (n - 1)))
    assert paired_se([a, a], [1, -1]) == 0.0  # identical predictions: no test-set noise


def test_test_se_needs_the_same_images():
    with pytest.raises(ValueError):
        paired_se([np.ones(10, bool), np.ones(9, bool)], [1, -1])


def test_one_seed_has_no_seed_term_and_three_get_student_correction():
    one = combine([(0.5, 0.2)])
    assert one.seed_std is None and one.margin == pytest.approx(0.4)
    three = combine([(0.4, 0.1), (0.5, 0.1), (0.6, 0.1)])
    assert three.n == MIN_SEEDS and three.seed_std == pytest.approx(0.1)
    assert three.margin == pytest.approx(math.hypot(0.2, 4.303 * 0.1 / math.sqrt(3)))
    assert three.interval == pytest.approx((0.5 - three.margin, 0.5 + three.margin))
    # seeds share the test images: averaging them does not shrink the test-set term
    assert combine([(0.5, 0.1), (0.5, 0.3)]).test_se == pytest.approx(math.sqrt(0.05))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-20, 20), st.floats(0, 5)), min_size=1, max_size=10))
def test_the_margin_is_at_least_twice_the_test_se(per_seed):
    noise = combine(per_seed)
    assert noise.margin >= 2 * noise.test_se - 1e-12
    low, high = noise.interval
    assert low <= noise.difference <= high


def test_collapse_is_chance_plus_two_binomial_errors():
    assert chance_margin(10, 10_000) == pytest.approx(10 + 2 * 100 * math.sqrt(0.09 / 10_000))
    assert collapsed(10.5, 10, 10_000) and not collapsed(10.7, 10, 10_000)
    assert not collapsed(2.0, 100, 10_000) and collapsed(1.0, 100, 10_000)


def test_noise_is_a_value():
    assert Noise(1.0, 0.1, None, 1).margin == pytest.approx(0.2)
