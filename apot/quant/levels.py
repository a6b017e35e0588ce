"""Quantization level sets as exact fractions (pure math, no torch): each scheme's own math.
The schemes are registered by name, and taken by name, in ``apot.quant.schemes``.

Every set is normalized so that its largest magnitude is 1; a quantizer multiplies by its
clipping threshold alpha. Three schemes:

* ``uniform``: {0, 1/(2^B-1), ..., 1}.
* ``pot`` (powers of two): {0} U {2^-i : i = 0 .. 2^B-2}.
* ``apot`` (additive powers of two, Li et al. 2020, Eq. 5): sums of one element from each of
  several "term" sets, each term holding zero and a few powers of two.

``B`` is the number of *magnitude* bits. Unsigned data (activations) use all b bits (B = b).
Signed data (weights) use the authors' sign + magnitude convention: B = b - 1 magnitude bits,
mirrored around zero, which gives 2^b - 1 distinct levels (4-bit weights: 15 levels).

APoT term construction (base bit-width k, B = n*k + r with 0 <= r < k): there are n "full"
terms with 2^k - 1 non-zero powers each and, when r > 0, one "remainder" term with 2^r - 1.
Exponents 1, 2, 3, ... are handed out in rounds j = 0 .. 2^k-2; in each round every full term
takes the next exponent, in order, and in the last 2^r - 1 rounds the remainder term takes one
first. For even B this is the paper's Eq. 5 (full term i holds 2^-(i + j*n), up to the common
factor 1/2 that the normalization removes). For B = 3 and B = 5 it gives exactly the sets of the
authors' code (``build_power_value``), which they built by hand; B = 7 is this rule's natural
extension (three 2-bit terms and a 1-bit term whose exponent opens the last round). k = 1 gives
the uniform set and k = B the PoT set, as the paper notes.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import product

MIN_BITS, MAX_BITS = 1, 8


def check_bits(bits: int, what: str = "bits") -> None:
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise ValueError(f"{what} must be an integer, got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be between {MIN_BITS} and {MAX_BITS}, got {bits}")


def check_k(k: int) -> None:
    # k >= B already gives the PoT set; larger k would only loop over 2^k empty rounds.
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_BITS:
        raise ValueError(f"base bit-width k must be an integer from 1 to {MAX_BITS}, got {k!r}")


def _normalize(values: set[Fraction]) -> tuple[Fraction, ...]:
    top = max(values)
    return tuple(sorted(v / top for v in values))


def uniform_magnitudes(magnitude_bits: int) -> tuple[Fraction, ...]:
    """Unsigned uniform set with 2^B levels: k / (2^B - 1), k = 0 .. 2^B-1."""
    steps = 2**magnitude_bits - 1
    return tuple(Fraction(i, steps) for i in range(steps + 1))


def pot_magnitudes(magnitude_bits: int) -> tuple[Fraction, ...]:
    """Unsigned powers-of-two set with 2^B levels: {0} U {2^-i : i = 0 .. 2^B-2}."""
    return tuple(sorted({Fraction(0)} | {Fraction(1, 2**i) for i in range(2**magnitude_bits - 1)}))


def apot_terms(magnitude_bits: int, k: int = 2) -> tuple[tuple[int, ...], ...]:
    """Exponents of the non-zero powers of two in each APoT term set (before normalization).

    Term t holds {0} U {2^-e : e in terms[t]}. Returns one tuple of exponents per term: the
    n full terms first, then the remainder term if B is not a multiple of k.
    """
    check_k(k)
    n_full, rem = divmod(magnitude_bits, k)
    rounds = 2**k - 1
    rem_rounds = 2**rem - 1 if rem else 0
    terms: list[list[int]] = [[] for _ in range(n_full + (1 if rem else 0))]
    exponent = 0
    for j in range(rounds):
        if rem and j >= rounds - rem_rounds:
            exponent += 1
            terms[n_full].append(exponent)
        for t in range(n_full):
            exponent += 1
            terms[t].append(exponent)
    return tuple(tuple(t) for t in terms)


def pot_terms(magnitude_bits: int, k: int = 2) -> tuple[tuple[int, ...], ...]:
    """PoT's levels as terms (``apot_terms``' form): one term, 2^-0 .. 2^-(2^B-2); k unused."""
    return (tuple(range(2**magnitude_bits - 1)),)


def apot_magnitudes(magnitude_bits: int, k: int = 2) -> tuple[Fraction, ...]:
    """Unsigned APoT set with 2^B distinct levels, normalized to a maximum of 1."""
    term_sets = [[Fraction(0)] + [Fraction(1, 2**e) for e in exps]
                 for exps in apot_terms(magnitude_bits, k)]
    sums = {sum(choice, Fraction(0)) for choice in product(*term_sets)}
    return _normalize(sums)


@dataclass(frozen=True)
class LevelCode:
    """One magnitude level as an integer: ``level == code / max code of its set``.

    ``shifts``: the powers of two that sum to ``code`` (``code == sum(1 << s)``), i.e. the
    shift amounts a shift-add multiplier by this level uses. For PoT and APoT these are the
    level's non-zero power-of-two terms; for uniform levels, the set bits of the integer code
    (what a plain shift-add multiplier does with a b-bit fixed-point operand).
    """
    level: Fraction
    code: int
    shifts: tuple[int, ...]

    @property
    def terms(self) -> int:
        return len(self.shifts)


def bit_positions(value: int) -> tuple[int, ...]:
    return tuple(i for i in range(value.bit_length()) if value >> i & 1)
