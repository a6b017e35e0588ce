"""Nearest-level projection: the table look-up equals a brute-force float32 argmin exactly."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from apot.quant.functional import LevelTable, Projector, project_bruteforce, uniform_round
from apot.quant.schemes import magnitude_levels, scheme_names

SCHEMES = scheme_names()

TABLES = {(s, b): LevelTable(magnitude_levels(s, b)) for s in SCHEMES for b in range(1, 9)}


def boundary_inputs(table: LevelTable) -> torch.Tensor:
    """Every level, every decision threshold and the floats just around them."""
    points = torch.cat([table.levels, table.thresholds])
    up, down = torch.tensor(np.inf), torch.tensor(-np.inf)
    near = [points, torch.nextafter(points, up), torch.nextafter(points, down),
            torch.nextafter(torch.nextafter(points, up), up)]
    return torch.cat(near).clamp(max=1.0)


@pytest.mark.parametrize("key", sorted(TABLES))
def test_table_equals_bruteforce_at_every_boundary(key):
    table = TABLES[key]
    x = torch.cat([boundary_inputs(table), torch.tensor([-1.0, -0.0, 0.0, -1e-30, 1.0])])
    assert torch.equal(table.project(x), project_bruteforce(x, table.levels))
    assert torch.equal(table.levels[table.index(x).long()], table.project(x))


@pytest.mark.parametrize("key", sorted(TABLES))
def test_table_equals_bruteforce_on_random_inputs(key):
    table = TABLES[key]
    gen = torch.Generator().manual_seed(hash(key) % 2**31)
    x = torch.cat([torch.rand(20000, generator=gen) * 1.2 - 0.1,
                   torch.rand(20000, generator=gen) ** 8])  # dense near zero, like PoT
    x = x.clamp(max=1)
    assert torch.equal(table.project(x), project_bruteforce(x, table.levels))


def test_ties_go_to_the_lower_level():
    table = LevelTable(magnitude_levels("apot", 2))  # 0, 1/4, 1/2, 1
    x = torch.tensor([0.125, 0.375, 0.75])  # exact midpoints, representable in float32
    assert table.project(x).tolist() == [0.0, 0.25, 0.5]


def test_fast_table_is_used_for_the_paper_bit_widths():
    # The fallback (bucketize) is only for sets whose levels crowd below float32 resolution.
    for bits in range(1, 9):
        assert TABLES[("apot", bits)].shift is not None
        assert TABLES[("uniform", bits)].shift is not None
    assert TABLES[("pot", 8)].shift is None


def test_level_gaps_are_far_above_float_resolution():
    # Brute force could only pick a non-neighbour level if two levels were within a few ulps.
    for (scheme, bits), table in TABLES.items():
        levels = table.levels.numpy()
        levels = levels[levels >= np.finfo(np.float32).tiny]  # PoT-8 reaches subnormals
        gaps = levels[1:] - levels[:-1]
        assert np.all(gaps > 1000 * np.spacing(levels[1:])), (scheme, bits)


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(SCHEMES), bits=st.integers(1, 8),
       values=st.lists(st.floats(-0.5, 1.0, width=32, allow_subnormal=True), min_size=1,
                       max_size=64))
def test_property_table_matches_bruteforce(scheme, bits, values):
    table = TABLES[(scheme, bits)]
    x = torch.tensor(values, dtype=torch.float32)
    assert torch.equal(table.project(x), project_bruteforce(x, table.levels))


@settings(max_examples=200, deadline=None)
@given(scheme=st.sampled_from(["apot", "pot"]), bits=st.integers(1, 8),
       picks=st.lists(st.tuples(st.integers(0, 255), st.integers(-3, 3)), min_size=1,
                      max_size=32))
def test_property_matches_bruteforce_near_thresholds(scheme, bits, picks):
    table = TABLES[(scheme, bits)]
    if table.thresholds.numel() == 0:
        return
    values = []
    for index, ulps in picks:
        x = table.thresholds[index % table.thresholds.numel()].clone()
        step = torch.tensor(np.inf if ulps > 0 else -np.inf)
        for _ in range(abs(ulps)):
            x = torch.nextafter(x, step)
        values.append(float(x))
    x = torch.tensor(values, dtype=torch.float32).clamp(max=1)
    assert torch.equal(table.project(x), project_bruteforce(x, table.levels))


def test_uniform_formula_is_a_nearest_level():
    x = torch.rand(50000, generator=torch.Generator().manual_seed(0))
    for bits in range(1, 9):
        levels = torch.tensor([float(v) for v in magnitude_levels("uniform", bits)])
        q = uniform_round(x, bits)
        distance = (x - q).abs()
        best = (x.unsqueeze(1) - levels.unsqueeze(0)).abs().min(dim=1).values
        assert torch.all(distance <= best + 1e-7)
        assert torch.isin(q, levels).all() or torch.allclose(
            q, levels[(x.unsqueeze(1) - levels).abs().argmin(1)], atol=1e-7)


def test_uniform_rounds_half_to_even_like_the_authors():
    # round(x * 3) / 3 for 2 magnitude bits: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2 (grid units).
    x = torch.tensor([0.5, 1.5, 2.5]) / 3
    assert torch.allclose(uniform_round(x, 2) * 3, torch.tensor([0.0, 2.0, 2.0]))


def test_projector_handles_half_precision_and_matches_float32():
    proj = Projector("apot", magnitude_levels("apot", 4), 4)
    x = torch.rand(1000).clamp(max=1)
    assert proj(x.half()).dtype == torch.float16
    assert torch.equal(proj(x.half()).float(), proj(x.half().float()).half().float())


def test_level_table_rejects_bad_sets():
    with pytest.raises(ValueError):
        LevelTable([0.0, 0.5])  # maximum must be 1
    with pytest.raises(ValueError):
        LevelTable([-0.5, 1.0])


def test_negative_inputs_go_to_zero_in_every_scheme():
    x = torch.tensor([-0.3, -0.02, -0.0])
    for scheme in ("apot", "pot", "uniform"):
        out = Projector(scheme, magnitude_levels(scheme, 3), 3)(x)
        assert out.tolist() == [0.0, 0.0, 0.0], scheme


def test_level_table_refuses_other_dtypes():
    table = TABLES[("apot", 4)]
    with pytest.raises(TypeError, match="float32"):
        table.project(torch.rand(4, dtype=torch.float64))
