"""End-to-end: PPO with a critic (algo.advantage=gae) under torchrun, 2 ranks, ZeRO-3, the transformers engine:
three steps with finite losses and the critic's metrics, then the critic's value loss falling on a fixed batch
trained again and again. (The vLLM engine with PPO, and its exact resume, are in test_checkpoint.py.)
"""
from __future__ import annotations

import json
import math

import pytest

from cli import cli_env, run_cli


@pytest.fixture(scope="module")
def ppo(tiny_dir, reward_plugin_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ppo")
    result = run_cli(["tests/e2e/ppo_checks.py", str(tiny_dir / "model"), str(tiny_dir / "countdown_train.parquet"),
                      str(run_dir), "hf"], cli_env(reward_plugin_dir), torchrun=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads((run_dir / "ppo.json").read_text())


def test_three_ppo_steps_train_policy_and_critic(ppo):
    steps = ppo["steps"]
    assert len(steps) == 3
    for m in steps:
        for key in ("loss/policy", "critic/value_loss", "critic/grad_norm", "critic/returns_mean", "train/grad_norm"):
            assert math.isfinite(m[key]) and (key != "critic/grad_norm" or m[key] > 0), (key, m[key])
        assert m["rollout/logprob_diff_max"] < 1e-4  # the weight sync works with PPO as with GRPO
        assert "reward/kl_penalty" in m  # ppo.yaml folds the KL into the reward, per token
        # advantages are whitened over every counting token of both ranks
        assert abs(m["advantage/mean"]) < 1e-4 and m["advantage/std"] == pytest.approx(1.0, abs=1e-3)
    first = steps[0]
    # the value head starts at zero: every value is 0, so the critic explains none of the returns' variance
    assert first["critic/value_mean"] == 0.0 and abs(first["critic/explained_variance"]) < 1e-6
    assert steps[1]["critic/value_mean"] != 0.0  # and after one critic update it predicts something


def test_critic_loss_falls_on_a_fixed_batch(ppo):
    losses = ppo["fixed_batch_value_loss"]
    assert losses[-1] < 0.5 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= len(losses) - 2, losses  # falling, at most one bump
