"""MATH-style answers (MATH, MATH-500, AIME, AMC, DeepScaleR, OlympiadBench, Minerva): extract, compare.

`verify_math(response, ground_truth)` extracts the response's final answer (extract.py) and asks
equivalence.py whether it is the gold answer. A response gives one answer: when its answer block
boxes several answers that are not the same answer, or its text boxes different answers side by
side ("\\boxed{3} or \\boxed{7}", "\\boxed{3}, \\boxed{7}"), it has hedged between candidates
and is wrong, whichever of them is right. A box followed later by a corrected one ("I got
\\boxed{3}, but that is wrong. Final: \\boxed{5}") is a correction: the last box counts. Gold answers come in every shape the public data
uses: a LaTeX string ("\\frac{14}{3}"), a solution whose last `\\boxed{}` holds the answer, a float
(DeepScaleR's AMC file stores 142.0), or a list of acceptable alternatives (Minerva stores
["6630.65", "6630"]); any alternative may match.
"""
from __future__ import annotations

import numbers
import re
from typing import Any

from grpo.errors import UserError
from grpo.rewards.equivalence import equivalent
from grpo.rewards.extract import answer_region, boxed_answers, extract_answer, last_answer_block, last_boxed


def gold_answers(ground_truth: Any) -> list[str]:
    """The acceptable gold answers of a row, as strings."""
    if isinstance(ground_truth, str):
        text = ground_truth.strip()
        boxed = last_boxed(text) if "\\boxed" in text or "\\fbox" in text else None
        answers = [boxed if boxed is not None else text]
    elif isinstance(ground_truth, bool):
        answers = []
    elif isinstance(ground_truth, numbers.Integral):
        answers = [str(int(ground_truth))]
    elif isinstance(ground_truth, numbers.Real):
        value = float(ground_truth)
        answers = [str(int(value)) if value.is_integer() else repr(value)]
    elif isinstance(ground_truth, (list, tuple)) or hasattr(ground_truth, "tolist"):
        items = ground_truth.tolist() if hasattr(ground_truth, "tolist") else ground_truth
        answers = [a for item in items for a in gold_answers(item)]
    else:
        answers = []
    answers = [a for a in answers if a]
    if not answers:
        raise UserError(
            f"math ground_truth must be an answer string, a number or a list of them, got {ground_truth!r}"
        )
    return answers


_JOINED_RE = re.compile(r"[\s$,;/]*(?:(?:or|and|\\text\s*\{\s*(?:or|and)\s*\})[\s$,;/]*)?", re.IGNORECASE)


def hedged(response: str, predicted: str) -> bool:
    """Does the response box other answers than `predicted` where it states its answer (module docstring)?"""
    region = answer_region(response)
    block = last_answer_block(region)
    boxes = boxed_answers(block if block is not None else region)
    if block is None:  # outside an answer block only boxes side by side are one statement
        run = boxes[-1:]
        for before, after in zip(boxes[-2::-1], boxes[::-1]):
            if not _JOINED_RE.fullmatch(region[before[1]:after[0]]):
                break
            run.append(before)
        boxes = run
    return any(box != predicted and not equivalent(predicted, box) for _, _, box in boxes)


def verify_math(response: str, ground_truth: Any) -> bool:
    """True when the response's one final answer is equivalent to a gold answer."""
    golds = gold_answers(ground_truth)
    predicted = extract_answer(response)
    if predicted is None or not any(equivalent(gold, predicted) for gold in golds):
        return False
    return not hedged(response, predicted)
