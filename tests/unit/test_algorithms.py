"""The pure RL math: GRPO advantages, PPO-clip loss, KL estimators, token-mean aggregation, logprobs.

Every expected number is worked by hand in a comment next to it, so a failure says which rule
(group statistics, clipping side, estimator formula, normaliser) the code broke.
"""
from __future__ import annotations

import math

import pytest
import torch

from grpo.algorithms import ADVANTAGES, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES, token_logprobs_and_entropy
from grpo.algorithms.advantages import grpo_advantages
from grpo.algorithms.losses import kl_k1, kl_k2, kl_k3, ppo_clip_loss, token_mean

LOG_HALF = math.log(0.5)  # -0.693147


def test_registries_map_names_to_functions():
    assert ADVANTAGES == {"grpo": grpo_advantages}
    assert POLICY_LOSSES == {"ppo_clip": ppo_clip_loss}
    assert KL_ESTIMATORS == {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
    assert LOSS_AGGREGATIONS == {"token_mean": token_mean}


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
    token_mean(loss_BT, mask_BT, float(mask_BT.sum())).backward()
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
    token_mean(loss_BT, mask_BT, 2.0).backward()
    torch.testing.assert_close(logp_BT.grad, torch.tensor([[0.0], [-0.55]]))
    assert metrics["clipped_tokens"].item() == 1


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


# ---------------------------------------------------------------- token mean


def test_token_mean_by_hand():
    loss_BT = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask_BT = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # Real tokens 1, 2 and 4: this micro-batch alone is (1 + 2 + 4) / 3 = 7/3; as a share of a step
    # with 10 tokens it is 7 / 10.
    torch.testing.assert_close(token_mean(loss_BT, mask_BT, 3.0), torch.tensor(7 / 3))
    torch.testing.assert_close(token_mean(loss_BT, mask_BT, 10.0), torch.tensor(0.7))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_token_mean_is_independent_of_how_the_step_is_split(seed):
    torch.manual_seed(seed)
    B, T = 12, 7
    loss_BT = torch.randn(B, T, dtype=torch.float64)
    lengths_B = torch.randint(1, T + 1, (B,))
    mask_BT = (torch.arange(T)[None, :] < lengths_B[:, None]).to(torch.float64)
    step_tokens = float(mask_BT.sum())
    whole = loss_BT[mask_BT.bool()].mean()  # one big mean over every real token of the step

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
            total += token_mean(loss_BT[rows], mask_BT[rows], step_tokens)
            start += size
            pieces += 1
    assert pieces >= world
    torch.testing.assert_close(total, whole)


def test_token_mean_ignores_padding_values():
    torch.manual_seed(0)
    loss_BT = torch.randn(4, 6)
    mask_BT = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]],
                           dtype=torch.float32)
    garbage_BT = torch.where(mask_BT.bool(), loss_BT, torch.full_like(loss_BT, 1e6))
    # Padding positions hold 1e6 in one copy and the real losses in the other: the results agree.
    torch.testing.assert_close(token_mean(garbage_BT, mask_BT, 12.0), token_mean(loss_BT, mask_BT, 12.0))
    # Padding tokens also receive no gradient.
    leaf_BT = garbage_BT.clone().requires_grad_(True)
    token_mean(leaf_BT, mask_BT, 12.0).backward()
    torch.testing.assert_close(leaf_BT.grad, mask_BT / 12.0)


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
