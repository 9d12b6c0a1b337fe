"""Seeded Countdown task generator with TinyZero's row format (for tiny offline runs and tests).

A task gives 3 or 4 numbers and a target; the model must write an expression that uses each number
once with + - * / and equals the target. Every generated target is reachable: the generator builds a
random expression first and uses its value as the target, keeping the expression in
`extra_info.solution` so tests can check it. Rows match the TinyZero/verl parquet columns
(`prompt` messages, `reward_model.ground_truth = {numbers, target}`, `data_source = "countdown"`).

It also writes worked attempts for 3-number tasks (`worked_completion`): the text a model would write
after the prompt's "<think>", trying two-step expressions until one reaches the target or it gives
up, then answering with the expression or only the value it reached. launch/build_base.py pretrains
its small base model on these, right and wrong mixed.
"""
from __future__ import annotations

import itertools
import random
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

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
    count: int, seed: int, num_numbers: tuple[int, ...] = (3, 4), max_number: int = 99, split: str = "train",
    max_target: int = MAX_TARGET,
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
            if built is not None and built[1].denominator == 1 and 1 <= built[1] <= max_target:
                break
        solution, value = built
        rows.append(countdown_row(nums, int(value), i, split, solution=solution))
    return rows


def problem_key(row: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    """(sorted numbers, target): two rows with the same key are the same task, whatever the number order."""
    gt = row["reward_model"]["ground_truth"]
    return tuple(sorted(int(n) for n in gt["numbers"])), int(gt["target"])


# ---------------------------------------------------------------- worked attempts (3 numbers)


class Attempt(NamedTuple):
    """One two-step try at a 3-number task: (x op1 y) = step1, then step1 op2 z (or z op2 step1) = value.

    Its text is compact ("7*3=21,21-2=19"): under Qwen2's pre-tokenizer every space before a digit
    is a token of its own, so spaces would make a worked attempt a third longer.
    """

    x: int
    op1: str
    y: int
    op2: str
    z: int
    z_first: bool  # step two is "z op2 step1"
    step1: int
    value: int

    @property
    def expression(self) -> str:
        """The answer this try gives, e.g. "(7+3)*2"."""
        inner = f"({self.x}{self.op1}{self.y})"
        return f"{self.z}{self.op2}{inner}" if self.z_first else f"{inner}{self.op2}{self.z}"

    @property
    def work(self) -> str:
        """Both steps written out, e.g. "7+3=10,10*2=20"."""
        return self.written(self.value)

    def written(self, result: int) -> str:
        """Both steps written out with `result` as the second step's result (a slip when it is not self.value)."""
        step2 = f"{self.z}{self.op2}{self.step1}" if self.z_first else f"{self.step1}{self.op2}{self.z}"
        return f"{self.x}{self.op1}{self.y}={self.step1},{step2}={result}"


def _apply(a: int, op: str, b: int) -> int | None:
    """a op b over integers; None for a division that is not exact (a worked attempt never writes fractions)."""
    if op == "/":
        return a // b if b != 0 and a % b == 0 else None
    return a + b if op == "+" else a - b if op == "-" else a * b


def countdown_attempts(nums: list[int], max_value: int = MAX_TARGET, step2_ops: str = _OPS) -> list[Attempt]:
    """Every two-step way to combine 3 numbers whose steps stay whole numbers in [0, max_value].

    Step one combines an ordered pair (x op y); step two combines its value with the third number on
    either side, with one of `step2_ops`. Negative or huge intermediates are left out: a person
    searching by hand rarely writes them, and they would only lengthen the numbers to compute.
    """
    if len(nums) != 3:
        raise ValueError(f"worked attempts are written for 3-number tasks, got {len(nums)} numbers: {nums}")
    attempts = set()  # a set: with a repeated number two orderings write the same try
    for i, j in itertools.permutations(range(3), 2):
        x, y, z = nums[i], nums[j], nums[3 - i - j]
        for op1 in _OPS:
            v1 = _apply(x, op1, y)
            if v1 is None or not 0 <= v1 <= max_value:
                continue
            for op2 in step2_ops:
                for z_first in (False, True):
                    value = _apply(z, op2, v1) if z_first else _apply(v1, op2, z)
                    if value is not None and 0 <= value <= max_value:
                        attempts.add(Attempt(x, op1, y, op2, z, z_first, v1, value))
    return sorted(attempts)  # sorted: a set's order would make seeded sampling depend on hashing


def worked_completion(
    nums: list[int], target: int, rng: random.Random, hit_rate: float = 0.3, continue_rate: float = 0.4,
    max_tries: int = 3, max_value: int = MAX_TARGET, step2_ops: str = _OPS, expression_rate: float = 1.0,
    slip_rate: float = 0.0, check_rate: float = 0.0, retry_word: str = "", directed: bool = False,
    miss_word: str = "",
) -> tuple[str, bool] | None:
    """A worked attempt at a task as the text after the prompt's "<think>", and whether its answer is right.

    It imitates a searcher that first restates the task, then finds a right expression with
    probability `hit_rate` on each try (else it tries a distinct wrong one), stops at a hit, and
    after a miss tries again with probability `continue_rate` (at most `max_tries` tries) or gives
    up and answers its last try. It writes that try's expression as the answer with probability
    `expression_rate`, else only the value the try reached (as base models often answer with the
    number), which the Countdown reward never accepts. So the text is right and wrong mixed, in
    TinyZero's format:

        <think> [7, 3, 2] -> 19         <- the prompt ends at <think>
        7+3=10,10*2=20
        7*3=21,21-2=19
        </think>
        <answer> (7*3)-2 </answer>

    A miss the writer goes on from is a miss it saw: with `retry_word` ("wait") the next try starts
    with it ("wait 7*3=21,21-2=19"). Going on pays: a text that stops after a miss is always wrong.

    A searcher in a hurry also slips: with probability `slip_rate` a wrong try's last step is written
    as reaching the target ("7+3=10,10*2=19"), a hit it believes in. With probability `check_rate` it
    re-checks a try that reached the target before answering, computing both steps again; the check
    confirms a real hit ("verify 7*3=21,21-2=19 ok") and catches a slip ("verify 7+3=10,10*2=20 wait"),
    after which it tries again. An unchecked slip is answered, and wrong. So the texts that check are
    right more often, while most do not check: checking is the rare habit that pays.

    A `directed` searcher takes every second step toward the target: of the tries that share a first
    step and third number, it writes only the one whose value is closest to the target (the hit, when
    one of them hits). Its misses are then all wrong first steps, which no redo of the last step can
    fix; which first step leads to the target is not visible before its second step is written, so
    the way to find it is another try.

    With `miss_word` ("not") a try that misses says so against the target ("7+3=10,10+2=12 not 19"), so
    whether to go on is decided after a miss that is written down, never after a hit.

    The restatement copies the prompt's " [7, 3, 2]" token for token, which a small model learns
    early (an induction copy); the tries then read the numbers from there, a line away, rather
    than from a hundred tokens back in the prompt. Tries are countdown_attempts(nums, max_value,
    step2_ops). None when no such try reaches the target.
    """
    attempts = countdown_attempts(nums, max_value, step2_ops)
    if directed:
        attempts = directed_attempts(attempts, target)
    hits = [a for a in attempts if a.value == target]
    misses = [a for a in attempts if a.value != target]
    if not hits:
        return None
    # distinct wrong tries, in the order tried (one spare for a try after a caught slip); random numbers are
    # drawn for slips and checks only when they can happen, so zero rates write the same texts as before them
    misses = rng.sample(misses, min(max_tries + (check_rate > 0), len(misses)))
    lines: list[str] = []
    tries = 0
    after_miss = False  # the next try follows a miss the writer saw, and starts with retry_word
    while True:
        tries += 1
        real_hit = rng.random() < hit_rate or not misses
        attempt = rng.choice(hits) if real_hit else misses.pop()
        slipped = not real_hit and slip_rate > 0 and rng.random() < slip_rate
        result = target if slipped else attempt.value
        lines.append((f"{retry_word} " if after_miss and retry_word else "") + attempt.written(result)
                     + (f" {miss_word} {target}" if miss_word and result != target else ""))
        after_miss = False
        if result == target:  # a hit, real or believed
            if check_rate <= 0 or rng.random() >= check_rate:
                break
            lines[-1] += f"\nverify {attempt.work} " + ("ok" if real_hit else "wait")
            if real_hit:
                break
            continue  # a caught slip: try again (a check does not count against max_tries)
        if tries >= max_tries or rng.random() >= continue_rate:
            break
        after_miss = True
    work = "".join(f"\n{line}" for line in lines)
    as_expression = rng.random() < expression_rate
    answer = attempt.expression if as_expression else str(result)
    text = f" {[int(n) for n in nums]} -> {target}{work}\n</think>\n<answer> {answer} </answer>"
    return text, as_expression and attempt.value == target


def directed_attempts(attempts: list[Attempt], target: int) -> list[Attempt]:
    """Of the tries that share a first step and third number, the one whose value is closest to `target`
    (a tie goes to the smaller value, then to the first in sorted order), whatever order `attempts` come in."""
    groups: dict[tuple, list[Attempt]] = {}
    for a in attempts:
        groups.setdefault((a.x, a.op1, a.y, a.z), []).append(a)
    return sorted(min(group, key=lambda a: (abs(a.value - target), a.value, a)) for group in groups.values())


def write_parquet(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows to a parquet file (parent folders created); nested dicts/lists become parquet structs/lists."""
    import pandas as pd  # deferred: only data preparation needs pandas

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path
