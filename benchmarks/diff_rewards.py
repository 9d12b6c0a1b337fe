"""Differential testing of the answer checker against math-verify, on answers made from real gold answers.

    python benchmarks/diff_rewards.py                         # every disagreement, then a summary line
    python benchmarks/diff_rewards.py --write cases.jsonl     # also a labelled sample, round-robin over topics

Gold answers come from the shared data sets (MATH-500, AIME 2024 and 1983-2023, DeepScaleR's
AMC / Minerva / OlympiadBench test files; ../shared/data, read in place, never copied). Each gold is
rewritten the ways models write answers, by the categories of issue 14, and each rewrite carries
the verdict it is built to have (an equal rewrite, or a wrong variant) and why:
free_text, think, numbers_units, relations, matrices, intervals, latex_artifacts, choice, hacking.
The script prints every pair where our checker, math-verify or the built-in verdict disagree, so
a person can read each one and settle it; `--write` samples a labelled set (--true equal and
--false unequal cases per category, round-robin over topics) for benchmarks/data/, whatever
either checker says about them: a case our checker gets wrong is fixed in the checker or, when
the built verdict is what is wrong, in the rewrite rule.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diff_rewrites import CATEGORIES, LETTERS  # noqa: E402  (the rewrite rules, one function per category)

from grpo.rewards import VERIFIERS  # noqa: E402
from grpo.rewards.choice import verify_choice  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_golds() -> list[tuple[str, str, str]]:
    """(source, problem, gold answer) from the shared data sets, answers as the files store them."""
    golds = []
    for line in (SHARED / "math500" / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        golds.append(("math500", row["problem"], row["answer"]))
    for line in (SHARED / "aime2024" / "test.jsonl").read_text().splitlines():
        row = json.loads(line)
        golds.append(("aime2024", row["problem"], str(row["answer"])))
    for name in ("test/amc", "test/minerva", "test/olympiad_bench", "train/aime"):
        for row in json.loads((SHARED / "deepscaler" / f"{name}.json").read_text()):
            answer = row["answer"]
            answer = answer[0] if isinstance(answer, list) else answer
            if isinstance(answer, float):
                answer = str(int(answer)) if answer.is_integer() else str(answer)
            answer = str(answer).strip().strip("$").strip()
            if answer and "$" not in answer and "\n" not in answer:
                golds.append((f"deepscaler/{name}", row["problem"], answer))
    return golds




def math_verify_verdict(case: dict) -> bool:
    from math_verify import StringExtractionConfig, parse, verify

    output = case.get("response") or f"<think>...</think>\n<answer>\\boxed{{{case['answer']}}}</answer>"
    try:
        if case["kind"] == "choice":
            config = [StringExtractionConfig(strings=tuple(LETTERS))]
            gold = case["gold"]["answer"] if isinstance(case["gold"], dict) else case["gold"]
            return bool(verify(parse(gold, extraction_config=config), parse(output, extraction_config=config)))
        return bool(verify(parse(f"${case['gold']}$"), parse(output)))
    except Exception:  # math-verify raises on some inputs; a crash is a "no"
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", help="write a labelled sample here (jsonl)")
    parser.add_argument("--true", type=int, default=22, help="equal cases per category in the sample")
    parser.add_argument("--false", type=int, default=42, help="unequal cases per category in the sample")
    parser.add_argument("--first-id", type=int, default=1000, help="id of the first written case")
    parser.add_argument("--quiet", action="store_true", help="only the disagreements with the built verdict")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    golds = load_golds()
    cases = []
    for category, make in CATEGORIES.items():
        for case in make(golds, rng):
            cases.append({"category": category, **case})
    from bench_rewards import model_output

    tally: dict[str, list[int]] = {}
    for case in cases:
        ours = VERIFIERS.get(case["kind"], verify_choice)(model_output(case), case["gold"])
        theirs = math_verify_verdict(case)
        t = tally.setdefault(case["category"], [0, 0, 0])
        t[0] += 1
        t[1] += ours == case["label"]
        t[2] += theirs == case["label"]
        if ours != case["label"] or (theirs != case["label"] and not args.quiet):
            who = "OURS" if ours != case["label"] else "mv"
            shown = case.get("response") or case["answer"]
            print(f"{who:4} {case['category']:15} label={case['label']!s:5} gold={json.dumps(case['gold'])} "
                  f"out={json.dumps(shown)}  ({case['why']})")
    print(json.dumps({"pairs": len(cases), "by_category_pairs_ours_mathverify": tally}))
    if args.write:
        write_sample(cases, args, rng)


def write_sample(cases: list[dict], args: argparse.Namespace, rng: random.Random) -> None:
    """Per category, `--true` equal and `--false` unequal cases, taken round-robin over the topics."""
    sample = []
    for category in CATEGORIES:
        for label, count in ((True, args.true), (False, args.false)):
            by_topic: dict[str, list[dict]] = {}
            for case in cases:
                if case["category"] == category and case["label"] is label:
                    by_topic.setdefault(case["topic"], []).append(case)
            for pool in by_topic.values():
                rng.shuffle(pool)
            picked = []
            while len(picked) < count and any(by_topic.values()):
                for topic in sorted(by_topic):
                    if by_topic[topic] and len(picked) < count:
                        picked.append(by_topic[topic].pop())
            sample += picked
    with open(args.write, "w") as f:
        for i, case in enumerate(sample):
            f.write(json.dumps({"id": args.first_id + i, **case}, ensure_ascii=False) + "\n")
    print(f"wrote {len(sample)} cases to {args.write}")

if __name__ == "__main__":
    main()
