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

`score_countdown_shown` (a `reward.functions` entry: "grpo.rewards.countdown:score_countdown_shown") is the
same score with one more rule, for models that write their steps as "a op b = c": a right answer earns the
full 1.0 only when the reasoning's last worked line derives the target with true arithmetic. The demo
recipe trains with it (README: without it a tiny model learns to guess the expression while its written
steps decay into noise).
"""
from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Any, NamedTuple

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


def parse_ground_truth(ground_truth: Any) -> tuple[list[int], int]:
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
    numbers, target = parse_ground_truth(ground_truth)
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


# "a op b = c" in the reasoning: non-negative literals, as Countdown's numbers and hand-written steps are
_WORKED_EQUATION_RE = re.compile(r"(\d+)\s*([+\-*/])\s*(\d+)\s*=\s*(\d+)")
_WORKED_LINE_CHARS = 1000  # a worked line longer than this is not a step a person writes; judged as not shown
_WORKED_OPS = {"+": _BINARY_OPS[ast.Add], "-": _BINARY_OPS[ast.Sub], "*": _BINARY_OPS[ast.Mult],
               "/": _BINARY_OPS[ast.Div]}


def worked_lines(response: str) -> list[str]:
    """The lines of the reasoning (the text before the last "</think>", all of it when there is none) that
    hold at least one "a op b = c" equation: the tries, re-checks and retries, in order."""
    think = response.rsplit("</think>", 1)[0]
    return [line for line in think.splitlines() if _WORKED_EQUATION_RE.search(line)]


class FirstTry(NamedTuple):
    """How a response's first worked line ended and whether the reasoning went on after it."""

    reached_target: bool  # its last equation's result is the target (as written, true or not)
    went_on: bool  # another worked line follows it (a retry after a miss, a re-check after a hit)


def first_try(response: str, target: int) -> FirstTry | None:
    """The first worked line's outcome, or None when the reasoning has no worked line (or one too long to be a step).

    For 19: "7*3=21,21+2=23" then "wait 7*3=21,21-2=19" is FirstTry(False, True), a miss followed by a
    retry; "7*3=21,21+2=23" alone is FirstTry(False, False), a miss the response stopped at. Whether retrying
    after a miss pays is the accuracy of the first kind against the second (launch/demo.py reports it).
    """
    lines = worked_lines(response)
    if not lines or len(lines[0]) > _WORKED_LINE_CHARS:
        return None
    result = _WORKED_EQUATION_RE.findall(lines[0])[-1][3]
    return FirstTry(reached_target=int(result) == target, went_on=len(lines) > 1)


def work_reaches_target(response: str, target: int) -> bool:
    """Whether the reasoning's last worked line derives `target` with true arithmetic.

    The reasoning is the text before the last "</think>" (all of it when there is none). Its last line that
    holds "a op b = c" equations must have every one true (exact arithmetic) and the last one equal to the
    target: for 19, "7*3=21,21-2=19" and "verify 7*3=21, 21-2=19 ok" pass; "7*3=21,21-2=18" (misses),
    "7*3=20,20-1=19" (a false step) and a response with no worked line do not. Earlier lines (abandoned
    tries) are not judged.
    """
    lines = worked_lines(response)
    if not lines or len(lines[-1]) > _WORKED_LINE_CHARS:
        return False
    equations = _WORKED_EQUATION_RE.findall(lines[-1])
    for left, op, right, result in equations:
        if op == "/" and int(right) == 0:
            return False
        if _WORKED_OPS[op](Fraction(int(left)), Fraction(int(right))) != int(result):
            return False
    return int(equations[-1][3]) == target


def score_countdown_shown(data_source: str, response: str, ground_truth: Any, prompt: str = "") -> RewardResult:
    """Countdown's score where a right answer earns 1.0 only when the reasoning shows it (a reward.functions entry).

    score_countdown's 1.0 / 0.1 / 0.0, except that a right answer whose reasoning does not end in a true
    derivation of the target (work_reaches_target) scores as a wrong one, 0.1. Components: "accuracy" (the
    answer alone, as score_countdown judges it, so logs compare with plain runs), "format" and "work".
    Only for countdown rows: another data_source raises UserError.
    """
    from grpo.rewards.registry import kind_of  # deferred: registry imports this module

    try:
        kind = kind_of(data_source)
    except UserError:
        kind = None
    if kind != "countdown":
        raise UserError(f"score_countdown_shown scores countdown rows only, got data_source {data_source!r}; "
                        f"leave reward.functions empty to route each row by its data_source")
    result = score_countdown(response, ground_truth)
    _, target = parse_ground_truth(ground_truth)
    work = work_reaches_target(response, target)
    score = result.score if work or result.score < CORRECT_SCORE else FORMAT_SCORE
    return RewardResult(score, {**result.components, "work": float(work)})
