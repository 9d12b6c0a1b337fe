"""The pure RL math: advantage estimators, PPO-clip / GSPO losses, KL estimators, loss aggregation,
reward shaping, importance weights and logprobs.

Every expected number is worked by hand in a comment next to it, so a failure says which rule
(group statistics, clipping side, estimator formula, normaliser) the code broke.
"""
from __future__ import annotations

import math

import pytest
import torch

from grpo.algorithms import (ADVANTAGES, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES, StepNorm, groups_with_signal,
                             kl_penalised_rewards, overlong_penalty, token_logprobs_and_entropy,
                             truncated_importance_weights, whiten)
from grpo.algorithms.advantages import (AdvantageEstimator, dr_grpo_advantages, grpo_advantages,
                                        reinforce_pp_advantages, reinforce_pp_baseline_advantages, rloo_advantages)
from grpo.algorithms.losses import (gspo_loss, kl_k1, kl_k2, kl_k3, ppo_clip_loss, seq_mean_token_mean,
                                    seq_mean_token_sum_norm, token_mean)

LOG_HALF = math.log(0.5)  # -0.693147


GROUP_ESTIMATORS = ["grpo", "dr_grpo", "rloo", "reinforce_pp_baseline"]  # compare within a group


def norm(tokens: float, sequences: float = 1.0, max_len: float = 1.0) -> StepNorm:
    return StepNorm(tokens=tokens, sequences=sequences, max_len=max_len)


def test_registries_map_names_to_functions():
    assert ADVANTAGES == {
        "grpo": AdvantageEstimator(grpo_advantages, whiten_over_batch=False),
        "dr_grpo": AdvantageEstimator(dr_grpo_advantages, whiten_over_batch=False),
        "rloo": AdvantageEstimator(rloo_advantages, whiten_over_batch=False),
        "reinforce_pp": AdvantageEstimator(reinforce_pp_advantages, whiten_over_batch=True),
        "reinforce_pp_baseline": AdvantageEstimator(reinforce_pp_baseline_advantages, whiten_over_batch=True),
    }
    assert POLICY_LOSSES == {"ppo_clip": ppo_clip_loss, "gspo": gspo_loss}
    assert KL_ESTIMATORS == {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
    assert LOSS_AGGREGATIONS == {"token_mean": token_mean, "seq_mean_token_mean": seq_mean_token_mean,
                                 "seq_mean_token_sum_norm": seq_mean_token_sum_norm}


# ---------------------------------------------------------------- advantages


def test_grpo_advantages_by_hand():
    rewards_PG = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    adv_PG = grpo_advantages(rewards_PG)
    # Group 0: mean 0.5, deviations +-0.5, squares sum 4 x 0.25 = 1, unbiased var 1/(4-1) = 1/3,
    # std sqrt(1/3) = 0.57735, so advantages +-0.5 / (0.57735 + 1e-6) = +-0.866024.
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert a == pytest.approx(0.866024, abs=1e-6)
    torch.testing.assert_close(adv_PG[0], torch.tensor([a, -a, -a, a]))
    # Group 1: every reward equal, std 0: (2 - 2) / (0 + eps) is exactly 0, not nan.
    assert torch.equal(adv_PG[1], torch.zeros(4))


def test_grpo_advantages_skewed_group_without_eps():
    rewards_PG = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    # mean 0.25; deviations -0.25 (x3) and 0.75; squares 3 x 0.0625 + 0.5625 = 0.75; var 0.75 / 3 = 0.25;
    # std 0.5; advantages -0.25 / 0.5 = -0.5 and 0.75 / 0.5 = 1.5.
    adv_PG = grpo_advantages(rewards_PG, eps=0.0)
    torch.testing.assert_close(adv_PG, torch.tensor([[-0.5, -0.5, -0.5, 1.5]]))


def test_grpo_advantages_groups_are_independent():
    torch.manual_seed(0)
    rewards_PG = torch.rand(3, 5)
    adv_PG = grpo_advantages(rewards_PG)
    # Each row depends on its own group only, and (r - mean) sums to zero within a group.
    torch.testing.assert_close(adv_PG[1], grpo_advantages(rewards_PG[1:2])[0])
    torch.testing.assert_close(adv_PG.sum(dim=1), torch.zeros(3), atol=1e-5, rtol=0)


def test_grpo_needs_two_completions_per_group():
    with pytest.raises(ValueError, match="at least 2 completions per group, got 1"):
        grpo_advantages(torch.tensor([[1.0], [0.0]]))


def test_dr_grpo_advantages_by_hand():
    rewards_PG = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    # Group 0: mean 0.5, so r - mean = +-0.5 with no std division (GRPO would give +-0.866).
    # Group 1: mean 0.25, so -0.25 (x3) and 0.75 (GRPO would divide by std 0.5 and give 1.5).
    torch.testing.assert_close(dr_grpo_advantages(rewards_PG),
                               torch.tensor([[0.5, -0.5, -0.5, 0.5], [-0.25, -0.25, -0.25, 0.75]]))


def test_rloo_advantages_by_hand():
    rewards_PG = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    # Group 0, r=1: others are (0, 0, 1), mean 1/3, so 1 - 1/3 = 2/3; r=0: others (1, 0, 1), 0 - 2/3 = -2/3.
    # Same as G/(G-1) (r - mean) = 4/3 x (+-0.5) = +-0.666667.
    # Group 1, r=0: others (0, 0, 1), 0 - 1/3 = -1/3; r=1: others (0, 0, 0), 1 - 0 = 1 (= 4/3 x 0.75).
    third = 1 / 3
    torch.testing.assert_close(rloo_advantages(rewards_PG),
                               torch.tensor([[2 * third, -2 * third, -2 * third, 2 * third],
                                             [-third, -third, -third, 1.0]]))


def test_reinforce_pp_is_the_reward_then_batch_whitened():
    rewards_PG = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    adv_PG = reinforce_pp_advantages(rewards_PG)
    # Before whitening the advantage is the reward itself (a copy: whitening must not edit the rewards).
    assert torch.equal(adv_PG, rewards_PG) and adv_PG.data_ptr() != rewards_PG.data_ptr()
    # Batch statistics as the trainer reduces them (population std over every completion of the step):
    # n = 8, sum = 1 + 1 + 4 x 2 = 10, mean 1.25; squares 2 x 1 + 4 x 4 = 18, var 18/8 - 1.25^2 = 0.6875,
    # std 0.829156. Whitened: 1 -> -0.25/0.829156 = -0.301511, 0 -> -1.25/0.829156 = -1.507557,
    # 2 -> 0.75/0.829156 = 0.904534. The all-2 group is NOT zeroed: REINFORCE++ has no group baseline.
    mean, std = 1.25, math.sqrt(0.6875)
    white_PG = whiten(adv_PG, mean, std, eps=0.0)
    a, b, c = -0.301511, -1.507557, 0.904534
    torch.testing.assert_close(white_PG, torch.tensor([[a, b, b, a], [c, c, c, c]]))
    # Whitened over the batch: mean 0 and population std 1.
    torch.testing.assert_close(white_PG.mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(white_PG.std(unbiased=False), torch.tensor(1.0))


def test_reinforce_pp_baseline_by_hand():
    rewards_PG = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    adv_PG = reinforce_pp_baseline_advantages(rewards_PG)
    # Group baseline first: group 0 mean 0.5 -> +-0.5; group 1 mean 2 -> 0.
    torch.testing.assert_close(adv_PG, torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]]))
    # Then batch whitening: n = 8, mean 0, squares 4 x 0.25 = 1, var 1/8, std 0.353553;
    # 0.5 / 0.353553 = 1.414214 (= sqrt 2), and 0 stays 0.
    s2 = math.sqrt(2)
    torch.testing.assert_close(whiten(adv_PG, 0.0, math.sqrt(1 / 8), eps=0.0),
                               torch.tensor([[s2, -s2, -s2, s2], [0.0, 0.0, 0.0, 0.0]]))


def test_whiten_with_eps():
    # (3 - 1) / (2 + 0.5) = 0.8 and (1 - 1) / 2.5 = 0: eps is added to the std, not to the variance.
    torch.testing.assert_close(whiten(torch.tensor([3.0, 1.0]), 1.0, 2.0, eps=0.5), torch.tensor([0.8, 0.0]))


@pytest.mark.parametrize("name", GROUP_ESTIMATORS)
def test_group_estimators_give_zero_to_a_group_of_equal_rewards(name):
    rewards_PG = torch.tensor([[0.3, 0.3, 0.3], [1.0, 0.0, 0.0]])
    adv_PG = ADVANTAGES[name].fn(rewards_PG)
    # Group 0: every r equals the group mean (and the leave-one-out mean), so r - baseline = 0 exactly.
    assert torch.equal(adv_PG[0], torch.zeros(3))
    # Group 1 carries signal: the correct completion gets the only positive advantage.
    assert adv_PG[1, 0] > 0 and (adv_PG[1, 1:] < 0).all()


@pytest.mark.parametrize("name", list(ADVANTAGES))
def test_estimators_keep_groups_independent_and_shape(name):
    torch.manual_seed(0)
    rewards_PG = torch.rand(3, 5)
    adv_PG = ADVANTAGES[name].fn(rewards_PG)
    assert adv_PG.shape == (3, 5)
    # Before any batch whitening a group's advantages depend on its own rewards only.
    torch.testing.assert_close(adv_PG[1], ADVANTAGES[name].fn(rewards_PG[1:2])[0])


@pytest.mark.parametrize("name", list(ADVANTAGES))
def test_group_size_is_enforced_by_the_estimator_as_the_config_declares(name):
    from grpo.config import ADVANTAGE_GROUP_SIZES

    estimator = ADVANTAGES[name]
    rewards_PG = torch.tensor([[1.0], [0.0]])  # groups of one completion
    if name in GROUP_ESTIMATORS:
        with pytest.raises(ValueError, match="at least 2 completions per group, got 1"):
            estimator.fn(rewards_PG)
    else:  # REINFORCE++ has no group statistics: a single sample per prompt is fine
        torch.testing.assert_close(estimator.fn(rewards_PG), rewards_PG)
    # load_config checks rollout.n against the config's table, which must say what the estimator needs
    assert ADVANTAGE_GROUP_SIZES[name] == (2 if name in GROUP_ESTIMATORS else 1)
    assert estimator.whiten_over_batch == name.startswith("reinforce_pp")


# ---------------------------------------------------------------- PPO clip


def test_ppo_clip_ratio_one_is_minus_advantage_per_token():
    adv_B = torch.tensor([2.0, -0.5])
    logp_BT = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.1, -4.0]])
    mask_BT = torch.ones(2, 3)
    loss_BT, metrics = ppo_clip_loss(logp_BT, logp_BT.clone(), adv_B, mask_BT)
    # ratio = exp(0) = 1, inside any clip range: loss = -A x 1 on every token of the sequence.
    torch.testing.assert_close(loss_BT, torch.tensor([[-2.0, -2.0, -2.0], [0.5, 0.5, 0.5]]))
    assert metrics["clipped_tokens"].item() == 0


def test_ppo_clip_each_side_by_hand():
    low, high = 0.2, 0.28  # asymmetric, so a test also catches the bounds swapped
    cases = [  # (advantage, ratio, expected loss, clipped?)
        # A>0, r=1.5 > 1.28: unclipped -2 x 1.5 = -3.0, clipped -2 x 1.28 = -2.56; max = -2.56, clipped.
        (2.0, 1.5, -2.56, True),
        # A<0, r=0.5 < 0.8: unclipped 1 x 0.5 = 0.5, clipped 1 x 0.8 = 0.8; max = 0.8, clipped.
        (-1.0, 0.5, 0.8, True),
        # A<0, r=1.5 > 1.28: unclipped 1 x 1.5 = 1.5, clipped 1 x 1.28 = 1.28; the pessimistic max keeps 1.5.
        (-1.0, 1.5, 1.5, False),
        # A>0, r=0.5 < 0.8: unclipped -2 x 0.5 = -1.0, clipped -2 x 0.8 = -1.6; max keeps -1.0.
        (2.0, 0.5, -1.0, False),
        # A<0, r=1.1 inside [0.8, 1.28]: both terms 1 x 1.1 = 1.1.
        (-1.0, 1.1, 1.1, False),
    ]
    adv_B = torch.tensor([c[0] for c in cases])
    old_logp_B = torch.full((len(cases),), -1.0)
    logp_B = old_logp_B + torch.log(torch.tensor([c[1] for c in cases]))  # ratio = exp(logp - old)
    # Column 1 repeats each token as padding (mask 0): same loss values, but never counted as clipped.
    logp_BT, old_logp_BT = logp_B[:, None].repeat(1, 2), old_logp_B[:, None].repeat(1, 2)
    mask_BT = torch.tensor([[1.0, 0.0]] * len(cases))
    loss_BT, metrics = ppo_clip_loss(logp_BT, old_logp_BT, adv_B, mask_BT, clip_low=low, clip_high=high)
    torch.testing.assert_close(loss_BT[:, 0], torch.tensor([c[2] for c in cases]))
    # Two real tokens were clipped (the first two cases); their padding copies do not count.
    assert metrics["clipped_tokens"].item() == sum(c[3] for c in cases) == 2


def test_token_mean_ppo_gradient_at_ratio_one():
    adv_B = torch.tensor([1.5, -0.5])
    mask_BT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # N = 5 real tokens
    old_logp_BT = torch.tensor([[-1.0, -0.3, -2.0], [-0.7, -1.2, -5.0]])
    logp_BT = old_logp_BT.clone().requires_grad_(True)
    loss_BT, _ = ppo_clip_loss(logp_BT, old_logp_BT, adv_B, mask_BT)
    token_mean(loss_BT, mask_BT, norm(float(mask_BT.sum()), 2.0)).backward()
    # loss = sum over real tokens of -A r / N, dr/dlogp = r = 1, so d loss / d logp = -A / N:
    # sequence 0: -1.5 / 5 = -0.3; sequence 1: 0.5 / 5 = 0.1; the padding token gets 0.
    torch.testing.assert_close(logp_BT.grad, torch.tensor([[-0.3, -0.3, -0.3], [0.1, 0.1, 0.0]]))


def test_clipped_tokens_get_no_gradient():
    adv_B = torch.tensor([1.0, 1.0])
    old_logp_BT = torch.zeros(2, 1)
    # Token 0: ratio 1.5 > 1.2 with A>0 is clipped, so the loss is the constant -1.2 there.
    # Token 1: ratio 1.1 is inside, so d/dlogp (-A r / N) = -1 x 1.1 / 2 = -0.55.
    logp_BT = torch.log(torch.tensor([[1.5], [1.1]])).requires_grad_(True)
    mask_BT = torch.ones(2, 1)
    loss_BT, metrics = ppo_clip_loss(logp_BT, old_logp_BT, adv_B, mask_BT)
    token_mean(loss_BT, mask_BT, norm(2.0, 2.0)).backward()
    torch.testing.assert_close(logp_BT.grad, torch.tensor([[0.0], [-0.55]]))
    assert metrics["clipped_tokens"].item() == 1


def test_ppo_dual_clip_caps_negative_advantages_only():
    c = 3.0
    cases = [  # (advantage, ratio, loss without dual clip, loss with dual clip c=3)
        # A<0, r=10: max(1 x 10, 1 x 1.2) = 10 is unbounded in r; dual clip caps it at -A c = 3.
        (-1.0, 10.0, 10.0, 3.0),
        # A<0, r=2: max(2, 1.2) = 2 < 3, under the cap: unchanged.
        (-1.0, 2.0, 2.0, 2.0),
        # A>0, r=10: max(-20, -2 x 1.2) = -2.4; -A c = -6 would be lower, but the cap is for A<0 only.
        (2.0, 10.0, -2.4, -2.4),
        # A<0, r=0.5: max(0.5 x 0.5, 0.5 x 0.8) = 0.4, the ordinary lower clip; min(0.4, 1.5) = 0.4.
        (-0.5, 0.5, 0.4, 0.4),
    ]
    adv_B = torch.tensor([case[0] for case in cases])
    old_logp_B = torch.full((len(cases),), -2.0)
    logp_B = old_logp_B + torch.log(torch.tensor([case[1] for case in cases]))
    # Column 1 is a masked copy of each token: same values, never counted.
    old_logp_BT = old_logp_B[:, None].repeat(1, 2)
    logp_BT = logp_B[:, None].repeat(1, 2).requires_grad_(True)
    mask_BT = torch.tensor([[1.0, 0.0]] * len(cases))

    plain_BT, plain_metrics = ppo_clip_loss(logp_BT, old_logp_BT, adv_B, mask_BT)
    torch.testing.assert_close(plain_BT[:, 0], torch.tensor([case[2] for case in cases]))
    assert "dual_clipped_tokens" not in plain_metrics  # off by default (dual_clip=0)

    loss_BT, metrics = ppo_clip_loss(logp_BT, old_logp_BT, adv_B, mask_BT, dual_clip=c)
    torch.testing.assert_close(loss_BT[:, 0], torch.tensor([case[3] for case in cases]))
    # Only the first real token hit the cap; its masked copy does not count.
    assert metrics["dual_clipped_tokens"].item() == 1
    # Ordinary clipping: cases 3 (upper, A>0) and 4 (lower, A<0); the dual-clipped case is not among them.
    assert metrics["clipped_tokens"].item() == 2
    # The capped loss is the constant -A c: no gradient; case 2 keeps d(-A r)/dlogp = -A r = 1 x 2 = 2.
    loss_BT[:, 0].sum().backward()
    torch.testing.assert_close(logp_BT.grad[:, 0], torch.tensor([0.0, 2.0, 0.0, 0.0]))


def test_dual_clip_of_one_or_less_is_off():
    logp_BT, old_logp_BT = torch.log(torch.tensor([[10.0]])), torch.zeros(1, 1)
    # r = 10, A = -1: with dual clip off the loss stays max(10, 1.2) = 10.
    for c in (0.0, 1.0):
        loss_BT, metrics = ppo_clip_loss(logp_BT, old_logp_BT, torch.tensor([-1.0]), torch.ones(1, 1), dual_clip=c)
        torch.testing.assert_close(loss_BT, torch.tensor([[10.0]]))
        assert "dual_clipped_tokens" not in metrics


# ---------------------------------------------------------------- GSPO


def _gspo_example():
    # logp - old_logp per token: sequence 0 is (0.1, -0.3 | padding 5.0), sequence 1 is (0.2, 0.1, 0.3).
    old_logp_BT = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.5, -2.5]])
    diff_BT = torch.tensor([[0.1, -0.3, 5.0], [0.2, 0.1, 0.3]])
    mask_BT = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    return old_logp_BT, (old_logp_BT + diff_BT), mask_BT


def test_gspo_ratio_is_the_sequence_ratio_at_every_token():
    old_logp_BT, logp_BT, mask_BT = _gspo_example()
    adv_B = torch.tensor([1.0, -2.0])
    loss_BT, metrics = gspo_loss(logp_BT, old_logp_BT, adv_B, mask_BT, clip_low=0.5, clip_high=0.5)
    # Sequence 0: mean over its 2 real tokens (0.1 - 0.3) / 2 = -0.1 (the padding's 5.0 is ignored),
    # s0 = exp(-0.1) = 0.904837. Sequence 1: (0.2 + 0.1 + 0.3) / 3 = 0.2, s1 = exp(0.2) = 1.221403.
    # Both inside [0.5, 1.5]; loss = -A s at every position: -0.904837 and 2 x 1.221403 = 2.442806.
    s0, s1 = 0.904837, 1.221403
    torch.testing.assert_close(loss_BT, torch.tensor([[-s0, -s0, -s0], [2 * s1, 2 * s1, 2 * s1]]))
    assert metrics["clipped_tokens"].item() == 0


def test_gspo_gradient_is_the_sequence_level_gradient():
    old_logp_BT, logp_BT, mask_BT = _gspo_example()
    adv_B = torch.tensor([1.0, -2.0])
    leaf_BT = logp_BT.clone().requires_grad_(True)
    loss_BT, _ = gspo_loss(leaf_BT, old_logp_BT, adv_B, mask_BT, clip_low=0.5, clip_high=0.5)
    seq_mean_token_mean(loss_BT, mask_BT, norm(5.0, 2.0, 3.0)).backward()
    # Sequence-level objective: mean over the 2 sequences of -A exp(mean_t(logp - old)), whose gradient
    # at a real token t is -A s / len / 2: sequence 0: -1 x 0.904837 / 2 / 2 = -0.226209;
    # sequence 1: 2 x 1.221403 / 3 / 2 = 0.407134; padding 0.
    g0, g1 = -0.226209, 0.407134
    torch.testing.assert_close(leaf_BT.grad, torch.tensor([[g0, g0, 0.0], [g1, g1, g1]]))
    # The same through autograd on the sequence-level form written directly.
    ref_BT = logp_BT.clone().requires_grad_(True)
    seq_ratio_B = torch.exp(((ref_BT - old_logp_BT) * mask_BT).sum(-1) / mask_BT.sum(-1))
    (-adv_B * seq_ratio_B).mean().backward()
    torch.testing.assert_close(leaf_BT.grad, ref_BT.grad)


def test_gspo_clips_whole_sequences_with_small_ranges():
    # Default ranges: [1 - 3e-4, 1 + 4e-4] = [0.9997, 1.0004].
    old_logp_BT = torch.full((3, 2), -1.0)
    diff_BT = torch.tensor([[0.02, 0.0], [-0.0002, 7.0], [0.01, 0.01]])
    mask_BT = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    adv_B = torch.tensor([1.0, 1.0, -1.0])
    logp_BT = (old_logp_BT + diff_BT).requires_grad_(True)
    loss_BT, metrics = gspo_loss(logp_BT, old_logp_BT, adv_B, mask_BT)
    # Seq 0: mean (0.02 + 0) / 2 = 0.01, s = exp(0.01) = 1.010050 > 1.0004 with A>0: clipped to -1.0004 on
    #   both tokens, although token 1 alone has ratio exactly 1 (PPO-clip would leave it unclipped).
    # Seq 1: mean -0.0002 (padding's 7.0 ignored), s = 0.999800, inside: -0.999800.
    # Seq 2: s = exp(0.01) = 1.010050 above the range with A<0: the pessimistic max keeps 1.010050.
    torch.testing.assert_close(loss_BT[:, 0], torch.tensor([-1.0004, -0.999800, 1.010050]))
    torch.testing.assert_close(loss_BT[0], torch.tensor([-1.0004, -1.0004]))
    # Clipped real tokens: the 2 of sequence 0.
    assert metrics["clipped_tokens"].item() == 2
    # The clipped sequence gets no gradient; the others do.
    seq_mean_token_mean(loss_BT, mask_BT, norm(5.0, 3.0)).backward()
    assert torch.equal(logp_BT.grad[0], torch.zeros(2))
    assert (logp_BT.grad[1, 0] != 0) and (logp_BT.grad[2] != 0).all()


@pytest.mark.parametrize("loss_fn", [ppo_clip_loss, gspo_loss])
def test_clip_fraction_is_zero_on_policy(loss_fn):
    torch.manual_seed(0)
    logp_BT = -3 * torch.rand(4, 6)
    mask_BT = (torch.arange(6)[None, :] < torch.tensor([[6], [3], [1], [0]])).float()
    adv_B = torch.tensor([1.5, -0.5, 2.0, -1.0])
    # logp = old_logp: every ratio is exp(0) = 1, inside any clip range (even GSPO's 3e-4/4e-4 one).
    loss_BT, metrics = loss_fn(logp_BT, logp_BT.clone(), adv_B, mask_BT, dual_clip=3.0)
    assert metrics["clipped_tokens"].item() == 0 and metrics["dual_clipped_tokens"].item() == 0
    torch.testing.assert_close(loss_BT, -adv_B[:, None].expand(4, 6))


# ---------------------------------------------------------------- KL estimators


def test_kl_estimators_at_known_log_ratio():
    logp, ref = torch.tensor([0.0]), torch.tensor([LOG_HALF])
    # log pi - log ref = 0 - (-0.693147) = 0.693147.
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([0.693147]))
    # k2 = 0.693147^2 / 2 = 0.480453 / 2 = 0.240227.
    torch.testing.assert_close(kl_k2(logp, ref), torch.tensor([0.240227]))
    # k3 = ref/pi - log(ref/pi) - 1 = 0.5 - log 0.5 - 1 = 0.5 + 0.693147 - 1 = 0.193147.
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([0.193147]))


def test_kl_estimators_other_direction():
    logp, ref = torch.tensor([LOG_HALF]), torch.tensor([0.0])
    # log pi - log ref = -0.693147: k1 is negative per token, k2 is symmetric in the sign.
    torch.testing.assert_close(kl_k1(logp, ref), torch.tensor([-0.693147]))
    torch.testing.assert_close(kl_k2(logp, ref), torch.tensor([0.240227]))
    # k3 = ref/pi - log(ref/pi) - 1 = 2 - log 2 - 1 = 2 - 0.693147 - 1 = 0.306853.
    torch.testing.assert_close(kl_k3(logp, ref), torch.tensor([0.306853]))


@pytest.mark.parametrize("estimator", [kl_k1, kl_k2, kl_k3])
def test_kl_estimators_are_zero_when_policies_agree(estimator):
    logp_BT = torch.tensor([[-0.1, -2.0], [-5.0, -0.7]])
    assert torch.equal(estimator(logp_BT, logp_BT.clone()), torch.zeros(2, 2))


def test_k3_is_non_negative_on_random_inputs():
    torch.manual_seed(0)
    logp_BT, ref_BT = -5 * torch.rand(64, 32), -5 * torch.rand(64, 32)
    # k3 = x - log x - 1 with x = ref/pi > 0, and x - 1 >= log x for every x > 0.
    assert (kl_k3(logp_BT, ref_BT) >= 0).all()


@pytest.mark.parametrize("estimator", [kl_k1, kl_k3])
def test_k1_and_k3_are_unbiased(estimator):
    pi, ref = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.3, 0.5])
    # Exact KL(pi || ref) = 0.5 ln(2.5) + 0.3 ln 1 + 0.2 ln(0.4) = (0.5 - 0.2) x 0.916291 = 0.274887.
    # The expectation over tokens x ~ pi, summed exactly over the 3 outcomes, must equal it:
    # for k3, sum pi (ref/pi) - sum pi log(ref/pi) - 1 = 1 + KL - 1.
    expectation = (pi * estimator(pi.log(), ref.log())).sum()
    torch.testing.assert_close(expectation, torch.tensor(0.274887))


# ---------------------------------------------------------------- loss aggregation


AGGREGATIONS = list(LOSS_AGGREGATIONS)


def test_aggregations_by_hand():
    loss_BT = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask_BT = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    alone = norm(tokens=3.0, sequences=2.0, max_len=4.0)  # this micro-batch is the whole step
    # token_mean: real tokens 1, 2 and 4: (1 + 2 + 4) / 3 = 7/3; as a share of a step with 10 tokens, 7/10.
    torch.testing.assert_close(token_mean(loss_BT, mask_BT, alone), torch.tensor(7 / 3))
    torch.testing.assert_close(token_mean(loss_BT, mask_BT, norm(10.0)), torch.tensor(0.7))
    # seq_mean_token_mean: sequence means (1 + 2) / 2 = 1.5 and 4 / 1 = 4; over 2 sequences (1.5 + 4) / 2 = 2.75;
    # as a share of a step with 5 sequences, 5.5 / 5 = 1.1.
    torch.testing.assert_close(seq_mean_token_mean(loss_BT, mask_BT, alone), torch.tensor(2.75))
    torch.testing.assert_close(seq_mean_token_mean(loss_BT, mask_BT, norm(10.0, 5.0)), torch.tensor(1.1))
    # seq_mean_token_sum_norm (Dr. GRPO): token sums 3 and 4 over the constant max_len 4, averaged over
    # 2 sequences: (3 + 4) / 4 / 2 = 0.875; with max_len 7 and 5 sequences, 7 / 7 / 5 = 0.2.
    torch.testing.assert_close(seq_mean_token_sum_norm(loss_BT, mask_BT, alone), torch.tensor(0.875))
    torch.testing.assert_close(seq_mean_token_sum_norm(loss_BT, mask_BT, norm(10.0, 5.0, 7.0)), torch.tensor(0.2))


def test_aggregations_by_hand_gradients():
    mask_BT = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    alone = norm(tokens=3.0, sequences=2.0, max_len=4.0)
    expected = {
        # every real token weighs 1 / N = 1/3
        "token_mean": [[1 / 3, 1 / 3, 0.0], [1 / 3, 0.0, 0.0]],
        # a token weighs 1 / (its sequence's length x sequences): 1/(2x2) = 0.25 and 1/(1x2) = 0.5
        "seq_mean_token_mean": [[0.25, 0.25, 0.0], [0.5, 0.0, 0.0]],
        # every real token weighs 1 / (max_len x sequences) = 1/(4x2) = 0.125, whatever its sequence's length
        "seq_mean_token_sum_norm": [[0.125, 0.125, 0.0], [0.125, 0.0, 0.0]],
    }
    for name, grad in expected.items():
        leaf_BT = torch.zeros(2, 3, requires_grad=True)
        LOSS_AGGREGATIONS[name](leaf_BT, mask_BT, alone).backward()
        torch.testing.assert_close(leaf_BT.grad, torch.tensor(grad), msg=name)


def test_fully_masked_sequence_adds_nothing():
    loss_BT = torch.tensor([[1.0, 2.0], [9.0, 9.0]])
    mask_BT = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # sequence 1 was masked out (e.g. truncated)
    step = norm(tokens=2.0, sequences=1.0, max_len=2.0)  # it counts in neither tokens nor sequences
    # token mean (1 + 2) / 2 = 1.5; sequence mean 1.5 / 1 (the masked sequence adds 0, not 0/0 = nan);
    # token sum 3 / max_len 2 / 1 sequence = 1.5.
    for name in AGGREGATIONS:
        torch.testing.assert_close(LOSS_AGGREGATIONS[name](loss_BT, mask_BT, step), torch.tensor(1.5), msg=name)


@pytest.mark.parametrize("name", AGGREGATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_aggregation_is_independent_of_how_the_step_is_split(name, seed):
    torch.manual_seed(seed)
    B, T = 12, 7
    loss_BT = torch.randn(B, T, dtype=torch.float64)
    lengths_B = torch.randint(0, T + 1, (B,))  # 0: a fully masked sequence
    lengths_B[0] = T  # at least one real sequence
    mask_BT = (torch.arange(T)[None, :] < lengths_B[:, None]).to(torch.float64)
    real_B = lengths_B > 0
    step = StepNorm(tokens=float(mask_BT.sum()), sequences=float(real_B.sum()), max_len=float(T))
    whole = {  # each mode computed in one go over the whole step
        "token_mean": loss_BT[mask_BT.bool()].mean(),
        "seq_mean_token_mean": ((loss_BT * mask_BT).sum(-1)[real_B] / lengths_B[real_B]).mean(),
        "seq_mean_token_sum_norm": (loss_BT * mask_BT).sum() / T / real_B.sum(),
    }[name]

    # Deal the sequences over 1-4 "ranks", each cut into micro-batches of random size.
    order = torch.randperm(B)
    world = int(torch.randint(1, 5, ()))
    total = torch.zeros((), dtype=torch.float64)
    pieces = 0
    for rank_rows in order.tensor_split(world):
        start = 0
        while start < len(rank_rows):
            size = int(torch.randint(1, 4, ()))
            rows = rank_rows[start:start + size]
            total += LOSS_AGGREGATIONS[name](loss_BT[rows], mask_BT[rows], step)
            start += size
            pieces += 1
    assert pieces >= world
    torch.testing.assert_close(total, whole)


@pytest.mark.parametrize("name", AGGREGATIONS)
def test_aggregation_ignores_padding_values(name):
    torch.manual_seed(0)
    loss_BT = torch.randn(4, 6)
    mask_BT = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]],
                           dtype=torch.float32)
    step = norm(tokens=12.0, sequences=4.0, max_len=6.0)
    aggregate = LOSS_AGGREGATIONS[name]
    garbage_BT = torch.where(mask_BT.bool(), loss_BT, torch.full_like(loss_BT, 1e6))
    # Padding positions hold 1e6 in one copy and the real losses in the other: the results agree.
    torch.testing.assert_close(aggregate(garbage_BT, mask_BT, step), aggregate(loss_BT, mask_BT, step))
    # Padding tokens also receive no gradient.
    leaf_BT = garbage_BT.clone().requires_grad_(True)
    aggregate(leaf_BT, mask_BT, step).backward()
    assert torch.equal(leaf_BT.grad[mask_BT == 0], torch.zeros(int((mask_BT == 0).sum())))
    if name == "token_mean":  # 1 / N on every real token
        torch.testing.assert_close(leaf_BT.grad, mask_BT / 12.0)


# ---------------------------------------------------------------- reward shaping and importance weights


def test_overlong_penalty_by_hand():
    lengths_B = torch.tensor([10, 48, 56, 60, 64, 70])
    # max_len 64, buffer 16: free up to 64 - 16 = 48, then -(L - 48)/16: 56 -> -8/16 = -0.5,
    # 60 -> -12/16 = -0.75, 64 -> -1.0, and past max_len it stays at -1.0 (factor 1).
    torch.testing.assert_close(overlong_penalty(lengths_B, 64, 16),
                               torch.tensor([0.0, 0.0, -0.5, -0.75, -1.0, -1.0]))
    # factor scales the whole ramp: 0.5 x (0, 0, -0.5, -0.75, -1, -1).
    torch.testing.assert_close(overlong_penalty(lengths_B, 64, 16, factor=0.5),
                               torch.tensor([0.0, 0.0, -0.25, -0.375, -0.5, -0.5]))


def test_overlong_penalty_off_without_buffer():
    penalty_B = overlong_penalty(torch.tensor([10, 64, 100]), 64, 0)
    assert penalty_B.dtype == torch.float32 and torch.equal(penalty_B, torch.zeros(3))


def test_groups_with_signal():
    rewards_PG = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.5], [0.3, 0.3, 0.3]])
    # Groups 0 and 2 have different rewards inside; 1 and 3 are all equal (zero advantage, no signal).
    assert groups_with_signal(rewards_PG).tolist() == [True, False, True, False]


def test_kl_penalised_rewards():
    rewards_PG = torch.tensor([[1.0, 0.0]])
    kl_sum_PG = torch.tensor([[2.0, 0.5]])
    # r - beta x KL sum: 1 - 0.1 x 2 = 0.8 and 0 - 0.1 x 0.5 = -0.05.
    torch.testing.assert_close(kl_penalised_rewards(rewards_PG, kl_sum_PG, 0.1), torch.tensor([[0.8, -0.05]]))


def _importance_example():
    # old_logp - sampler_logp: sequence 0 is (0.1, 0.2 | padding 9.0), sequence 1 is (-0.5, 1.0, 0.3).
    sampler_logp_BT = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -3.0, -1.0]])
    diff_BT = torch.tensor([[0.1, 0.2, 9.0], [-0.5, 1.0, 0.3]])
    mask_BT = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    return sampler_logp_BT + diff_BT, sampler_logp_BT, mask_BT


def test_truncated_importance_weights_token_level():
    old_logp_BT, sampler_logp_BT, mask_BT = _importance_example()
    weights_BT, metrics = truncated_importance_weights(old_logp_BT, sampler_logp_BT, mask_BT, cap=2.0, level="token")
    # exp(0.1) = 1.105171, exp(0.2) = 1.221403, padding: log ratio masked to 0 -> 1;
    # exp(-0.5) = 0.606531, exp(1.0) = 2.718282 capped to 2, exp(0.3) = 1.349859.
    torch.testing.assert_close(weights_BT, torch.tensor([[1.105171, 1.221403, 1.0], [0.606531, 2.0, 1.349859]]))
    # Sum over real tokens 1.105171 + 1.221403 + 0.606531 + 2 + 1.349859 = 6.282963; one token capped.
    torch.testing.assert_close(metrics["weight_sum"], torch.tensor(6.282963))
    assert metrics["capped_tokens"].item() == 1


def test_truncated_importance_weights_sequence_level():
    old_logp_BT, sampler_logp_BT, mask_BT = _importance_example()
    weights_BT, metrics = truncated_importance_weights(old_logp_BT, sampler_logp_BT, mask_BT, cap=2.0,
                                                       level="sequence")
    # One weight per sequence, the product of its real tokens' ratios: exp(0.1 + 0.2) = exp(0.3) = 1.349859;
    # exp(-0.5 + 1.0 + 0.3) = exp(0.8) = 2.225541, capped to 2. Every position of a sequence has its weight.
    torch.testing.assert_close(weights_BT, torch.tensor([[1.349859] * 3, [2.0] * 3]))
    # Real tokens: 2 x 1.349859 + 3 x 2 = 8.699718; all 3 real tokens of sequence 1 count as capped.
    torch.testing.assert_close(metrics["weight_sum"], torch.tensor(8.699718))
    assert metrics["capped_tokens"].item() == 3


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_truncated_importance_weights_are_detached(level):
    old_logp_BT, sampler_logp_BT, mask_BT = _importance_example()
    old_logp_BT.requires_grad_(True)  # even if the trainer's logprobs carried a graph, the weight must not
    weights_BT, _ = truncated_importance_weights(old_logp_BT, sampler_logp_BT, mask_BT, cap=2.0, level=level)
    assert not weights_BT.requires_grad and weights_BT.grad_fn is None


def test_truncated_importance_weights_unknown_level():
    old_logp_BT, sampler_logp_BT, mask_BT = _importance_example()
    with pytest.raises(ValueError, match="'token' or 'sequence', got 'geometric'"):
        truncated_importance_weights(old_logp_BT, sampler_logp_BT, mask_BT, cap=2.0, level="geometric")


# ---------------------------------------------------------------- logprobs and entropy


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_logprobs_match_log_softmax(temperature):
    torch.manual_seed(0)
    logits_BTV = 3 * torch.randn(2, 5, 11)
    tokens_BT = torch.randint(0, 11, (2, 5))
    logp_BT, entropy_BT = token_logprobs_and_entropy(logits_BTV, tokens_BT, temperature)
    reference_BTV = torch.log_softmax(logits_BTV / temperature, dim=-1)
    torch.testing.assert_close(logp_BT, reference_BTV.gather(-1, tokens_BT[..., None]).squeeze(-1))
    # Entropy H = -sum p log p of the same tempered distribution.
    torch.testing.assert_close(entropy_BT, -(reference_BTV.exp() * reference_BTV).sum(-1))


def test_entropy_of_uniform_logits_is_log_v():
    V = 7
    logits_BTV = torch.full((2, 3, V), 4.0)  # any constant: softmax is uniform 1/7
    logp_BT, entropy_BT = token_logprobs_and_entropy(logits_BTV, torch.zeros(2, 3, dtype=torch.long), 0.5)
    # log p = log(1/7) = -1.945910 and H = log 7 = 1.945910 on every position, at any temperature.
    torch.testing.assert_close(logp_BT, torch.full((2, 3), -math.log(V)))
    torch.testing.assert_close(entropy_BT, torch.full((2, 3), math.log(V)))


def test_bf16_logits_give_fp32_outputs():
    torch.manual_seed(0)
    logits_BTV = torch.randn(2, 4, 9).to(torch.bfloat16)
    tokens_BT = torch.randint(0, 9, (2, 4))
    logp_BT, entropy_BT = token_logprobs_and_entropy(logits_BTV, tokens_BT)
    assert logp_BT.dtype == torch.float32 and entropy_BT.dtype == torch.float32
    # Computed in fp32 from the bf16 values: same as upcasting first, with no bf16 rounding of the result.
    expected_BTV = torch.log_softmax(logits_BTV.float(), dim=-1)
    torch.testing.assert_close(logp_BT, expected_BTV.gather(-1, tokens_BT[..., None]).squeeze(-1))


def test_logprobs_carry_gradient_and_entropy_is_skippable():
    torch.manual_seed(0)
    logits_BTV = torch.randn(1, 2, 5, requires_grad=True)
    tokens_BT = torch.tensor([[3, 0]])
    logp_BT, entropy_BT = token_logprobs_and_entropy(logits_BTV, tokens_BT, with_entropy=False)
    assert entropy_BT is None
    logp_BT.sum().backward()
    # d log softmax(z)_k / d z_j = 1[j = k] - p_j: each position's gradient sums to 1 - 1 = 0.
    probs_BTV = torch.softmax(logits_BTV.detach(), dim=-1)
    onehot_BTV = torch.nn.functional.one_hot(tokens_BT, 5).float()
    torch.testing.assert_close(logits_BTV.grad, onehot_BTV - probs_BTV)


def test_entropy_carries_gradient_only_when_asked():
    torch.manual_seed(0)
    logits_BTV = torch.randn(1, 2, 5, requires_grad=True)
    tokens_BT = torch.tensor([[3, 0]])
    with torch.enable_grad():
        logp_BT, entropy_BT = token_logprobs_and_entropy(logits_BTV, tokens_BT, entropy_grad=True)
        assert entropy_BT.grad_fn is not None and logp_BT.grad_fn is not None
        entropy_BT.sum().backward()
        # dH/dz_j = -p_j (log p_j + H): an entropy bonus has a real gradient.
        probs_BTV = torch.softmax(logits_BTV.detach(), dim=-1)
        H_BT1 = -(probs_BTV * probs_BTV.log()).sum(-1, keepdim=True)
        torch.testing.assert_close(logits_BTV.grad, -probs_BTV * (probs_BTV.log() + H_BT1))

        logp_BT, entropy_BT = token_logprobs_and_entropy(logits_BTV, tokens_BT, entropy_grad=False)
        # Logged only: no graph through the B x T x V softmax, while logp keeps its gradient.
        assert entropy_BT.grad_fn is None and not entropy_BT.requires_grad
        assert logp_BT.grad_fn is not None
    with torch.no_grad():  # entropy_grad cannot switch autograd on where it is off
        _, entropy_BT = token_logprobs_and_entropy(logits_BTV, tokens_BT, entropy_grad=True)
        assert entropy_BT.grad_fn is None
