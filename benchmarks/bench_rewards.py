"""Benchmark the answer checker against math-verify: correctness on labelled cases, and throughput.

    python benchmarks/bench_rewards.py            # prints one JSON line

Correctness: the labelled cases of benchmarks/data/ (math_equivalence.jsonl: hand-written from
public grading conventions; verifier_cases.jsonl: answers rewritten from the shared data sets' gold
answers by benchmarks/diff_rewards.py, every disagreement read and settled, plus hand-written
ones), each with its category, label and reason. A case's model output is its `response`, or its
`answer` placed the R1-Zero way: "<think>...</think>\\n<answer>\\boxed{answer}</answer>".
Ours: `grpo.rewards.verify_batch` with the case's kind (math, gsm8k, choice) in the worker pool,
under the hard per-sample timeout. math-verify: `verify(parse(gold), parse(output))` with its
default extraction, the gold wrapped in "$...$" or in "\\boxed{}"; for multiple-choice cases, its
letter extraction (StringExtractionConfig) on both sides, with or without its LaTeX extraction on the
output. Of these settings it is given the one that agrees with the most labels. Reported per
category: [cases, ours right, math-verify right]; specificity is the share of the not-equal cases
judged not equal; `targets_met` checks issue 14's bar (more right in total and in every category,
specificity >= 0.99, >= 10x math-verify's answers per second on one core).

Throughput: both score the same inputs (the cases, `--repeat` times) in one run on this machine.
The per-core comparison runs both in this one process; ours also through
`RewardFunction.score_batch` (the training path: worker pool, per-sample timeout, `--workers`
processes). Worker start-up and both libraries' first-call imports are excluded (a warm-up each).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grpo.rewards import VERIFIERS, RewardFunction, verify_batch  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
CASE_FILES = (DATA / "math_equivalence.jsonl", DATA / "verifier_cases.jsonl")


def load_cases() -> list[dict]:
    return [json.loads(line) for path in CASE_FILES for line in path.read_text().splitlines() if line.strip()]


def model_output(case: dict) -> str:
    if "response" in case:
        return case["response"]
    return f"<think>Let me work it out.</think>\n<answer>\\boxed{{{case['answer']}}}</answer>"


def math_verify_checker(gold_wrapping: str, choice_with_latex: bool):
    """math-verify's verdict on one case: math cases with the gold wrapped as given; choice cases with
    its letter extraction, alone or together with its LaTeX extraction (which finds \\boxed{C})."""
    from math_verify import LatexExtractionConfig, StringExtractionConfig, parse, verify

    letters = [StringExtractionConfig(strings=tuple("ABCDEFGHIJ"))]
    choice_config = letters + [LatexExtractionConfig()] if choice_with_latex else letters

    def check(case: dict, output: str) -> bool:
        try:
            if case["kind"] == "choice":
                gold = case["gold"]["answer"] if isinstance(case["gold"], dict) else case["gold"]
                return bool(verify(parse(gold, extraction_config=letters), parse(output, extraction_config=choice_config)))
            return bool(verify(parse(gold_wrapping.format(case["gold"])), parse(output)))
        except Exception:  # math-verify raises on some inputs; a crash is a "no"
            return False

    return check


def tally(cases: list[dict], verdicts: list[bool], key: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for case, verdict in zip(cases, verdicts):
        row = out.setdefault(case[key], [0, 0])
        row[0] += 1
        row[1] += verdict == case["label"]
    return out


def specificity(cases: list[dict], verdicts: list[bool]) -> float:
    negatives = [v for c, v in zip(cases, verdicts) if not c["label"]]
    return sum(not v for v in negatives) / len(negatives)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes over the cases for the throughput runs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="our worker processes")
    args = parser.parse_args()

    cases = load_cases()
    outputs = [model_output(c) for c in cases]
    labels = [bool(c["label"]) for c in cases]

    # -- correctness
    ours, ours_metrics = verify_batch([(c["kind"], out, c["gold"]) for c, out in zip(cases, outputs)])
    mv_runs = {}
    for setting in [(w, latex) for w in ("${}$", "\\boxed{{{}}}") for latex in (False, True)]:
        check = math_verify_checker(*setting)
        verdicts = [check(c, out) for c, out in zip(cases, outputs)]
        mv_runs[setting] = (sum(v == label for v, label in zip(verdicts, labels)), verdicts)
    mv_setting = max(mv_runs, key=lambda s: mv_runs[s][0])  # math-verify is given its best setting
    mv_correct, mv_verdicts = mv_runs[mv_setting]
    ours_correct = sum(v == label for v, label in zip(ours, labels))

    # -- throughput on the same inputs: both in this process (per core), then ours through the pool
    items = [(c["kind"], out, c["gold"]) for c, out in zip(cases, outputs)] * args.repeat
    start = time.perf_counter()
    for kind, out, gold in items:
        VERIFIERS[kind](out, gold)
    inprocess_seconds = time.perf_counter() - start

    check = math_verify_checker(*mv_setting)
    for c, out in list(zip(cases, outputs))[:20]:  # warm-up: antlr parser, regex caches
        check(c, out)
    start = time.perf_counter()
    for c, out in list(zip(cases, outputs)) * args.repeat:
        check(c, out)
    mv_seconds = time.perf_counter() - start

    reward_fn = RewardFunction([], num_workers=args.workers)
    scored = [(kind, out, gold, "") for kind, out, gold in items]
    reward_fn.score_batch(scored[:50])  # warm-up: start the workers
    start = time.perf_counter()
    _, batch_metrics = reward_fn.score_batch(scored)
    pool_seconds = time.perf_counter() - start
    reward_fn.close()

    from importlib.metadata import version

    ours_by, mv_by = tally(cases, ours, "category"), tally(cases, mv_verdicts, "category")
    by_category = {name: [n, right, mv_by[name][1]] for name, (n, right) in ours_by.items()}
    ours_topic, mv_topic = tally(cases, ours, "topic"), tally(cases, mv_verdicts, "topic")
    ratio = mv_seconds / inprocess_seconds
    print(json.dumps({
        "cases": len(cases),
        "cases_true": sum(labels),
        "ours_correct": ours_correct,
        "math_verify_correct": mv_correct,
        "ours_accuracy": round(ours_correct / len(cases), 4),
        "math_verify_accuracy": round(mv_correct / len(cases), 4),
        "ours_specificity": round(specificity(cases, ours), 4),
        "math_verify_specificity": round(specificity(cases, mv_verdicts), 4),
        "by_category_cases_ours_mathverify": by_category,
        "ours_answers_per_s": round(len(items) / inprocess_seconds, 1),
        "math_verify_answers_per_s": round(len(items) / mv_seconds, 1),
        "speed_ratio": round(ratio, 2),
        "ours_pool_answers_per_s": round(len(items) / pool_seconds, 1),
        "ours_workers": args.workers,
        "cpu_count": os.cpu_count(),
        "throughput_inputs": len(items),
        "ours_timeouts": ours_metrics["reward/timeouts"] + batch_metrics["reward/timeouts"],
        "ours_errors": ours_metrics["reward/errors"] + batch_metrics["reward/errors"],
        "targets_met": {
            "more_correct_in_total": ours_correct > mv_correct,
            "more_correct_in_every_category": all(o > m for _, o, m in by_category.values()),
            "specificity_at_least_0.99": specificity(cases, ours) >= 0.99,
            "at_least_10x_answers_per_s": ratio >= 10,
        },
        "math_verify_version": version("math-verify"),
        "math_verify_setting": {"gold_wrapping": mv_setting[0], "choice_with_latex_extraction": mv_setting[1]},
        "by_topic_cases_ours_mathverify": {t: [n, r, mv_topic[t][1]] for t, (n, r) in ours_topic.items()},
    }))


if __name__ == "__main__":
    main()
