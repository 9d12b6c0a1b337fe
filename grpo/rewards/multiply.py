"""Multiplication / integer-arithmetic answers, scored like TinyZero's `multiply` task.

TinyZero (verl/utils/reward_score/multiply.py) takes the last `<answer>...</answer>`, requires
it to be an integer (`int(...)`), and scores 1.0 when it equals the gold integer, 0.1 (its
`format_score`) for an integer answer that is wrong, 0.0 when there is none. We do the same, with
two additions: thousands commas and a `\\boxed{}` inside the answer block are accepted
("1,234,567", "\\boxed{42}"), and `verify` also takes a bare answer or a boxed one (eval).
The answer must be an integer literal; an expression such as "6*7" is not an answer.
"""
from __future__ import annotations

import numbers
import re
from typing import Any

from grpo.errors import UserError
from grpo.rewards.extract import extract_answer, last_answer_block, last_boxed
from grpo.types import RewardResult

CORRECT_SCORE = 1.0
FORMAT_SCORE = 0.1  # TinyZero's reward for a well-formed but wrong answer

_INTEGER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)")


def parse_integer(text: str | None) -> int | None:
    """The integer a short answer states ("1,234", "\\boxed{-7}", "$42$"), or None."""
    if text is None:
        return None
    boxed = last_boxed(text)
    text = (boxed if boxed is not None else text).replace("$", "").strip().rstrip(".").strip()
    if len(text) > 400 or not _INTEGER_RE.fullmatch(text):
        return None
    return int(text.replace(",", ""))


def gold_integer(ground_truth: Any) -> int:
    """The gold integer of a row: an int, a whole float, or a string of digits."""
    if isinstance(ground_truth, numbers.Integral) and not isinstance(ground_truth, bool):
        return int(ground_truth)
    if isinstance(ground_truth, numbers.Real) and not isinstance(ground_truth, bool) and float(ground_truth).is_integer():
        return int(ground_truth)
    value = parse_integer(ground_truth) if isinstance(ground_truth, str) else None
    if value is None:
        raise UserError(f"multiply ground_truth must be an integer, got {ground_truth!r}")
    return value


def score_multiply(response: str, ground_truth: Any) -> RewardResult:
    """TinyZero multiply score of the last answer block, with components {"accuracy", "format"}."""
    gold = gold_integer(ground_truth)
    value = parse_integer(last_answer_block(response))
    if value is None:
        return RewardResult(0.0, {"accuracy": 0.0, "format": 0.0})
    if value == gold:
        return RewardResult(CORRECT_SCORE, {"accuracy": 1.0, "format": 1.0})
    return RewardResult(FORMAT_SCORE, {"accuracy": 0.0, "format": 1.0})


def verify_multiply(response: str, ground_truth: Any) -> bool:
    """True when the final answer (answer block, boxed, "answer is", or bare) is the gold integer."""
    return parse_integer(extract_answer(response)) == gold_integer(ground_truth)
