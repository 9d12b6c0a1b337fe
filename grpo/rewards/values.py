"""Values of parsed answer trees (parse.py): exact rationals, complex floats, sympy expressions.

Three evaluators, tried in this order by scalars.py (which also takes `sample_points`, the fixed
points symbols are evaluated at, and `close`, the float comparison):
- `exact(node)`: a Fraction when the tree is rational arithmetic (0.5, \\frac{3}{6}, 2^{10}, 7!,
  \\sqrt{16}), else None. Powers and factorials are computed only below a size bound, so
  9^{9^{9^9}} is "not exact" in microseconds instead of a hang.
- `numeric(node, point)`: a complex float, with symbols bound to the numbers in `point`; raises
  NoValue where the value is undefined, infinite or too large for a float.
- `to_sympy(node)`: the sympy expression, for the rare symbolic fallback (sympy is imported only
  then, so importing the rewards stays cheap). Refuses trees whose numbers sympy would expand
  into something huge.
"""
from __future__ import annotations

import cmath
import math
import random
from fractions import Fraction

from grpo.rewards.tree import children

MAX_EXACT_BITS = 20_000  # exact powers up to about 6,000 digits
MAX_FACTORIAL = 1_000
MAX_SYMPY_INT = 10 ** 60  # numbers and exponents sympy may see in the fallback
ATOL = 1e-12  # absolute slack of float comparisons (values near zero)


class NoValue(Exception):
    """The tree has no finite value at this point (or one too large to compute safely)."""


# ---------------------------------------------------------------------------------- exact values


def _exact_root(value: Fraction, n: int) -> Fraction | None:
    """The rational n-th root of `value` when there is one (sqrt(9/4) = 3/2), else None."""
    if n <= 0 or n > 64 or value.numerator.bit_length() > 4000 or value.denominator.bit_length() > 4000:
        return None
    negative = value < 0
    if negative and n % 2 == 0:
        return None
    roots = []
    for part in (abs(value.numerator), value.denominator):
        root = round(part ** (1.0 / n)) if part.bit_length() < 1000 else None
        if root is None:
            return None
        for candidate in (root - 1, root, root + 1):  # float rounding can be off by one
            if candidate >= 0 and candidate ** n == part:
                roots.append(candidate)
                break
        else:
            return None
    root = Fraction(roots[0], roots[1])
    return -root if negative else root


def _exact_pow(base: Fraction, exponent: Fraction) -> Fraction | None:
    if exponent.denominator != 1:  # 8^{2/3} = 4: a rational power is exact when the root is
        root = _exact_root(base, exponent.denominator)
        return None if root is None else _exact_pow(root, Fraction(exponent.numerator))
    e = exponent.numerator
    if base == 0:
        return None if e < 0 else Fraction(int(e == 0))
    size = max(base.numerator.bit_length(), base.denominator.bit_length())
    if abs(e) > 100_000 or size * abs(e) > MAX_EXACT_BITS:
        return None
    return base ** e


def exact(node: tuple) -> Fraction | None:
    """The exact rational value of `node`, or None when it is not (or not cheaply) rational."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "neg":
        value = exact(node[1])
        return None if value is None else -value
    if kind in ("add", "mul"):
        total = Fraction(0) if kind == "add" else Fraction(1)
        for child in node[1]:
            value = exact(child)
            if value is None:
                return None
            total = total + value if kind == "add" else total * value
            if max(total.numerator.bit_length(), total.denominator.bit_length()) > 4 * MAX_EXACT_BITS:
                return None
        return total
    if kind == "div":
        a, b = exact(node[1]), exact(node[2])
        return None if a is None or not b else a / b
    if kind == "pow":
        base, exponent = exact(node[1]), exact(node[2])
        return None if base is None or exponent is None else _exact_pow(base, exponent)
    if kind == "fn":
        return _exact_function(node[1], node[2])
    return None


def _exact_function(name: str, args: tuple) -> Fraction | None:
    values = [exact(a) for a in args]
    if any(v is None for v in values):
        return None
    x = values[0]
    if name == "sqrt":
        return _exact_root(x, 2)
    if name == "root":
        n = values[1]
        return _exact_root(x, int(n)) if n.denominator == 1 and 0 < n <= 64 else None
    if name == "abs":
        return abs(x)
    if name in ("floor", "ceil"):
        return Fraction(math.floor(x) if name == "floor" else math.ceil(x))
    if name == "fact":
        return Fraction(math.factorial(int(x))) if x.denominator == 1 and 0 <= x <= MAX_FACTORIAL else None
    if name == "binom" and len(values) == 2:
        n, k = values
        if n.denominator == k.denominator == 1 and 0 <= k and 0 <= n <= 10 * MAX_FACTORIAL:
            return Fraction(math.comb(int(n), int(k)))
        return None
    if name in ("gcd", "lcm") and all(v.denominator == 1 for v in values) and len(values) >= 2:
        ints = [int(v) for v in values]
        return Fraction(math.gcd(*ints) if name == "gcd" else math.lcm(*ints))
    if name in ("max", "min") and len(values) >= 2:
        return max(values) if name == "max" else min(values)
    return None


# -------------------------------------------------------------------------------- numeric values


def _real(z: complex) -> float:
    if abs(z.imag) > 1e-12 * max(1.0, abs(z.real)):
        raise NoValue("not real")
    return z.real


def _inv(z: complex) -> complex:
    if z == 0:
        raise NoValue("division by zero")
    return 1 / z


_COMPLEX_FUNCTIONS = {
    "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan,
    "cot": lambda z: _inv(cmath.tan(z)), "sec": lambda z: _inv(cmath.cos(z)), "csc": lambda z: _inv(cmath.sin(z)),
    "arcsin": cmath.asin, "arccos": cmath.acos, "arctan": cmath.atan,
    "arccot": lambda z: cmath.atan(_inv(z)), "arcsec": lambda z: cmath.acos(_inv(z)),
    "arccsc": lambda z: cmath.asin(_inv(z)),
    "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh, "coth": lambda z: _inv(cmath.tanh(z)),
    "log": cmath.log, "ln": cmath.log, "log10": cmath.log10, "exp": cmath.exp, "sqrt": cmath.sqrt,
    "abs": lambda z: complex(abs(z)),
    "floor": lambda z: complex(math.floor(_real(z))), "ceil": lambda z: complex(math.ceil(_real(z))),
    "det": lambda z: z,
}


def _factorial(z: complex) -> complex:
    x = _real(z)
    if x == int(x):
        if x < 0:
            raise NoValue("factorial of a negative integer")
        if x > 170:
            raise NoValue("factorial too large for a float")
        return complex(math.factorial(int(x)))
    return complex(math.gamma(x + 1))


def _binomial(n: complex, k: complex) -> complex:
    n_, k_ = _real(n), _real(k)
    if n_ == int(n_) and k_ == int(k_) and 0 <= k_ and 0 <= n_ <= 10_000:
        return complex(math.comb(int(n_), int(k_)))
    return complex(math.gamma(n_ + 1) / (math.gamma(k_ + 1) * math.gamma(n_ - k_ + 1)))


def _power(base: complex, exponent: complex) -> complex:
    if base.imag == 0 and exponent.imag == 0:
        b, e = base.real, exponent.real
        if b > 0 or (b < 0 and e == int(e)) or (b == 0 and e > 0):
            return complex(b ** e)  # real power: more accurate than the complex one
        if b == 0:
            raise NoValue("0 to a non-positive power")
    if base == 0:
        raise NoValue("0 to a complex power")
    return base ** exponent


CONSTANTS = {"pi": complex(math.pi), "e": complex(math.e), "i": 1j}


def numeric(node: tuple, point: dict[str, complex]) -> complex:
    """The value of `node` with symbols bound by `point`; raises NoValue when there is none."""
    try:
        value = _numeric(node, point)
    except (OverflowError, ZeroDivisionError, ValueError, TypeError, RecursionError) as exc:
        raise NoValue(type(exc).__name__) from None
    if not cmath.isfinite(value):
        raise NoValue("not finite")
    return value


def _numeric(node: tuple, point: dict[str, complex]) -> complex:
    kind = node[0]
    if kind == "num":
        return complex(float(node[1]))
    if kind == "sym":
        if node[1] not in point:
            raise NoValue(f"unbound symbol {node[1]}")
        return point[node[1]]
    if kind == "const":
        if node[1] == "oo":
            raise NoValue("infinity")
        return CONSTANTS[node[1]]
    if kind == "neg":
        # + 0j turns a -0.0 imaginary part into +0.0: sqrt(-(2)) must be +1.414i like sqrt(-2),
        # not the other side of the branch cut
        return -_numeric(node[1], point) + 0j
    if kind == "add":
        return sum((_numeric(c, point) for c in node[1]), 0j)
    if kind == "mul":
        product = 1 + 0j
        for child in node[1]:
            product *= _numeric(child, point)
        return product + 0j
    if kind == "div":
        return _numeric(node[1], point) * _inv(_numeric(node[2], point))
    if kind == "pow":
        return _power(_numeric(node[1], point), _numeric(node[2], point))
    if kind == "fn":
        name, args = node[1], [_numeric(a, point) for a in node[2]]
        if name in _COMPLEX_FUNCTIONS and len(args) == 1:
            return complex(_COMPLEX_FUNCTIONS[name](args[0]))
        if name == "fact":
            return _factorial(args[0])
        if name == "root" and len(args) == 2:
            return _power(args[0], _inv(args[1]))
        if name == "logb" and len(args) == 2:
            return cmath.log(args[0]) * _inv(cmath.log(args[1]))
        if name == "binom" and len(args) == 2:
            return _binomial(*args)
        if name in ("max", "min") and len(args) >= 2:
            reals = [_real(a) for a in args]
            return complex(max(reals) if name == "max" else min(reals))
        if name in ("gcd", "lcm") and len(args) >= 2:
            ints = [int(_real(a)) for a in args]
            if any(i != _real(a) for i, a in zip(ints, args)):
                raise NoValue("gcd of non-integers")
            return complex(math.gcd(*ints) if name == "gcd" else math.lcm(*ints))
    raise NoValue(f"no numeric value for {kind}")


def sample_points(symbols: set[str]) -> list[dict[str, complex]]:
    """Fixed pseudo-random points: three with positive values, one with negative ones.

    The negative point keeps |x| and x (or sqrt(x^2) and x) apart; fixed seeds make every
    verdict reproducible.
    """
    names = sorted(symbols)
    points = []
    for k, (low, high) in enumerate([(0.3, 2.2), (0.3, 2.2), (0.3, 2.2), (-2.2, -0.3)]):
        rng = random.Random(1009 * k + 17)
        points.append({name: complex(rng.uniform(low, high)) for name in names})
    return points


def close(a: complex, b: complex, rtol: float) -> bool:
    """|a - b| within `rtol` of the larger magnitude (plus ATOL near zero)."""
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + ATOL


def free_symbols(node: tuple) -> set[str]:
    """Names of the symbols in a tree."""
    if node[0] == "sym":
        return {node[1]}
    found: set[str] = set()
    for child in children(node):
        found |= free_symbols(child)
    return found


def approximation_digits(node: tuple) -> int | None:
    """Fewest significant digits among the tree's decimal literals, or None when it has none."""
    if node[0] == "num":
        return node[2] or None
    found = [d for d in map(approximation_digits, children(node)) if d is not None]
    return min(found) if found else None


# ---------------------------------------------------------------------------------- sympy values


def _sympy_function(sympy, name: str):
    table = {
        "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
        "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
        "arccot": sympy.acot, "arcsec": sympy.asec, "arccsc": sympy.acsc, "sinh": sympy.sinh,
        "cosh": sympy.cosh, "tanh": sympy.tanh, "coth": sympy.coth, "log": sympy.log, "ln": sympy.log,
        "exp": sympy.exp, "sqrt": sympy.sqrt, "abs": sympy.Abs, "floor": sympy.floor,
        "ceil": sympy.ceiling, "fact": sympy.factorial, "binom": sympy.binomial, "gcd": sympy.gcd,
        "lcm": sympy.lcm, "max": sympy.Max, "min": sympy.Min,
        "root": lambda x, n: sympy.root(x, n), "logb": lambda x, b: sympy.log(x, b),
        "log10": lambda x: sympy.log(x, 10),
    }
    if name not in table:
        raise NoValue(f"no sympy function for {name}")
    return table[name]


def check_small(node: tuple) -> None:
    """Raise NoValue unless every constant part of the tree has a modest float value.

    sympy evaluates integer arithmetic eagerly: binomial(10^9, 5*10^8), (10^100)! or 9^(9^9)
    would run for minutes inside its constructors, so such trees never reach it.
    """
    if node[0] in ("num", "sym", "const"):
        return
    if not free_symbols(node):
        value = numeric(node, {})  # raises NoValue on overflow
        if abs(value) > MAX_SYMPY_INT:
            raise NoValue("too large for the symbolic check")
    if node[0] in ("fn", "pow"):
        for arg in children(node):
            if not free_symbols(arg) and abs(numeric(arg, {})) > MAX_FACTORIAL:
                raise NoValue("argument too large for the symbolic check")
    for child in children(node):
        check_small(child)


def to_sympy(node: tuple):
    """The sympy expression of a scalar tree; raises NoValue for trees too big to hand to sympy."""
    check_small(node)
    import sympy

    def build(n: tuple):
        kind = n[0]
        if kind == "num":
            if abs(n[1].numerator) > MAX_SYMPY_INT or n[1].denominator > MAX_SYMPY_INT:
                raise NoValue("number too large for the symbolic check")
            return sympy.Rational(n[1].numerator, n[1].denominator)
        if kind == "sym":
            return sympy.Symbol(n[1])
        if kind == "const":
            return {"pi": sympy.pi, "e": sympy.E, "i": sympy.I, "oo": sympy.oo}[n[1]]
        if kind == "neg":
            return -build(n[1])
        if kind == "add":
            return sympy.Add(*[build(c) for c in n[1]])
        if kind == "mul":
            return sympy.Mul(*[build(c) for c in n[1]])
        if kind == "div":
            return build(n[1]) / build(n[2])
        if kind == "pow":
            if not free_symbols(n[2]):  # a constant exponent must be small: 9^{9^{9^9}} is refused
                try:
                    size = abs(numeric(n[2], {}))
                except NoValue:
                    size = float("inf")
                if size > 1000:
                    raise NoValue("exponent too large for the symbolic check")
            return sympy.Pow(build(n[1]), build(n[2]))
        if kind == "fn":
            if n[1] == "fact":
                arg = exact(n[2][0])
                if arg is None or arg > MAX_FACTORIAL:
                    raise NoValue("factorial too large for the symbolic check")
            return _sympy_function(sympy, n[1])(*[build(a) for a in n[2]])
        raise NoValue(f"{kind} is not a scalar")

    return build(node)
