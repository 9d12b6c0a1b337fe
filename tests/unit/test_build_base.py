"""launch/build_base.py at a tiny scale: the worked attempts it pretrains on are well formed and
honest (a "right" one verifies, a "wrong" one does not), a short view keeps every token's position,
two training processes make the same steps as one, the held-out tasks stay out of the corpus and
the train file, and a second build reuses the first.
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import random
import re
from pathlib import Path

import pytest

from grpo.data import read_rows
from grpo.data.countdown import countdown_attempts, make_countdown_rows, problem_key, worked_completion
from grpo.rewards.countdown import verify_countdown

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("build_base", REPO / "launch" / "build_base.py")
bb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bb)

# A 1-layer model and small files: the whole builder runs in seconds.
TINY = {"MODEL": {"hidden_size": 64, "intermediate_size": 128, "num_layers": 1, "num_heads": 2, "num_kv_heads": 1,
                  "head_dim": 32},
        "TEST_ROWS": 16, "TRAIN_ROWS": 40, "CHUNK": 256, "TOKENIZER_TEXTS": 200, "STEPS_PER_MINUTE": 100}

TEXT_RE = re.compile(r" \[(\d+), (\d+), (\d+)\] -> (\d+)((?:\n[^\n<]+)+)\n</think>\n<answer> ([^<]+) </answer>")
TRY_RE = re.compile(r"(\d+)([-+*/])(\d+)=(\d+),(\d+)([-+*/])(\d+)=(\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


def test_worked_attempts_are_well_formed_and_honest():
    rows = make_countdown_rows(400, seed=5, **bb.TASK)
    rng = random.Random(0)
    right = total = hits = expressions = 0
    for row in rows:
        worked = worked_completion(row["nums"], row["target"], rng, **bb.WORK)
        if worked is None:  # no two-step try with a + or - second step reaches this target
            assert not any(a.value == row["target"] for a in countdown_attempts(row["nums"], 99, "+-"))
            continue
        text, correct = worked
        total += 1
        right += correct
        # The "correct" flag is what the reward says, and the format is TinyZero's.
        assert correct == verify_countdown(text, row["reward_model"]["ground_truth"]), text
        m = TEXT_RE.fullmatch(text)
        assert m, text
        assert [int(g) for g in m.groups()[:4]] == [*row["nums"], row["target"]]  # the restatement is exact
        tries = m.group(5).strip("\n").split("\n")
        assert 1 <= len(tries) <= bb.WORK["max_tries"]
        values = []
        for line in tries:
            x, op1, y, v1, a, op2, b, v2 = TRY_RE.fullmatch(line).groups()
            assert OPS[op1](int(x), int(y)) == int(v1) and 0 <= int(v1) <= 99, line  # every step is true
            assert OPS[op2](int(a), int(b)) == int(v2) and op2 in "+-", line
            z = int(b) if a == v1 else int(a)  # step two combines step one's value with the third number
            assert sorted([int(x), int(y), z]) == sorted(row["nums"]), line
            values.append(int(v2))
        # It stops at its first hit, and answers its last try: as an expression or as the value reached.
        assert all(v != row["target"] for v in values[:-1])
        hit = values[-1] == row["target"]
        hits += hit
        if m.group(6).isdigit():
            assert int(m.group(6)) == values[-1] and not correct
            continue
        expressions += 1
        assert hit == correct
        last = TRY_RE.fullmatch(tries[-1]).groups()
        assert m.group(6).replace("(", "").replace(")", "") in {
            f"{last[0]}{last[1]}{last[2]}{last[5]}{last[6] if last[4] == last[3] else last[4]}",
            f"{last[4]}{last[5]}{last[0]}{last[1]}{last[2]}"}
    # hit 0.3 per try, 0.4 to try again, at most 3 tries: 0.3 * (1 + 0.28 + 0.28^2) = 0.41 end at a hit;
    # the answer is an expression with probability expression_rate (0.3): 0.41 * 0.3 = 0.12 right.
    assert total > 250 and 0.33 < hits / total < 0.49
    assert 0.22 < expressions / total < 0.38 and 0.07 < right / total < 0.18


def test_short_view_keeps_each_tokens_position():
    examples = bb.corpus_examples(64, seed=1, exclude=set())
    tokenizer = bb.build_tokenizer(bb.tokenizer_texts(examples), qwen2_split=True)
    full = [e._replace(full=True) for e in examples]
    for (ids, pos, plen), (fids, fpos, fplen), e in zip(bb.encode(tokenizer, examples), bb.encode(tokenizer, full),
                                                         examples):
        assert fpos == list(range(len(fids)))
        assert ids[plen:] == fids[fplen:] and pos[plen:] == fpos[fplen:]  # same completion, same positions
        assert [fids[p] for p in pos[:plen]] == ids[:plen]  # each kept prompt token sits where it sat
        if not e.full:
            kept = tokenizer.decode(ids[:plen])
            nums, target = e.key
            assert plen < fplen / 4 and kept.endswith(".\n<think>") and f"equals {target}." in kept
            assert all(str(n) in kept for n in nums)


def test_two_processes_make_the_same_steps():
    examples = bb.corpus_examples(48, seed=2, exclude=set())
    tokenizer = bb.build_tokenizer(bb.tokenizer_texts(examples), qwen2_split=True)
    batches = bb.make_batches(bb.encode(tokenizer, examples), 1024, random.Random(0))[:3]
    one = bb.build_model(tokenizer, 0, **TINY["MODEL"])
    two = copy.deepcopy(one)
    losses_one = bb.pretrain(one, batches, tokenizer.pad_token_id, procs=1, progress=False)
    losses_two = bb.pretrain(two, batches, tokenizer.pad_token_id, procs=2, progress=False)
    assert losses_two == pytest.approx(losses_one, rel=1e-5)
    import torch

    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_build_holds_out_the_test_tasks_and_is_cached(tmp_path, monkeypatch, capsys):
    for name, value in TINY.items():
        monkeypatch.setattr(bb, name, value)
    out = tmp_path / "base"
    assert bb.main(["--out", str(out), "--minutes", "0.2", "--procs", "1"]) == 0  # 0.2 x 100 = 20 steps
    info = json.loads((out / "build.json").read_text())
    assert info["steps"] == 20 and info["test_rows"] == 16 and info["test_in_corpus_or_train"] == 0
    assert 0 <= info["test_greedy"]["accuracy"] <= 1 and "pass@8" in info["test_sampled_t1_n8"]
    test_keys = {problem_key(r) for r in read_rows(out / "countdown_test.parquet")}
    train_keys = {problem_key(r) for r in read_rows(out / "countdown_train.parquet")}
    assert len(test_keys) == 16 and not test_keys & train_keys
    # The corpus is drawn with the test keys excluded (build() counts the overlap it saw: 0 above).
    assert not test_keys & {e.key for e in bb.corpus_examples(256, seed=0, exclude=test_keys)}

    stamp = (out / "model" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert bb.main(["--out", str(out), "--minutes", "0.2", "--procs", "1"]) == 0
    assert "reusing" in capsys.readouterr().out
    # A cache built with other settings (an older script, another seed or length) is not reused.
    assert bb._stale_settings(out, argparse.Namespace(seed=1, minutes=0.3)) == ["seed", "steps"]
    monkeypatch.setattr(bb, "WORK", {**bb.WORK, "hit_rate": 0.5})
    assert bb._stale_settings(out, argparse.Namespace(seed=0, minutes=0.2)) == ["work"]
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == stamp
