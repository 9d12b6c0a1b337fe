"""Parse a normalised math answer (see latex.py) into a small tree of tuples.

A hand-written recursive-descent parser for the LaTeX and plain notation found in final answers:
numbers (5, 0.5, 4.5e33, 0.\\overline{3}), letters and Greek symbols, + - * / ^, implicit products
(2x, 2\\sqrt{3}, (a+5)(b+2)), \\frac \\sqrt \\binom, functions (\\sin^2 x, \\log_2 8, \\ln 2),
factorials, |x|, floor/ceil, mixed numbers (2\\frac{1}{2} is 5/2, the MATH convention), base-n
numerals (204_5), and the structures answers come in: lists "1, 2", tuples and intervals "(1, 2]",
sets \\{1, 2\\}, unions, matrices, equations and inequalities "x = 3", "a < x <= b", ratios "1:2".

It is faster than a grammar-generated parser and never builds a huge number: a tree only *says*
9^{9^{9^9}}; values.py decides how much of it to compute. Depth and size are bounded so that
adversarial input fails with ParseError instead of exhausting the stack.

The nodes are described in tree.py; tokens.py splits the text first.
"""
from __future__ import annotations

import re
from fractions import Fraction

from grpo.rewards.tokens import FUNCTION_NAMES, GREEK, TRIG, ParseError, number_node, tokenize
from grpo.rewards.tree import children, rebuild

__all__ = ["ParseError", "children", "parse", "rebuild"]

MAX_DEPTH = 60

_CONSTANT_WORDS = {"pi": "pi", "e": "e", "i": "i"}
_CONSTANT_COMMANDS = {"\\pi": "pi", "\\infty": "oo", "\\imath": "i"}
_RELATIONS = {"=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=", "\\approx": "~",
              "\\equiv": "=", "\\Rightarrow": "=", "\\implies": "="}
_MATRIX_ENVS = frozenset("pmatrix bmatrix Bmatrix vmatrix Vmatrix matrix smallmatrix array".split())
# commands that sit between operands: they never start an implicit product
_INFIX_COMMANDS = frozenset(["\\cup", "\\cap", "\\pm", "\\mp", "\\in", "\\rfloor", "\\rceil", "\\}",
                             "\\overline"]) | frozenset(_RELATIONS)
_ELLIPSES = frozenset(["\\ldots", "\\cdots", "\\dots", "\\dotsc", "\\dotsb"])


def _mul(a: tuple, b: tuple) -> tuple:
    factors = (a[1] if a[0] == "mul" else (a,)) + (b[1] if b[0] == "mul" else (b,))
    return ("mul", factors)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    # -- token helpers -------------------------------------------------------------------------
    def peek(self, offset: int = 0) -> tuple[str, str]:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else ("eof", "")

    def next(self) -> tuple[str, str]:
        token = self.peek()
        self.pos += 1
        return token

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] != "num":
            self.pos += 1
            return True
        return False

    def expect(self, value: str) -> None:
        if not self.accept(value):
            raise ParseError(f"expected {value!r}, found {self.peek()[1]!r}")

    # -- grammar, loosest binding first --------------------------------------------------------
    def parse_items(self) -> list[tuple]:
        """item (',' item)* : the elements of a list, tuple, set or interval."""
        items = [self.parse_item()]
        while self.peek()[1] in (",", ";") and self.peek()[0] == "op":
            self.next()
            items.append(self.parse_item())
        return items

    def parse_item(self) -> tuple:
        node = self.parse_union()
        if self.peek()[1] == ":":
            items = [node]
            while self.accept(":"):
                items.append(self.parse_union())
            return ("ratio", tuple(items))
        return node

    def parse_union(self) -> tuple:
        parts = [self.parse_relation()]
        while self.accept("\\cup"):
            parts.append(self.parse_relation())
        return ("union", tuple(parts)) if len(parts) > 1 else parts[0]

    def parse_relation(self) -> tuple:
        start = self.pos
        operands = [self.parse_sum()]
        lhs_end = self.pos
        ops = []
        while self.peek()[1] in _RELATIONS and self.peek()[0] in ("op", "cmd"):
            ops.append(_RELATIONS[self.next()[1]])
            operands.append(self.parse_sum())
        if not ops:
            return operands[0]
        return ("rel", tuple(ops), tuple(operands), self._is_name(start, lhs_end))

    def _is_name(self, start: int, end: int) -> bool:
        """Is tokens[start:end] a bare name: x, x_1, a_{n}, y', f(x), g(x, y)?"""
        tokens = self.tokens[start:end]
        if not tokens or not ((tokens[0][0] == "word" and len(tokens[0][1]) == 1)
                              or tokens[0][1][1:] in GREEK):
            return False
        rest = tokens[1:]
        if rest[:1] == [("op", "_")]:
            if rest[1:2] == [("op", "{")]:
                close = next((i for i, t in enumerate(rest) if t == ("op", "}")), None)
                if close is None:
                    return False
                rest = rest[close + 1:]
            else:
                rest = rest[2:]
        while rest[:1] == [("op", "'")]:
            rest = rest[1:]
        if rest and rest[0] == ("op", "(") and rest[-1] == ("op", ")"):
            return all(t[0] in ("word", "num") or t[1] == "," for t in rest[1:-1])
        return not rest

    def parse_sum(self) -> tuple:
        terms = [self.parse_term()]
        while True:
            value = self.peek()[1]
            if value == "+" and self.peek()[0] == "op":
                self.next()
                terms.append(self.parse_term())
            elif value == "-" and self.peek()[0] == "op":
                self.next()
                terms.append(("neg", self.parse_term()))
            elif value in ("\\pm", "\\mp"):
                self.next()
                terms.append(("pm", self.parse_term()))
            else:
                return ("add", tuple(terms)) if len(terms) > 1 else terms[0]

    def _starts_factor(self) -> bool:
        kind, value = self.peek()
        if kind in ("num", "word"):
            return True
        if kind == "cmd":
            return value not in _INFIX_COMMANDS
        return kind == "op" and value in ("(", "{")

    def parse_term(self) -> tuple:
        node = self.parse_unary()
        while True:
            kind, value = self.peek()
            if kind == "op" and value == "*":
                self.next()
                node = _mul(node, self.parse_unary())
            elif kind == "op" and value == "/":
                self.next()
                node = ("div", node, self.parse_unary())
            elif self._starts_factor():
                if kind == "num" and self.tokens[self.pos - 1][0] == "num":
                    raise ParseError("two numbers in a row")
                mixed = self._mixed_number(node)
                node = mixed if mixed is not None else _mul(node, self.parse_power())
            else:
                return node

    def _mixed_number(self, node: tuple) -> tuple | None:
        """2\\frac{1}{2} is 2 + 1/2 when an integer literal meets a fraction of integer literals."""
        sign, whole = (-1, node[1]) if node[0] == "neg" else (1, node)
        t = self.tokens[self.pos:self.pos + 7]
        if not (whole[0] == "num" and not whole[2] and whole[1].denominator == 1
                and len(t) == 7 and t[0] == ("cmd", "\\frac") and t[1] == ("op", "{") and t[3] == ("op", "}")
                and t[4] == ("op", "{") and t[6] == ("op", "}") and t[2][0] == "num" == t[5][0]
                and t[2][1].isdigit() and t[5][1].isdigit()):
            return None
        self.pos += 7
        denominator = int(t[5][1])
        if denominator == 0:
            raise ParseError("zero denominator")
        value = whole[1] + Fraction(int(t[2][1]), denominator)
        return ("num", value if sign > 0 else -value, 0)

    def parse_unary(self) -> tuple:
        kind, value = self.peek()
        if kind == "op" and value == "-":
            self.next()
            return ("neg", self.parse_unary())
        if kind == "op" and value == "+":
            self.next()
            return self.parse_unary()
        if value in ("\\pm", "\\mp"):
            self.next()
            return ("pm", self.parse_unary())
        return self.parse_power()

    def parse_power(self) -> tuple:
        base = self.parse_postfix()
        if self.accept("^"):
            return ("pow", base, self.parse_exponent())
        return base

    def parse_exponent(self) -> tuple:
        if self.accept("-"):
            return ("neg", self.parse_exponent())
        if self.accept("+"):
            return self.parse_exponent()
        node = self.parse_postfix()
        if self.accept("^"):
            return ("pow", node, self.parse_exponent())
        return node

    def parse_postfix(self) -> tuple:
        node = self.parse_primary()
        while True:
            if self.accept("!"):
                node = ("fn", "fact", (node,))
            elif self.accept("'"):
                if node[0] != "sym":
                    raise ParseError("prime on a non-symbol")
                node = ("sym", node[1] + "'")
            elif self.accept("_"):
                sub = self._raw_group()
                if node[0] == "sym":
                    node = ("sym", f"{node[1]}_{sub}")
                elif node[0] == "num" and not node[2] and sub.isdigit():
                    node = ("based", f"{node[1]}_{int(sub)}")
                else:
                    raise ParseError("subscript on an expression")
            else:
                return node

    def _raw_group(self) -> str:
        """The text of a subscript: one token, or a braced group joined without spaces."""
        if self.accept("{"):
            parts, depth = [], 1
            while True:
                kind, value = self.next()
                if kind == "eof":
                    raise ParseError("unclosed subscript")
                depth += value == "{"
                depth -= value == "}"
                if depth == 0:
                    return "".join(parts)
                parts.append(value)
        kind, value = self.next()
        if kind == "eof":
            raise ParseError("empty subscript")
        return value

    def parse_group(self) -> tuple:
        """A braced argument {...} of \\frac, \\sqrt, \\binom."""
        if not self.accept("{"):
            return self.parse_postfix()
        items = self.parse_items()
        self.expect("}")
        if len(items) != 1:
            raise ParseError("list inside a braced argument")
        return items[0]

    def parse_primary(self) -> tuple:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("nested too deeply")
        try:
            return self._primary()
        finally:
            self.depth -= 1

    def _primary(self) -> tuple:
        kind, value = self.next()
        if kind == "num":
            if self.peek() == ("cmd", "\\overline") and "." in value:
                return self._repeating_decimal(value)
            return number_node(value)
        if kind == "word":
            if value in _CONSTANT_WORDS:
                return ("const", _CONSTANT_WORDS[value])
            if value in FUNCTION_NAMES:
                return self.parse_function(value)
            return ("sym", value)
        if kind == "cmd":
            return self._command(value)
        if kind == "op" and value in ("(", "["):
            items = self.parse_items()
            close = self.next()[1]
            if close not in (")", "]"):
                raise ParseError("unclosed bracket")
            if len(items) == 1:
                if (value, close) in (("(", ")"), ("[", "]")):
                    return items[0]
                raise ParseError("half-open bracket around one item")
            return ("tuple", value, close, tuple(items))
        if kind == "op" and value == "{":
            items = self.parse_items()
            self.expect("}")
            return items[0] if len(items) == 1 else ("set", tuple(items))
        if kind == "op" and value == "|":
            inner = self.parse_sum()
            self.expect("|")
            return ("fn", "abs", (inner,))
        if kind == "begin":
            return self._matrix(value)
        raise ParseError(f"unexpected {value!r}")

    def _repeating_decimal(self, digits: str) -> tuple:
        """0.1\\overline{6} = 0.1666... = 1/6."""
        self.next()  # \overline
        repeat = self._raw_group()
        if not repeat.isdigit():
            raise ParseError("\\overline over non-digits")
        whole, _, fixed = digits.partition(".")
        base = Fraction(int(whole or "0")) + (Fraction(int(fixed), 10 ** len(fixed)) if fixed else 0)
        tail = Fraction(int(repeat), (10 ** len(repeat) - 1) * 10 ** len(fixed))
        return ("num", base + tail, 0)

    def _command(self, value: str) -> tuple:
        if value in _CONSTANT_COMMANDS:
            return ("const", _CONSTANT_COMMANDS[value])
        name = value[1:]
        if value == "\\frac":
            num = self.parse_group()
            return ("div", num, self.parse_group())
        if value == "\\binom":
            n = self.parse_group()
            return ("fn", "binom", (n, self.parse_group()))
        if value == "\\sqrt":
            if self.accept("["):
                index = self.parse_sum()
                self.expect("]")
                return ("fn", "root", (self.parse_group(), index))
            return ("fn", "sqrt", (self.parse_group(),))
        if name in FUNCTION_NAMES:
            return self.parse_function(name)
        if value == "\\emptyset":
            return ("set", ())
        if value == "\\{":
            if self.accept("\\}"):
                return ("set", ())
            items = self.parse_items()
            self.expect("\\}")
            return ("set", tuple(items))
        if value in ("\\lfloor", "\\lceil"):
            inner = self.parse_sum()
            self.expect("\\rfloor" if value == "\\lfloor" else "\\rceil")
            return ("fn", "floor" if value == "\\lfloor" else "ceil", (inner,))
        if name in GREEK or value in _ELLIPSES:
            return ("sym", name)
        raise ParseError(f"unknown command {value}")

    def parse_function(self, name: str) -> tuple:
        """\\sin x, \\sin^2 x, \\sin^{-1} x, \\log_2 8, \\ln(2), \\gcd(a, b), \\sqrt(x)."""
        power = base = None
        for _ in range(2):
            if self.accept("^"):
                power = self.parse_exponent()
            elif self.accept("_"):
                base = self.parse_group() if self.peek()[1] == "{" else self.parse_primary()
        if self.peek() == ("op", "("):
            self.next()
            args = tuple(self.parse_items())
            self.expect(")")
        elif self.peek() == ("op", "{"):
            args = (self.parse_group(),)
        else:  # "\sin 2x": the argument runs over a product, up to the next function or operator
            arg = self.parse_unary()
            while self._starts_factor() and not self._starts_function():
                arg = _mul(arg, self.parse_power())
            args = (arg,)
        name = {"lg": "log10", "sqrt": "sqrt"}.get(name, name)
        if base is not None:
            if name != "log" or len(args) != 1:
                raise ParseError("subscript on a function other than log")
            node = ("fn", "logb", (args[0], base))
        else:
            node = ("fn", name, args)
        if power is not None:
            if name in TRIG and power == ("neg", ("num", Fraction(1), 0)):
                return ("fn", "arc" + name, args)  # \sin^{-1} x is arcsin x
            return ("pow", node, power)
        return node

    def _starts_function(self) -> bool:
        kind, value = self.peek()
        return (kind == "word" and value in FUNCTION_NAMES) or (kind == "cmd" and value[1:] in FUNCTION_NAMES)

    def _matrix(self, begin: str) -> tuple:
        env = re.match(r"\\begin\s*\{([a-zA-Z*]+)\}", begin).group(1)
        if env not in _MATRIX_ENVS:
            raise ParseError(f"environment {env}")
        rows, row = [], [self.parse_item()]
        while True:
            kind, value = self.next()
            if kind == "op" and value == "&":
                row.append(self.parse_item())
            elif kind == "rowsep":
                rows.append(tuple(row))
                if self.peek()[0] == "end":
                    self.next()
                    break
                row = [self.parse_item()]
            elif kind == "end":
                rows.append(tuple(row))
                break
            else:
                raise ParseError("bad matrix")
        if len({len(r) for r in rows}) != 1:
            raise ParseError("ragged matrix")
        return ("matrix", tuple(rows))


def parse(text: str) -> tuple:
    """The tree of a normalised answer; a top-level comma list becomes ("list", items)."""
    parser = _Parser(tokenize(text))
    if not parser.tokens:
        raise ParseError("empty answer")
    try:
        items = parser.parse_items()
    except RecursionError:
        raise ParseError("nested too deeply") from None
    if parser.pos != len(parser.tokens):
        raise ParseError(f"unexpected {parser.peek()[1]!r}")
    return items[0] if len(items) == 1 else ("list", tuple(items))
