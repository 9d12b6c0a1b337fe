"""Data preparation: every shipped dataset config prepared from the ../shared/data fixtures (row counts,
fields, one rendered prompt per template byte for byte), bad input, generators, and the real CLI's summary.

Expected prompts are written out literally here (not built from grpo.templates), so a change to a
template or to the question text on the way through fails a test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from grpo.data import load_prompt_records, read_rows
from grpo.data.dataset_config import load_dataset_config
from grpo.data.prepare import apply_overrides, percentiles, prepare, prompt_lengths, summary_lines
from grpo.errors import UserError
from grpo.templates import render_prompt

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO / "recipes" / "datasets"
SHARED_DATA = REPO / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder (../shared/data beside the repo) is absent")

# The MindSpeed-RL R1-Zero prompt (docs/solutions/r1_zero_qwen25_7b.md) around a question, and TinyZero's base prompt.
QWEN_R1_HEAD = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nA conversation between User and "
    "Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the "
    "reasoning process in the mind and then provides the user with the answer. The reasoning process and answer "
    "are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
    "process here </think><answer> answer here </answer>Put your final answer within \\boxed{}.\n"
)
QWEN_R1_TAIL = "<|im_end|>\n<|im_start|>assistant\n"
BASE_HEAD = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer.\nUser: "
)
BASE_R1_TAIL = (
    " Show your work in <think> </think> tags. And return the final answer in <answer> </answer> tags.\n"
    "Assistant: Let me solve this step by step.\n<think>"
)
VERL_COLUMNS = {"data_source", "prompt", "ability", "reward_model", "extra_info"}


def _prepare(name, **overrides):
    """Prepare every selected split of recipes/datasets/NAME.yaml; {split: PreparedSplit}."""
    cfg = apply_overrides(load_dataset_config(DATASETS / f"{name}.yaml"), **overrides)
    return {p.split: p for p in prepare(cfg, progress=False)}


def _written(prepared, tmp_path):
    """Write the rows as prepare_data does and read them back: what training will see."""
    from grpo.data import write_parquet

    path = write_parquet(prepared.rows, tmp_path / f"{prepared.split}.parquet")
    return path, pd.read_parquet(path)


def test_shipped_configs_load_and_name_hub_sources():
    # Every config the issue lists is shipped and valid; source configs default to the hub id users download.
    names = sorted(p.stem for p in DATASETS.glob("*.yaml"))
    assert names == ["aime24", "countdown", "deepscaler", "gpqa", "gsm8k", "math500", "multiply"]
    expected = {"deepscaler": ("agentica-org/DeepScaleR-Preview-Dataset", "math", "qwen_r1"),
                "math500": ("HuggingFaceH4/MATH-500", "math", "qwen_r1"),
                "aime24": ("HuggingFaceH4/aime_2024", "math", "qwen_r1"),
                "gsm8k": ("openai/gsm8k", "gsm8k", "qwen_r1"),
                "countdown": ("Jiayi-Pan/Countdown-Tasks-3to4", "countdown", "raw"),
                "multiply": ("", "multiply", "base_r1"),
                "gpqa": ("Idavidrein/gpqa", "gpqa", "qwen_r1")}
    for name, (source, data_source, template) in expected.items():
        cfg = load_dataset_config(DATASETS / f"{name}.yaml")
        assert (cfg.source, cfg.data_source, cfg.template) == (source, data_source, template), name
        assert Path(cfg.path).read_text().startswith("# "), f"{name}.yaml lacks its header comment"
    assert load_dataset_config(DATASETS / "gsm8k.yaml").hub_config == "main"


# ---------------------------------------------------------------- each config from its fixture


@needs_data
def test_deepscaler_every_template_byte_for_byte(tmp_path, tiny_dir):
    from transformers import AutoTokenizer

    # deepscaler/train/aime.json is from the DeepScaleR repo, with deepscaler.json's fields (problem, answer, solution).
    (train,) = _prepare("deepscaler", source=str(SHARED_DATA / "deepscaler" / "train" / "aime.json")).values()
    assert (train.rows_in, len(train.rows), sum(train.dropped.values())) == (975, 975, 0)  # SOURCE.md: 975 records
    path, frame = _written(train, tmp_path)
    assert set(frame.columns) == VERL_COLUMNS
    row = read_rows(path)[0]
    question = ("Let $x$, $y$ and $z$ all exceed $1$ and let $w$ be a positive number such that $\\log_x w = 24$, "
                "$\\log_y w = 40$ and $\\log_{xyz} w = 12$. Find $\\log_z w$.")
    assert [dict(m) for m in row["prompt"]] == [{"role": "user", "content": question}]
    assert (row["data_source"], row["ability"]) == ("math", "math")
    assert dict(row["reward_model"]) == {"style": "rule", "ground_truth": "60"}
    assert (row["extra_info"]["split"], row["extra_info"]["index"]) == ("train", 0)
    assert row["extra_info"]["solution"].startswith("Converting all of the logarithms to exponentials")
    tok = AutoTokenizer.from_pretrained(tiny_dir / "model")
    expected = {
        "qwen_r1": QWEN_R1_HEAD + question + QWEN_R1_TAIL,
        "base_r1": BASE_HEAD + question + BASE_R1_TAIL,
        "raw": question,
        "chat": f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n",  # the tiny tokenizer's chat template
    }
    for template, text in expected.items():
        assert render_prompt(template, row["prompt"], tok).encode() == text.encode(), template


@needs_data
def test_math500(tmp_path):
    (test,) = _prepare("math500", source=str(SHARED_DATA / "math500" / "test.jsonl")).values()
    assert (test.split, len(test.rows)) == ("test", 500)  # SOURCE.md: 500 lines
    path, frame = _written(test, tmp_path)
    assert set(frame.columns) == VERL_COLUMNS and set(frame["data_source"]) == {"math"}
    row = read_rows(path)[0]
    question = ("Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in "
                "the form $(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$")
    assert row["reward_model"]["ground_truth"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert row["extra_info"]["split"] == "test"
    assert render_prompt("qwen_r1", row["prompt"]).encode() == (QWEN_R1_HEAD + question + QWEN_R1_TAIL).encode()


@needs_data
def test_aime24(tmp_path):
    (test,) = _prepare("aime24", source=str(SHARED_DATA / "aime2024" / "test.jsonl")).values()
    assert len(test.rows) == 30
    _, frame = _written(test, tmp_path)
    answers = [gt["ground_truth"] for gt in frame["reward_model"]]
    # AIME answers are integers 0..999, kept as the published text; problem id 60 (AIME I #1) is 204.
    assert answers[0] == "204" and all(a.isdigit() and 0 <= int(a) <= 999 for a in answers)
    question = frame["prompt"][0][0]["content"]
    assert question.startswith("Every morning Aya goes for a $9$-kilometer-long walk")
    assert render_prompt("qwen_r1", frame["prompt"][0]) == QWEN_R1_HEAD + question + QWEN_R1_TAIL


@needs_data
def test_gsm8k_ground_truth_is_the_number_after_hashes(tmp_path, tiny_dir):
    from transformers import AutoTokenizer

    (test,) = _prepare("gsm8k", source=str(SHARED_DATA / "gsm8k" / "test.jsonl"), split="test").values()
    assert len(test.rows) == 1319  # SOURCE.md: 1319 lines, each with a "#### N" line
    truths = [r["reward_model"]["ground_truth"] for r in test.rows]
    # Row 0 ends "#### 18"; row 146 "#### 2,125" loses its comma; row 489 "#### -10" keeps its sign.
    assert (truths[0], truths[146], truths[489]) == ("18", "2125", "-10")
    assert test.rows[0]["extra_info"]["solution"].endswith("\n#### 18")
    assert test.rows[0]["data_source"] == "gsm8k" and test.rows[0]["extra_info"]["split"] == "test"
    question = ("Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
                "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
                "fresh duck egg. How much in dollars does she make every day at the farmers' market?")
    assert render_prompt("qwen_r1", test.rows[0]["prompt"]).encode() == (QWEN_R1_HEAD + question + QWEN_R1_TAIL).encode()
    # The training loader reads the prepared parquet directly.
    path, _ = _written(test, tmp_path)
    tok = AutoTokenizer.from_pretrained(tiny_dir / "model")
    records, report = load_prompt_records([path], "qwen_r1", tok, 100_000)
    assert (len(records), report.dropped) == (1319, 0)
    assert records[146].ground_truth == "2125" and records[0].prompt_text == QWEN_R1_HEAD + question + QWEN_R1_TAIL


@needs_data
def test_countdown_from_tinyzero_parquet(tmp_path):
    (test,) = _prepare("countdown", source=str(SHARED_DATA / "countdown" / "test.parquet"), split="test").values()
    assert len(test.rows) == 1024  # SOURCE.md: rows 10000-11023 of the hub set
    path, frame = _written(test, tmp_path)
    assert set(frame.columns) == VERL_COLUMNS | {"target", "nums"}  # TinyZero's columns
    row = read_rows(path)[0]
    assert row["reward_model"]["ground_truth"]["target"] == row["target"] == 45
    assert list(row["reward_model"]["ground_truth"]["numbers"]) == list(row["nums"]) == [30, 71, 88, 2]
    tinyzero = (BASE_HEAD + "Using the numbers [30, 71, 88, 2], create an equation that equals 45. You can use basic "
                "arithmetic operations (+, -, *, /) and each number can only be used once. Show your work in <think> "
                "</think> tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 "
                "</answer>.\nAssistant: Let me solve this step by step.\n<think>")
    assert render_prompt("raw", row["prompt"]).encode() == tinyzero.encode()


def test_countdown_generator_matches_tinyzero_fields():
    cfg = apply_overrides(load_dataset_config(DATASETS / "countdown.yaml"), count=50)
    train, test = prepare(cfg, generate=True, progress=False)
    assert (train.split, len(train.rows), test.split, len(test.rows)) == ("train", 50, "test", 50)
    assert set(train.rows[0]) == VERL_COLUMNS | {"target", "nums"}
    assert set(train.rows[0]["extra_info"]) == {"split", "index", "solution"}
    assert train.rows != test.rows  # seeds 0 and 1
    assert prepare(cfg, generate=True, progress=False)[0].rows == train.rows  # seeded: the same again


def test_multiply_generator(tmp_path):
    (train, test) = _prepare("multiply", count=200).values()
    assert len(train.rows) == len(test.rows) == 200
    for row in train.rows:
        a, b = row["extra_info"]["a"], row["extra_info"]["b"]
        assert 100 <= a <= 999 and 100 <= b <= 999  # digits: [3, 3]
        assert row["reward_model"]["ground_truth"] == str(a * b)  # the exact product, as text
        assert render_prompt("base_r1", row["prompt"]) == BASE_HEAD + f"What is {a} * {b}?" + BASE_R1_TAIL
    # 200 draws from 900 x 900 pairs: repeats are possible but almost all pairs differ.
    assert len({(r["extra_info"]["a"], r["extra_info"]["b"]) for r in train.rows}) > 190
    _, frame = _written(train, tmp_path)
    assert frame["reward_model"][0]["ground_truth"] == train.rows[0]["reward_model"]["ground_truth"]


def test_multiply_digits():
    from grpo.data import make_multiply_rows

    rows = make_multiply_rows(100, seed=3, digits=(1, 12))
    assert rows == make_multiply_rows(100, seed=3, digits=(1, 12))
    assert all(1 <= r["extra_info"]["a"] <= 9 and 10**11 <= r["extra_info"]["b"] < 10**12 for r in rows)
    # A 13-digit product still round-trips exactly as a string (no float, no int64 limit).
    assert all(int(r["reward_model"]["ground_truth"]) == r["extra_info"]["a"] * r["extra_info"]["b"] for r in rows)
    with pytest.raises(UserError, match="two positive integers"):
        make_multiply_rows(1, seed=0, digits=(0, 3))


# ---------------------------------------------------------------- bad input


def _broken_answer_rows(path):
    """Rows of a DeepScaleR json file whose answer is null, and whose answer is blank text, read with json alone."""
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    null = [i for i, row in enumerate(rows) if row["answer"] is None]
    empty = [i for i, row in enumerate(rows) if isinstance(row["answer"], str) and not row["answer"].strip()]
    return len(rows), null, empty


@needs_data
def test_deepscaler_skips_exactly_its_declared_broken_rows():
    source = SHARED_DATA / "deepscaler" / "train" / "math.json"
    rows_in, null, empty = _broken_answer_rows(source)
    assert (rows_in, null, empty) == (7474, [886, 1009], [5328, 5330])  # SOURCE.md: 7474 records, 4 without an answer
    (train,) = _prepare("deepscaler", source=str(source)).values()  # no --skip-malformed: the config declares them
    assert train.known_broken == {"a null answer": null, "an empty answer": empty}
    assert (train.rows_in, len(train.rows), sum(train.dropped.values())) == (7474, 7474 - 2 - 2, 0)
    indices = [r["extra_info"]["index"] for r in train.rows]
    assert indices == [i for i in range(7474) if i not in null + empty]  # indices point at source rows: gaps, no shift
    lines = summary_lines(train, prompt_lengths(train.rows, "raw"), "characters", "raw")
    declared = f"declared by the deepscaler config's known_broken ({DATASETS / 'deepscaler.yaml'})"
    assert lines[1] == "  rows in 7474, kept 7470, dropped 4"
    assert lines[2:4] == [f"    skipped 2 rows with a null answer (rows 886, 1009), {declared}",
                          f"    skipped 2 rows with an empty answer (rows 5328, 5330), {declared}"]


@needs_data
def test_undeclared_null_answer_names_field_file_and_row():
    # math500's config declares no known_broken, so the same file stops at its first null answer.
    source = str(SHARED_DATA / "deepscaler" / "train" / "math.json")
    with pytest.raises(UserError) as e:
        _prepare("math500", source=source)
    for part in ("math.json", "row 886 (0-based)", "field 'answer' is null", "--skip-malformed"):
        assert part in str(e.value), part
    (test,) = _prepare("math500", source=source, skip_malformed=True).values()
    # Rows 886 and 1009 hold null, rows 5328 and 5330 an empty string: 7474 - 4 = 7470 kept.
    assert (test.rows_in, len(test.rows), test.known_broken) == (7474, 7470, {})
    assert test.dropped == {"null field 'answer'": 2, "empty answer": 2}


def test_known_broken_skips_only_what_it_declares(tmp_path):
    # Rows: 0 fine, 1 null answer (declared), 2 fine, 3 null answer (declared), 4 empty answer (not declared).
    data = tmp_path / "rows.jsonl"
    answers = ["1", None, "3", None, " "]
    data.write_text("".join(json.dumps({"q": f"question {i}", "a": a}) + "\n" for i, a in enumerate(answers)))
    config = tmp_path / "mine.yaml"
    config.write_text("source: rows.jsonl\ndata_source: math\nmap_keys: {prompt: q, answer: a}\n"
                      "known_broken:\n  - {field: answer, is: null, why: rows 1 and 3 of the published file}\n")
    run = _cli(config, "--source", data, "--rows", "0:4", "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    assert "  rows in 4, kept 2, dropped 2\n" in run.stdout
    assert (f"    skipped 2 rows with a null answer (rows 1, 3), declared by the mine config's known_broken ({config})\n"
            in run.stdout)
    assert [r["extra_info"]["index"] for r in read_rows(tmp_path / "out" / "train.parquet")] == [0, 2]
    run = _cli(config, "--source", data, "--out", tmp_path / "all")  # row 4's empty answer is not declared
    assert run.returncode == 2 and "rows.jsonl, row 4 (0-based): empty answer. Fix the data" in run.stderr
    assert not (tmp_path / "all").exists()
    config.write_text("source: rows.jsonl\ndata_source: math\nknown_broken: [{field: answer, is: missing}]\n")
    with pytest.raises(UserError, match=r"known_broken\[0\].is must be one of null, empty, got 'missing'"):
        load_dataset_config(config)
    config.write_text("source: rows.jsonl\ndata_source: math\nknown_broken: [{field: answer, when: null}]\n")
    with pytest.raises(UserError, match=r"unknown key known_broken\[0\].when; did you mean why"):
        load_dataset_config(config)


@needs_data
def test_deepscaler_reads_every_deepscaler_file_as_published():
    # Minerva stores a list of acceptable answers per problem (71 of its 272 have two): the list stays a list.
    minerva = SHARED_DATA / "deepscaler" / "test" / "minerva.json"
    (test,) = _prepare("deepscaler", source=str(minerva)).values()
    first = json.loads(minerva.read_text())[0]["answer"]
    assert first == ["9.6\n"] and test.rows[0]["reward_model"]["ground_truth"] == ["9.6"]
    assert len(test.rows) == 272
    # The verl-format slice names its fields prompt (messages) and reward_model.ground_truth: map_keys' alternatives.
    subset = SHARED_DATA / "deepscaler" / "train_subset_2000" / "deepscaler_train.parquet"
    (train,) = _prepare("deepscaler", source=str(subset)).values()
    published = read_rows(subset)
    assert len(train.rows) == 2000
    assert train.rows[0]["prompt"] == [dict(m) for m in published[0]["prompt"]]
    assert train.rows[0]["reward_model"]["ground_truth"] == published[0]["reward_model"]["ground_truth"].strip()


@needs_data
def test_wrong_map_keys_and_a_filter_that_removes_everything():
    source = str(SHARED_DATA / "aime2024" / "test.jsonl")
    with pytest.raises(UserError) as e:
        _prepare("aime24", source=source, map_keys={"prompt": "question_text"})
    msg = str(e.value)
    assert "test.jsonl, row 0 (0-based): missing field 'question_text' (map_keys: prompt <- question_text)" in msg
    assert "'problem'" in msg  # the row's actual fields are listed
    with pytest.raises(UserError, match="all 30 were removed by the malformed-row filter .*missing field 'question_text': 30"):
        _prepare("aime24", source=source, map_keys={"prompt": "question_text"}, skip_malformed=True)
    with pytest.raises(UserError, match=r"rows 40:50 holds no rows"):
        _prepare("aime24", source=source, rows=[40, 50])  # 30 rows: the slice is empty


def test_local_file_is_one_split_and_config_errors(tmp_path):
    with pytest.raises(UserError, match=r"one file, so it is one split: pick which with --split \(train, test\)"):
        apply_overrides(load_dataset_config(DATASETS / "gsm8k.yaml"), source=str(tmp_path / "x.jsonl"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: x.jsonl\ndata_source: math\nmap_key: {prompt: q}\n")
    with pytest.raises(UserError, match="unknown key map_key; did you mean map_keys"):
        load_dataset_config(bad)
    bad.write_text("source: x.jsonl\ndata_source: math\nsplits: {train: {rows: [5]}}\n")
    with pytest.raises(UserError, match=r"splits.train.rows must be \[start, stop\]"):
        load_dataset_config(bad)
    bad.write_text("generator: multiply\ngenerator_args: {digit: 3}\nsplits: {train: {count: 2}}\n")
    with pytest.raises(UserError, match="generator_args .* do not fit generator multiply"):
        prepare(load_dataset_config(bad))


def test_map_keys_and_custom_handler(tmp_path, monkeypatch):
    data = tmp_path / "mine.csv"
    pd.DataFrame([{"q": "What is 1+1?", "a": "2", "keep": "yes"}, {"q": "Skip me", "a": "0", "keep": "no"},
                  {"q": "What is 2+2?", "a": "4", "keep": "yes"}]).to_csv(data, index=False)
    (tmp_path / "my_handlers.py").write_text(
        '"""A user handler for the test."""\n'
        "from grpo.data import Example\n\n"
        "def shout(row):\n"
        "    if row['keep'] != 'yes':\n"
        "        return None\n"
        "    return Example(row['prompt'].upper(), row['answer'], {'kept': True}, data_source='arith')\n"
        "def broken(row):\n"
        "    return {'prompt': row['prompt']}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_dataset_config(DATASETS / "math500.yaml")
    (out,) = prepare(apply_overrides(cfg, source=str(data), map_keys={"prompt": "q", "answer": "a"}))
    assert [r["reward_model"]["ground_truth"] for r in out.rows] == ["2", "0", "4"]
    (out,) = prepare(apply_overrides(cfg, source=str(data), map_keys={"prompt": "q", "answer": "a"},
                                     handler="my_handlers:shout"))
    # The handler drops row 1 (keep == "no"): two rows, indices 0 and 2, its own data_source and extra_info.
    assert [(r["prompt"][0]["content"], r["extra_info"]["index"]) for r in out.rows] == [("WHAT IS 1+1?", 0), ("WHAT IS 2+2?", 2)]
    assert out.dropped == {"dropped by handler my_handlers:shout": 1}
    assert {r["data_source"] for r in out.rows} == {"arith"} and out.rows[0]["extra_info"]["kept"] is True
    with pytest.raises(UserError, match="returned a dict .* must return grpo.data.Example"):
        prepare(apply_overrides(cfg, source=str(data), map_keys={"prompt": "q", "answer": "a"}, handler="my_handlers:broken"))
    with pytest.raises(UserError, match="cannot import"):
        prepare(apply_overrides(cfg, source=str(data), handler="no_such_module:fn"))


# ---------------------------------------------------------------- summary


def test_percentiles_are_nearest_rank():
    # 1..100: the p-th percentile is the value at rank ceil(p/100 * 100) = p.
    assert percentiles(list(range(100, 0, -1))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    # 4 values: p50 is rank ceil(2.0) = 2 -> 20; p90 and p99 are rank 4 -> 40.
    assert percentiles([40, 10, 30, 20]) == {"p50": 20, "p90": 40, "p99": 40, "max": 40}
    assert percentiles([7]) == {"p50": 7, "p90": 7, "p99": 7, "max": 7}


def test_summary_lines_without_tokenizer():
    cfg = apply_overrides(load_dataset_config(DATASETS / "multiply.yaml"), count=10, split="test")
    (test,) = prepare(cfg)
    lengths = prompt_lengths(test.rows, "base_r1")
    # Every 3x3-digit question "What is abc * def?" is 18 characters, so every base_r1 prompt has the same length.
    assert set(lengths) == {len(BASE_HEAD + "What is 123 * 456?" + BASE_R1_TAIL)}
    lines = summary_lines(test, lengths, "characters", "base_r1")
    assert lines[0] == "test: generator multiply (count 10, seed 1)"
    assert lines[1] == "  rows in 10, kept 10, dropped 0"
    assert lines[2].startswith("  prompt length in characters with template base_r1: p50 ")


def _cli(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(REPO / "launch" / "prepare_data.py"), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@needs_data
def test_cli_summary_in_tokens(tmp_path, tiny_dir):
    from transformers import AutoTokenizer

    source = SHARED_DATA / "deepscaler" / "train" / "math.json"
    run = _cli(DATASETS / "math500.yaml", "--source", source, "--rows", "0:1200", "--skip-malformed",
               "--tokenizer", tiny_dir / "model", "--max-prompt-length", 200, "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    # Rows 886 and 1009 of the first 1200 have a null answer (math500's config declares no known_broken).
    assert "  rows in 1200, kept 1198, dropped 2\n    2 null field 'answer'\n" in out
    # Recompute the percentiles independently: literal qwen_r1 text, the tiny tokenizer, numpy's inverted-CDF
    # percentile (the smallest length with at least p% of prompts at or below it, i.e. nearest rank).
    tok = AutoTokenizer.from_pretrained(tiny_dir / "model")
    questions = [row["prompt"][0]["content"] for row in read_rows(tmp_path / "test.parquet")]
    lengths = [len(ids) for ids in tok([QWEN_R1_HEAD + q + QWEN_R1_TAIL for q in questions], add_special_tokens=False)["input_ids"]]
    p50, p90, p99 = (int(v) for v in np.percentile(lengths, [50, 90, 99], method="inverted_cdf"))
    assert (f"  prompt length in tokens ({tiny_dir / 'model'}) with template qwen_r1: "
            f"p50 {p50}  p90 {p90}  p99 {p99}  max {max(lengths)}\n") in out
    assert f"  {sum(n > 200 for n in lengths)} prompts are longer than 200 tokens" in out
    assert f"test: {source}, rows 0:1200\n" in out
    assert f"wrote {tmp_path / 'test.parquet'}" in out


@needs_data
def test_cli_progress_and_errors(tmp_path):
    source = SHARED_DATA / "deepscaler" / "train" / "math.json"
    run = _cli(DATASETS / "deepscaler.yaml", "--source", source, "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    assert "rows in 7474, kept 7470, dropped 4" in run.stdout and "characters (no --tokenizer given" in run.stdout
    assert "deepscaler train: 100%" in run.stderr and "7474/7474" in run.stderr  # 7474 rows >= 5000: a progress bar
    assert len(pd.read_parquet(tmp_path / "train.parquet")) == 7470
    assert f"train with: data.train_files=[{tmp_path / 'train.parquet'}] data.template=qwen_r1" in run.stdout
    run = _cli(DATASETS / "math500.yaml", "--source", source, "--out", tmp_path / "again")  # declares no known_broken
    assert run.returncode == 2
    assert "error: " in run.stderr and "math.json, row 886 (0-based): field 'answer' is null" in run.stderr
    assert not (tmp_path / "again").exists()  # nothing written on error
    run = _cli(DATASETS / "deepscaler.yaml", "--map-keys", "[1]")
    assert run.returncode == 2 and "--map-keys must be a JSON object" in run.stderr
