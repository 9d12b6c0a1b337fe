"""End-to-end: each algorithm variant, selected by a recipe or an override, trains two steps under
torchrun (2 ranks, ZeRO-3) with finite losses and the metrics that variant promises.
"""
from __future__ import annotations

import json
import math

import pytest

from cli import cli_env, run_cli


@pytest.fixture(scope="module")
def variants(tiny_dir, reward_plugin_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("variants")
    result = run_cli(["tests/e2e/variants.py", str(tiny_dir / "model"), str(tiny_dir / "countdown_train.parquet"),
                      str(out)], cli_env(reward_plugin_dir), torchrun=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads((out / "variants.json").read_text())


EXPECTED = ["grpo", "dr_grpo", "dapo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gspo",
            "dual_clip_k2_entropy", "mu2_minibatch2_tis", "masked_truncation", "token_budget"]


@pytest.mark.parametrize("name", EXPECTED)
def test_variant_trains_with_finite_loss(variants, name):
    steps = variants[name]["steps"]
    assert len(steps) == 2
    for m in steps:
        for key in ("loss/total", "loss/policy", "loss/kl", "policy/entropy", "policy/approx_kl", "train/grad_norm"):
            assert math.isfinite(m[key]), (name, key, m[key])
        assert m["train/grad_norm"] > 0  # the digit-share reward varies, so every variant has a gradient
        assert m["rollout/logprob_diff_max"] < 1e-4  # fp32: sampler and trainer agree after every sync


def test_variants_applied_their_settings(variants):
    assert variants["dapo"]["algo"]["clip_high"] == 0.28 and variants["dapo"]["algo"]["dynamic_sampling"]
    # dynamic sampling reports its rounds; the digit reward leaves few groups without signal
    assert all(1 <= m["dynamic/tries"] <= 3 for m in variants["dapo"]["steps"])
    # overlong shaping: with 64 new tokens and a 16-token buffer, completions cut at 64 get -1
    assert all(m["reward/overlong_penalty"] < 0 for m in variants["dapo"]["steps"])
    assert all(m["loss/kl"] == 0.0 for name in ("dapo", "dr_grpo", "rloo", "gspo") for m in variants[name]["steps"])
    # KL in the reward leaves it out of the loss but the estimate is still logged: 0 at step 1, where the
    # policy is the reference, and non-zero once an update has moved the policy away
    assert variants["reinforce_pp"]["steps"][-1]["loss/kl"] != 0.0
    mu2 = variants["mu2_minibatch2_tis"]["steps"]
    # 2 epochs x 2 mini-batches = 4 optimizer steps per RL step; on-policy importance weights are ~1
    assert all(abs(m["rollout/importance_weight_mean"] - 1.0) < 1e-4 for m in mu2)
    # the masked variant trains only on completions that ended before the 64-token limit
    masked = variants["masked_truncation"]["steps"]
    assert all(m["train/loss_tokens"] < m["response/length_mean"] * 64 for m in masked)


def test_token_budget_makes_the_same_update_in_more_micro_batches(variants):
    # Same weights, seeds and rollouts as "grpo" (the same recipe): cutting the step into micro-batches of
    # at most 700 padded tokens instead of 16 sequences must not change the step's loss or gradient,
    # only how many forwards it takes (16 sequences of ~190 tokens do not fit in 700).
    plain, budget = variants["grpo"]["steps"][0], variants["token_budget"]["steps"][0]
    assert plain["train/micro_batches"] == 2 and budget["train/micro_batches"] > 2
    assert budget["response/length_mean"] == plain["response/length_mean"]
    for key in ("loss/policy", "loss/total", "policy/entropy", "train/grad_norm"):
        assert budget[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-7), key
