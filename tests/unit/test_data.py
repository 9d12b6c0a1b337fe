"""Data loading: file formats, field errors, long-prompt dropping, rank-sharded sampling, Countdown rows."""
import ast
import json
import operator
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest

from grpo.data import PromptSampler, load_prompt_records, make_countdown_rows, read_rows, write_parquet
from grpo.errors import UserError
from grpo.types import PromptRecord

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


class WordTokenizer:
    """One token per whitespace-separated word, so prompt lengths are easy to count by eye."""

    def __call__(self, texts, add_special_tokens=False):
        assert add_special_tokens is False
        if isinstance(texts, str):
            return {"input_ids": [len(w) for w in texts.split()]}
        return {"input_ids": [[len(w) for w in t.split()] for t in texts]}


def _row(question, answer, source="gsm8k"):
    return {"prompt": [{"role": "user", "content": question}], "reward_model": {"ground_truth": answer, "style": "rule"},
            "data_source": source}


ROWS = [_row("one two", "2"), _row("a b c d e", "5"), _row("x", "1", "math")]


# ---------------------------------------------------------------- reading files


def test_read_each_format(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")  # blank lines are skipped
    (tmp_path / "d.json").write_text(json.dumps(ROWS))
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    # CSV has no nesting: dotted column names build the nested field.
    pd.DataFrame([{"prompt": "one two", "reward_model.ground_truth": "007", "data_source": "gsm8k"}]).to_csv(
        tmp_path / "d.csv", index=False)
    for name in ("d.jsonl", "d.json", "d.parquet"):
        rows = read_rows(tmp_path / name)
        assert len(rows) == 3 and rows[1]["reward_model"]["ground_truth"] == "5", name
    csv_rows = read_rows(tmp_path / "d.csv")
    assert csv_rows == [{"prompt": "one two", "reward_model": {"ground_truth": "007"}, "data_source": "gsm8k"}]  # "007" kept as text


def test_read_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "d.txt").write_text("hi")
    with pytest.raises(UserError, match=r"d\.txt.*unsupported.*\.parquet, \.jsonl, \.json, \.csv"):
        read_rows(tmp_path / "d.txt")
    with pytest.raises(UserError, match=r"nope\.jsonl does not exist"):
        read_rows(tmp_path / "nope.jsonl")


def test_read_bad_jsonl_line(tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps(ROWS[0]) + "\n{broken\n")
    with pytest.raises(UserError, match=r"line 2 \(1-based\)"):
        read_rows(tmp_path / "d.jsonl")


# ---------------------------------------------------------------- records


def test_load_records_renders_tokenises_and_indexes_across_files(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    (tmp_path / "b.json").write_text(json.dumps(ROWS[:1]))
    records, report = load_prompt_records([tmp_path / "a.jsonl", tmp_path / "b.json"], "raw", WordTokenizer(), 100)
    assert (report.rows, report.dropped, bool(report)) == (4, 0, False)
    # 3 rows in a.jsonl then 1 in b.json: running indices 0, 1, 2, 3.
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert records[0] == PromptRecord("one two", [3, 3], "2", "gsm8k", 0)  # word lengths of "one", "two"
    assert records[2].data_source == "math"


def test_missing_field_names_field_file_and_row(tmp_path):
    bad = [ROWS[0], {"prompt": "q", "reward_model": {"ground_truth": "1"}, "source": "gsm8k"}]
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in bad))
    with pytest.raises(UserError) as e:
        load_prompt_records([str(tmp_path / "bad.jsonl")], "raw", WordTokenizer(), 100)
    msg = str(e.value)
    for part in ("'data_source'", "bad.jsonl", "row 1 (0-based)", "['prompt', 'reward_model', 'source']", "TinyZero/verl"):
        assert part in msg


def test_reward_model_without_ground_truth(tmp_path):
    bad = [{"prompt": "q", "reward_model": {"style": "rule"}, "data_source": "gsm8k"}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(UserError) as e:
        load_prompt_records([str(tmp_path / "bad.json")], "raw", WordTokenizer(), 100)
    assert "'reward_model.ground_truth'" in str(e.value) and "row 0 (0-based)" in str(e.value)
    assert "reward_model has ['style']" in str(e.value)


def test_long_prompts_are_dropped(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    # Word counts are 2, 5 and 1: a limit of 2 keeps rows 0 and 2 and drops the 5-word row 1.
    records, report = load_prompt_records([tmp_path / "a.jsonl"], "raw", WordTokenizer(), 2)
    assert report.too_long == report.dropped == 1 and [r.index for r in records] == [0, 2]
    assert report.describe(2) == "dropped 1 of 3 rows: 1 longer than max_prompt_length=2 tokens; 2 remain"
    # A limit of 0 drops all 3, which is an error naming the length filter rather than an empty run.
    with pytest.raises(UserError, match="3 rows read, all 3 longer than max_prompt_length=0 tokens: the length filter"):
        load_prompt_records([tmp_path / "a.jsonl"], "raw", WordTokenizer(), 0)


def test_parquet_ground_truth_becomes_plain_python(tmp_path):
    rows = make_countdown_rows(4, seed=3)
    write_parquet(rows, tmp_path / "sub" / "c.parquet")  # parent folder is created
    records, _ = load_prompt_records([tmp_path / "sub" / "c.parquet"], "raw", WordTokenizer(), 10_000)
    gt = records[0].ground_truth
    assert gt == rows[0]["reward_model"]["ground_truth"]
    assert type(gt["numbers"]) is list and all(type(n) is int for n in gt["numbers"]) and type(gt["target"]) is int
    json.dumps(gt)  # numpy types would raise here
    assert records[0].prompt_text == rows[0]["prompt"][0]["content"]


def test_template_error_says_where(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{**ROWS[0], "prompt": [{"role": "system", "content": "s"}]}]))
    with pytest.raises(UserError, match=r"a\.json, row 0 \(0-based\), field 'prompt'.*no 'user' message"):
        load_prompt_records([tmp_path / "a.json"], "raw", WordTokenizer(), 100)


def test_skip_malformed_counts_by_reason_and_keeps_indices(tmp_path):
    rows = [ROWS[0], {"prompt": "no source", "reward_model": {"ground_truth": "1"}},
            {**ROWS[1], "prompt": [{"role": "system", "content": "no user turn"}]}, ROWS[2]]
    (tmp_path / "m.json").write_text(json.dumps(rows))
    with pytest.raises(UserError, match=r"row 1 \(0-based\): missing field 'data_source'.*data.skip_malformed=true"):
        load_prompt_records([tmp_path / "m.json"], "raw", WordTokenizer(), 100)
    records, report = load_prompt_records([tmp_path / "m.json"], "raw", WordTokenizer(), 100, skip_malformed=True)
    # Rows 1 and 2 are skipped; 0 and 3 keep their row numbers as indices.
    assert [r.index for r in records] == [0, 3]
    assert report.malformed == {"missing field 'data_source'": 1, "prompt the template cannot render": 1}
    assert report.describe(100) == ("dropped 2 of 4 rows: 2 malformed (missing field 'data_source': 1, "
                                    "prompt the template cannot render: 1); 2 remain")


def test_empty_result_names_the_filter(tmp_path):
    bad = [{"prompt": "q", "reward_model": {"ground_truth": "1"}}] * 2
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(UserError, match=r"2 rows read, every one malformed and skipped by data.skip_malformed "
                                        r"\(missing field 'data_source': 2\)"):
        load_prompt_records([tmp_path / "bad.json"], "raw", WordTokenizer(), 100, skip_malformed=True)
    # One malformed row plus two prompts of 2 and 5 words with a limit of 1: both filters, each named with its count.
    (tmp_path / "mix.json").write_text(json.dumps(bad[:1] + ROWS[:2]))
    with pytest.raises(UserError, match=r"3 rows read: 1 malformed rows were skipped .* the length filter removed the "
                                        r"other 2 \(longer than max_prompt_length=1 tokens\)"):
        load_prompt_records([tmp_path / "mix.json"], "raw", WordTokenizer(), 1, skip_malformed=True)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="0 rows read; the files hold no rows"):
        load_prompt_records([tmp_path / "empty.jsonl"], "raw", WordTokenizer(), 100)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder (../shared/data beside the repo) is absent")
def test_tinyzero_countdown_test_parquet(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir / "model")
    records, report = load_prompt_records([str(SHARED_DATA / "countdown" / "test.parquet")], "raw", tok, 1024)
    # SOURCE.md: test.parquet holds 1024 rows (HF rows 10000-11023), all countdown; row 0 is target 45 from [30, 71, 88, 2].
    assert (len(records), report.dropped) == (1024, 0)
    assert {r.data_source for r in records} == {"countdown"}
    first = records[0]
    assert first.ground_truth == {"numbers": [30, 71, 88, 2], "target": 45}
    assert first.prompt_text.startswith("A conversation between User and Assistant.")
    assert "Using the numbers [30, 71, 88, 2], create an equation that equals 45." in first.prompt_text
    assert all(set(r.ground_truth) == {"numbers", "target"} for r in records)


# ---------------------------------------------------------------- sampler


def _records(n):
    return [PromptRecord(f"p{i}", [i], str(i), "x", i) for i in range(n)]


def _global_batches(sampler_factory, world_size, steps):
    """Per step: the concatenation of every rank's batch (rank order) and each rank's list."""
    samplers = [sampler_factory(rank) for rank in range(world_size)]
    out = []
    for _ in range(steps):
        per_rank = [[r.index for r in s.next_batch()] for s in samplers]
        out.append(per_rank)
    return out


def test_ranks_get_disjoint_slices_of_one_global_order():
    records = _records(10)
    steps = _global_batches(lambda rank: PromptSampler(records, 4, rank, 2, seed=7), world_size=2, steps=2)
    single = PromptSampler(records, 4, 0, 1, seed=7)  # world_size 1 sees the whole global batch
    for per_rank in steps:
        assert len(per_rank[0]) == len(per_rank[1]) == 2  # 4 prompts / 2 ranks
        assert not set(per_rank[0]) & set(per_rank[1])
        assert per_rank[0] + per_rank[1] == [r.index for r in single.next_batch()]
    # Steps 1 and 2 take prompts 0..7 of epoch 0's permutation: 8 distinct records.
    assert len({i for per_rank in steps for ids in per_rank for i in ids}) == 8


def test_epoch_wrap_reshuffles_and_covers_everything():
    records = _records(5)
    s = PromptSampler(records, 4, 0, 1, seed=1)
    a, b = [r.index for r in s.next_batch()], [r.index for r in s.next_batch()]
    # 5 records, 4 per step: step 1 = epoch-0 order[0:4]; step 2 = epoch-0 order[4] + epoch-1 order[0:3].
    assert sorted(a + b[:1]) == [0, 1, 2, 3, 4]
    assert (s.state_dict()["epoch"], s.state_dict()["offset"]) == (1, 3)
    assert len(set(b[1:])) == 3
    # Unshuffled, epochs are just 0..4 repeated.
    u = PromptSampler(records, 4, 0, 1, seed=1, shuffle=False)
    assert [r.index for _ in range(3) for r in u.next_batch()] == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_fewer_records_than_prompts_per_step():
    # 3 records, 8 per step over 2 ranks: a step spans 3 epochs (3 + 3 + 2 prompts).
    records = _records(3)
    steps = _global_batches(lambda rank: PromptSampler(records, 8, rank, 2, seed=0), world_size=2, steps=1)
    everything = steps[0][0] + steps[0][1]
    assert len(everything) == 8
    assert sorted(everything[:3]) == [0, 1, 2] and sorted(everything[3:6]) == [0, 1, 2]
    # Two full epochs give each record twice; the 2 leftovers are distinct, so counts are 3, 3, 2.
    assert sorted(Counter(everything).values()) == [2, 3, 3]


def test_state_dict_round_trip_continues_identically():
    records = _records(7)
    a = PromptSampler(records, 4, 1, 2, seed=5)
    for _ in range(3):
        a.next_batch()
    state = a.state_dict()
    # 3 steps x 4 prompts = 12 = one epoch of 7 + 5 into the next.
    assert state == {"epoch": 1, "offset": 5, "seed": 5, "num_records": 7, "shuffle": 1}
    b = PromptSampler(records, 4, 1, 2, seed=5)
    b.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON checkpoint
    assert [[r.index for r in a.next_batch()] for _ in range(4)] == [[r.index for r in b.next_batch()] for _ in range(4)]


@pytest.mark.parametrize("k", range(9))
def test_cursor_round_trip_equals_an_uninterrupted_pass(k, tmp_path):
    """Stop after k steps, save the cursor as a checkpoint would (JSON), restore into fresh samplers: the
    next steps are exactly those of a run that never stopped, on every rank and across epoch ends."""
    # 11 prompts, 4 per step over 2 ranks: epochs end mid-step (after 11, 22, 33 prompts), so k = 0..8
    # stops before, inside and after those ends.
    write_parquet(make_countdown_rows(11, seed=2), tmp_path / "c.parquet")
    records, _ = load_prompt_records([tmp_path / "c.parquet"], "raw", WordTokenizer(), 10_000)
    steps = 9

    def samplers():
        return [PromptSampler(records, 4, rank, 2, seed=3) for rank in range(2)]

    def take(ss, n):
        return [[[r.index for r in s.next_batch()] for s in ss] for _ in range(n)]

    uninterrupted = take(samplers(), steps)
    first = samplers()
    before = take(first, k)
    saved = [json.dumps(s.state_dict()) for s in first]
    resumed = samplers()
    for s, state in zip(resumed, saved):
        s.load_state_dict(json.loads(state))
    assert before + take(resumed, steps - k) == uninterrupted
    # The global order does not depend on the world size: one rank resuming the same cursor sees both halves.
    single = PromptSampler(records, 4, 0, 1, seed=3)
    single.load_state_dict(json.loads(saved[0]))
    assert [[r.index for r in single.next_batch()] for _ in range(steps - k)] == [a + b for a, b in uninterrupted[k:]]


def test_cursor_saved_by_one_rank_continues_on_two():
    # 10 records, 4 per step: one rank takes 2 steps (offset 8), then 2 ranks split steps 3-4 (the rest of epoch 0
    # and the start of epoch 1) exactly as the one rank would have taken them whole
    records = _records(10)
    single = PromptSampler(records, 4, 0, 1, seed=4)
    for _ in range(2):
        single.next_batch()
    state = json.loads(json.dumps(single.state_dict()))
    assert (state["epoch"], state["offset"]) == (0, 8)
    ranks = [PromptSampler(records, 4, rank, 2, seed=4) for rank in range(2)]
    for sampler in ranks:
        sampler.load_state_dict(state)
    for _ in range(2):
        halves = [[r.index for r in sampler.next_batch()] for sampler in ranks]
        assert halves[0] + halves[1] == [r.index for r in single.next_batch()]


def test_cursor_from_other_data_or_seed_is_refused():
    a = PromptSampler(_records(7), 4, 0, 1, seed=5)
    a.next_batch()
    state = a.state_dict()
    with pytest.raises(UserError, match="num_records=7 but this run has num_records=6"):
        PromptSampler(_records(6), 4, 0, 1, seed=5).load_state_dict(state)
    with pytest.raises(UserError, match="seed=5 but this run has seed=6"):
        PromptSampler(_records(7), 4, 0, 1, seed=6).load_state_dict(state)
    with pytest.raises(UserError, match="offset=9 is outside 7 records"):
        PromptSampler(_records(7), 4, 0, 1, seed=5).load_state_dict({"epoch": 0, "offset": 9})
    b = PromptSampler(_records(7), 4, 0, 1, seed=5)
    b.load_state_dict({"epoch": 0, "offset": 4})  # a cursor saved before seed/num_records were recorded still loads
    assert [r.index for r in b.next_batch()] == [r.index for r in a.next_batch()]


def test_indivisible_prompts_per_step_is_user_error():
    with pytest.raises(UserError, match="prompts_per_step=5 must be a positive multiple of world_size=2"):
        PromptSampler(_records(4), 5, 0, 2, seed=0)


# ---------------------------------------------------------------- countdown generator

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(expr):
    """Exact value of a + - * / expression over integer literals, and the literals used (no eval())."""
    leaves = []

    def walk(node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and type(node.value) is int:
            leaves.append(node.value)
            return Fraction(node.value)
        raise AssertionError(f"unexpected node {ast.dump(node)} in {expr!r}")

    return walk(ast.parse(expr, mode="eval").body), leaves


def test_countdown_rows_are_deterministic_and_solvable():
    rows = make_countdown_rows(300, seed=11)
    assert rows == make_countdown_rows(300, seed=11)
    assert rows != make_countdown_rows(300, seed=12)
    assert {len(r["nums"]) for r in rows} == {3, 4}
    for i, row in enumerate(rows):
        gt = row["reward_model"]["ground_truth"]
        value, leaves = _evaluate(row["extra_info"]["solution"])
        assert value == gt["target"] == row["target"], row  # exact: Fraction, not float
        assert sorted(leaves) == sorted(gt["numbers"]) == sorted(row["nums"])  # each number exactly once
        assert 1 <= gt["target"] <= 999 and all(1 <= n <= 99 for n in gt["numbers"])
        assert row["extra_info"]["index"] == i and row["data_source"] == "countdown"
        text = row["prompt"][0]["content"]
        assert f"Using the numbers {gt['numbers']}, create an equation that equals {gt['target']}." in text
        assert text.endswith("Assistant: Let me solve this step by step.\n<think>")


def test_countdown_options():
    rows = make_countdown_rows(20, seed=0, num_numbers=(3,), max_number=9, split="test")
    assert all(len(r["nums"]) == 3 and max(r["nums"]) <= 9 and r["extra_info"]["split"] == "test" for r in rows)


# ---------------------------------------------------------------- tiny model


def test_build_tiny_outputs_load(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "model")
    tok = AutoTokenizer.from_pretrained(tiny_dir / "model")
    text = "<answer> (3 + 5) * 2 </answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == text  # tags are added, not special: they survive
    assert ids[0] == tok.convert_tokens_to_ids("<answer>") and ids[-1] == tok.convert_tokens_to_ids("</answer>")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    assert len(pd.read_parquet(tiny_dir / "countdown_train.parquet")) == 2000
    test_rows = read_rows(tiny_dir / "countdown_test.parquet")
    assert len(test_rows) == 256 and test_rows[0]["extra_info"]["split"] == "test"
    records, report = load_prompt_records([tiny_dir / "countdown_train.parquet"], "raw", tok, 512)
    assert (len(records), report.dropped) == (2000, 0)
