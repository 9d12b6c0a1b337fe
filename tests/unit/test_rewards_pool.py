"""The reward worker pool: per-sample hard timeouts, crashes, user functions in workers, clean exits.

Hanging and crashing scorers are real (a busy loop, os._exit, an exception), so each test shows
that one bad sample costs one sample (scored 0 and counted), never the batch or the process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from grpo.errors import UserError
from grpo.rewards import RewardFunction, verify, verify_batch
from grpo.rewards.pool import WorkerPool

GT = {"numbers": [44, 19, 35], "target": 98}
TIMEOUT = 0.5


@pytest.fixture(scope="module")
def bad_rewards(tmp_path_factory):
    """A module `bad_rewards` whose function hangs, crashes, raises or prints depending on the response."""
    folder = tmp_path_factory.mktemp("bad_rewards")
    (folder / "bad_rewards.py").write_text(textwrap.dedent(
        """
        import os

        def fn(data_source, response, ground_truth, prompt):
            if response == "hang":
                while True:  # a scorer stuck in a loop (think sympy on 9**9**9**9)
                    pass
            if response == "crash":
                os._exit(3)  # the worker process dies mid-sample
            if response == "raise":
                raise ValueError("scorer bug")
            if response == "print":
                print("chatter on stdout")  # must not corrupt the result channel
                return 0.5
            return 1.0 if response == str(ground_truth) else 0.0

        def not_a_float(data_source, response, ground_truth, prompt):
            return "yes"
        """
    ))
    sys.path.insert(0, str(folder))  # before the pool starts: workers inherit sys.path
    yield "bad_rewards"
    sys.path.remove(str(folder))


@pytest.fixture(scope="module")
def bad_fn(bad_rewards):
    reward_fn = RewardFunction(["bad_rewards:fn"], timeout_s=TIMEOUT, num_workers=2)
    yield reward_fn
    reward_fn.close()


def test_batch_matches_inline_scores_in_order():
    reward_fn = RewardFunction([], num_workers=2)
    items = [
        ("countdown", "<think>t</think><answer>44 + 19 + 35</answer>", GT, ""),
        ("countdown", "<answer>44 - 19 + 35</answer>", GT, ""),  # 60: well-formed but wrong
        ("math", r"<think>h</think><answer>\boxed{\frac12}</answer>", "0.5", ""),
        ("gsm8k", "so #### 1,200", "#### 1200", ""),
        ("multiply", "<answer>56088</answer>", 56088, ""),
        ("aime24", r"\boxed{25}", "025", ""),
    ] * 5
    try:
        results, metrics = reward_fn.score_batch(items)
        assert [r.score for r in results[:6]] == [1.0, pytest.approx(0.1), 1.0, 1.0, 1.0, 1.0]
        assert results == [reward_fn(*item) for item in items]
        assert metrics == {"reward/timeouts": 0.0, "reward/errors": 0.0}
        assert reward_fn.score_batch([]) == ([], {"reward/timeouts": 0.0, "reward/errors": 0.0})
    finally:
        reward_fn.close()


def test_hung_samples_time_out_and_the_rest_score(bad_fn):
    items = [("x", r, 42, "") for r in ["42", "hang", "41", "hang", "42", "42"]]
    start = time.monotonic()
    results, metrics = bad_fn.score_batch(items)
    elapsed = time.monotonic() - start
    assert [r.score for r in results] == [1.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert results[1].components == {"accuracy": 0.0, "format": 0.0}
    assert metrics["reward/timeouts"] == 2.0 and metrics["reward/errors"] == 0.0
    # the hung scorers loop forever: returning at all proves the timeout killed them (how fast is
    # benchmarks' business; 60 s leaves room for replacement workers on a loaded machine)
    assert elapsed < 60
    # the pool keeps working with fresh workers
    assert [r.score for r in bad_fn.score_batch([("x", "42", 42, "")])[0]] == [1.0]


def test_crashes_and_exceptions_cost_one_sample(bad_fn):
    items = [("x", r, 7, "") for r in ["7", "crash", "7", "raise", "print", "7"]]
    results, metrics = bad_fn.score_batch(items)
    assert [r.score for r in results] == [1.0, 0.0, 1.0, 0.0, 0.5, 1.0]
    assert metrics == {"reward/timeouts": 0.0, "reward/errors": 2.0}  # the crash and the raise


def test_timeouts_work_off_the_main_thread(bad_fn):
    # no signal.alarm: a pool called from a worker thread still kills a hung sample
    out = {}
    thread = threading.Thread(target=lambda: out.update(r=bad_fn.score_batch([("x", "hang", 1, "")])))
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert out["r"][1]["reward/timeouts"] == 1.0


def test_bad_data_still_raises(bad_rewards):
    # a malformed ground truth or return value is a mistake to fix, not a sample to skip
    with pytest.raises(UserError, match="countdown ground_truth"):
        RewardFunction([], num_workers=1).score_batch([("countdown", "<answer>1</answer>", {"target": 1}, "")])
    with pytest.raises(UserError, match="must return a float"):
        RewardFunction(["bad_rewards:not_a_float"], num_workers=1).score_batch([("x", "y", 1, "")])
    with pytest.raises(UserError, match="no built-in reward"):
        RewardFunction([], num_workers=1).score_batch([("chess", "e4", "e4", "")])


def test_reward_config_knobs_are_checked():
    with pytest.raises(UserError, match="timeout_s"):
        RewardFunction([], timeout_s=0)
    with pytest.raises(UserError, match="num_workers"):
        RewardFunction([], num_workers=0)
    with pytest.raises(UserError, match="format_mode"):
        RewardFunction([], format_mode="tight")


def test_from_config_reads_the_reward_section():
    from grpo.config import Config

    cfg = Config()
    cfg.reward.format_weight, cfg.reward.format_mode, cfg.reward.timeout_s, cfg.reward.num_workers = 0.2, "loose", 3.0, 1
    reward_fn = RewardFunction.from_config(cfg.reward)
    assert (reward_fn.settings.format_weight, reward_fn.settings.format_mode) == (0.2, "loose")
    assert (reward_fn.timeout_s, reward_fn.num_workers) == (3.0, 1)
    # the weight reaches the scores computed in the workers: correct + loose format = 1 + 0.2
    results, _ = reward_fn.score_batch([("math", r"<think>t</think> so \boxed{2}", "2", "")])
    reward_fn.close()
    assert results[0].score == pytest.approx(1.2)


def test_verify_entry_point():
    assert verify("math", r"The answer is $\frac{1}{2}$.", "0.5")
    assert verify("gsm8k", "#### 1,200", "1200")
    assert verify("countdown", "44 + 19 + 35", GT)  # a bare equation (eval)
    assert verify("countdown", "<answer>(44 + 35) + 19</answer>", GT)
    assert not verify("countdown", "44 + 44 + 10", GT)  # 98, but 44 twice
    assert verify("multiply", r"\boxed{56088}", 56088)
    verdicts, metrics = verify_batch([("math", "1", "1"), ("math", "2", "1")])
    assert verdicts == [True, False] and metrics["reward/timeouts"] == 0.0
    with pytest.raises(UserError, match="unknown kind"):
        verify("chess", "e4", "e4")


def test_close_stops_workers_and_the_pool_restarts():
    pool = WorkerPool("grpo.rewards.registry:verify_jobs", num_workers=2)
    outcomes, counts = pool.map("verify", [("math", "1", "1")])
    assert outcomes[0].value is True and counts["ok"] == 1
    procs = [w.proc for w in pool._workers]
    pool.close()
    assert all(p.poll() is not None for p in procs)
    assert pool.map("verify", [("math", "2", "2")])[0][0].value is True  # starts fresh workers
    pool.close()


def test_setup_errors_are_reported():
    pool = WorkerPool("grpo.rewards.function:score_jobs",
                      {"specs": ["no_such_module_xyz:f"], "format_weight": 0.0, "format_mode": "strict"}, 1)
    with pytest.raises(UserError, match="no_such_module_xyz"):
        pool.map("score", [("x", "y", 1, "")])
    assert not pool._workers  # nothing left running


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_workers_die_with_their_parent():
    # a parent killed without any cleanup (SIGKILL-like os._exit) leaves no worker behind
    code = textwrap.dedent(
        """
        import os, sys
        from grpo.rewards.pool import WorkerPool
        pool = WorkerPool("grpo.rewards.registry:verify_jobs", num_workers=2)
        pool.map("verify", [("math", "1", "1")])
        print(" ".join(str(w.proc.pid) for w in pool._workers), flush=True)
        os._exit(0)
        """
    )
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert len(pids) == 2, out.stderr
    deadline = time.monotonic() + 60  # workers poll for their parent; a loaded machine may be slow to run them
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def test_step_deadline_bounds_a_batch_with_hanging_samples(tmp_path):
    # 64 completions "0".."63"; the reward sleeps forever on the 4 that are 5, 21, 37, 53 (i % 16 == 5) and
    # scores the rest 1.0 when the response equals the ground truth (i itself) or 0.0 (ground truth i + 1 on odd i).
    (tmp_path / "sleepy_rewards.py").write_text(textwrap.dedent(
        """
        import time

        def fn(data_source, response, ground_truth, prompt):
            if int(response) % 16 == 5:
                while True:
                    time.sleep(1)  # never returns, holding its worker
            return 1.0 if response == str(ground_truth) else 0.0
        """
    ))
    sys.path.insert(0, str(tmp_path))
    # timeout_s=30 exceeds the deadline, so only the 3 s step deadline can end the hanging samples (a deadline
    # shorter than the per-sample timeout is allowed: it simply comes first).
    reward_fn = RewardFunction(["sleepy_rewards:fn"], timeout_s=30.0, num_workers=2, step_timeout_s=3.0)
    try:
        reward_fn.score_batch([("x", "0", 0, "")])  # start the pool: the deadline clock runs from a ready worker
        items = [("x", str(i), i if i % 2 == 0 else i + 1, "") for i in range(64)]
        start = time.monotonic()
        results, metrics = reward_fn.score_batch(items)
        elapsed = time.monotonic() - start
        hanging = [i for i in range(64) if i % 16 == 5]
        assert hanging == [5, 21, 37, 53]
        # The call ends at the deadline (3 s) plus the work after it: SIGKILL and reap the 4 stuck workers
        # and at most 2 more (milliseconds each), no new worker waited for. 1.5 s covers that on a loaded machine.
        assert 3.0 <= elapsed < 3.0 + 1.5, elapsed
        assert [r.score for i, r in enumerate(results) if i in hanging] == [0.0] * 4
        assert metrics == {"reward/timeouts": 4.0, "reward/errors": 0.0}
        # The other 60 got their real scores: the hung workers handed their queued items to spares.
        expected = [1.0 if i % 2 == 0 else 0.0 for i in range(64) if i not in hanging]
        assert [r.score for i, r in enumerate(results) if i not in hanging] == expected
        assert len(reward_fn._pool._workers) == 0 or all(not w.chunk for w in reward_fn._pool._workers)
        # the next call works with fresh workers
        assert [r.score for r in reward_fn.score_batch([("x", "2", 2, "")])[0]] == [1.0]
    finally:
        reward_fn.close()
        sys.path.remove(str(tmp_path))


def test_step_timeout_is_checked():
    with pytest.raises(UserError, match="step_timeout_s must be >= 0"):
        RewardFunction([], step_timeout_s=-1)
    assert RewardFunction([], step_timeout_s=0).step_timeout_s == 0.0  # no deadline
