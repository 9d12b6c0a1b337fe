"""Tokens of a normalised math answer (see latex.py), for the parser in parse.py.

`tokenize` splits an answer into (kind, text) pairs: numbers, \\begin/\\end of environments, the
\\\\ row break, commands, words (letters run together are split into known function names and
single letters: "sinx" -> sin, x), operators. `number_node` turns a number literal into its tree node
and remembers how many significant digits a decimal was written with (a possibly rounded value).
Sizes are bounded so that adversarial input fails with ParseError instead of building huge numbers.
"""
from __future__ import annotations

import re
from fractions import Fraction

MAX_TOKENS = 600
MAX_DIGITS = 1000  # longest number literal (Python refuses int("9" * 4301) anyway)
MAX_EXPONENT_LITERAL = 1000  # largest |exponent| of a literal such as 4.5e33

_TOKEN_RE = re.compile(
    r"(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<begin>\\begin\s*\{[a-zA-Z*]+\}(?:\{[a-zA-Z|]*\})?)"
    r"|(?P<end>\\end\s*\{[a-zA-Z*]+\})"
    r"|(?P<rowsep>\\\\)"
    r"|(?P<cmd>\\[a-zA-Z]+|\\[{}])"
    r"|(?P<word>[a-zA-Z]+)"
    r"|(?P<op><=|>=|!=|[-+*/^_=<>(),\[\]{}|!:&;'])"
    r"|(?P<ws>\s+)"
)

TRIG = ("sin", "cos", "tan", "cot", "sec", "csc")
FUNCTION_NAMES = frozenset(
    TRIG + tuple("arc" + t for t in TRIG) + ("sinh", "cosh", "tanh", "coth", "log", "ln", "lg", "exp",
                                             "sqrt", "gcd", "lcm", "max", "min", "det", "abs")
)
# longest first, so "sinh" wins over "sin" when a word is split ("sinhx" -> sinh x)
_WORD_PREFIXES = sorted(FUNCTION_NAMES | {"pi"}, key=len, reverse=True)
GREEK = frozenset(
    "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi rho "
    "varrho sigma varsigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma "
    "Upsilon Phi Psi Omega ell".split()
)


class ParseError(Exception):
    """The text is not an answer this parser understands."""


def tokenize(text: str) -> list[tuple[str, str]]:
    """(kind, text) tokens; letters run together ("xy") become one token per letter or function name."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match:
            raise ParseError(f"unexpected character {text[pos]!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind == "ws":
            continue
        value = match.group(0)
        if kind == "word":
            tokens.extend(_split_word(value))
        else:
            tokens.append((kind, value))
        if len(tokens) > MAX_TOKENS:
            raise ParseError("answer too long")
    return tokens


def _split_word(word: str) -> list[tuple[str, str]]:
    """"sinx" -> sin, x;  "xy" -> x, y;  "pi" -> pi: known names first, then single letters."""
    out = []
    i = 0
    while i < len(word):
        for name in _WORD_PREFIXES:
            if word.startswith(name, i):
                out.append(("word", name))
                i += len(name)
                break
        else:
            out.append(("word", word[i]))
            i += 1
    return out


def significant_digits(text: str) -> int:
    """Significant digits of a decimal literal: "6366.2" -> 5, "0.000672" -> 3, "4.5e33" -> 2."""
    mantissa = re.split("[eE]", text)[0].replace(".", "").lstrip("0")
    return max(len(mantissa), 1)


def number_node(text: str) -> tuple:
    """("num", value, digits) of a literal: digits is 0 for an exact integer, else its significant digits."""
    mantissa, _, exponent = text.lower().partition("e")
    # Fraction("1e999999999") would build a billion-digit integer: such literals are not answers
    if (exponent and abs(int(exponent)) > MAX_EXPONENT_LITERAL) or len(mantissa) > MAX_DIGITS:
        raise ParseError("number literal too large")
    # a decimal point or an exponent marks a possibly rounded value: remember its precision
    approx = significant_digits(text) if ("." in text.rstrip(".") or exponent) else 0
    return ("num", Fraction(text.rstrip(".") or "0"), approx)
