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
from grpo.data.countdown import (
    countdown_attempts, directed_attempts, make_countdown_rows, problem_key, worked_completion,
)
from grpo.rewards.countdown import first_try, verify_countdown

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


VERIFY_RE = re.compile(r"verify (\d+)([-+*/])(\d+)=(\d+),(\d+)([-+*/])(\d+)=(\d+) (ok|wait)")


def closest_miss(step1: int, z: int, target: int) -> int:
    """How near to `target` a + or - second step from `step1` with `z` can come, its value kept in 0..99."""
    return min(abs(v - target) for v in (step1 + z, step1 - z, z - step1) if 0 <= v <= 99)


def test_worked_attempts_are_well_formed_and_honest():
    rows = make_countdown_rows(1200, seed=5, **bb.TASK)
    rng = random.Random(0)
    total = hits = expressions = 0
    right_by_checking = {True: [0, 0], False: [0, 0]}  # checked or not -> [right, answered with an expression]
    right_by_retrying = {True: [0, 0], False: [0, 0]}  # went on after a miss or not -> the same
    retries = retry_hits = 0
    for row in rows:
        worked = worked_completion(row["nums"], row["target"], rng, **bb.WORK)
        if worked is None:  # no two-step try with a + or - second step reaches this target
            assert not any(a.value == row["target"] for a in countdown_attempts(row["nums"], 99, "+-"))
            continue
        text, correct = worked
        total += 1
        # The "correct" flag is what the reward says, and the format is TinyZero's.
        assert correct == verify_countdown(text, row["reward_model"]["ground_truth"]), text
        m = TEXT_RE.fullmatch(text)
        assert m, text
        assert [int(g) for g in m.groups()[:4]] == [*row["nums"], row["target"]]  # the restatement is exact
        lines = m.group(5).strip("\n").split("\n")
        tries, checked = [], False
        for i, line in enumerate(lines):
            check = VERIFY_RE.fullmatch(line)
            if check:  # a check re-computes the try above it, truly, and says whether it reached the target
                checked = True
                x, op1, y, v1, a, op2, b, v2, verdict = check.groups()
                assert tries[-1][:7] == (x, op1, y, v1, a, op2, b), (lines[i - 1], line)
                assert OPS[op2](int(a), int(b)) == int(v2), line
                assert tries[-1][7] == str(row["target"]), text  # only a try that claims the target is checked
                assert verdict == ("ok" if int(v2) == row["target"] else "wait"), line
                if verdict == "wait":
                    assert i + 1 < len(lines), text  # a caught slip is followed by another try
                continue
            retry = line.startswith("wait ")
            if retry:  # a try after a miss the writer saw (not after a caught slip, whose check says "wait")
                assert tries and int(tries[-1][7]) != row["target"] and not VERIFY_RE.fullmatch(lines[i - 1]), text
                line = line[len("wait "):]
                retries += 1
            else:
                assert not tries or VERIFY_RE.fullmatch(lines[i - 1]), text  # only the first try has no "wait"
            note = f" not {row['target']}"  # a try that misses, as written, says so
            noted = line.endswith(note)
            x, op1, y, v1, a, op2, b, v2 = TRY_RE.fullmatch(line.removesuffix(note)).groups()
            assert noted == (int(v2) != row["target"]), line
            retry_hits += retry and int(v2) == row["target"]
            assert OPS[op1](int(x), int(y)) == int(v1) and 0 <= int(v1) <= 99, line  # step one is always true
            # step two is true, or a slip that claims the target
            assert OPS[op2](int(a), int(b)) == int(v2) or int(v2) == row["target"], line
            assert op2 in "+-", line
            z = int(b) if a == v1 else int(a)  # step two combines step one's value with the third number
            assert sorted([int(x), int(y), z]) == sorted(row["nums"]), line
            # step two goes toward the target: no other second step from this first step comes closer
            distance = abs(int(v2) - row["target"])
            assert distance == 0 or distance == closest_miss(int(v1), z, row["target"]), line
            tries.append((x, op1, y, v1, a, op2, b, v2))
        claimed = [int(t[7]) == row["target"] for t in tries]
        # It goes on after a miss or a caught slip, stops at a hit it believes (checked ok or not checked).
        last_true = OPS[tries[-1][5]](int(tries[-1][4]), int(tries[-1][6]))
        hits += last_true == row["target"]
        if lines[-1].endswith("wait"):
            raise AssertionError(text)
        answer = m.group(6)
        if answer.isdigit():
            assert int(answer) == int(tries[-1][7]) and not correct
            continue
        expressions += 1
        assert correct == (last_true == row["target"])
        right_by_checking[checked][0] += correct
        right_by_checking[checked][1] += 1
        retried = "\nwait " in text
        right_by_retrying[retried][0] += correct
        right_by_retrying[retried][1] += 1
        assert all(not c for c in claimed[:-1]) or checked
    checking = right_by_checking[True][1] / expressions
    right_if_checked = right_by_checking[True][0] / right_by_checking[True][1]
    right_if_not = right_by_checking[False][0] / right_by_checking[False][1]
    # Per try: a real hit 0.3, a slip (a miss claimed as a hit) 0.7 x 0.1 = 0.07, so 0.37 of tries claim the
    # target and 0.1 of those are checked: about 0.04 of the texts check. A check catches every slip, so a
    # checked text ends at a real hit far more often: about 4 in 5, against 1 in 3 without a check (most
    # unchecked texts that answer wrong gave up after a miss).
    assert total > 800 and 0.02 < checking < 0.07
    assert right_if_checked > 0.6 and right_if_not < 0.45 and right_if_checked - right_if_not > 0.25
    # Going on after a miss pays, and only as much as a first try does: a try after a miss hits hit_rate = 30%
    # of the time like any other, where a text that stops after a miss is always wrong. So the texts that go on
    # are right about as often as the rest (a third of each; the rest hold the first-try hits), not more.
    # Going on is rare: a miss is followed by another try with probability continue_rate (0.25): 0.7 x 0.25 =
    # 0.18 of texts at most (fewer: a slip or a re-checked claim can come first).
    retried_share = (right_by_retrying[True][1]) / expressions
    right_if_retried = right_by_retrying[True][0] / right_by_retrying[True][1]
    right_if_stopped = right_by_retrying[False][0] / right_by_retrying[False][1]
    assert 0.1 < retried_share < 0.22 and 0.22 < retry_hits / retries < 0.38
    assert 0.25 < right_if_retried < 0.45 and 0.25 < right_if_stopped < 0.45
    assert expressions == total  # every answer is the last try's expression (expression_rate 1, the default)


def test_a_directed_try_takes_the_second_step_closest_to_the_target():
    # [7, 3, 2] -> 19 with a + or - second step. First step 7*3=21 with 2 left: 21+2=23, 21-2=19, 2-21 is negative
    # (left out), so the directed try is the hit 21-2=19. First step 7+3=10 with 2 left: 12 or 8, |12-19| = 7 is
    # closer than |8-19| = 11, so 10+2=12 is written and 10-2=8 never is.
    attempts = countdown_attempts([7, 3, 2], 99, "+-")
    directed = directed_attempts(attempts, 19)
    by_first = {(a.x, a.op1, a.y, a.z): a for a in directed}
    assert len(by_first) == len(directed)  # one try per first step and third number
    assert {(a.x, a.op1, a.y, a.z) for a in attempts} == set(by_first)  # and every first step keeps one
    assert by_first[(7, "*", 3, 2)].value == 19 and by_first[(7, "+", 3, 2)].value == 12
    for a in directed:  # none of the other tries with its first step comes closer
        assert all(abs(a.value - 19) <= abs(b.value - 19) for b in attempts if b[:3] == a[:3] and b.z == a.z)
    # the hits are kept whole: a hit is the closest try of its own first step
    assert {a for a in attempts if a.value == 19} == {a for a in directed if a.value == 19}
    # a tie (21 from 7*3 with 2 left, target 21: 23 and 19 are both 2 away) goes to the smaller value
    assert directed_attempts(attempts, 21) and {a.value for a in directed_attempts(attempts, 21)
                                               if a[:3] == (7, "*", 3) and a.z == 2} == {19}
    assert directed_attempts(list(reversed(attempts)), 19) == directed  # the order it is given does not matter


def test_a_directed_writer_misses_only_on_first_steps():
    rng = random.Random(3)
    work = dict(bb.WORK, directed=True, slip_rate=0.0, check_rate=0.0, continue_rate=1.0, miss_word="")
    written = 0
    for row in make_countdown_rows(300, seed=7, **bb.TASK):
        worked = worked_completion(row["nums"], row["target"], rng, **work)
        if worked is None:
            continue
        written += 1
        target = row["target"]
        lines = [line.removeprefix("wait ") for line in TEXT_RE.fullmatch(worked[0]).group(5).strip("\n").split("\n")]
        firsts = []
        for line in lines:
            x, op1, y, v1, a, op2, b, v2 = TRY_RE.fullmatch(line).groups()
            z = int(b) if a == v1 else int(a)
            # the written value is the closest to the target of the values step two could reach from step one
            assert abs(int(v2) - target) == closest_miss(int(v1), z, target), line
            firsts.append((x, op1, y, z))
        assert len(set(firsts)) == len(firsts), worked[0]  # no first step is tried twice
    assert written > 200


def test_without_slips_or_checks_every_step_is_true_and_nothing_is_checked():
    work = dict(bb.WORK, slip_rate=0.0, check_rate=0.0, retry_word="")
    rng = random.Random(1)
    for row in make_countdown_rows(300, seed=6, **bb.TASK):
        worked = worked_completion(row["nums"], row["target"], rng, **work)
        if worked is None:
            continue
        lines = TEXT_RE.fullmatch(worked[0]).group(5).strip("\n").split("\n")
        assert 1 <= len(lines) <= work["max_tries"] and "verify" not in worked[0]
        for line in lines:
            x, op1, y, v1, a, op2, b, v2 = TRY_RE.fullmatch(line.removesuffix(f" not {row['target']}")).groups()
            assert OPS[op1](int(x), int(y)) == int(v1) and OPS[op2](int(a), int(b)) == int(v2), line


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


def test_the_prompt_cache_reads_each_prompt_once_and_changes_nothing():
    examples = bb.corpus_examples(64, seed=1, exclude=set())
    tokenizer = bb.build_tokenizer(bb.tokenizer_texts(examples), qwen2_split=True)
    cache: dict = {}
    first, second = examples[:40], examples[20:]  # 20 examples shared: their prompts are cached already
    assert bb.encode(tokenizer, first, cache) + bb.encode(tokenizer, second, cache) == \
        bb.encode(tokenizer, first) + bb.encode(tokenizer, second)
    assert set(cache) == {e.prompt for e in examples}
    # a third pass finds every prompt cached: only the completions go through the tokenizer
    calls = []

    def counting(texts, **kwargs):
        calls.append(len(texts))
        return tokenizer(texts, **kwargs)

    bb.encode(counting, examples, cache)
    assert calls == [len(examples)]


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
