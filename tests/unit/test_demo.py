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


def test_summary_needs_an_evaluation_before_and_after():
    with pytest.raises(SystemExit, match="at the start and at the end"):
        demo.summarize({"step 180": metrics(0.3, 0.2)}, minutes=1.0)
