"""Multiple-choice answers (GPQA, MMLU, MMLU-Pro, ARC, ...): which option did the response choose?

The ground truth is the gold letter ("C"), or {"answer": "C", "options": [text of A, text of B, ...]}
(what the gpqa handler writes), which also lets an answer given as an option's text count.
Letters run from A to J (MMLU-Pro has ten options); with options, only their letters are valid.

The chosen letter is read from the text after the thought (`</think>`), in this order:
1. the strict final answer (`\\boxed{C}`, `<answer>(C)</answer>`, "Answer: C", "the answer is (C)",
   a bare "C"): its letter, written C, (C), C), C., \\text{C}, "option C" or "C) <option text>";
2. else the last closing phrase: "the correct option is C", "the best answer is (C)",
   "option C is correct", "I choose C", "it must be C", "Answer: C", or a "(C)" ending the text;
3. else, with options given, the option the final answer (strict, else the prose fallback) is
   ("42 m/s", or "42" for "C) 42 m/s"), or the one option whose whole text the final sentence
   holds ("The speed is 42 m/s.").
An answer naming several letters ("A or C", "\\boxed{A, C}", "(A) and (C)") chooses none: a hedge
is wrong even when it includes the gold letter. Only an upper-case letter counts unless it is in
parentheses, so the article in "the answer is a prime" is not option A.
"""
from __future__ import annotations

import re
from typing import Any

from grpo.errors import UserError
from grpo.rewards.extract import answer_region, extract_strict
from grpo.rewards.freetext import free_text_answer
from grpo.rewards.equivalence import equivalent

LETTERS = "ABCDEFGHIJ"
SEVERAL = "several"  # what `_letters_of` says for an answer that names more than one letter

# One letter as written: (C) / (c) anywhere, or a bare capital C not inside a word
_LETTER = r"\(\s*([A-Ja-j])\s*\)|(?<![A-Za-z0-9])([A-J])(?![A-Za-z0-9])"
_WRAPPING_RE = re.compile(r"[$*`]|\\boxed\s*|\\(?:text|textbf|mathrm|mathbf|mathit)\s*\{|[{}]")
_LEAD_RE = re.compile(r"\s*(?:(?:the|final|correct|answer|option|choice|is|so|thus|hence|therefore)\b\s*[:,]?\s*)*",
                      re.IGNORECASE)
_LETTER_START_RE = re.compile(r"(?:" + _LETTER + r")")
_JOINER = r"\s*(?:,|;|/|&|\bor\b|\band\b)\s*(?:option\s*|choice\s*)?"
_JOINED_LETTER_RE = re.compile(_JOINER + r"(?:" + _LETTER + r")", re.IGNORECASE)
# An English word after a bare "A" or "I" makes it the article or the pronoun: "A prime number"
_WORD_AFTER_RE = re.compile(r"\s+(?!(?:or|and|is)\b)[a-z]")
# What may stand between a phrase and its letter: spaces, ":", "**", "$", "\\boxed{", "option". The
# alternatives start with different characters, so the loop never backtracks over long whitespace.
_DECORATION = r"(?:[\s:*$]|\\(?:text|textbf|mathrm|boxed)\s*\{|(?i:option|choice)(?![a-z]))*"
# Closing phrases; the words in any case, the letter a capital (or in parentheses)
_PHRASES_RE = re.compile(
    r"(?i:(?:correct|right|best|final)\s+(?:answer|option|choice)\s*(?:is|would\s+be|:)"
    r"|\banswer\s*(?:is|:)|\b(?:i|we)\s+(?:choose|pick|select)|\b(?:must|should|would)\s+be)"
    + _DECORATION + r"(?:" + _LETTER + r")"
    r"|\b(?i:option|choice)\s*(?:" + _LETTER + r")\s+(?i:is\s+(?:the\s+)?(?:correct|right|best|answer))"
    r"|\(([A-J])\)[\s.*]*$"  # a parenthesised letter ends the text: "... so (C)."
)
MAX_TEXT_CHARS = 20_000  # the phrases are searched in the last this many characters of the answer region
MAX_SENTENCE_CHARS = 2_000  # the final sentence is looked for in the last this many characters
_VALUE_WITH_UNIT_RE = re.compile(r"\s*\$?(-?\d[\d,]*(?:\.\d+)?)\$?\s+[A-Za-z]")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n")


def gold_choice(ground_truth: Any) -> tuple[str, list[str] | None]:
    """(gold letter, option texts or None) of a row's ground truth; UserError when malformed."""
    options = None
    answer = ground_truth
    if isinstance(ground_truth, dict):
        answer = ground_truth.get("answer")
        raw = ground_truth.get("options")
        raw = raw.tolist() if hasattr(raw, "tolist") else raw
        if raw is not None:
            if not isinstance(raw, (list, tuple)) or not raw or len(raw) > len(LETTERS):
                raise UserError(f"choice ground_truth options must be a list of 1-{len(LETTERS)} texts, got {raw!r}")
            options = [str(o) for o in raw]
    letter = str(answer).strip().strip("()").upper() if isinstance(answer, str) else ""
    valid = LETTERS[:len(options)] if options else LETTERS
    if len(letter) != 1 or letter not in valid:
        raise UserError(f"choice ground_truth must be a letter {valid[0]}-{valid[-1]} or "
                        f"{{'answer': letter, 'options': [...]}}, got {ground_truth!r}")
    return letter, options


def _unwrap(text: str) -> str:
    return _WRAPPING_RE.sub(" ", text).strip()


def _letters_of(answer: str) -> str | None:
    """The letter a final answer names, SEVERAL when it names more than one, None when it names none."""
    text = _unwrap(answer)
    text = text[_LEAD_RE.match(text).end():]
    match = _LETTER_START_RE.match(text)
    if not match:
        return None
    rest = text[match.end():]
    if match.group(2) and _WORD_AFTER_RE.match(rest):
        return None
    if _JOINED_LETTER_RE.match(rest):
        return SEVERAL
    return (match.group(1) or match.group(2)).upper()


def _plain(text: str) -> str:
    """Lower-case text without math delimiters and with single spaces, for finding an option's text."""
    return " ".join(text.replace("$", " ").replace("\\(", " ").replace("\\)", " ").lower().split()).strip(" .")


def _value_of(option: str) -> str | None:
    """The number an option with a unit starts with ("8" of "8 m/s"), else None."""
    match = _VALUE_WITH_UNIT_RE.match(option)
    return match.group(1) if match else None


def _option_of_text(answer: str | None, sentence: str, options: list[str]) -> str | None:
    """The letter of the one option the answer is, or whose text the final sentence holds, else None.

    The answer is compared with each option as an answer (equivalence.py: "8.0" is the option
    "8"); failing that, the option texts are looked for, whole, in the final sentence
    ("The speed is 8 m/s." holds "8 m/s" and not "4 m/s"). Two options found is no choice.
    """
    if answer is not None:
        for readings in (options, [_value_of(option) for option in options]):
            hits = {LETTERS[i] for i, option in enumerate(readings) if option and equivalent(option, answer)}
            if len(hits) == 1:
                return hits.pop()
    text = _plain(sentence)
    hits = set()
    for i, option in enumerate(options):
        needle = _plain(option)
        if needle and re.search(r"(?<![\w.])" + re.escape(needle) + r"(?![\w])", text):
            hits.add(LETTERS[i])
    return hits.pop() if len(hits) == 1 else None


def chosen_letter(response: str, options: list[str] | None = None) -> str | None:
    """The letter the response chooses (module docstring), or None (no choice, or several)."""
    region = answer_region(response)
    valid = LETTERS[:len(options)] if options else LETTERS
    final = extract_strict(region)
    if final is not None:
        letter = _letters_of(final)
        if letter == SEVERAL:
            return None
        if letter is not None:
            return letter if letter in valid else None
    tail = region[-MAX_TEXT_CHARS:]
    phrases = list(_PHRASES_RE.finditer(tail))
    if phrases:
        last = phrases[-1]
        letter = next(g for g in last.groups() if g).upper()
        if _JOINED_LETTER_RE.match(tail, last.end()):
            return None  # "the answer is A or C"
        return letter if letter in valid else None
    if options:
        answer = final if final is not None else free_text_answer(region)
        sentences = [s for s in _SENTENCE_RE.split(region.strip()[-MAX_SENTENCE_CHARS:]) if s.strip()]
        return _option_of_text(answer, sentences[-1] if sentences else "", options)
    return None


def verify_choice(response: str, ground_truth: Any) -> bool:
    """True when the response chooses exactly the gold option."""
    gold, options = gold_choice(ground_truth)
    return chosen_letter(response, options) == gold


def choice_key(response: str) -> str | None:
    """The chosen letter, for majority voting (the options are not known here: letters only)."""
    return chosen_letter(response)
