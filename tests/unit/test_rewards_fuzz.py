"""Fuzz the answer checkers: thousands of random and adversarial outputs through `verify`, every kind.

What must hold: no exception escapes a checker (the pool would count it in "reward/errors"),
and no call needs the hard timeout (the checkers bound their own work: "reward/timeouts" is 0)
while the wall time stays far below `timeout x calls`. Ground truths include realistic answers
from the shared data sets when they are present (the test runs without them too).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from grpo.rewards import verify, verify_batch

from reward_fuzz_corpus import ADVERSARIAL, corpus, mutate, wrap

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
PER_KIND = 1500
TIMEOUT = 2.0


def _math_truths() -> list[str]:
    truths = [r"\frac{1}{2}", r"2\sqrt{5}", r"(-\infty, 2) \cup (3, \infty)", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}",
              "x^2+1", r"\{1\pm\sqrt{5},-2\}", "y = 2x + 3", r"\text{(C)}", "204_5", r"10\%", "025"]
    math500 = SHARED / "math500" / "test.jsonl"
    if math500.is_file():
        truths += [json.loads(line)["answer"] for line in math500.read_text().splitlines() if line.strip()]
    return truths


def _gsm8k_truths() -> list[str]:
    truths = ["42", "#### 1,200", "0", "-3", "1000000"]
    gsm8k = SHARED / "gsm8k" / "test.jsonl"
    if gsm8k.is_file():
        truths += [json.loads(line)["answer"] for line in gsm8k.read_text().splitlines()[:300] if line.strip()]
    return truths


TRUTHS = {
    "math": _math_truths(),
    "gsm8k": _gsm8k_truths(),
    "countdown": [{"numbers": [44, 19, 35], "target": 98}, {"numbers": [3, 3, 8, 8], "target": 24}],
    "multiply": [56088, "1234", 0],
    "choice": ["C", {"answer": "B", "options": ["12 m", "7 m/s", "\\frac{1}{2}", "none of these"]}, "J"],
}


@pytest.mark.parametrize("kind", sorted(TRUTHS))
def test_fuzz_verify_batch(kind):
    truths = TRUTHS[kind]
    rng = random.Random(sum(map(ord, kind)))  # deterministic (str hashes are salted per process)
    seeds = [t for t in truths if isinstance(t, str)] or ["44 + 19 + 35", "1 + 2", "56088"]
    outputs = corpus(seed=sum(map(ord, kind)), size=PER_KIND, seeds=seeds)
    items = [(kind, out, truths[i % len(truths)]) for i, out in enumerate(outputs)]
    # pathological ground truths too (math answers are free text, so any string is a valid gold)
    if kind == "math":
        items += [(kind, wrap(rng, mutate(rng, g)), g) for g in ADVERSARIAL[:40]]
    start = time.monotonic()
    verdicts, metrics = verify_batch(items, timeout_s=TIMEOUT)
    elapsed = time.monotonic() - start
    assert len(verdicts) == len(items) and all(isinstance(v, bool) for v in verdicts)
    assert metrics == {"reward/timeouts": 0.0, "reward/errors": 0.0}
    assert elapsed < 60, f"{len(items)} checks took {elapsed:.1f}s"


def test_fuzz_single_calls_respect_the_timeout():
    # the single-call entry point on the nastiest inputs, each timed from the caller's side
    rng = random.Random(1)
    for kind, truths in TRUTHS.items():
        for output in rng.sample(ADVERSARIAL, 12):
            start = time.monotonic()
            assert verify(kind, output, truths[0], timeout_s=TIMEOUT) in (True, False)
            # returning proves the hard timeout holds; 30 s of slack covers a worker restart under load
            assert time.monotonic() - start < TIMEOUT + 30, (kind, output[:60])


def test_real_answers_pass_in_every_wrapping():
    # the checker is not a reject-everything stub: each gold, written the ways models write a
    # final answer, is accepted (the shared MATH-500 answers when present)
    golds = TRUTHS["math"]
    wrappers = ["{}", "\\boxed{{{}}}", "<think>x</think>\n<answer>\\boxed{{{}}}</answer>", "The answer is ${}$."]
    items = [("math", w.format(gold), gold) for gold in golds for w in wrappers]
    verdicts, metrics = verify_batch(items, timeout_s=TIMEOUT)
    rejected = [item[1] for item, ok in zip(items, verdicts) if not ok]
    assert not rejected, rejected[:10]
