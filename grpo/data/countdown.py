"""Seeded Countdown task generator with TinyZero's row format (for tiny offline runs and tests).

A task gives 3 or 4 numbers and a target; the model must write an expression that uses each number
once with + - * / and equals the target. Every generated target is reachable: the generator builds a
random expression first and uses its value as the target, keeping the expression in
`extra_info.solution` so tests can check it. Rows match the TinyZero/verl parquet columns
(`prompt` messages, `reward_model.ground_truth = {numbers, target}`, `data_source = "countdown"`).
"""
from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path
from typing import Any

PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer.\nUser: Using the numbers {nums}, create an equation that equals {target}. You can use basic "
    "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in "
    "<think> </think> tags. And return the final answer in <answer> </answer> tags, for example "
    "<answer> (1 + 2) / 3 </answer>.\nAssistant: Let me solve this step by step.\n<think>"
)
MAX_TARGET = 999
_OPS = "+-*/"


def _random_expression(rng: random.Random, nums: list[int]) -> tuple[str, Fraction] | None:
    """Combine all of `nums` in random pairs with random ops; None when a division is not exact."""
    # Each item is (text, value, is_leaf): leaves need no parentheses when used as an operand.
    items = [(str(n), Fraction(n), True) for n in nums]
    while len(items) > 1:
        a = items.pop(rng.randrange(len(items)))
        b = items.pop(rng.randrange(len(items)))
        op = rng.choice(_OPS)
        if op == "/":
            # Keep every intermediate an integer so the task reads like Countdown (exact division only).
            if b[1] == 0 or a[1] % b[1] != 0:
                return None
            value = a[1] / b[1]
        else:
            value = {"+": a[1] + b[1], "-": a[1] - b[1], "*": a[1] * b[1]}[op]
        left = a[0] if a[2] else f"({a[0]})"
        right = b[0] if b[2] else f"({b[0]})"
        items.append((f"{left} {op} {right}", value, False))
    return items[0][0], items[0][1]


def countdown_prompt(nums: list[int], target: int) -> str:
    """TinyZero's whole base-model prompt for one task (the row's message content; train with template raw)."""
    return PROMPT.replace("{nums}", str(list(nums))).replace("{target}", str(target))


def countdown_row(nums: list[int], target: int, index: int, split: str, **extra_info: Any) -> dict[str, Any]:
    """One row in TinyZero's format, with its top-level `target`/`nums` columns kept as TinyZero's data has them."""
    return {
        "data_source": "countdown",
        "prompt": [{"role": "user", "content": countdown_prompt(nums, target)}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": {"numbers": list(nums), "target": target}},
        "extra_info": {"split": split, "index": index, **extra_info},
        "target": target,
        "nums": list(nums),
    }


def make_countdown_rows(
    count: int, seed: int, num_numbers: tuple[int, ...] = (3, 4), max_number: int = 99, split: str = "train"
) -> list[dict[str, Any]]:
    """`count` Countdown rows in TinyZero's format; the same (count, seed, ...) gives the same rows."""
    rng = random.Random(seed)  # a private RNG: generating data must not disturb the global one
    rows = []
    for i in range(count):
        k = rng.choice(num_numbers)
        while True:
            nums = [rng.randint(1, max_number) for _ in range(k)]
            built = _random_expression(rng, nums)
            # Retry until the target is a positive integer in range (keeps prompts short and solvable).
            if built is not None and built[1].denominator == 1 and 1 <= built[1] <= MAX_TARGET:
                break
        solution, value = built
        rows.append(countdown_row(nums, int(value), i, split, solution=solution))
    return rows


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows to a parquet file (parent folders created); nested dicts/lists become parquet structs/lists."""
    import pandas as pd  # deferred: only data preparation needs pandas

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path
