"""Normalise a LaTeX or plain-text answer into one canonical spelling before it is parsed.

Two answers that differ only in typesetting should read the same after `normalize`: `\\dfrac` and
`\\frac`, `\\frac12` and `\\frac{1}{2}`, `\\left(`/`\\right)` and `(`/`)`, `10,\\!080` and `10080`,
`30^\\circ` and `30`, `\\$18.90` and `18.90`, `5\\text{ cm}` and `5`, `\\le` and `<=`, a trailing
period. Dropping a unit, a degree sign, a dollar sign or a percent sign follows the MATH grading
convention (the number is the answer); the percent sign is remembered (`Normalized.percent`) so the
comparison can also accept 50% as 0.5.

All steps are regex substitutions and brace scans, linear-ish in the input, which callers cap
(`MAX_ANSWER_CHARS`), so normalising never becomes the slow part of scoring.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


# Final answers are short; anything longer is not an answer we try to understand (it can still
# match the ground truth as an identical string).
MAX_ANSWER_CHARS = 1000


@dataclass(frozen=True)
class Normalized:
    """An answer in canonical spelling, plus what normalising removed that still matters."""

    text: str  # canonical LaTeX-ish text, single spaces
    key: str  # `text` without the spaces that carry no meaning: two answers with equal keys are equal
    percent: bool = False  # a percent sign was removed
    is_text: bool = False  # the answer was a \text{...} phrase (a word answer such as "east")


_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": r"\times ", "\u00b7": r"\cdot ", "\u22c5": r"\cdot ",
    "\u00f7": r"\div ", "\u03c0": r"\pi ", "\u221a": r"\sqrt", "\u221e": r"\infty ", "\u2264": "<=",
    "\u2265": ">=", "\u2260": "!=", "\u2248": r"\approx ", "\u00b0": "", "\u222a": r"\cup ", "\u2229": r"\cap ", "\u2208": r"\in ",
    "\u2205": r"\emptyset ", "\u00b1": r"\pm ", "\u2009": " ", "\u00a0": " ", "\u202f": " ",
    "\u00b2": "^2", "\u00b3": "^3",  # km², m³: the exponent of a unit
    "\u20ac": " ", "\u00a3": " ", "\u00a5": " ", "\u20b9": " ",  # currency signs go, like "$"
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))

# (pattern, replacement) applied in order; each says why in a comment where not obvious
_SUBSTITUTIONS = [
    # thousands separators written as LaTeX: 10,\!080  10{,}080  10\,080 (thin space before 3 digits)
    (re.compile(r"(\d)\s*(?:,\\!|\{,\}|\\,)\s*(?=\d{3}(?!\d))"), r"\1"),
    (re.compile(r"\\(?:d|t|c)frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\(?:d|t)binom(?![a-zA-Z])"), r"\\binom"),
    # sizing and delimiter-pairing commands carry no meaning: \left( -> (, \left. -> nothing
    (re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|Biggl|Biggr|big|Big|bigg|Bigg)(?![a-zA-Z])\s*\.?"), ""),
    (re.compile(r"\\(?:displaystyle|textstyle|scriptstyle|limits|nolimits|mathstrut)(?![a-zA-Z])"), ""),
    (re.compile(r"\\(?:hspace|vspace|phantom|hphantom|vphantom)\*?\{[^{}]*\}"), ""),
    # degrees: 30^\circ, 30^{\circ}, 30\circ, 30\degree
    (re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])"), ""),
    # base subscripts in parentheses: 111111_{(2)} -> 111111_2
    (re.compile(r"_\{\((\d+)\)\}"), r"_\1"),
    # one-character exponents and subscripts need no braces: x^{2} -> x^2, a_{1} -> a_1
    (re.compile(r"([\^_])\{\s*([a-zA-Z0-9])\s*\}"), r"\1\2"),
    (re.compile(r"\^\s*\{\s*\\prime\s*\}|\^\s*\\prime(?![a-zA-Z])"), "'"),
    # spacing commands
    (re.compile(r"\\(?:quad|qquad)(?![a-zA-Z])|(?<!\\)\\[!,;: ]|~"), " "),  # not the \\\\ row break
    (re.compile(r"\\lbrace(?![a-zA-Z])"), r"\\{"),
    (re.compile(r"\\rbrace(?![a-zA-Z])"), r"\\}"),
    (re.compile(r"\\(?:lvert|rvert|vert|mid)(?![a-zA-Z])|\\\|"), "|"),
    (re.compile(r"\\(?:leqslant|leq|le)(?![a-zA-Z])|=<"), "<="),
    (re.compile(r"\\(?:geqslant|geq|ge)(?![a-zA-Z])|=>"), ">="),
    (re.compile(r"\\(?:neq|ne)(?![a-zA-Z])"), "!="),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"),
    (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"\\(?:times|cdot|ast)(?![a-zA-Z])"), "*"),
    (re.compile(r"\\div(?![a-zA-Z])"), "/"),
    (re.compile(r"\\(?:varnothing)(?![a-zA-Z])"), r"\\emptyset"),
    (re.compile(r"\\(?:euro|texteuro|pounds|yen|textdollar)(?![a-zA-Z])"), " "),
    (re.compile(r"\\(?:lor|vee)(?![a-zA-Z])"), ","),
    (re.compile(r"\\(?:land|wedge)(?![a-zA-Z])"), ","),
    (re.compile(r"\\(?:infin|infinity)(?![a-zA-Z])|(?<![a-zA-Z\\])(?:infinity|infty|inf)(?![a-zA-Z])"), r"\\infty"),
]

# Typography wrappers whose content is the math itself.
_UNWRAP_COMMANDS = ("mathrm", "mathbf", "mathit", "mathsf", "mathbb", "boldsymbol", "bm", "operatorname",
                    "vec", "mathcal", "textnormal", "ensuremath", "displaystyle")
# Text wrappers: a whole-answer text is the answer; inside math it is a unit or a remark.
_TEXT_COMMANDS = ("text", "textbf", "textit", "textrm", "textsf", "texttt", "mbox", "hbox", "emph")
_WRAPPER_RE = re.compile(r"\\(" + "|".join(_UNWRAP_COMMANDS + _TEXT_COMMANDS) + r")\s*\{")
_CONNECTORS = {"and", "or", "", "and/or"}  # compared after stripping spaces and commas
_AFTER_OPERAND_RE = re.compile(r"[\w})\].]\s*$")

# Units that may follow a number in bare text ("5 cm", "18 dollars"). Single letters (m, s, g)
# are left alone: after a number they are just as likely a variable (5m = 5*m).
UNIT_WORDS = (
    "units", "unit", "square units", "sq units", "cubic units", "cm", "centimeters", "centimetres", "mm",
    "millimeters", "meters", "metres", "km", "kilometers", "inches", "inch", "in", "feet", "foot", "ft",
    "yards", "yd", "miles", "mi", "mph", "degrees", "degree", "deg", "radians", "dollars", "dollar",
    "cents", "cent", "hours", "hour", "hrs", "hr", "minutes", "minute", "min", "mins", "seconds", "second",
    "sec", "days", "day", "weeks", "years", "year", "kg", "grams", "gram", "pounds", "lbs", "lb", "ounces",
    "oz", "liters", "litres", "ml", "gallons", "people", "students", "ways", "sq", "square", "cubic",
    "percent", "points", "times", "usd", "eur", "euros", "euro",
)
_UNIT_RE = re.compile(
    r"(?<=[\d}).\s])\s*(?:" + "|".join(sorted(map(re.escape, UNIT_WORDS), key=len, reverse=True))
    + r")(?:\s*\^\s*(?:\{[^{}]*\}|-?\d))?(?![a-zA-Z])\.?"
)
_PERCENT_RE = re.compile(r"\\%|%|(?<![a-zA-Z])(?:percent|per cent|pct)(?![a-zA-Z])")
_TEXT_ANSWER_RE = re.compile(r"[A-Za-z][A-Za-z '\-]*")
_IN_PREFIX_RE = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*\\in(?![a-zA-Z])\s*")
_ARGUMENT_COMMAND_RE = re.compile(r"\\(frac|binom|sqrt)(?![a-zA-Z])")
_MATH_HINT_RE = re.compile(r"[\d\\=(]")
_CONNECTOR_WORD_RE = re.compile(r"(?<![a-zA-Z\\])(?:or|and)(?![a-zA-Z])")
_SPACE_KEY_RE = re.compile(r"(?<=[^a-zA-Z]) | (?=[^a-zA-Z])")


def matching_brace(text: str, start: int) -> int:
    """Index of the '}' closing the '{' at `start`, or -1; escaped braces (`\\{`, `\\}`) do not count."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character, whatever it is
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _replace_wrappers(text: str) -> tuple[str, bool]:
    """Unwrap \\mathrm{..}-like groups; \\text{..}-like groups: whole answer -> text, else dropped.

    Returns the new text and whether the whole answer was one text group.
    """
    stripped = text.strip()
    match = _WRAPPER_RE.match(stripped)
    if match and match.group(1) in _TEXT_COMMANDS:
        end = matching_brace(stripped, match.end() - 1)
        if end == len(stripped) - 1:  # the whole answer is \text{...}
            inner = stripped[match.end():end]
            if not _WRAPPER_RE.search(inner):
                return inner.strip(), True
    out = []
    pos = 0
    for _ in range(200):  # bounded: each pass consumes one wrapper
        match = _WRAPPER_RE.search(text, pos)
        if not match:
            break
        end = matching_brace(text, match.end() - 1)
        if end == -1:
            break
        inner = text[match.end():end]
        out.append(text[pos:match.start()])
        if match.group(1) in _UNWRAP_COMMANDS:
            out.append(" " + inner + " ")
        elif inner.strip(" ,").lower() in _CONNECTORS:
            out.append(",")
        elif _AFTER_OPERAND_RE.search("".join(out)):
            # a unit or a remark after a value ("5\text{ cm}^2", "\frac{270}7\text{ degrees}"):
            # drop it, and an exponent written on the unit with it
            rest = re.match(r"\s*\^\s*(?:\{[^{}]*\}|-?\d)", text[end + 1:])
            if rest:
                end += rest.end()
            out.append(" ")
        else:  # words standing for a value: "(\text{H})", "\text{A5}_{11}"
            out.append(" " + inner + " ")
        pos = end + 1
    out.append(text[pos:])
    return "".join(out), False


def brace_arguments(text: str) -> str:
    """Give \\frac, \\binom and \\sqrt braced arguments: \\frac12 -> \\frac{1}{2}, \\sqrt2 -> \\sqrt{2}.

    TeX reads an unbraced argument as one token (a character or a command), which is what we take.
    """
    if "\\frac" not in text and "\\sqrt" not in text and "\\binom" not in text:
        return text
    pos = 0
    for _ in range(500):
        match = _ARGUMENT_COMMAND_RE.search(text, pos)
        if not match:
            break
        i = match.end()
        n_args = 1 if match.group(1) == "sqrt" else 2
        if match.group(1) == "sqrt":
            j = i
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "[":  # \sqrt[3]{x}: skip the index
                close = text.find("]", j)
                i = close + 1 if close != -1 else j
        for _arg in range(n_args):
            while i < len(text) and text[i] == " ":
                i += 1
            if i >= len(text):
                break
            if text[i] == "{":
                end = matching_brace(text, i)
                if end == -1:
                    break
                i = end + 1
                continue
            token = re.match(r"\\[a-zA-Z]+|[^\s{}]", text[i:])
            if not token:
                break
            word = token.group(0)
            text = text[:i] + "{" + word + "}" + text[i + len(word):]
            i += len(word) + 2
        pos = match.end()
    return text


def normalize(answer: str) -> Normalized:
    """The canonical form of one extracted answer (see the module docstring)."""
    text = answer.strip()
    if len(text) > MAX_ANSWER_CHARS:
        return Normalized(text, text)
    text = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], text)
    text = re.sub(r"^(\*\*|__)(.+)\1$", r"\2", text)  # markdown bold around the whole answer: **7**
    text = text.replace("\\$", " ").replace("$", " ")
    for pattern in (r"^\\\(", r"\\\)$", r"^\\\[", r"\\\]$"):
        text = re.sub(pattern, "", text.strip())
    text = re.sub(r"\\+\s*$", "", text)  # a stray trailing "\" or row break "\\" ends nothing
    text = re.sub(r"(?<!\\)[\s.,;]+$", "", text)  # "\text{(E)}," is a whole-text answer; "\," is a space
    text, is_text = _replace_wrappers(text)
    for pattern, replacement in _SUBSTITUTIONS:
        text = pattern.sub(replacement, text)
    percent = bool(_PERCENT_RE.search(text))
    if percent:
        text = _PERCENT_RE.sub(" ", text)
    if not is_text:
        if _MATH_HINT_RE.search(text):  # "x = 1 or x = 2": the words join answers
            text = _CONNECTOR_WORD_RE.sub(",", text)
        text = _UNIT_RE.sub(" ", text)
        text = brace_arguments(text)
        text = _IN_PREFIX_RE.sub("", text.strip())
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r",(?:\s*,)+", ",", text)  # "2, 3, \text{ and } 4" left an empty item
    # a sentence's final period or comma, and a leading "=" ("= 5", "\approx 5")
    text = re.sub(r"^(?:=|\\approx(?![a-zA-Z]))\s*", "", text)
    text = re.sub(r"[\s.,;]+$", "", text)
    if not is_text and _TEXT_ANSWER_RE.fullmatch(text) and " " in text.strip():
        is_text = True  # several words ("no solution") are a phrase, not a product of letters
    key = _SPACE_KEY_RE.sub("", text)
    return Normalized(text, key.lower() if is_text else key, percent, is_text)
