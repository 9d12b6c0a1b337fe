"""The checkers on real ground truths from the shared data sets (skipped when /work/shared/data is absent).

- every MATH-500 / DeepScaleR gold answer is accepted when re-spelled the ways models re-spell
  answers (\\dfrac, spaces, \\left( \\right), a dollar-wrapped "answer is" sentence);
- an integer gold plus one is rejected;
- distinct gold answers of different problems are (almost) never judged equal;
- every GSM8K test solution verifies against its own "#### N" and not against N + 1.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from grpo.rewards import verify_batch
from grpo.rewards.equivalence import equivalent

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data sets are not present")


def _math_golds() -> list[str]:
    golds = [json.loads(line)["answer"] for line in (SHARED / "math500" / "test.jsonl").read_text().splitlines()]
    subset = SHARED / "deepscaler" / "train_subset_2000" / "deepscaler_train.parquet"
    if subset.is_file():
        import pandas as pd

        golds += [row["ground_truth"] for row in pd.read_parquet(subset).reward_model]
    return [g for g in golds if g and g.strip()]


def _respell(gold: str) -> str:
    """The same answer in another spelling: \\dfrac, spaced operators, \\left( \\right)."""
    text = gold.replace("\\frac", "\\dfrac")
    text = re.sub(r"(?<=[0-9a-z}])([+=])(?=[0-9a-z\\])", r" \1 ", text)
    if text.startswith("(") and text.endswith(")") and "\\left" not in text:
        text = "\\left(" + text[1:-1] + "\\right)"
    return text


def test_math_golds_accepted_in_other_spellings():
    golds = _math_golds()
    wrappers = ["\\boxed{{{}}}", "<think>t</think>\n<answer>\\boxed{{{}}}</answer>", "The final answer is ${}$."]
    items = [("math", w.format(_respell(g)), g) for g in golds for w in wrappers]
    verdicts, metrics = verify_batch(items, timeout_s=5.0)
    rejected = [item[1] for item, ok in zip(items, verdicts) if not ok]
    assert metrics["reward/timeouts"] == 0.0
    assert not rejected, rejected[:10]


def test_integer_golds_plus_one_are_rejected():
    golds = [g.strip() for g in _math_golds() if re.fullmatch(r"-?\d+", g.strip())]
    assert len(golds) > 100
    items = [("math", f"\\boxed{{{int(g) + 1}}}", g) for g in golds]
    verdicts, _ = verify_batch(items, timeout_s=5.0)
    assert not any(verdicts)


def test_different_problems_answers_rarely_match():
    golds = _math_golds()
    rng = random.Random(0)
    pairs = [(a, b) for a, b in ((rng.choice(golds), rng.choice(golds)) for _ in range(3000)) if a.strip() != b.strip()]
    matched = [(a, b) for a, b in pairs if equivalent(a, b)]
    # only answers with the same value written differently (e.g. 1.6 and \frac{8}{5}) may match
    assert len(matched) <= 0.005 * len(pairs), matched


def test_gsm8k_solutions_verify_against_their_own_answer():
    rows = [json.loads(line) for line in (SHARED / "gsm8k" / "test.jsonl").read_text().splitlines() if line.strip()]
    finals = [row["answer"].split("####")[-1].strip().replace(",", "") for row in rows]
    items = [("gsm8k", row["answer"], row["answer"]) for row in rows]  # gold given as the whole solution
    items += [("gsm8k", row["answer"], str(int(final) + 1)) for row, final in zip(rows, finals)]
    verdicts, _ = verify_batch(items, timeout_s=5.0)
    assert all(verdicts[:len(rows)])
    assert not any(verdicts[len(rows):])
