"""Decide whether two final answers are the same answer: `equivalent(gold, predicted)`.

The checks run cheapest first and stop at the first verdict:
1. canonical strings (latex.normalize) are equal;
2. word answers ("\\text{east}", "(C)") compare as case-insensitive text / choice letters;
3. both parse (parse.py) and the trees match structurally, with these conventions:
   - bare lists "1, 2" and sets "\\{1, 2\\}" are unordered ("enter all solutions"); tuples and
     intervals are ordered and their brackets must match: (1, 2] is not [1, 2];
   - "1 \\pm \\sqrt{2}" is the list of both values; "x = 3" answers "3" (a name on the left);
     two equations are equal when one is a nonzero multiple of the other (y = 2x and 2x - y = 0);
     "x > 3" is the interval (3, \\infty);
   - a column vector matches the tuple of its entries;
   - "58,500" may be a thousands-separated number, and "50%" may mean 50 or 0.5;
4. scalars compare exactly as rationals (0.5 = \\frac{1}{2}); else numerically as complex floats
   at a few fixed points for their symbols (relative tolerance 1e-9; 1e-6 when a decimal with
   at least six significant digits may be a rounded irrational: 1.7320508 is sqrt(3), 6366.2 is
   not 20000/pi); else, when no point gives a value, with sympy.simplify. Random-point testing
   proves (x+1)^2 = x^2+2x+1 in microseconds where simplify takes milliseconds, and it cannot be
   fooled into a hang by a huge power (see values.py).
"""
from __future__ import annotations

import itertools
import random
import re
from fractions import Fraction

from grpo.rewards.latex import MAX_ANSWER_CHARS, Normalized, normalize
from grpo.rewards.parse import ParseError, parse
from grpo.rewards.tree import children, rebuild
from grpo.rewards.values import (NoValue, approximation_digits, check_small, exact, free_symbols, numeric,
                                 to_sympy)

EXACT_RTOL = 1e-9  # float noise of evaluating an exact expression
APPROX_RTOL = 1e-6  # a rounded decimal answer is accepted within this relative error...
APPROX_DIGITS = 6  # ...when it is written with at least this many significant digits
ATOL = 1e-12
MAX_ITEMS = 50  # longest list/set compared element by element
MAX_PM_VARIANTS = 8

_STRUCTURES = frozenset(["list", "set", "tuple", "union", "matrix", "rel", "ratio", "based"])
_UNORDERED = frozenset(["list", "set"])
_CHOICE_RE = re.compile(r"\(([a-e])\)|([a-e])")
_WORD_RE = re.compile(r"[a-z]{3,}")
_THOUSANDS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d.]|,\d)")
_ONE_HUNDREDTH = ("num", Fraction(1, 100), 0)


def _sample_points(symbols: set[str]) -> list[dict[str, complex]]:
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


def _close(a: complex, b: complex, rtol: float) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + ATOL


def _infinity_sign(node: tuple) -> int:
    if node == ("const", "oo"):
        return 1
    if node[0] == "neg":
        return -_infinity_sign(node[1])
    return 0


def _numeric_verdict(a: tuple, b: tuple, rtol: float) -> bool | None:
    """True/False when enough sample points give both sides a value, else None."""
    symbols = free_symbols(a) | free_symbols(b)
    points = _sample_points(symbols) if symbols else [{}]
    valid = 0
    for point in points:
        try:
            va, vb = numeric(a, point), numeric(b, point)
        except NoValue:
            continue  # undefined here on at least one side: this point says nothing
        if not _close(va, vb, rtol):
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
    digits = [d for d in (approximation_digits(a), approximation_digits(b)) if d is not None]
    # a decimal with enough digits may be a rounded irrational (1.7320508 for sqrt 3); one with
    # few digits (6366.2 for 20000/pi) is a rounding, not the answer
    rtol = APPROX_RTOL if digits and min(digits) >= APPROX_DIGITS else EXACT_RTOL
    value_a, value_b = exact(a), exact(b)
    if value_a is not None and value_b is not None:
        if value_a == value_b:
            return True
        try:
            return rtol > EXACT_RTOL and _close(complex(float(value_a)), complex(float(value_b)), rtol)
        except OverflowError:
            return False
    verdict = _numeric_verdict(a, b, rtol)
    if verdict is not None:
        return verdict
    return _sympy_equal(a, b)


def _pm_variants(node: tuple) -> list[tuple]:
    """Every reading of the ± signs in a tree: 1 \\pm 2 -> [1 + 2, 1 - 2]."""
    if node[0] == "pm":
        return [v for inner in _pm_variants(node[1]) for v in (inner, ("neg", inner))][:MAX_PM_VARIANTS]
    kids = children(node)
    if not kids:
        return [node]
    options = [_pm_variants(k) for k in kids]
    if all(len(o) == 1 for o in options):
        return [node]
    return [rebuild(node, combo) for combo in itertools.islice(itertools.product(*options), MAX_PM_VARIANTS)]


def _expand_pm(node: tuple) -> tuple:
    """Lists and scalars with ± become lists of their values; other structures are kept."""
    if node[0] in _UNORDERED:
        items = tuple(v for item in node[1] for v in _pm_variants(item))
        return (node[0], items)
    if node[0] in _STRUCTURES:
        return node
    variants = _pm_variants(node)
    return ("list", tuple(variants)) if len(variants) > 1 else node


def _assignment_value(node: tuple) -> tuple | None:
    """The right side of "x = 3", "f(x) = x + 1" (a name on the left), else None."""
    if node[0] == "rel" and node[1] == ("=",) and node[3]:
        return _expand_pm(node[2][1])
    return None


def _as_interval(node: tuple) -> tuple | None:
    """"x > 3" -> (3, \\infty); "-2 <= x < 7" -> [-2, 7); None for anything else."""
    if node[0] != "rel" or "=" in node[1] or "!=" in node[1]:
        return None
    ops, operands = node[1], node[2]
    oo = ("const", "oo")
    if len(ops) == 1:
        left, right = operands
        if left[0] == "sym" and right[0] != "sym":
            var_first, bound = True, right
        elif right[0] == "sym" and left[0] != "sym":
            var_first, bound = False, left
        else:
            return None
        op = ops[0]
        greater = (op in (">", ">=")) == var_first  # x > b or b < x: the variable is above b
        closed = "=" in op
        if greater:
            return ("tuple", "[" if closed else "(", ")", (bound, oo))
        return ("tuple", "(", "]" if closed else ")", (("neg", oo), bound))
    if len(ops) == 2 and operands[1][0] == "sym":
        if all(op in ("<", "<=") for op in ops):
            low, high, (op_low, op_high) = operands[0], operands[2], ops
        elif all(op in (">", ">=") for op in ops):
            low, high, (op_high, op_low) = operands[2], operands[0], ops
        else:
            return None
        return ("tuple", "[" if "=" in op_low else "(", "]" if "=" in op_high else ")", (low, high))
    return None


def _unordered(items_a: tuple, items_b: tuple) -> bool:
    if len(items_a) != len(items_b) or len(items_a) > MAX_ITEMS:
        return False
    unused = list(items_b)
    for item in items_a:
        for j, other in enumerate(unused):
            if same_tree(item, other):
                del unused[j]
                break
        else:
            return False
    return True


def _same_equation(a: tuple, b: tuple) -> bool:
    """Two equations: same name on the left and equal right sides, or proportional a-b forms."""
    (lhs_a, rhs_a), (lhs_b, rhs_b) = a[2], b[2]
    if a[3] and b[3] and lhs_a == lhs_b:
        return same_tree(_expand_pm(rhs_a), _expand_pm(rhs_b))
    diff_a = ("add", (lhs_a, ("neg", rhs_a)))
    diff_b = ("add", (lhs_b, ("neg", rhs_b)))
    symbols = free_symbols(diff_a) | free_symbols(diff_b)
    if not symbols or free_symbols(diff_a) != free_symbols(diff_b):
        return False
    ratio = None
    valid = 0
    for point in _sample_points(symbols):
        try:
            va, vb = numeric(diff_a, point), numeric(diff_b, point)
        except NoValue:
            continue
        if abs(vb) <= ATOL or abs(va) <= ATOL:
            continue
        if ratio is None:
            ratio = va / vb
        elif not _close(va / vb, ratio, EXACT_RTOL * 100):
            return False
        valid += 1
    return valid >= 2


def same_tree(a: tuple, b: tuple) -> bool:
    """Are two parsed answers the same answer? (the structural rules of the module docstring)"""
    if a == b:  # the same tree is the same answer, however hard it would be to evaluate
        return True
    a, b = _expand_pm(a), _expand_pm(b)
    kind_a, kind_b = a[0], b[0]
    if kind_a == "rel" and kind_b == "rel":
        if a[1] == ("=",) and b[1] == ("=",):
            return _same_equation(a, b)
        interval_a, interval_b = _as_interval(a), _as_interval(b)
        if interval_a is not None and interval_b is not None:
            return same_tree(interval_a, interval_b)
        return a[1] == b[1] and len(a[2]) == len(b[2]) and all(map(same_tree, a[2], b[2]))
    for x, y in ((a, b), (b, a)):
        if x[0] == "rel":
            value = _assignment_value(x)
            if value is not None:
                return same_tree(value, y)
            interval = _as_interval(x)
            return interval is not None and y[0] in ("tuple", "union") and same_tree(interval, y)
    if kind_a in _UNORDERED and kind_b in _UNORDERED:
        return _unordered(a[1], b[1])
    for x, y in ((a, b), (b, a)):
        if x[0] == "set" and len(x[1]) == 1 and y[0] not in _STRUCTURES:
            return same_tree(x[1][0], y)  # {3} answers 3
    if kind_a == "tuple" and kind_b == "tuple":
        return a[1:3] == b[1:3] and len(a[3]) == len(b[3]) and all(map(same_tree, a[3], b[3]))
    if kind_a == "matrix" and kind_b == "matrix":
        return (len(a[1]) == len(b[1]) and len(a[1][0]) == len(b[1][0])
                and all(map(same_tree, children(a), children(b))))
    for x, y in ((a, b), (b, a)):
        if x[0] == "matrix" and y[0] == "tuple" and y[1:3] == ("(", ")") and 1 in (len(x[1]), len(x[1][0])):
            cells = children(x)
            return len(cells) == len(y[3]) and all(map(same_tree, cells, y[3]))
    if kind_a == "union" and kind_b == "union":
        return _unordered(a[1], b[1])
    if kind_a == "ratio" and kind_b == "ratio":
        return len(a[1]) == len(b[1]) and all(map(same_tree, a[1], b[1]))
    if kind_a == "based" or kind_b == "based":
        return a == b
    if kind_a in _STRUCTURES or kind_b in _STRUCTURES:
        return False
    return same_scalar(a, b)


def _readings(answer: Normalized) -> list[tuple]:
    """The parse trees an answer may mean: as written, with thousands commas, as a percentage."""
    texts = [answer.text]
    if _THOUSANDS_RE.search(answer.text):
        texts.append(_THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), answer.text))
    trees = []
    for text in texts:
        try:
            tree = parse(text)
        except (ParseError, ValueError, ZeroDivisionError, RecursionError):
            continue
        trees.append(tree)
        if answer.percent and tree[0] not in _STRUCTURES:
            trees.append(("mul", (tree, _ONE_HUNDREDTH)))  # 50% read as 0.5
    return trees


def _choice(answer: Normalized) -> str | None:
    """The letter of a multiple-choice answer written "(C)" or "\\text{C}", else None."""
    if not (answer.is_text or answer.key.startswith("(")):
        return None
    match = _CHOICE_RE.fullmatch(answer.key.lower())
    return (match.group(1) or match.group(2)) if match else None


def equivalent(gold: str, predicted: str) -> bool:
    """Is `predicted` the same final answer as `gold`? Both are answers, not whole outputs."""
    if len(gold) > MAX_ANSWER_CHARS or len(predicted) > MAX_ANSWER_CHARS:
        return gold.strip() == predicted.strip()
    g, p = normalize(gold), normalize(predicted)
    if not g.key or not p.key:
        return False
    if g.key == p.key:
        return True
    if g.is_text or p.is_text or (_WORD_RE.fullmatch(g.key.lower()) and _WORD_RE.fullmatch(p.key.lower())):
        if g.key.lower() == p.key.lower():
            return True
        choice = _choice(g)
        if choice is not None:
            return choice == _choice(p) or choice == p.key.lower()
        if _choice(p) is not None:
            return _choice(p) == g.key.lower()
    gold_trees = _readings(g)
    if not gold_trees:
        return False
    for pred_tree in _readings(p):
        for gold_tree in gold_trees:
            try:
                if same_tree(gold_tree, pred_tree):
                    return True
            except (NoValue, RecursionError, ValueError, ZeroDivisionError, OverflowError):
                continue
    return False
