"""launch/demo.py: the summary it writes (summary.json) and the before/after table it prints, from eval.json."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("demo", REPO / "launch" / "demo.py")
demo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(demo)


def metrics(pass1: float, avg4: float, n: int = 256) -> dict[str, float]:
    return {"eval/countdown_test/pass@1": pass1, "eval/countdown_test/avg@4": avg4, "eval/countdown_test/n": float(n),
            "eval/countdown_test/length": 35.0}


def test_summary_takes_the_first_and_last_evaluation_by_step_number():
    # "step 100" sorts before "step 20" as text; by number the order is 0, 20, 100
    evals = {"step 100": metrics(0.25, 0.2), "step 0": metrics(0.01, 0.02), "step 20": metrics(0.1, 0.1)}
    summary = demo.summarize(evals, minutes=12.345)
    assert summary["accuracy_before"] == 0.01 and summary["accuracy_after"] == 0.25
    assert summary["minutes"] == 12.35 and summary["steps"] == 100 and summary["problems"] == 256
    table = demo.before_after_table(summary)
    # 0.01 -> 1.0%, 0.25 -> 25.0%; avg@4 0.02 -> 2.0%, 0.2 -> 20.0%; length stays in tokens
    assert "pass@1 (greedy)" in table and "1.0%" in table and "25.0%" in table and "20.0%" in table
    assert "35.0" in table and "maj@4" not in table  # metrics not in eval.json are left out


def test_base_settings_reach_build_base_only_when_given():
    assert demo.base_command(None, None)[1:] == ["launch/build_base.py", "--out", ".cache/base"]
    assert demo.base_command(1, 13.0)[-4:] == ["--seed", "1", "--minutes", "13.0"]
    assert demo.base_command(0, None)[-2:] == ["--seed", "0"]  # seed 0 is a setting, not "none given"


def test_summary_needs_an_evaluation_before_and_after():
    with pytest.raises(SystemExit, match="at the start and at the end"):
        demo.summarize({"step 180": metrics(0.3, 0.2)}, minutes=1.0)


def write_run(run_dir: Path) -> None:
    """40 logged steps: length 30 then 45 tokens, re-checking 5% then 50%; two evaluations with greedy samples."""
    import json

    rows = [{"step": s, "response/length_mean": 30.0 if s <= 20 else 45.0,
             "response/reflection_rate": 0.05 if s <= 20 else 0.5, "reward/accuracy": 0.1 if s <= 20 else 0.4}
            for s in range(1, 41)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "eval.json").write_text(json.dumps({"step 0": metrics(0.0, 0.05), "step 40": metrics(0.3, 0.25)}))
    samples = [{"step": step, "benchmark": "countdown_test", "index": index, "prompt": "p", "response": f"r{step}-{index}",
                "correct": correct, "ground_truth": {"target": 19}}
               for step, index, correct in [(0, 0, False), (0, 1, False), (40, 0, False), (40, 1, True)]]
    (run_dir / "eval_samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def test_summary_holds_the_other_two_signs_and_an_example(tmp_path):
    write_run(tmp_path)
    out = demo.signature(tmp_path)
    # means of steps 1-20 and 21-40: length 30 -> 45 is +50%; re-checking 0.05 -> 0.5
    assert out["response_length"] == {"first": 30.0, "last": 45.0, "change": 0.5, "steps": 20}
    assert out["reflection_rate"]["first"] == pytest.approx(0.05) and out["reflection_rate"]["last"] == 0.5
    assert out["reflection_pays"] == {"steps": 20, "with": None, "without": None}  # these rows did not split it
    # the example is the prompt whose greedy verdict changed (index 1), before and after
    assert out["example"]["before"]["response"] == "r0-1" and out["example"]["after"]["response"] == "r40-1"


def test_the_example_is_a_prompt_training_fixed_before_one_it_broke(tmp_path):
    import json

    from grpo.report import before_after

    # index 0 went right -> wrong, index 1 stayed wrong, index 2 went wrong -> right: index 2 is shown
    verdicts = {0: (True, False), 1: (False, False), 2: (False, True)}
    samples = [{"step": step, "benchmark": "b", "index": i, "response": f"r{step}-{i}", "correct": verdicts[i][step > 0]}
               for step in (0, 40) for i in verdicts]
    (tmp_path / "eval_samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert [s["response"] for s in before_after(tmp_path)] == ["r0-2", "r40-2"]
    del verdicts[2]  # without a fixed one, the one whose verdict changed
    samples = [s for s in samples if s["index"] != 2]
    (tmp_path / "eval_samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    assert [s["response"] for s in before_after(tmp_path)] == ["r0-0", "r40-0"]


def test_reflection_pays_pools_steps_by_how_many_responses_fell_on_each_side():
    # step 1: 10% reflect, right 100% of the time, the rest 20%; step 2: 30% reflect, right 50%, the rest 40%;
    # step 3: nobody reflects, the rest 40%. with: (0.1 * 1.0 + 0.3 * 0.5) / (0.1 + 0.3) = 0.625;
    # without: (0.9 * 0.2 + 0.7 * 0.4 + 1.0 * 0.4) / (0.9 + 0.7 + 1.0) = 0.86 / 2.6
    rows = [{"response/reflection_rate": 0.1, "response/reflective_accuracy": 1.0, "response/plain_accuracy": 0.2},
            {"response/reflection_rate": 0.3, "response/reflective_accuracy": 0.5, "response/plain_accuracy": 0.4},
            {"response/reflection_rate": 0.0, "response/plain_accuracy": 0.4}]
    out = demo.reflection_pays(rows)
    assert out["with"] == pytest.approx(0.625) and out["steps"] == 3
    assert out["without"] == pytest.approx(0.86 / 2.6)


def completion(response: str, correct: bool, sample=0, step: int = 40) -> dict:
    return {"step": step, "benchmark": "countdown_test", "index": 0, "sample": sample, "response": response,
            "correct": correct, "ground_truth": {"numbers": [7, 3, 2], "target": 19}}


def test_after_a_miss_compares_retrying_with_stopping_from_the_same_start():
    hit, miss, retry = "7*3=21,21-2=19", "7*3=21,21+2=23", "wait 7*3=21,21-2=19"
    rows = [completion(f"{hit}\n</think>", True),                    # first try hits: not counted as a miss
            completion(f"{miss}\n{retry}\n</think>", True),          # miss, retry, right
            completion(f"{miss}\n{retry}\n</think>", False),         # miss, retry, wrong answer anyway
            completion(f"{miss}\nwait 7+3=10,10*2=20\n</think>", False),  # miss, retry that misses again
            completion(f"{miss}\n</think>", False),                   # miss, stops
            completion("no work\n</think>", False),                   # no try: in the responses, not in the misses
            completion(f"{miss}\n{retry}\n</think>", True, sample="greedy"),  # greedy: left out (sampled only)
            {**completion(f"{miss}\n</think>", True), "benchmark": "other"}]  # another benchmark: left out
    out = demo.after_a_miss(rows)
    # 6 sampled countdown responses; 4 first tries miss; 3 of those go on, right 1 of 3; the 1 that stops is wrong
    assert out["responses"] == 6 and out["first_try_missed"] == pytest.approx(4 / 6)
    assert out["went_on"] == pytest.approx(3 / 4)
    assert out["right_going_on"] == pytest.approx(1 / 3) and out["right_stopping"] == 0.0
    assert demo.after_a_miss([completion(f"{hit}\n</think>", True)])["went_on"] is None  # no miss at all


def test_signature_reads_after_a_miss_at_the_first_and_last_evaluation(tmp_path):
    import json

    write_run(tmp_path)
    rows = [completion("7*3=21,21+2=23\n</think>", False, step=0),  # before: a miss, stopped
            completion("7*3=21,21+2=23\nwait 7*3=21,21-2=19\n</think>", True, step=40)]  # after: a miss, retried
    (tmp_path / "eval_completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = demo.signature(tmp_path)["after_a_miss"]
    assert (out["before"]["went_on"], out["before"]["right_stopping"]) == (0.0, 0.0)
    assert (out["after"]["went_on"], out["after"]["right_going_on"]) == (1.0, 1.0)


def test_the_report_opens_with_the_signature_figure_and_the_example(tmp_path):
    from grpo.report import write_report

    write_run(tmp_path)
    report = write_report(tmp_path).read_text()
    assert report.index("plots/signature.png") < report.index("## One held-out prompt")
    assert (tmp_path / "plots" / "signature.png").stat().st_size > 10_000
    assert "step 0 (wrong):" in report and "step 40 (right):" in report and "r40-1" in report
