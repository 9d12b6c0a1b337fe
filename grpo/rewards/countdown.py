"""Countdown reward, compatible with TinyZero's `verl/utils/reward_score/countdown.py`.

The task: combine the given numbers, each exactly once, with + - * / and parentheses so the
expression equals the target. Scores follow TinyZero: 1.0 for a correct equation, 0.1 (its
`format_score`) for a well-formed answer that is wrong, 0.0 when there is no usable answer.

Where this differs from TinyZero, on purpose:
- We score the response only (the prompt is not part of `response`), so TinyZero's "keep the
  text after the first 'Assistant:' and then only its last line" step does not apply; we take
  the last `<answer>...</answer>` anywhere in the response (it may span lines).
- The model's text is never given to `eval`: it is parsed with `ast` and a whitelist of nodes
  (+ - * /, unary +/-, integer literals) is evaluated with exact `Fraction` arithmetic. So `**`,
  `//`, `%`, float literals and calls are "not evaluable" (0.1) where TinyZero's eval would
  accept `**` and floats. Characters outside TinyZero's set `[\\d+\\-*/().\\s]` score 0.0
  (TinyZero gives 0.1 there; 0.0 makes code-like answers strictly worse than wrong arithmetic).
- Answers longer than `MAX_EQUATION_CHARS` or with more than `MAX_NUMBERS` literals score 0.0
  without parsing, so scoring always finishes fast whatever the model writes.
"""
from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Any

from grpo.errors import UserError
from grpo.rewards.extract import last_answer_block
from grpo.types import RewardResult

CORRECT_SCORE = 1.0
FORMAT_SCORE = 0.1  # TinyZero's reward for a well-formed but wrong answer

# Countdown tasks have 3-4 numbers and short equations; these bounds are far above any honest
# answer and keep parsing/arithmetic cheap (at most 20 literals of at most 200 digits in total).
MAX_EQUATION_CHARS = 200
MAX_NUMBERS = 20

_ALLOWED_RE = re.compile(r"^[\d+\-*/().\s]+$")  # TinyZero's allowed character set
_INTEGER_RE = re.compile(r"\d+")

_BINARY_OPS = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,  # Fraction / Fraction stays exact; raises ZeroDivisionError on 0
}
_UNARY_OPS = {
    ast.USub: lambda a: -a,  # TinyZero's character set allows '-', so "-3+5" is legal there too
    ast.UAdd: lambda a: a,
}


class _NotEvaluable(Exception):
    """The expression uses syntax outside the whitelist (power, calls, floats, ...)."""


def extract_answer(response: str) -> str | None:
    """The stripped text inside the last <answer>...</answer> of `response`, or None."""
    # string search, not re.findall("<answer>(.*?)</answer>"): that regex rescans to the end of
    # the text for every unclosed tag, quadratic on an output of thousands of "<answer>"
    block = last_answer_block(response)
    return block.strip() if block is not None else None


def _evaluate(node: ast.AST) -> Fraction:
    """Exact value of a whitelisted expression tree; anything else raises _NotEvaluable."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        return _BINARY_OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY_OPS:
        return _UNARY_OPS[type(node.op)](_evaluate(node.operand))
    # bool is an int subclass; it cannot come from our character set but exclude it anyway
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return Fraction(node.value)
    raise _NotEvaluable(type(node).__name__)


def _integer_literals(tree: ast.AST) -> list[int]:
    """Every integer literal in the tree: the numbers the equation uses."""
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) is int]


def _parse_ground_truth(ground_truth: Any) -> tuple[list[int], int]:
    """(numbers, target) from {"numbers": [...], "target": int}; numbers may be a numpy array."""
    try:
        numbers = [int(n) for n in list(ground_truth["numbers"])]
        target = int(ground_truth["target"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"countdown ground_truth must be a dict {{'numbers': [int, ...], 'target': int}}, "
            f"got {ground_truth!r} ({type(exc).__name__}: {exc})"
        ) from exc
    return numbers, target


def score_countdown(response: str, ground_truth: Any) -> RewardResult:
    """TinyZero countdown score of `response` with components {"accuracy", "format"}."""
    numbers, target = _parse_ground_truth(ground_truth)
    no_answer = RewardResult(0.0, {"accuracy": 0.0, "format": 0.0})
    wrong = RewardResult(FORMAT_SCORE, {"accuracy": 0.0, "format": 1.0})

    equation = extract_answer(response)
    if equation is None or not _ALLOWED_RE.match(equation):
        return no_answer
    # checked before parsing so a pathological answer costs one regex pass, not a parse
    if len(equation) > MAX_EQUATION_CHARS or len(_INTEGER_RE.findall(equation)) > MAX_NUMBERS:
        return no_answer
    try:
        tree = ast.parse(equation, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return wrong
    if sorted(_integer_literals(tree)) != sorted(numbers):
        return wrong  # each given number must be used exactly once, and nothing else
    try:
        value = _evaluate(tree)
    except (_NotEvaluable, ZeroDivisionError, RecursionError):
        return wrong
    if abs(value - target) < 1e-5:
        return RewardResult(CORRECT_SCORE, {"accuracy": 1.0, "format": 1.0})
    return wrong


def verify_countdown(response: str, ground_truth: Any) -> bool:
    """True when the response's last answer is a correct equation (for evaluation)."""
    return score_countdown(response, ground_truth).components["accuracy"] == 1.0
