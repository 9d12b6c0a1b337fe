"""Faults that must end a run with a clear message instead of a hang or silent damage (torchrun, 2 ranks, ZeRO-3).

- A rank that stalls inside a phase (its reward function sleeps): every rank ends within dist.timeout_s plus
  a stated bound, rank 0 names the stalled rank and its phase, and the last checkpoint stays intact.
- NaN in the loss on one rank (its reward function returns NaN): the update is skipped on every rank
  (train/skipped_steps), the weights stay those of the last applied update, and after
  train.max_skipped_steps skips in a row the run stops with an error naming the step.
- The engine-level guarantee behind it, for every ZeRO stage and precision: tests/e2e/nonfinite_checks.py.

The faults are user reward functions (reward.functions) that misbehave on rank 1 once the first
checkpoint exists, so step 1 is clean and checkpointed before the fault starts.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import torch

from cli import REPO, cli_env, run_cli, tiny_overrides

RECIPE = "recipes/countdown_tiny.yaml"
FAULTY_REWARDS = '''
import os, pathlib, time

RUN = pathlib.Path(os.environ["FAULT_RUN_DIR"])


def _faulty_now():
    return os.environ.get("RANK") == "1" and (RUN / "checkpoints" / "step_00000001").is_dir()


def _digit_share(response):
    return sum(ch.isdigit() for ch in response) / max(len(response), 1)


def nan_on_rank1(data_source, response, ground_truth, prompt):
    return float("nan") if _faulty_now() else _digit_share(response)


def sleep_on_rank1(data_source, response, ground_truth, prompt):
    if _faulty_now():
        marker = RUN / "stall_started"
        if not marker.exists():
            marker.write_text(repr(time.time()))
        time.sleep(3600)
    return _digit_share(response)
'''


def launch(tiny_dir, tmp_path, function, *extra, timeout=600):
    run_dir = tmp_path / "run"
    (tmp_path / "faulty_rewards.py").write_text(FAULTY_REWARDS)
    env = dict(cli_env(tmp_path), FAULT_RUN_DIR=str(run_dir))
    started = time.time()
    result = run_cli(["launch/run.py", RECIPE, *tiny_overrides(tiny_dir, run_dir), f"reward.functions=[faulty_rewards:{function}]",
                      "train.lr=1.0e-3", "checkpoint.every_steps=1", "checkpoint.keep=10", "checkpoint.save_final=false",
                      *extra], env, torchrun=True, timeout=timeout)
    return run_dir, result, time.time() - started


def policy_weights(checkpoint):
    from grpo.train.deepspeed import consolidated_state_dict

    return consolidated_state_dict(checkpoint / "policy", 3)


def test_the_engine_skips_a_nonfinite_update_at_every_zero_stage():
    result = subprocess.run([sys.executable, str(REPO / "tests" / "e2e" / "nonfinite_checks.py")], cwd=REPO,
                            env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert result.stdout.count("ok ") == 6


def test_nan_on_one_rank_skips_the_update_everywhere_then_stops_the_run(tiny_dir, tmp_path):
    run_dir, result, _ = launch(tiny_dir, tmp_path, "nan_on_rank1", "train.max_steps=8", "train.max_skipped_steps=3")
    assert result.returncode != 0
    # steps 2, 3 and 4 each skip their one update (32 sequences per rank / micro-batch 16 = 2 micro-batches,
    # one optimizer step): the third in a row ends the run at step 4
    assert "error: step 4: the policy's last 3 optimizer updates were skipped" in result.stderr, result.stderr[-4000:]
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 2, 3, 4]
    assert [m["train/skipped_steps"] for m in logged] == [0, 1, 1, 1]
    # rank 0's rewards were finite, yet its weights did not move either: step 1's weights were saved again at 2
    # and 3 (the run stopped at step 4 before its checkpoint)
    after_step_1 = policy_weights(run_dir / "checkpoints" / "step_00000001")
    for step in (2, 3):
        again = policy_weights(run_dir / "checkpoints" / f"step_{step:08d}")
        assert all(torch.equal(after_step_1[k], again[k]) for k in after_step_1), f"weights changed at step {step}"


TIMEOUT_S = 15
# From the stall to the end of the job: rank 0 sees every position within a poll (1 s) of its change and
# fires one poll after TIMEOUT_S; rank 0 reaches its waiting place within a second of rank 1's stall
# (it only finishes scoring); torchrun then ends the processes left (a few seconds on this machine).
STOP_BOUND_S = 15


def test_a_stalled_rank_ends_the_run_naming_the_rank_and_the_phase(tiny_dir, tmp_path):
    run_dir, result, _ = launch(tiny_dir, tmp_path, "sleep_on_rank1", "train.max_steps=4",
                                f"dist.timeout_s={TIMEOUT_S}", "reward.timeout_s=600", timeout=300)
    ended = time.time()
    assert result.returncode != 0
    stall_started = float((run_dir / "stall_started").read_text())
    assert ended - stall_started < TIMEOUT_S + STOP_BOUND_S, (ended - stall_started, result.stderr[-3000:])
    assert "stalled: rank 1 did not keep up" in result.stderr, result.stderr[-4000:]
    assert "rank 1 (" in result.stderr and "is stuck in phase 'score' of step 2" in result.stderr
    # the checkpoint of step 1 is complete and loads; nothing half-written was left in its place
    from grpo.checkpoint import complete_checkpoints

    assert [p.name for p in complete_checkpoints(run_dir)] == ["step_00000001"]
    assert len(policy_weights(run_dir / "checkpoints" / "step_00000001")) > 0
