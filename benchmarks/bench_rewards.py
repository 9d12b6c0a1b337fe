"""Benchmark the answer checker against math-verify: correctness on labelled cases, and throughput.

    python benchmarks/bench_rewards.py            # prints one JSON line

Correctness: benchmarks/data/math_equivalence.jsonl holds labelled (gold, answer, label) cases
written from public grading conventions (MATH, AIME, AMC, GSM8K answers; each with its reason).
A case's model output is its `response`, or its `answer` placed the R1-Zero way:
"<think>...</think>\n<answer>\\boxed{answer}</answer>". Ours: `grpo.rewards.verify_batch` with
the case's kind (math, or gsm8k for GSM8K-style cases). math-verify: `verify(parse(gold),
parse(output))` with its default extraction; the gold is wrapped in "$...$" or in "\\boxed{}",
whichever agrees with more labels (it is given its better setting).

Throughput: both score the same inputs (the cases, `--repeat` times) in one run on this machine:
ours through `RewardFunction.score_batch` (the training path: worker pool, per-sample timeout,
`--workers` processes), math-verify in this process as it is normally called; for the per-core
comparison, also our checks in this one process without the pool. Worker start-up and both
libraries' first-call imports are excluded (a warm-up call each).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grpo.rewards import RewardFunction, verify_batch  # noqa: E402

CASES = Path(__file__).resolve().parent / "data" / "math_equivalence.jsonl"


def model_output(case: dict) -> str:
    if "response" in case:
        return case["response"]
    return f"<think>Let me work it out.</think>\n<answer>\\boxed{{{case['answer']}}}</answer>"


def math_verify_checker(gold_wrapping: str):
    from math_verify import parse, verify

    def check(gold, output: str) -> bool:
        gold_text = gold_wrapping.format(gold)
        try:
            return bool(verify(parse(gold_text), parse(output)))
        except Exception:  # math-verify raises on some inputs; a crash is a "no"
            return False

    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes over the cases for the throughput runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="our worker processes")
    args = parser.parse_args()

    cases = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    outputs = [model_output(c) for c in cases]
    labels = [bool(c["label"]) for c in cases]

    # -- correctness
    ours, ours_metrics = verify_batch([(c["kind"], out, c["gold"]) for c, out in zip(cases, outputs)])
    ours_correct = sum(v == label for v, label in zip(ours, labels))
    mv_results = {}
    for wrapping in ("${}$", "\\boxed{{{}}}"):
        check = math_verify_checker(wrapping)
        verdicts = [check(str(c["gold"]), out) for c, out in zip(cases, outputs)]
        mv_results[wrapping] = (sum(v == label for v, label in zip(verdicts, labels)), verdicts)
    mv_wrapping = max(mv_results, key=lambda w: mv_results[w][0])
    mv_correct, mv_verdicts = mv_results[mv_wrapping]

    # -- throughput on the same inputs
    items = [(c["kind"], out, c["gold"], "") for c, out in zip(cases, outputs)] * args.repeat
    reward_fn = RewardFunction([], num_workers=args.workers)
    reward_fn.score_batch(items[:50])  # warm-up: start the workers
    start = time.perf_counter()
    _, batch_metrics = reward_fn.score_batch(items)
    ours_seconds = time.perf_counter() - start
    reward_fn.close()

    # the same checks in this one process, without the pool: the per-core speed
    from grpo.rewards import VERIFIERS

    start = time.perf_counter()
    for kind, out, gold, _ in items:
        VERIFIERS[kind](out, gold)
    inprocess_seconds = time.perf_counter() - start

    check = math_verify_checker(mv_wrapping)
    for c, out in list(zip(cases, outputs))[:20]:  # warm-up: antlr parser, regex caches
        check(str(c["gold"]), out)
    start = time.perf_counter()
    for _, out, gold, _ in items:
        check(str(gold), out)
    mv_seconds = time.perf_counter() - start

    from importlib.metadata import version

    by_category: dict[str, list[int]] = {}
    for c, mine, theirs, label in zip(cases, ours, mv_verdicts, labels):
        tally = by_category.setdefault(c["category"], [0, 0, 0])
        tally[0] += 1
        tally[1] += mine == label
        tally[2] += theirs == label
    print(json.dumps({
        "cases": len(cases),
        "cases_true": sum(labels),
        "ours_correct": ours_correct,
        "math_verify_correct": mv_correct,
        "ours_accuracy": round(ours_correct / len(cases), 4),
        "math_verify_accuracy": round(mv_correct / len(cases), 4),
        "ours_answers_per_s": round(len(items) / ours_seconds, 1),
        "math_verify_answers_per_s": round(len(items) / mv_seconds, 1),
        "speedup": round(mv_seconds / ours_seconds, 2),
        "ours_in_process_answers_per_s": round(len(items) / inprocess_seconds, 1),
        "throughput_inputs": len(items),
        "ours_workers": args.workers,
        "cpu_count": os.cpu_count(),
        "ours_timeouts": ours_metrics["reward/timeouts"] + batch_metrics["reward/timeouts"],
        "ours_errors": ours_metrics["reward/errors"] + batch_metrics["reward/errors"],
        "math_verify_version": version("math-verify"),
        "math_verify_gold_wrapping": mv_wrapping,
        "by_category_cases_ours_mathverify": by_category,
    }))


if __name__ == "__main__":
    main()
