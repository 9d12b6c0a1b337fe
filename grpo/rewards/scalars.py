"""Are two scalar answers equal? Exact rationals first, then numbers at sample points, then sympy.

The tolerance follows the digits an answer is written with, as careful graders do:
- exact answers (integers, fractions, radicals, pi, ...) must be equal: 1 and 1.001 differ;
- a decimal literal written with d >= 5 significant digits stands for any value it rounds or
  truncates to: it equals x when |decimal - x| < one unit of its last digit (1.3333 is 4/3,
  0.70711 is sqrt(2)/2, 0.66667 and 0.66666 are 2/3, 6366.2 is 20000/pi; 0.66676 is not, nor is
  7.0001 for 7). With fewer digits a decimal is only equal to its own value: 3.14 is not pi,
  0.667 is not 2/3, 2.828 is not 2 sqrt(2). Five digits is where graders that accept roundings
  draw the line in practice (a relative error near 1e-4: Qwen2.5-Math's rel_tol);
- a relative error is never enough on its own: 11000.74 is not 11000.75, although they differ
  by less than 1e-6 of their size (both are written to the cent).
When both sides carry decimals, the coarser one (fewer digits) sets the unit. The same rule holds
for the entries of intervals, tuples and matrices, which are compared entry by entry.

Values are computed cheaply: random-point testing proves (x+1)^2 = x^2+2x+1 in microseconds where
simplify takes milliseconds, and it cannot be fooled into a hang by a huge power (values.py).
sympy.simplify runs only when no sample point gives both sides a value.
"""
from __future__ import annotations

import math
from fractions import Fraction

from grpo.rewards.values import (NoValue, approximation_digits, check_small, close, exact, free_symbols,
                                 numeric, sample_points, to_sympy)

EXACT_RTOL = 1e-9  # float noise of evaluating an exact expression
MIN_APPROX_DIGITS = 5  # fewer significant digits are a rounding, not the answer (3.1416 is pi, 3.14 is not)


def _infinity_sign(node: tuple) -> int:
    if node == ("const", "oo"):
        return 1
    if node[0] == "neg":
        return -_infinity_sign(node[1])
    return 0


def _approximate_side(a: tuple, b: tuple) -> tuple[int, int] | None:
    """(index of the coarser approximate side, its digits), or None when both sides are exact."""
    digits = [approximation_digits(a), approximation_digits(b)]
    known = [(d, i) for i, d in enumerate(digits) if d is not None]
    if not known:
        return None
    d, side = min(known)
    return side, d


def _unit(decimal: float, digits: int) -> Fraction:
    """One unit of the last digit of a decimal written with `digits` significant digits."""
    return Fraction(10) ** (math.floor(math.log10(abs(decimal))) - digits + 1)


def _within(values: tuple[complex, complex], approx: tuple[int, int] | None) -> bool:
    """Do two float values agree: float noise, or the tolerance rule of the module docstring?"""
    va, vb = values
    if close(va, vb, EXACT_RTOL):
        return True
    if approx is None:
        return False
    side, digits = approx
    decimal = values[side]
    if digits < MIN_APPROX_DIGITS or decimal == 0 or abs(decimal.imag) > 0:
        return False
    return abs(va - vb) < float(_unit(decimal.real, digits)) * (1 - 1e-12)


def _within_exact(values: tuple[Fraction, Fraction], approx: tuple[int, int] | None) -> bool:
    """The tolerance rule on exact rationals (no float rounding can blur one unit)."""
    if approx is None:
        return False
    side, digits = approx
    decimal = values[side]
    if digits < MIN_APPROX_DIGITS or decimal == 0:
        return False
    try:
        return abs(values[0] - values[1]) < _unit(float(decimal), digits)
    except (OverflowError, ValueError):
        return False


def _numeric_verdict(a: tuple, b: tuple, approx: tuple[int, int] | None) -> bool | None:
    """True/False when enough sample points give both sides a value, else None."""
    symbols = free_symbols(a) | free_symbols(b)
    points = sample_points(symbols) if symbols else [{}]
    valid = 0
    for point in points:
        try:
            values = (numeric(a, point), numeric(b, point))
        except NoValue:
            continue  # undefined here on at least one side: this point says nothing
        if not _within(values, approx):
            return False
        valid += 1
    return True if valid >= (2 if symbols else 1) else None


def _sympy_equal(a: tuple, b: tuple) -> bool:
    try:
        check_small(a)  # refuse huge trees before sympy is even imported
        check_small(b)
        left, right = to_sympy(a), to_sympy(b)
    except NoValue:
        return False
    try:
        import sympy

        return bool(sympy.simplify(left - right) == 0)
    except Exception:  # sympy raises many kinds of errors on odd input
        return False


def same_scalar(a: tuple, b: tuple) -> bool:
    """Are two scalar trees equal: exactly, else numerically, else symbolically?"""
    sign_a, sign_b = _infinity_sign(a), _infinity_sign(b)
    if sign_a or sign_b:
        return sign_a == sign_b
    approx = _approximate_side(a, b)
    value_a, value_b = exact(a), exact(b)
    if value_a is not None and value_b is not None:
        if value_a == value_b:
            return True
        return _within_exact((value_a, value_b), approx)
    verdict = _numeric_verdict(a, b, approx)
    if verdict is not None:
        return verdict
    return _sympy_equal(a, b)


def consistent_approximation(value: tuple, decimal: tuple) -> bool:
    """Is `decimal` a fair approximation of `value` ("\\frac{\\sqrt2}{2} \\approx 0.707", "\\pi \\approx 3.1")?

    Any number of digits will do for an annotation; it must be within one unit of its last digit.
    A value without a number (symbols) cannot be checked and passes.
    """
    digits = approximation_digits(decimal)
    try:
        va, vd = numeric(value, {}), numeric(decimal, {})
    except NoValue:
        return True
    if digits is None:  # an integer: rounded to its last non-zero digit ("\approx 1720": to tens)
        whole = abs(int(vd.real))
        unit = 1
        while whole and whole % (unit * 10) == 0:
            unit *= 10
        return abs(va - vd) < unit
    if close(va, vd, EXACT_RTOL):
        return True
    if vd == 0 or abs(vd.imag) > 0:
        return False
    unit = 10.0 ** (math.floor(math.log10(abs(vd.real))) - digits + 1)
    return abs(va - vd) < unit
