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
   - matrices match entry by entry whatever their brackets (pmatrix, bmatrix, array); a column or
     row vector matches the tuple of its entries, (1, 2) or [1, 2];
   - "58,500" and "2,500.75" may be thousands-separated numbers, and "50%" may mean 50 or 0.5;
4. scalars compare as scalars.py says: exactly as rationals (0.5 = \\frac{1}{2}), else numerically
   at a few fixed points, with the tolerance set by the significant digits a decimal is written
   with (1.3333 is 4/3, 3.14 is not pi); else, when no point gives a value, with sympy.simplify.
Relations (equations, inequalities, chains, "\\approx") are read as relations.py says.
"""
from __future__ import annotations

import itertools
import re
from fractions import Fraction

from grpo.rewards.latex import MAX_ANSWER_CHARS, Normalized, normalize
from grpo.rewards.parse import ParseError, parse
from grpo.rewards.relations import INVALID, as_interval, assignment_value, proportional_forms, settle
from grpo.rewards.scalars import same_scalar
from grpo.rewards.tree import children, rebuild
from grpo.rewards.values import NoValue, free_symbols

MAX_ITEMS = 50  # longest list/set compared element by element
MAX_PM_VARIANTS = 8

_STRUCTURES = frozenset(["list", "set", "tuple", "union", "matrix", "rel", "ratio", "based"])
_UNORDERED = frozenset(["list", "set"])
_CHOICE_RE = re.compile(r"\(([a-e])\)|([a-e])")
_WORD_RE = re.compile(r"[a-z]{3,}")
_THOUSANDS_RE = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d.]|,\d)")
_ONE_HUNDREDTH = ("num", Fraction(1, 100), 0)


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
    return proportional_forms(a, b)


def _same_relation(a: tuple, b: tuple) -> bool:
    if a[1] == ("=",) and b[1] == ("=",):
        return _same_equation(a, b)
    interval_a, interval_b = as_interval(a), as_interval(b)
    if interval_a is not None and interval_b is not None:  # "-y > -2" is "y < 2", not "x < 2"
        return free_symbols(a) == free_symbols(b) and same_tree(interval_a, interval_b)
    if len(a[1]) == 1 and len(b[1]) == 1 and proportional_forms(a, b):
        return True
    return a[1] == b[1] and len(a[2]) == len(b[2]) and all(map(same_tree, a[2], b[2]))


def same_tree(a: tuple, b: tuple) -> bool:
    """Are two parsed answers the same answer? (the structural rules of the module docstring)"""
    if a == b:  # the same tree is the same answer, however hard it would be to evaluate
        return True
    a, b = settle(a), settle(b)
    if a is INVALID or b is INVALID:
        return False
    a, b = _expand_pm(a), _expand_pm(b)
    kind_a, kind_b = a[0], b[0]
    if kind_a == "rel" and kind_b == "rel":
        return _same_relation(a, b)
    for x, y in ((a, b), (b, a)):
        if x[0] == "rel":
            value = assignment_value(x)
            if value is not None:
                return same_tree(_expand_pm(value), y)
            interval = as_interval(x)
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
        # a vector written as a tuple: (1, 2) or [1, 2] against a one-column or one-row matrix
        if x[0] == "matrix" and y[0] == "tuple" and y[1:3] in (("(", ")"), ("[", "]")) and 1 in (len(x[1]), len(x[1][0])):
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
