"""Level sets: exact equality with the authors' code and the paper, as fractions."""
from fractions import Fraction as Fr
from itertools import product

import pytest

from apot.quant.levels import apot_magnitudes, apot_terms, pot_magnitudes, uniform_magnitudes
from apot.quant.schemes import levels, magnitude_levels

# The authors' build_power_value(B) term sets before normalization, written out from the
# description in shared/paper/apot-facts.md section 3.1 (exponents of 2^-e per term).
AUTHORS_TERMS = {
    2: [(1, 2, 3)],
    3: [(1, 2, 4), (3,)],
    4: [(1, 3, 5), (2, 4, 6)],
    5: [(1, 3, 6), (2, 4, 7), (5,)],
    6: [(1, 4, 7), (2, 5, 8), (3, 6, 9)],
}


def authors_set(bits: int) -> list[Fr]:
    term_sets = [[Fr(0)] + [Fr(1, 2**e) for e in exps] for exps in AUTHORS_TERMS[bits]]
    sums = {sum(c, Fr(0)) for c in product(*term_sets)}
    top = max(sums)
    return sorted(s / top for s in sums)


@pytest.mark.parametrize("bits", sorted(AUTHORS_TERMS))
def test_apot_unsigned_equals_authors_code(bits):
    assert list(apot_magnitudes(bits)) == authors_set(bits)


def test_apot_4bit_values_from_the_paper_table():
    expected = [Fr(0), Fr(1, 48), Fr(1, 24), Fr(1, 16), Fr(1, 12), Fr(1, 8), Fr(1, 6),
                Fr(3, 16), Fr(1, 4), Fr(1, 3), Fr(3, 8), Fr(1, 2), Fr(2, 3), Fr(11, 16),
                Fr(3, 4), Fr(1)]
    assert list(apot_magnitudes(4)) == expected


def test_apot_3bit_matches_paper_figure_2():
    assert list(apot_magnitudes(3)) == [Fr(n, 10) for n in (0, 1, 2, 3, 4, 6, 8, 10)]


def test_even_bits_follow_paper_equation_5():
    # Q = gamma * {sum_i p_i}, p_i in {0, 2^-i, 2^-(i+n), ..., 2^-(i+(2^k-2)n)}, n = b/k.
    for bits, k in [(2, 2), (4, 2), (6, 2), (8, 2), (6, 3), (8, 4)]:
        n = bits // k
        term_sets = [[Fr(0)] + [Fr(1, 2 ** (i + j * n)) for j in range(2**k - 1)]
                     for i in range(n)]
        sums = {sum(c, Fr(0)) for c in product(*term_sets)}
        top = max(sums)
        assert list(apot_magnitudes(bits, k)) == sorted(s / top for s in sums), (bits, k)


def test_7bit_extension_is_three_full_terms_and_a_one_bit_term():
    assert apot_terms(7) == ((1, 4, 8), (2, 5, 9), (3, 6, 10), (7,))
    assert len(apot_magnitudes(7)) == 128


@pytest.mark.parametrize("bits,k", [(b, k) for b in range(1, 9) for k in (1, 2, 3) if k <= b])
def test_every_code_is_a_distinct_level(bits, k):
    values = apot_magnitudes(bits, k)
    assert len(values) == 2**bits
    assert values[0] == 0 and values[-1] == 1
    assert list(values) == sorted(set(values))


def test_k1_is_uniform_and_k_equal_b_is_pot():
    for bits in range(1, 7):
        assert apot_magnitudes(bits, 1) == uniform_magnitudes(bits)
        assert apot_magnitudes(bits, bits) == pot_magnitudes(bits)


def test_pot_and_uniform_sets():
    assert pot_magnitudes(2) == (Fr(0), Fr(1, 4), Fr(1, 2), Fr(1))
    assert pot_magnitudes(3)[1] == Fr(1, 64)
    assert uniform_magnitudes(2) == (Fr(0), Fr(1, 3), Fr(2, 3), Fr(1))


@pytest.mark.parametrize("scheme", ["apot", "pot", "uniform"])
@pytest.mark.parametrize("bits", range(1, 9))
def test_sizes_signs_and_no_nan(scheme, bits):
    unsigned = levels(scheme, bits)
    signed = levels(scheme, bits, signed=True)
    assert len(unsigned) == 2**bits
    assert len(signed) == (2 if bits == 1 else 2**bits - 1)
    assert signed == tuple(sorted(-v for v in signed))  # symmetric around zero
    for value in unsigned + signed:
        assert -1 <= value <= 1  # fractions: NaN and inf cannot occur, but check the range
    if bits >= 2:
        assert set(signed) >= set(magnitude_levels(scheme, bits - 1))


def test_signed_4bit_uses_3_magnitude_bits_like_the_authors():
    assert levels("apot", 4, signed=True) == tuple(
        sorted({-v for v in authors_set(3)} | set(authors_set(3))))


def test_two_bit_weights_are_ternary_for_every_scheme():
    for scheme in ("apot", "pot", "uniform"):
        assert levels(scheme, 2, signed=True) == (Fr(-1), Fr(0), Fr(1))


@pytest.mark.parametrize("bad", [0, 9, -1, 2.5, True])
def test_bad_bits_rejected(bad):
    with pytest.raises(ValueError, match="bits"):
        levels("apot", bad)


def test_unknown_scheme_rejected():
    with pytest.raises(ValueError, match="unknown scheme"):
        levels("lloyd", 4)
