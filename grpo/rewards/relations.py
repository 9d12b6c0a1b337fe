"""Relations as answers (equations, inequalities, chains, approximations), read the way graders read them.

- An "=" chain states its last side: "y = 2+3+4 = 9" is "y = 9" and "2+3+4 = 9" is 9. Every side
  without symbols must agree with the last one: "x = 3 = 9" is a false statement, not an answer.
- "\\approx" annotates the side before it: "\\frac{\\sqrt2}{2} \\approx 0.707" is \\frac{\\sqrt2}{2}
  when the annotation is a fair rounding (within one unit of its last digit), and no answer when
  it is not; "x \\approx 0.707" (a name before it) states the value 0.707.
- A relation missing a side ("x =", "y >") never parses, so it is never an answer.
- An inequality in one variable is the interval of its solutions whenever that is linear:
  "x > 3", "3 < x", "-y > -2" (y < 2), "2x + 1 <= 7" are intervals, "-2 <= x < 7" is [-2, 7),
  and "x \\neq 2" is (-\\infty, 2) \\cup (2, \\infty); so the same relation written the other way
  round, or as an interval, is the same answer.
- Other inequalities compare as "f < 0" / "f <= 0" forms: the same relation when f_a = c * f_b for
  a constant c > 0 at every sample point (c != 0 for "=" and "\\neq").
"""
from __future__ import annotations

from fractions import Fraction

from grpo.rewards.scalars import EXACT_RTOL, consistent_approximation, same_scalar
from grpo.rewards.tree import children, rebuild
from grpo.rewards.values import ATOL, NoValue, close, exact, free_symbols, numeric, sample_points

INVALID = ("invalid",)  # a relation that states something false: never equal to any answer
_OO = ("const", "oo")
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "!=": "!=", "=": "="}


def settle(node: tuple) -> tuple:
    """The answer a relation states: chains and approximations reduced (module docstring), else `node`."""
    if node[0] != "rel" or not set(node[1]) <= {"=", "~"}:
        return node
    ops, sides, lhs_is_name = node[1], list(node[2]), node[3]
    if "~" in ops:
        cut = ops.index("~")
        exact_side = sides[cut]
        if cut == 0 and lhs_is_name:  # "x \approx 0.707": the approximation is the value stated
            ops = ("=",) + ops[1:]
        else:
            if not all(consistent_approximation(exact_side, approx) for approx in sides[cut + 1:]):
                return INVALID
            ops, sides = ops[:cut], sides[:cut + 1]
        if "~" in ops:
            return INVALID  # "a \approx b \approx c" with a name first: not one clear value
    if not ops:
        return sides[0]
    last = sides[-1]
    middle = sides[1:-1] if lhs_is_name else sides[:-1]
    for side in middle:
        if not free_symbols(side) and not free_symbols(last):
            try:
                if not same_scalar(side, last):
                    return INVALID
            except (NoValue, ValueError, ZeroDivisionError, OverflowError):
                return INVALID
    if lhs_is_name:
        return ("rel", ("=",), (sides[0], last), True)
    if len(sides) > 2 or not (free_symbols(sides[0]) or free_symbols(last)):
        return last  # "2+3+4 = 9": a computation whose result is the answer
    return ("rel", ops, tuple(sides), False)


def assignment_value(node: tuple) -> tuple | None:
    """The value side of "x = 3", "f(x) = x + 1" (a name on the left), else None."""
    if node[0] == "rel" and node[1] == ("=",) and node[3]:
        return node[2][1]
    return None


def _substitute(node: tuple, name: str, value: Fraction) -> tuple:
    if node == ("sym", name):
        return ("num", value, 0)
    kids = children(node)
    return rebuild(node, tuple(_substitute(k, name, value) for k in kids)) if kids else node


def _interval(op: str, bound: tuple) -> tuple:
    """The interval of "x op bound"."""
    if op == "!=":
        return ("union", (("tuple", "(", ")", (("neg", _OO), bound)), ("tuple", "(", ")", (bound, _OO))))
    closed = "=" in op
    if op in (">", ">="):
        return ("tuple", "[" if closed else "(", ")", (bound, _OO))
    return ("tuple", "(", "]" if closed else ")", (("neg", _OO), bound))


def _linear_bound(difference: tuple, name: str) -> tuple[Fraction, Fraction] | None:
    """(a, b) with difference = a * name + b exactly, when it is linear with rational coefficients."""
    values = [exact(_substitute(difference, name, Fraction(k))) for k in (0, 1, 2)]
    if any(v is None for v in values):
        return None
    b, a = values[0], values[1] - values[0]
    return (a, b) if a != 0 and values[2] == 2 * a + b else None


def as_interval(node: tuple) -> tuple | None:
    """The solution interval of a one-variable inequality (module docstring), else None."""
    if node[0] != "rel" or "=" in node[1] or "~" in node[1]:
        return None
    ops, sides = node[1], node[2]
    if len(ops) == 1:
        left, right = sides
        symbols = free_symbols(left) | free_symbols(right)
        if len(symbols) != 1:
            return None
        op = ops[0]
        if left[0] == "sym" and not free_symbols(right):
            return _interval(op, right)
        if right[0] == "sym" and not free_symbols(left):
            return _interval(_FLIP[op], left)
        (name,) = symbols
        line = _linear_bound(("add", (left, ("neg", right))), name)
        if line is None:
            return None
        a, b = line  # a*x + b op 0  ->  x op' -b/a, the direction flipping when a < 0
        return _interval(op if a > 0 else _FLIP[op], ("num", -b / a, 0))
    if len(ops) == 2 and sides[1][0] == "sym" and "!=" not in ops:
        if all(op in ("<", "<=") for op in ops):
            low, high, (op_low, op_high) = sides[0], sides[2], ops
        elif all(op in (">", ">=") for op in ops):
            low, high, (op_high, op_low) = sides[2], sides[0], ops
        else:
            return None
        return ("tuple", "[" if "=" in op_low else "(", "]" if "=" in op_high else ")", (low, high))
    return None


def proportional_forms(a: tuple, b: tuple) -> bool:
    """Two single relations with the same meaning as "f op 0" forms (module docstring, last point)."""
    (op_a,), (op_b,) = a[1], b[1]
    diff_a = ("add", (a[2][0], ("neg", a[2][1])))
    diff_b = ("add", (b[2][0], ("neg", b[2][1])))
    sign_needed = 0  # for "=" and "!=" any nonzero factor; for inequalities a positive one
    if op_a in ("<", "<=", ">", ">="):
        if op_a in (">", ">="):  # f > 0  is  -f < 0
            diff_a, op_a = ("neg", diff_a), _FLIP[op_a]
        if op_b in (">", ">="):
            diff_b, op_b = ("neg", diff_b), _FLIP[op_b]
        sign_needed = 1
    if op_a != op_b:
        return False
    symbols = free_symbols(diff_a) | free_symbols(diff_b)
    if not symbols or free_symbols(diff_a) != free_symbols(diff_b):
        return False
    ratio = None
    valid = 0
    for point in sample_points(symbols):
        try:
            va, vb = numeric(diff_a, point), numeric(diff_b, point)
        except NoValue:
            continue
        if abs(vb) <= ATOL or abs(va) <= ATOL:
            continue
        if ratio is None:
            ratio = va / vb
            if sign_needed and (abs(ratio.imag) > EXACT_RTOL or ratio.real <= 0):
                return False
        elif not close(va / vb, ratio, EXACT_RTOL * 100):
            return False
        valid += 1
    return valid >= 2
