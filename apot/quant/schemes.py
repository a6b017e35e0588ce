"""The quantization schemes by name: one registry entry each (pure math, no torch).

Everything that lists, builds, counts or draws schemes reads this registry: the command line's
choices, the study matrix (the scheme ablation), the quantizers, the cost model and its tables,
the report's tables, the figures and the template. Adding a scheme means writing its level set
(and, if its levels are sums of powers of two, their exponents) and registering one
``Scheme``; ``tests/unit/test_registries.py`` does exactly that with a toy scheme.

Also here: the functions that take a scheme by name (the level set of a b-bit quantizer, its
levels as integer codes, the distribution of their power-of-two terms) and the bit-widths a
model can have. The schemes' own math is in ``apot.quant.levels``.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from itertools import product
from typing import Callable, Sequence

from apot.quant.levels import (MAX_BITS, MIN_BITS, LevelCode, apot_magnitudes, apot_terms,
                               bit_positions, check_bits, pot_magnitudes, pot_terms,
                               uniform_magnitudes)
from apot.registry import Registry

# The schemes' names: other modules use these constants, never the strings.
APOT, POT, UNIFORM = "apot", "pot", "uniform"
# The float step of a chain: its run folders say fp32 where the others say their scheme.
FLOAT = "fp32"
FLOAT_BITS = 32          # bits of a float model (its first and last layers are still 8-bit)
# bits of a quantized model: its weights are signed, and need a magnitude bit besides the sign
MODEL_BITS = range(MIN_BITS + 1, MAX_BITS + 1)


@dataclass(frozen=True)
class Scheme:
    """One quantization scheme.

    ``magnitudes(B, k)``: its unsigned level set for B magnitude bits (2^B levels, sorted,
    largest 1; k is APoT's base bit-width, which other schemes ignore). ``terms(B, k)``: the
    exponents of the powers of two that its levels are sums of (one tuple per term set, as
    ``apot_terms``), or None when its levels are multiples of one step (fixed point: projected
    by rounding, multiplied bit by bit). ``label``: how the report prints it; ``color``: its
    marks in the figures; ``ablation``: the scheme ablation (config key scheme_ablation)
    trains it beside APoT.
    """
    name: str
    label: str
    magnitudes: Callable[[int, int], tuple[Fraction, ...]]
    terms: Callable[[int, int], tuple[tuple[int, ...], ...]] | None
    color: str
    ablation: bool = True

    @property
    def fixed_point(self) -> bool:
        return self.terms is None


REGISTRY: Registry[Scheme] = Registry("scheme", reserved=(FLOAT,))
register, unregister = REGISTRY.register, REGISTRY.unregister


register(Scheme(APOT, "APoT", lambda bits, k: apot_magnitudes(bits, k), apot_terms, "#55a868",
                ablation=False))
register(Scheme(POT, "PoT", lambda bits, k: pot_magnitudes(bits), pot_terms, "#dd8452"))
register(Scheme(UNIFORM, "uniform", lambda bits, k: uniform_magnitudes(bits), None, "#4c72b0"))


def scheme_names() -> tuple[str, ...]:
    """The registered schemes' names, in registration order (APoT first)."""
    return tuple(REGISTRY)


def ablation_schemes() -> tuple[str, ...]:
    """The schemes the scheme ablation trains beside APoT."""
    return tuple(name for name, scheme in REGISTRY.items() if scheme.ablation)


get_scheme = REGISTRY.entry


def check_scheme(name: str) -> None:
    get_scheme(name)


def magnitude_levels(scheme: str, magnitude_bits: int, k: int = 2) -> tuple[Fraction, ...]:
    """Non-negative levels for B magnitude bits (B >= 1), sorted, max 1."""
    entry = get_scheme(scheme)
    if magnitude_bits < 1:
        raise ValueError(f"need at least 1 magnitude bit, got {magnitude_bits}")
    return entry.magnitudes(magnitude_bits, k)


def levels(scheme: str, bits: int, signed: bool = False, k: int = 2) -> tuple[Fraction, ...]:
    """The full, sorted level set of a b-bit quantizer, as exact fractions in [-1, 1].

    Unsigned: 2^b levels in [0, 1]. Signed (sign + magnitude, as the authors' weights): the
    (b-1)-bit magnitude set mirrored, 2^b - 1 levels. Signed 1-bit has no magnitude bit and is
    defined as the binary set {-1, +1}.
    """
    check_bits(bits)
    if not signed:
        return magnitude_levels(scheme, bits, k)
    if bits == 1:
        check_scheme(scheme)
        return (Fraction(-1), Fraction(1))
    mags = magnitude_levels(scheme, bits - 1, k)
    return tuple(sorted({-m for m in mags} | set(mags)))


def level_codes(scheme: str, magnitude_bits: int, k: int = 2) -> tuple[LevelCode, ...]:
    """The magnitude levels of ``magnitude_levels(scheme, B, k)`` (same order) as integer codes.

    Sums of powers of two: with E the largest exponent among the term sets, a level made of
    terms 2^-e_i (before normalization) has code sum 2^(E - e_i); the top level's code is the
    normalizer. Fixed point: level i / (2^B - 1) has code i.
    """
    levels_ = magnitude_levels(scheme, magnitude_bits, k)
    entry = get_scheme(scheme)
    if entry.fixed_point:
        steps = len(levels_) - 1
        codes = {Fraction(i, steps): bit_positions(i) for i in range(steps + 1)}
    else:
        term_sets = entry.terms(magnitude_bits, k)
        top = max(e for exps in term_sets for e in exps)
        sums: dict[int, tuple[int, ...]] = {}
        for choice in product(*[(None, *exps) for exps in term_sets]):
            shifts = tuple(sorted(top - e for e in choice if e is not None))
            sums[sum(1 << s for s in shifts)] = shifts
        largest = max(sums)
        codes = {Fraction(code, largest): shifts for code, shifts in sums.items()}
    if sorted(codes) != list(levels_):
        raise AssertionError(f"level codes of {scheme} B={magnitude_bits} do not match its set")
    return tuple(LevelCode(level, sum(1 << s for s in codes[level]), codes[level])
                 for level in levels_)


def term_distribution(scheme: str, magnitude_bits: int, k: int = 2,
                      usage: Sequence[float] | None = None) -> dict[int, float]:
    """P(a magnitude code has t power-of-two terms), for each t.

    ``usage``: how often each level (in set order) is used; every level equally often if
    None. Zero has no terms.
    """
    codes = level_codes(scheme, magnitude_bits, k)
    weights = [1.0] * len(codes) if usage is None else [float(u) for u in usage]
    if len(weights) != len(codes) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"usage needs {len(codes)} non-negative counts with a positive sum")
    total = sum(weights)
    dist: dict[int, float] = {}
    for weight, code in zip(weights, codes):
        dist[code.terms] = dist.get(code.terms, 0.0) + weight / total
    return dist


def mean_terms(scheme: str, magnitude_bits: int, k: int = 2,
               usage: Sequence[float] | None = None) -> float:
    """Expected number of power-of-two terms of a magnitude code (see term_distribution)."""
    return sum(p * t for t, p in term_distribution(scheme, magnitude_bits, k, usage).items())


# An integer runtime's widths: signed 8-bit weights, unsigned 8-bit activation codes.
INT8_WEIGHT_MAX, UINT8_CODE_MAX = 127, 255


def integer_range_problem(scheme: str, bits: int, k: int = 2) -> str | None:
    """Why a ``bits``-bit ``scheme`` model's codes do not fit int8 weights and uint8 activation
    codes (what ONNX export needs), or None when they do."""
    for what, magnitude_bits, limit, kind in (("weights", bits - 1, INT8_WEIGHT_MAX, "int8"),
                                              ("activations", bits, UINT8_CODE_MAX, "uint8")):
        top = level_codes(scheme, magnitude_bits, k)[-1].code
        if top > limit:
            return (f"{bits}-bit {scheme} {what} need integers up to {top}, beyond {kind} "
                    f"(at most {limit})")
    return None
