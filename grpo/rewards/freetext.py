"""The fallback reading of a final answer written in prose, with no `<answer>`, `\\boxed{}` or "answer is".

Graders of free-form outputs read the last thing the text states; so do we, by one fixed rule:
1. candidates are math spans (`$...$`, `$$...$$` also across line breaks, `\\(...\\)`, `\\[...\\]`)
   and numbers written outside them (`2,500.75`, `-3`, `3/4`, `35%`, `35 percent`);
2. the sentence holding the last candidate is the answer sentence (sentences end at `.`, `!`, `?`
   followed by a space, and at line breaks; a question or a sentence that sets up the problem,
   "Find ...", "Let ...", is skipped: restating the question is not answering it);
3. in that sentence the answer is the last math span, else the last number. A span that only names
   a variable ("the value of $x$ is 5") is a mention, not an answer, and a value introduced by
   "about", "approximately", "roughly" or "\\approx" annotates the answer before it ("$\\sqrt 2$,
   about $1.41$");
4. candidates joined only by commas and "and" are one list answer ("the roots are $2$ and $3$":
   "2, 3"); a sentence offering alternatives ("$3$ or $5$") states no single answer: none is read.
A `$` right before a digit whose partner `$` also precedes a digit ("costs $5 and $7") is a
currency sign, not math. The scan is linear in the text: the delimiters are found by one regex
pass and paired left to right, never by a backtracking search.

This is deliberately kept apart from the strict extraction (extract.py) that the format reward
relies on: only correctness checks fall back to it.
"""
from __future__ import annotations

import bisect
import re

# A delimiter of math: "$$", "\[", "\]", "\(", "\)", or a single unescaped "$".
_DELIMITER_RE = re.compile(r"(?<!\\)\$\$|\\\[|\\\]|\\\(|\\\)|(?<!\\)\$")
_CLOSERS = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}
# Numbers in prose: thousands groups with a decimal part, plain decimals, simple fractions; a
# percent sign or word right after belongs to the number.
_NUMBER_RE = re.compile(
    r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)"
    r"(?:[ \t]*(?:\\%|%|percent\b|pct\b|per cent\b))?"
)
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)|\n")
_SETUP_RE = re.compile(r"\s*(?:find|compute|calculate|determine|evaluate|simplify|solve|express|let|suppose|"
                       r"what|how|which|show|prove)\b", re.IGNORECASE)
_ALTERNATIVE_RE = re.compile(r"\bor\b|\beither\b", re.IGNORECASE)
# "$x$", "$a_1$", "$f(x)$", "$\theta$": naming a quantity, not giving its value
_MENTION_RE = re.compile(r"\s*(?:[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:\([a-z, ]*\))?'*\s*")
_ANNOTATION_RE = re.compile(r"(?:about|approximately|approx\.?|roughly|around|nearly|\\approx|\u2248)\W{0,3}$",
                            re.IGNORECASE)
_JOINER_RE = re.compile(r"\s*(?:,|,?\s*and)\s*")
_MASK = "\0"


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every math span, in order; unclosed and currency `$` are skipped."""
    spans = []
    delimiters = list(_DELIMITER_RE.finditer(text))
    i = 0
    while i < len(delimiters):
        opening = delimiters[i]
        closer = _CLOSERS.get(opening.group(0))
        if closer is None:  # a stray "\]" or "\)"
            i += 1
            continue
        j = i + 1
        while j < len(delimiters) and delimiters[j].group(0) != closer:
            j += 1
        if j == len(delimiters):
            i += 1
            continue
        closing = delimiters[j]
        content = text[opening.end():closing.start()]
        if closer == "$" and _is_currency(text, opening, closing):
            i += 1  # the closing "$" may open the next span
            continue
        spans.append((opening.start(), closing.end(), content.strip()))
        i = j + 1
    return spans


def _is_currency(text: str, opening: re.Match, closing: re.Match) -> bool:
    """"$5 and $7": both dollar signs stand before digits, and prose lies between them."""
    after_open = text[opening.end():opening.end() + 1]
    after_close = text[closing.end():closing.end() + 2].lstrip()
    between = text[opening.end():closing.start()]
    return after_open.isdigit() and (after_close[:1].isdigit() or between.endswith(" "))


def _sentence_bounds(ends: list[int], length: int, position: int) -> tuple[int, int]:
    """Start and end of the sentence holding `position`, given the sorted sentence-end offsets."""
    k = bisect.bisect_right(ends, position)
    return (ends[k - 1] + 1 if k else 0), (ends[k] if k < len(ends) else length)


def free_text_answer(text: str) -> str | None:
    """The answer a prose output states by the rule of the module docstring, or None."""
    spans = [s for s in math_spans(text) if s[2]]
    pieces, pos = [], 0
    for start, end, _ in spans:  # mask spans so their digits and dots are not read as prose
        pieces.append(text[pos:start])
        pieces.append(_MASK * (end - start))
        pos = end
    pieces.append(text[pos:])
    masked = "".join(pieces)
    numbers = [(m.start(), m.end(), m.group(0)) for m in _NUMBER_RE.finditer(masked)]
    candidates = sorted([(s[1], s) for s in spans if not _MENTION_RE.fullmatch(s[2])]
                        + [(n[1], n) for n in numbers], key=lambda c: c[0])
    ends = [m.start() for m in _SENTENCE_END_RE.finditer(masked)]
    # walk back from the last candidate until a sentence that answers rather than asks
    high = len(candidates)
    while high:
        start, end = _sentence_bounds(ends, len(masked), candidates[high - 1][1][0])
        sentence = masked[start:end]
        low = high
        while low and candidates[low - 1][1][0] >= start:
            low -= 1
        in_sentence = [c[1] for c in candidates[low:high]]
        high = low
        if masked[end:end + 1] == "?" or _SETUP_RE.match(sentence.replace(_MASK, " ")):
            continue
        if len(in_sentence) > 1 and _ALTERNATIVE_RE.search(sentence):
            return None
        stated = [c for c in in_sentence if not _ANNOTATION_RE.search(text[max(0, c[0] - 16):c[0]])]
        in_sentence = stated or in_sentence
        in_math = [c for c in in_sentence if c in spans]
        pool = in_math or in_sentence
        chosen = [pool[-1]]
        # "$x = 2$ and $x = 3$", "2, 3 and 5": candidates joined only by commas and "and" are one list
        while len(chosen) < len(pool) and _JOINER_RE.fullmatch(text[pool[-len(chosen) - 1][1]:chosen[0][0]]):
            chosen.insert(0, pool[-len(chosen) - 1])
        return ", ".join(c[2].strip() for c in chosen) or None
    return None
