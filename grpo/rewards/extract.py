"""Find the final answer in a model's output: the text a verifier should judge.

Only the part after the last `</think>` is read when the output closes its thought: an answer that
appears only inside the reasoning does not count (R1 graders strip the reasoning the same way).
In that part, the strict order follows what R1-Zero templates ask for and what graders of
MATH-style outputs use (`extract_strict`):
1. the last `<answer>...</answer>` block; inside it, its last `\\boxed{}` when there is one;
2. else the last `\\boxed{...}` / `\\fbox{...}` anywhere;
3. else the last "answer is ..." / "Answer: ..." phrase, up to the end of its sentence;
4. else the whole output, when it is short, on one line and not prose (a bare answer such as "3/4").
When none applies, or the answer block holds prose, `extract_answer` falls back to the last math
expression or the last number of the text (freetext.py states the rule). The format reward never
uses that fallback: it checks the strict shape itself.
Everything here is string search and brace counting, linear in the length of the text (no
regex that can backtrack over a 30,000-character output), and nothing is ever evaluated.
"""
from __future__ import annotations

import re

from grpo.rewards.freetext import free_text_answer
from grpo.rewards.latex import UNIT_WORDS, matching_brace

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
_DELIMITER_RE = re.compile(r"(?<!\\)\$|\\[\[(]")
_WORD_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")
_TAG_RE = re.compile(r"</?[a-zA-Z]+>")
_COMMAND_RE = re.compile(r"\\(?:begin|end)\s*\{[^{}]*\}|\\[a-zA-Z]+")  # \begin{pmatrix} is no word
_BARE_WORDS = frozenset(UNIT_WORDS) | {"and", "or", "sq"}
THINK_END = "</think>"


def boxed_answers(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of the last well-formed `\\boxed{...}` / `\\fbox{...}` (or `\\boxed 5`), in order.

    Only the last MAX_BOXED_TRIES occurrences are looked at, so the work stays linear.
    """
    found = []
    for match in list(_BOXED_RE.finditer(text))[-MAX_BOXED_TRIES:]:
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = matching_brace(text, i)
            if end != -1:
                found.append((match.start(), end + 1, text[i + 1:end].strip()))
            else:  # "\boxed{7\}": a stray backslash before the closing brace, read as a typo
                stray = text.find("\\}", i)
                if stray != -1 and matching_brace(text[i:stray] + "}", 0) == stray - i:
                    found.append((match.start(), stray + 2, text[i + 1:stray].strip()))
        elif i > match.end() and i < len(text):  # "\boxed 5": one token up to a space or '$'
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                found.append((match.start(), i + token.end(), token.group(0)))
    return found


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` or `\\fbox{...}` (or `\\boxed 5`), or None."""
    found = boxed_answers(text)
    return found[-1][2] if found else None


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


def answer_region(text: str) -> str:
    """The part of an output that states its answer: after the last `</think>`, else all of it."""
    end = text.rfind(THINK_END)
    return text if end == -1 else text[end + len(THINK_END):]


def is_prose(text: str) -> bool:
    """Is `text` a sentence rather than a bare answer?

    Prose has math delimiters, or a digit and words beyond units and "and"/"or": "so x equals
    -7" is prose, "5 square units" and "2 and 3 feet" are bare answers.
    """
    if _DELIMITER_RE.search(text) or _TAG_RE.search(text):
        return True
    if not any(ch.isdigit() for ch in text):
        return False
    words = [w.lower() for w in _WORD_RE.findall(_COMMAND_RE.sub(" ", text))]
    return len(words) >= 3 or any(w not in _BARE_WORDS for w in words)


def _strict(region: str) -> tuple[str | None, bool]:
    """(answer, whether it is a whole answer block taken as written) by the strict order."""
    block = last_answer_block(region)
    if block is not None:
        boxed = last_boxed(block)
        if boxed is not None:
            return boxed, False
        phrase = answer_phrase(block)
        return (phrase, False) if phrase is not None else (block.strip(), True)
    boxed = last_boxed(region)
    if boxed is not None:
        return boxed, False
    phrase = answer_phrase(region)
    if phrase is not None:
        return phrase, False
    bare = region.strip()
    if bare and len(bare) <= MAX_BARE_CHARS and "\n" not in bare and not is_prose(bare):
        return bare, False
    return None, False


def extract_strict(text: str) -> str | None:
    """The final answer by the strict order (module docstring, 1-4), or None."""
    return _strict(answer_region(text))[0]


def extract_answer(text: str) -> str | None:
    """The final answer of a model output or bare answer: strict order, else the prose fallback."""
    region = answer_region(text)
    found, whole_block = _strict(region)
    if found is None:
        return free_text_answer(region)
    if whole_block and is_prose(found):  # "<answer>So the total is 2,500.75.</answer>"
        return free_text_answer(found)
    return found
