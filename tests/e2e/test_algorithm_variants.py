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
            "dual_clip_k2_entropy", "mu2_minibatch2_tis", "masked_truncation", "token_budget", "ppo"]


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


def test_advantage_estimators_differ_where_they_should(variants):
    # Step 1 of every variant samples the same completions (same weights, seeds and reward), so the
    # estimators are compared here on the same rewards: 8 prompts x G = 8 completions over 2 ranks.
    grpo, dr, rloo, rpp = (variants[name]["steps"][0] for name in ("grpo", "dr_grpo", "rloo", "reinforce_pp"))
    assert grpo["reward/mean"] == dr["reward/mean"] == rloo["reward/mean"]
    for m in (grpo, dr, rloo):  # each group's advantages sum to 0, so their mean over the batch is 0
        assert abs(m["advantage/mean"]) < 1e-6
    # GRPO divides by the group's (unbiased) std: a group's squared advantages sum to G - 1 = 7, so over
    # the batch their population std is sqrt(7/8) (every group has some spread under the digit reward).
    assert grpo["advantage/std"] == pytest.approx(math.sqrt(7 / 8), rel=1e-3)
    # Dr. GRPO does not: its advantages spread as the rewards do within their groups, which is at most
    # the rewards' spread over the whole batch (law of total variance), far below GRPO's.
    assert dr["advantage/std"] <= dr["reward/std"] + 1e-9 and dr["advantage/std"] < 0.5 * grpo["advantage/std"]
    # RLOO: r_i minus the mean of the other 7 = 8/7 (r_i - group mean): Dr. GRPO's advantages times 8/7
    for key in ("advantage/max", "advantage/min", "advantage/std"):
        assert rloo[key] == pytest.approx(8 / 7 * dr[key], rel=1e-5), key
    # REINFORCE++ whitens over the whole batch of both ranks: mean 0, std 1 (to eps / std)
    assert rpp["advantage/mean"] == pytest.approx(0.0, abs=1e-5)
    assert rpp["advantage/std"] == pytest.approx(1.0, rel=1e-4)


def test_kl_in_the_reward_changes_rewards_not_the_loss(variants):
    # At step 2 the policy has moved off the reference, so the KL estimate is non-zero in both variants.
    in_reward, in_loss = variants["reinforce_pp"]["steps"][1], variants["grpo"]["steps"][1]
    assert in_reward["loss/kl"] != 0.0 and in_loss["loss/kl"] != 0.0  # logged either way
    # REINFORCE++ (kl_in=reward): each completion's reward lost kl_coef x its summed KL, the loss has no KL term
    assert in_reward["reward/kl_penalty"] != 0.0
    assert in_reward["loss/total"] == pytest.approx(in_reward["loss/policy"], rel=1e-9, abs=1e-12)
    # GRPO (kl_in=loss): rewards untouched, the loss is the policy loss + kl_coef (0.001) x the KL term (to
    # float32 rounding of the two sums, about 1e-8 here against a term of about 2e-5)
    assert "reward/kl_penalty" not in in_loss
    assert in_loss["loss/total"] - in_loss["loss/policy"] == pytest.approx(0.001 * in_loss["loss/kl"], rel=1e-2)
