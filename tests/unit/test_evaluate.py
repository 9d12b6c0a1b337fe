"""Evaluation: the metric arithmetic against hand-worked values, the driver's verification path on a
scripted engine (known correct and wrong Countdown equations), the driver on the tiny model's real
transformers engine, and launch/eval.py as a subprocess (results, files, exit code 2 on bad input).

A random tiny model never answers correctly, so the scripted engine is what pins the numbers: the
Evaluator, `verify_batch` and the voting are all real; only the completions are chosen by hand.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from grpo.recipe import load_config
from grpo.errors import UserError
from grpo.evaluate import (Evaluator, avg_at_k, format_table, maj_at_k, majority_index, parse_benchmark_spec, pass_at_k,
                           should_evaluate, write_eval_json)
from grpo.rewards import answer_key, kind_of
from grpo.types import Completion, PromptRecord

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder (../shared/data beside the repo) is absent")
CLI_ENV = {**{k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")},
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "PYTHONWARNINGS": "ignore::FutureWarning"}


# ---------------------------------------------------------------- pass@k


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 1, 2, 1 - 3 / 6),        # 1 - C(3,2)/C(4,2): 3 of the 6 pairs miss the one correct sample
    (4, 0, 2, 0.0),              # nothing correct: no subset passes
    (4, 3, 2, 1.0),              # only 1 wrong sample: every pair holds a correct one (n - c < k)
    (5, 2, 1, 2 / 5),            # pass@1 is the fraction correct, c / n
    (10, 3, 5, 1 - 21 / 252),    # C(7,5) = 21, C(10,5) = 252
    (4, 1, 4, 1.0),              # k = n: any correct sample passes
])
def test_pass_at_k_matches_hand_worked_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize("n, c, k", [(4, 5, 2), (4, 1, 5), (4, 1, 0), (4, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# ---------------------------------------------------------------- maj@k and avg@k


@pytest.mark.parametrize("answers, winner", [
    (["a", "b", "a"], 0),               # "a" has 2 votes; its first sample is index 0
    (["b", "a", "a"], 1),               # "a" wins; its first sample is index 1
    (["b", "a", "a", "b"], 0),          # 2-2 tie: "b" was seen first
    (["a", "b", "b", "a"], 0),          # 2-2 tie: "a" was seen first
    ([None, "x", None, None], 1),       # no answer casts no vote, however many there are
    ([None, "b", "a"], 1),              # 1-1 tie among answers: "b" came first
    ([None, None], None),               # nobody answered
    ([], None),
])
def test_majority_index_counts_votes_and_breaks_ties_by_first_seen(answers, winner):
    assert majority_index(answers) == winner


def test_maj_at_k_is_the_verdict_of_the_majority_answer():
    assert maj_at_k(["7", "5", "5"], [True, False, False]) is False   # the right answer is outvoted
    assert maj_at_k(["5", "7", "7"], [False, True, True]) is True
    assert maj_at_k(["7", "5"], [True, False]) is True                # 1-1 tie: "7" was first
    assert maj_at_k([None, None], [False, False]) is False


def test_avg_at_k_is_the_mean_correctness():
    assert avg_at_k([True, False, False, True]) == 0.5
    assert avg_at_k([False] * 3) == 0.0
    assert avg_at_k([]) == 0.0


def test_answer_keys_group_the_same_answer_written_differently():
    # the key is what the verifier would judge, so equal keys are equally right or wrong
    assert answer_key("math", r"so \boxed{\frac12}") == answer_key("math", r"<answer>$\dfrac{1}{2}$</answer>")
    assert answer_key("math", r"\boxed{3}") != answer_key("math", r"\boxed{4}")
    assert answer_key("math", "long prose\nwithout any final answer") is None
    assert answer_key("gsm8k", "#### 1,200") == answer_key("gsm8k", "The answer is 1200.00.")
    assert answer_key("countdown", "<answer>(1 + 2) * 3</answer>") == answer_key("countdown", "<answer>(1+2)*3</answer>")
    assert answer_key("countdown", "1 + 2 + 3") == "1+2+3"  # a bare one-line equation, as the check reads it
    assert answer_key("countdown", "<think>no tag closes") is None
    assert answer_key("multiply", "<answer>56,088</answer>") == "56088"


def test_kind_of_routes_data_sources_for_training_and_evaluation_alike():
    from grpo.rewards.registry import KINDS, scorer_for

    assert kind_of("countdown") == "countdown"
    assert kind_of("openai/gsm8k") == "gsm8k"
    assert kind_of("arithmetic") == "multiply"
    for source in ("math", "math500", "HuggingFaceH4/MATH-500", "aime24", "amc23", "deepscaler", "olympiad_bench"):
        assert kind_of(source) == "math", source
    # a name known only by its hint evaluates AND trains, with its kind's score (they once disagreed)
    assert kind_of("omni_math") == "math" and scorer_for("omni_math") is KINDS["math"].score
    assert kind_of("GSM8K-platinum") == "gsm8k" and scorer_for("GSM8K-platinum") is KINDS["gsm8k"].score
    for route in (kind_of, scorer_for):
        with pytest.raises(UserError, match="no built-in reward for data_source 'poetry'"):
            route("poetry")


def test_benchmark_specs_and_the_eval_schedule():
    assert parse_benchmark_spec("math500=data/m/test.parquet") == ("math500", "data/m/test.parquet")
    assert parse_benchmark_spec("data/gsm8k/test.parquet") == ("test", "data/gsm8k/test.parquet")
    for bad in ("=x.parquet", "name=", "a/b=x.parquet"):
        with pytest.raises(UserError):
            parse_benchmark_spec(bad)
    # every 2 of 5 steps, plus the end; step 0 is "before the first step"
    assert [s for s in range(6) if should_evaluate(s, 5, 2, at_start=True, at_end=True)] == [0, 2, 4, 5]
    assert [s for s in range(6) if should_evaluate(s, 5, 0, at_start=False, at_end=True)] == [5]
    assert [s for s in range(6) if should_evaluate(s, 5, 0, at_start=False, at_end=False)] == []


def test_eval_section_of_the_config():
    cfg = load_config(None, ["eval.files=[gsm8k=data/gsm8k/test.parquet]", "eval.k=8", "eval.every_steps=50"])
    assert (cfg.eval.files, cfg.eval.k, cfg.eval.every_steps, cfg.eval.at_end) == (["gsm8k=data/gsm8k/test.parquet"], 8, 50, True)


# ---------------------------------------------------------------- the driver on scripted completions


def _record(prompt_id: int, target: int) -> PromptRecord:
    return PromptRecord(f"prompt {prompt_id}", [prompt_id], {"numbers": [1, 2, 3], "target": target}, "countdown", prompt_id)


RECORDS = [_record(0, 6), _record(1, 7), _record(2, 0)]
# prompt id -> (greedy text, greedy token count, the k = 4 sampled texts)
SCRIPT = {
    0: ("<answer>1+2+3</answer>", 3,                                  # 6: correct
        ["<answer>1+2+3</answer>", "<answer>1 * 2 * 3</answer>",     # 6, 6: correct
         "<answer>1+2*3</answer>", "<answer>1+2*3</answer>"]),       # 7, 7: wrong, and the majority
    1: ("<answer>1+2+3</answer>", 5,                                  # 6 != 7: wrong
        ["<answer>1+2*3</answer>", "<answer>1 + 2*3</answer>",       # 7, 7 (one vote, spacing aside): correct
         "<answer>3*2+1</answer>", "no answer here\nat all"]),       # 7: correct; no answer: wrong, no vote
    2: ("<answer>1+2-3</answer>", 7,                                  # 0: correct
        ["<answer>1+2+3</answer>", "<answer>3+2+1</answer>",         # 6, 6: wrong
         "I do not know.\nReally.", "<answer>1+2+3</answer>"]),      # majority "1+2+3": wrong
}
# Hand-worked over the 3 prompts (k = 4):
#   pass@1 (greedy) = (1 + 0 + 1) / 3 = 2/3
#   avg@4 = (2 + 3 + 0) correct / 12 samples = 5/12
#   maj@4 = (wrong, right, wrong) = 1/3
#   pass@4 with n = k = 4: 1 - C(4-c, 4)/C(4, 4) is 1 when c > 0: (1 + 1 + 0) / 3 = 2/3
#   length = mean greedy tokens = (3 + 5 + 7) / 3 = 5
EXPECTED = {"eval/cd/n": 3.0, "eval/cd/size": 3.0,  # size: rows in the benchmark, all 3 evaluated
            "eval/cd/pass@1": 2 / 3, "eval/cd/avg@4": 5 / 12, "eval/cd/maj@4": 1 / 3, "eval/cd/pass@4": 2 / 3,
            "eval/cd/length": 5.0}


class ScriptedEngine:
    """Returns SCRIPT's completions: the greedy one when asked for top_k=1, the k samples otherwise."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt_ids, sampling):
        self.calls.append(([ids[0] for ids in prompt_ids], sampling))
        out = []
        for (prompt_id,) in prompt_ids:
            greedy, tokens, samples = SCRIPT[prompt_id]
            texts = [greedy] if sampling.top_k == 1 else samples[:sampling.n]
            out.append([Completion(list(range(tokens if sampling.top_k == 1 else 2)), [0.0] * 2, text, "stop")
                        for text in texts])
        return out


def test_evaluator_reaches_the_hand_worked_metrics_through_verify_batch():
    engine = ScriptedEngine()
    evaluator = Evaluator({"cd": RECORDS}, k=4, temperature=0.7, max_new_tokens=32, stop=["</answer>"], seed=3)
    metrics = evaluator.run(engine)
    assert metrics.keys() == EXPECTED.keys()
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(value), key
    (greedy_ids, greedy), (sampled_ids, sampled) = engine.calls
    assert greedy_ids == sampled_ids == [0, 1, 2]
    assert (greedy.n, greedy.top_k, greedy.max_new_tokens, greedy.stop) == (1, 1, 32, ["</answer>"])
    assert (sampled.n, sampled.top_k, sampled.temperature) == (4, 0, 0.7)
    assert [s["correct"] for s in evaluator.samples] == [True, False]  # num_samples=2 greedy completions
    table = format_table(metrics)
    assert table.splitlines()[0].split() == ["benchmark", "n", "size", "pass@1", "avg@4", "maj@4", "pass@4", "length"]
    assert table.splitlines()[1].split() == ["cd", "3", "3", "0.667", "0.417", "0.333", "0.667", "5.0"]


def test_evaluator_keeps_every_completion_with_its_verdict_when_asked():
    evaluator = Evaluator({"cd": RECORDS}, k=4, save_completions=True)
    evaluator.run(ScriptedEngine())
    # 3 prompts x (1 greedy + 4 sampled) = 15, in prompt order, greedy first
    assert len(evaluator.completions) == 15
    first = evaluator.completions[:5]
    assert [c["sample"] for c in first] == ["greedy", 0, 1, 2, 3]
    assert [c["response"] for c in first] == [SCRIPT[0][0], *SCRIPT[0][2]]
    assert [c["correct"] for c in first] == [True, True, True, False, False]  # SCRIPT's notes for prompt 0
    assert {c["benchmark"] for c in evaluator.completions} == {"cd"}
    assert evaluator.completions[-1]["ground_truth"] == {"numbers": [1, 2, 3], "target": 0}
    # avg@4 = 5/12 of SCRIPT's samples are right; the saved verdicts agree
    assert sum(c["correct"] for c in evaluator.completions if c["sample"] != "greedy") == 5
    plain = Evaluator({"cd": RECORDS}, k=4)
    plain.run(ScriptedEngine())
    assert plain.completions == []  # off by default


def test_completions_file_keeps_parquet_ground_truths_readable(tmp_path):
    import json

    import numpy as np

    from grpo.metrics import MetricsWriter

    writer = MetricsWriter(str(tmp_path), rank=0, start_step=0, total_steps=1, tensorboard=False, progress=False)
    # parquet gives a countdown row's numbers as a numpy array; it must come back as a list, not "[7 3 2]"
    truth = {"numbers": np.array([7, 3, 2]), "target": np.int64(19)}
    writer.log_eval_completions(5, [{"benchmark": "cd", "index": 0, "sample": "greedy", "response": "r",
                                     "correct": True, "ground_truth": truth}])
    MetricsWriter(str(tmp_path), rank=1, start_step=0, total_steps=1, tensorboard=False,
                  progress=False).log_eval_completions(5, [{"response": "rank 1 writes nothing"}])
    lines = (tmp_path / "eval_completions.jsonl").read_text().splitlines()
    assert [json.loads(line)["ground_truth"] for line in lines] == [{"numbers": [7, 3, 2], "target": 19}]
    assert json.loads(lines[0])["step"] == 5


def test_each_rank_takes_every_world_size_th_prompt():
    # Without a process group the sums stay local, so each rank's metrics are its own share's.
    shares = {}
    for rank in range(2):
        engine = ScriptedEngine()
        metrics = Evaluator({"cd": RECORDS}, k=4, rank=rank, world_size=2).run(engine)
        shares[rank] = (engine.calls[0][0], metrics["eval/cd/n"], metrics["eval/cd/pass@1"])
    assert shares == {0: ([0, 2], 2.0, 1.0), 1: ([1], 1.0, 0.0)}  # greedy: prompts 0 and 2 right, 1 wrong
    # a rank without prompts still makes the same generate calls (vLLM TP peers generate together) but counts nothing
    engine = ScriptedEngine()
    metrics = Evaluator({"cd": RECORDS}, k=4, rank=3, world_size=4).run(engine)
    assert len(engine.calls) == 2 and metrics["eval/cd/n"] == 0.0


def test_greedy_only_and_bad_settings():
    metrics = Evaluator({"cd": RECORDS}, k=0).run(ScriptedEngine())
    assert set(metrics) == {"eval/cd/n", "eval/cd/size", "eval/cd/pass@1", "eval/cd/length"}
    with pytest.raises(UserError, match="eval.temperature"):
        Evaluator({"cd": RECORDS}, temperature=0.0)
    with pytest.raises(UserError, match="no benchmark prompts"):
        Evaluator({"cd": []})


def test_write_eval_json(tmp_path):
    path = write_eval_json(tmp_path / "out" / "eval.json", EXPECTED, {"model": "m", "k": 4})
    data = json.loads(path.read_text())
    assert data["model"] == "m" and data["metrics"] == EXPECTED
    assert data["benchmarks"] == {"cd": {"n": 3.0, "size": 3.0, "pass@1": 2 / 3, "avg@4": 5 / 12, "maj@4": 1 / 3, "pass@4": 2 / 3,
                                         "length": 5.0}}


# ---------------------------------------------------------------- the tiny model, for real


def test_evaluator_on_the_tiny_model_with_the_transformers_engine(tiny_dir):
    from transformers import AutoTokenizer

    from grpo.device import DistInfo
    from grpo.rollout import build_rollout_engine

    cfg = load_config(None, [f"model.path={tiny_dir / 'model'}", "model.dtype=float32", "data.template=raw",
                             f"eval.files=[cd={tiny_dir / 'countdown_test.parquet'}]", "eval.max_prompts=5",
                             "eval.k=3", "eval.max_new_tokens=8"])
    tokenizer = AutoTokenizer.from_pretrained(cfg.model.path)
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    lines = []
    evaluator = Evaluator.from_config(cfg, tokenizer, dist, log=lines.append)
    engine = build_rollout_engine(cfg, tokenizer, dist)
    metrics = evaluator.run(engine)
    assert set(metrics) == {f"eval/cd/{m}" for m in ("n", "size", "pass@1", "avg@3", "maj@3", "pass@3", "length")}
    assert metrics["eval/cd/n"] == 5.0  # the first 5 prompts, all on the one rank
    from grpo.data import read_rows

    assert metrics["eval/cd/size"] == len(read_rows(tiny_dir / "countdown_test.parquet"))  # the whole file's rows
    assert all(0.0 <= metrics[f"eval/cd/{m}"] <= 1.0 for m in ("pass@1", "avg@3", "maj@3", "pass@3"))
    assert 1.0 <= metrics["eval/cd/length"] <= 8.0
    assert len(evaluator.samples) == 2 and lines and lines[-1].startswith("eval cd: 5 prompts")
    # greedy is deterministic: the same run gives the same greedy completions
    first = [s["response"] for s in evaluator.samples]
    evaluator.run(engine)
    assert [s["response"] for s in evaluator.samples] == first


def _long_prompt_config(tiny_dir, limit: int):
    return load_config(None, [f"model.path={tiny_dir / 'model'}", "model.dtype=float32", "data.template=raw",
                              f"data.max_prompt_length={limit}", f"eval.files=[cd={tiny_dir / 'countdown_test.parquet'}]"])


def test_eval_never_drops_a_prompt_for_its_length(tiny_dir):
    from transformers import AutoTokenizer

    from grpo.device import DistInfo

    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "model")
    # the whole set, however long its prompts: the limit they have to fit in is what changes
    cfg = _long_prompt_config(tiny_dir, 4096)
    rows = Evaluator.from_config(cfg, tokenizer, dist).benchmarks["cd"]
    lengths = sorted(len(r.prompt_ids) for r in rows)
    limit = lengths[len(lengths) // 2]  # about half the prompts are longer than this
    too_long = sum(n > limit for n in lengths)
    assert 0 < too_long < len(rows)
    # training run (engine already sized): an error naming how many, the longest and the key to raise
    with pytest.raises(UserError) as error:
        Evaluator.from_config(_long_prompt_config(tiny_dir, limit), tokenizer, dist)
    message = str(error.value)
    assert f"cd: {too_long} of {len(rows)}" in message and f"longest has {lengths[-1]}" in message
    assert "raise data.max_prompt_length" in message
    # launch/eval.py (engine built after): the limit grows to the longest prompt and every prompt is evaluated
    cfg = _long_prompt_config(tiny_dir, limit)
    lines = []
    evaluator = Evaluator.from_config(cfg, tokenizer, dist, log=lines.append, grow_prompt_length=True)
    assert cfg.data.max_prompt_length == lengths[-1] and len(evaluator.benchmarks["cd"]) == len(rows)
    assert any(f"raised from {limit} to {lengths[-1]}" in line for line in lines)


# ---------------------------------------------------------------- launch/eval.py


def run_eval_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch/eval.py", *args], cwd=REPO, env=CLI_ENV, capture_output=True,
                          text=True, timeout=180)


@needs_data
def test_eval_cli_on_countdown_and_gsm8k(tiny_dir, tmp_path):
    from grpo.data import write_parquet
    from grpo.data.dataset_config import load_dataset_config
    from grpo.data.prepare import apply_overrides, prepare

    # the first 8 rows of the GSM8K test set, prepared as launch/prepare_data.py would
    cfg = apply_overrides(load_dataset_config(REPO / "recipes" / "datasets" / "gsm8k.yaml"),
                          source=str(SHARED_DATA / "gsm8k" / "test.jsonl"), split="test", rows=[0, 8])
    (split,) = prepare(cfg, progress=False)
    gsm8k = write_parquet(split.rows, tmp_path / "gsm8k" / "test.parquet")
    out = tmp_path / "eval"
    result = run_eval_cli(str(tiny_dir / "model"), "--benchmarks",
                          f"cd={tiny_dir / 'countdown_test.parquet'},gsm8k={gsm8k}", "--max-prompts", "4",
                          "--k", "2", "--max-new-tokens", "8", "--dtype", "float32", "--out", str(out),
                          "--step", "7", "rollout.batch_size=16", "eval.save_completions=true")
    assert result.returncode == 0, result.stderr
    data = json.loads((out / "eval.json").read_text())
    assert data["benchmarks"].keys() == {"cd", "gsm8k"}
    for name in ("cd", "gsm8k"):
        assert data["benchmarks"][name]["n"] == 4.0
        assert set(data["benchmarks"][name]) == {"n", "size", "pass@1", "avg@2", "maj@2", "pass@2", "length"}
    assert data["benchmarks"]["gsm8k"]["size"] == 8.0  # the 8 prepared rows; --max-prompts 4 evaluated half
    assert (data["k"], data["step"], data["template"], data["world_size"]) == (2, 7, "qwen_r1", 1)
    assert len((out / "samples.jsonl").read_text().splitlines()) == 4  # 2 greedy completions per benchmark
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    # every completion: 2 benchmarks x 4 prompts x (1 greedy + 2 sampled) = 24, countdown's numbers as a list
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(completions) == 24 and sum(c["benchmark"] == "cd" for c in completions) == 12
    assert all(isinstance(c["ground_truth"]["numbers"], list) for c in completions if c["benchmark"] == "cd")
    table = result.stdout[result.stdout.index("benchmark"):].splitlines()
    assert table[1].split()[:2] == ["cd", "4"] and table[2].split()[:2] == ["gsm8k", "4"]


@pytest.mark.parametrize("args, message", [
    (["--benchmarks", "cd=missing.parquet"], "error: benchmark cd: no such file 'missing.parquet'"),
    (["--benchmarks", "=x.parquet"], "error: benchmark '=x.parquet': give a file path or name=path"),
    (["--benchmarks", "cd=x.parquet", "eval.kk=3"], "error: unknown key eval.kk"),
])
def test_eval_cli_bad_input_exits_2_with_one_line(tiny_dir, args, message):
    result = run_eval_cli(str(tiny_dir / "model"), *args)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_eval_cli_missing_model_exits_2(tmp_path):
    result = run_eval_cli(str(tmp_path / "no_model"), "--benchmarks", "x.parquet")
    assert result.returncode == 2 and result.stderr.startswith("error: model: no such folder") and "launch/export.py" in result.stderr
