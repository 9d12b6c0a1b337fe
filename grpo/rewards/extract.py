"""Find the final answer in a model's output: the text a verifier should judge.

The order follows what R1-Zero templates ask for and what graders of MATH-style outputs use:
1. the last `<answer>...</answer>` block; inside it, its last `\\boxed{}` when there is one;
2. else the last `\\boxed{...}` / `\\fbox{...}` anywhere;
3. else the last "answer is ..." / "Answer: ..." phrase, up to the end of its sentence;
4. else the whole output, when it is short and on one line (a bare answer such as "3/4").
Everything here is string search and brace counting, linear in the length of the text (no
regex that can backtrack over a 30,000-character output), and nothing is ever evaluated.
"""
from __future__ import annotations

import re

# A bare output longer than this, or spanning lines, is prose rather than an answer.
MAX_BARE_CHARS = 200
# How many of the last \boxed occurrences to try when the very last one is unclosed, and how much
# of the line after "answer is" to read: both keep the work linear in the text.
MAX_BOXED_TRIES = 5
MAX_PHRASE_CHARS = 500

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b")
# "The final answer is $x$.", "Answer: 12", "the answer is: 3". The capture runs to the end of
# its line; `_cut_sentence` trims what follows the answer itself.
_PHRASE_RE = re.compile(r"answer\s*(?:is\b|:)\s*:?\s*(.+)", re.IGNORECASE)
_DOLLAR_RE = re.compile(r"(?<!\\)\$\$?(.+?)(?<!\\)\$\$?", re.DOTALL)  # "\$" is a dollar sign, not math


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


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` (or `\\boxed 5`), or None."""
    matches = list(_BOXED_RE.finditer(text))
    for match in reversed(matches[-MAX_BOXED_TRIES:]):  # the last one that is well formed
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = matching_brace(text, i)
            if end != -1:
                return text[i + 1:end].strip()
        elif i > match.end() and i < len(text):  # "\boxed 5": one token up to a space or '$'
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                return token.group(0)
    return None


def _cut_sentence(tail: str) -> str:
    """The answer at the start of `tail`: the first $...$ if any, else up to a sentence end."""
    tail = tail[:MAX_PHRASE_CHARS].strip()
    dollar = _DOLLAR_RE.search(tail)
    if dollar and dollar.start() <= 2:  # "is $x$." or "is: $x$"
        return dollar.group(1).strip()
    # a period ends the sentence only when a space or the end follows it (3.5 keeps its point)
    end = re.search(r"\.(\s|$)", tail)
    return (tail[:end.start()] if end else tail).strip()


def answer_phrase(text: str) -> str | None:
    """The answer stated by the last "answer is ..." / "Answer: ..." phrase, or None."""
    matches = list(_PHRASE_RE.finditer(text))
    if not matches:
        return None
    found = _cut_sentence(matches[-1].group(1))
    return found or None


def last_answer_block(text: str) -> str | None:
    """The content of the last closed `<answer>...</answer>`, or None."""
    end = text.rfind("</answer>")
    if end == -1:
        return None
    start = text.rfind("<answer>", 0, end)
    return None if start == -1 else text[start + len("<answer>"):end]


def extract_answer(text: str) -> str | None:
    """The final answer of a model output or bare answer (see the module docstring), or None."""
    block = last_answer_block(text)
    if block is not None:
        boxed = last_boxed(block)
        if boxed is not None:
            return boxed
        phrase = answer_phrase(block)
        return phrase if phrase is not None else block.strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    phrase = answer_phrase(text)
    if phrase is not None:
        return phrase
    bare = text.strip()
    if bare and len(bare) <= MAX_BARE_CHARS and "\n" not in bare and "<" not in bare:
        return bare
    return None
