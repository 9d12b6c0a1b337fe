"""Seeded Multiply task generator: "What is a * b?" with a-digit and b-digit factors, in the verl row format.

A small task with an exact integer answer, for checking that training moves reward on a base model
in minutes. Unlike Countdown's rows (which hold TinyZero's whole base prompt), a row holds only the
question, so any template renders it (the dataset config's default is `base_r1`).

`reward_model.ground_truth` is the product as a decimal string ("56088"): strings survive parquet for
any number of digits (int64 would overflow past 18) and match the other math data sets' ground
truths; the multiply scorer compares `int(ground_truth)` with the integer in the answer.
"""
from __future__ import annotations

import random
from typing import Any

from grpo.errors import UserError


def multiply_question(a: int, b: int) -> str:
    return f"What is {a} * {b}?"


def make_multiply_rows(
    count: int, seed: int, digits: tuple[int, int] | list[int] = (3, 3), split: str = "train"
) -> list[dict[str, Any]]:
    """`count` rows of a * b, a with digits[0] digits and b with digits[1]; the same arguments give the same rows."""
    if len(digits) != 2 or not all(isinstance(d, int) and d >= 1 for d in digits):
        raise UserError(f"multiply digits must be two positive integers (digits of a and of b), got {digits!r}")
    rng = random.Random(seed)  # a private RNG: generating data must not disturb the global one
    # Uniform over numbers with exactly d digits: [10^(d-1), 10^d - 1] (1-digit numbers start at 1, not 0).
    lows = [10 ** (d - 1) if d > 1 else 1 for d in digits]
    highs = [10**d - 1 for d in digits]
    rows = []
    for i in range(count):
        a, b = (rng.randint(lo, hi) for lo, hi in zip(lows, highs))
        rows.append(
            {
                "data_source": "multiply",
                "prompt": [{"role": "user", "content": multiply_question(a, b)}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a * b)},
                "extra_info": {"split": split, "index": i, "a": a, "b": b},
            }
        )
    return rows
