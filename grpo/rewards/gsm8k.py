"""GSM8K answers: one number, compared exactly.

The gold answer is a number, or a GSM8K solution ending in "#### 1,200" (openai/grade-school-math).
The predicted number is, in order: the number after the response's last "####" (the dataset's own
convention, verl's "strict" mode); else the last number of the final answer (`<answer>` block,
`\\boxed{}`, "the answer is"); else the last number anywhere in the response (verl's "flexible"
mode). Thousands commas, "$" signs and units are ignored: "$1,200.00 dollars" reads 1200.
Numbers compare as exact rationals, so 18 = 18.0 = 18.00 but 0.1 + 0.2 needs no tolerance.
"""
from __future__ import annotations

import numbers
import re
from fractions import Fraction
from typing import Any

from grpo.errors import UserError
from grpo.rewards.extract import extract_answer

# a signed integer or decimal with optional thousands commas: -1,234.5  .5  12
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+")
_HASHES = "####"


def _to_fraction(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return None


def last_number(text: str) -> str | None:
    """The last number written in `text` ("$1,200." -> "1,200"), or None."""
    found = None
    for found in _NUMBER_RE.finditer(text.replace("$", " ")):
        pass
    return found.group(0) if found else None


def extract_gsm8k(response: str) -> Fraction | None:
    """The response's final number (see the module docstring), or None."""
    hashes = response.rfind(_HASHES)
    if hashes != -1:
        line = response[hashes + len(_HASHES):].strip().split("\n", 1)[0]
        match = _NUMBER_RE.search(line.replace("$", " "))
        if match:
            return _to_fraction(match.group(0))
    answer = extract_answer(response)
    number = last_number(answer) if answer is not None else None
    if number is None:
        end_of_thought = response.rfind("</think>")
        number = last_number(response[end_of_thought + len("</think>"):] if end_of_thought != -1 else response)
    return _to_fraction(number) if number is not None else None


def gold_gsm8k(ground_truth: Any) -> Fraction:
    """The gold number of a GSM8K row: a number, "42", or a solution ending in "#### 42"."""
    if isinstance(ground_truth, numbers.Rational) and not isinstance(ground_truth, bool):
        return Fraction(ground_truth)
    if isinstance(ground_truth, numbers.Real) and not isinstance(ground_truth, bool):
        return Fraction(str(float(ground_truth)))
    if isinstance(ground_truth, str):
        text = ground_truth.split(_HASHES)[-1] if _HASHES in ground_truth else ground_truth
        match = _NUMBER_RE.fullmatch(text.strip().replace("$", "").strip())
        if match:
            return _to_fraction(match.group(0))
    raise UserError(
        f"gsm8k ground_truth must be a number or a solution ending in '#### <number>', got {ground_truth!r}"
    )


def verify_gsm8k(response: str, ground_truth: Any) -> bool:
    """True when the response's final number equals the gold number."""
    gold = gold_gsm8k(ground_truth)
    predicted = extract_gsm8k(response)
    return predicted is not None and predicted == gold
