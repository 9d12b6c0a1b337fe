"""PPO's critic side: GAE against an independent plain-loop implementation, token rewards, VAPO's lambda, the
clipped value loss, and the critic bugs peers have had: values read at the wrong position, masked tokens
entering the scan, values drifting off their sequences when micro-batches are cut by tokens.
"""
from __future__ import annotations

import random

import pytest
import torch

from grpo.algorithms import adaptive_lambda, clipped_value_loss, gae, token_rewards
from grpo.batching import assign_gae_advantages, build_micro_batches, token_budget_bounds
from grpo.config import AlgoConfig
from grpo.types import Completion, PromptRecord


def plain_gae(rewards: list[float], values: list[float], mask: list[int], gamma: float, lam: float):
    """The textbook recursion on the counting positions only, written with python floats and a list of indices."""
    counting = [t for t, m in enumerate(mask) if m]
    advantages, returns = [0.0] * len(mask), [0.0] * len(mask)
    next_value, next_advantage = 0.0, 0.0
    for t in reversed(counting):
        delta = rewards[t] + gamma * next_value - values[t]
        next_advantage = delta + gamma * lam * next_advantage
        next_value = values[t]
        advantages[t], returns[t] = next_advantage, next_advantage + values[t]
    return advantages, returns


def random_batch(seed: int, B: int = 6, T: int = 9):
    rng = random.Random(seed)
    rewards = [[rng.uniform(-1, 1) for _ in range(T)] for _ in range(B)]
    values = [[rng.uniform(-1, 1) for _ in range(T)] for _ in range(B)]
    masks = []
    for _ in range(B):
        length = rng.randint(0, T)  # sequences of different lengths, one possibly empty
        mask = [1] * length + [0] * (T - length)
        for t in range(length):  # masked tokens in the middle
            if rng.random() < 0.2:
                mask[t] = 0
        masks.append(mask)
    return rewards, values, masks


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.99, 0.95), (0.9, 0.0), (1.0, 0.5)])
def test_gae_equals_a_plain_loop_over_the_counting_tokens(seed, gamma, lam):
    rewards, values, masks = random_batch(seed)
    adv_BT, ret_BT = gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(masks, dtype=torch.float32),
                         gamma, lam)
    for b in range(len(rewards)):
        expected_adv, expected_ret = plain_gae(rewards[b], values[b], masks[b], gamma, lam)
        assert adv_BT[b].tolist() == pytest.approx(expected_adv, abs=1e-5)
        assert ret_BT[b].tolist() == pytest.approx(expected_ret, abs=1e-5)


def test_gae_takes_one_lambda_per_sequence():
    rewards, values, masks = random_batch(3)
    lams = [0.0, 0.3, 0.5, 0.9, 0.95, 1.0]
    adv_BT, _ = gae(torch.tensor(rewards), torch.tensor(values), torch.tensor(masks, dtype=torch.float32), 0.97,
                    torch.tensor(lams))
    for b, lam in enumerate(lams):
        assert adv_BT[b].tolist() == pytest.approx(plain_gae(rewards[b], values[b], masks[b], 0.97, lam)[0], abs=1e-5)


def test_with_gamma_and_lambda_one_the_advantage_is_the_score_minus_the_value():
    # score 2.0 on the last counting token (index 4; 5 and 6 are padding, 2 is masked in the middle)
    mask = torch.tensor([[1, 1, 0, 1, 1, 0, 0]], dtype=torch.float32)
    rewards = token_rewards(torch.tensor([2.0]), mask)
    assert rewards.tolist() == [[0, 0, 0, 0, 2.0, 0, 0]]
    values = torch.tensor([[0.5, -1.0, 9.0, 0.25, 1.5, 7.0, 7.0]])  # 9 and 7 sit where nothing counts
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    # A_t = R - V_t on counting tokens, 0 elsewhere; the return is R = 2 on every counting token
    assert adv.tolist() == [[1.5, 3.0, 0.0, 1.75, 0.5, 0.0, 0.0]]
    assert ret.tolist() == [[2.0, 2.0, 0.0, 2.0, 2.0, 0.0, 0.0]]


def test_masked_values_never_enter_the_scan():
    mask = torch.tensor([[1, 0, 1, 0]], dtype=torch.float32)
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    base = gae(rewards, torch.tensor([[0.2, 0.0, 0.6, 0.0]]), mask, 0.9, 0.8)
    # any value at a masked position (a huge one too) changes nothing
    other = gae(rewards, torch.tensor([[0.2, 1e6, 0.6, -1e6]]), mask, 0.9, 0.8)
    assert torch.equal(base[0], other[0]) and torch.equal(base[1], other[1])
    # t=2: delta = 1 - 0.6 = 0.4; t=0: its next is t=2: delta = 0 + 0.9 * 0.6 - 0.2 = 0.34, A = 0.34 + 0.72 * 0.4
    assert base[0][0].tolist() == pytest.approx([0.34 + 0.72 * 0.4, 0.0, 0.4, 0.0])


def test_token_rewards_put_the_score_last_and_the_kl_on_every_counting_token():
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 1, 1]], dtype=torch.float32)
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [1.0, 1.0, 1.0, 1.0], [0.5, 9.0, 0.0, 0.2]])
    rewards = token_rewards(torch.tensor([1.0, 5.0, -1.0]), mask, kl, kl_coef=0.1)
    expected = torch.tensor([[-0.01, -0.02, 1.0 - 0.03, 0.0],
                             [0.0, 0.0, 0.0, 0.0],  # nothing counts: no reward anywhere
                             [-0.05, 0.0, 0.0, -1.0 - 0.02]])
    torch.testing.assert_close(rewards, expected)


def test_vapo_adaptive_lambda():
    # 1 - 1 / (0.05 x length): 20 tokens -> 0, 100 -> 0.8, 1000 -> 0.98; shorter than 1/alpha -> 0
    assert adaptive_lambda(torch.tensor([20, 100, 1000, 5]), 0.05).tolist() == pytest.approx([0.0, 0.8, 0.98, 0.0])


def test_clipped_value_loss_takes_the_larger_of_clipped_and_unclipped():
    old = torch.tensor([[0.0, 0.0, 0.0]])
    new = torch.tensor([[1.0, 0.2, -1.0]])
    returns = torch.tensor([[2.0, 1.0, 0.0]])
    loss, metrics = clipped_value_loss(new, old, returns, torch.ones(1, 3), clip=0.5)
    # token 0: unclipped (1-2)^2 = 1, clipped V=0.5: (0.5-2)^2 = 2.25 -> 0.5 * 2.25
    # token 1: inside the clip, both (0.2-1)^2 = 0.64 -> 0.32; token 2: unclipped 1, clipped (-0.5)^2 = 0.25 -> 0.5
    torch.testing.assert_close(loss, torch.tensor([[1.125, 0.32, 0.5]]))
    assert float(metrics["clipped_tokens"]) == 1.0


# ---------------------------------------------------------------- values on micro-batches


def tiny_value_model():
    from transformers import Qwen2Config, Qwen2ForTokenClassification

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, classifier_dropout=0.0,
                         max_position_embeddings=64)
    config._attn_implementation = "sdpa"
    return Qwen2ForTokenClassification(config).eval()


def rollout_rows(seed: int = 0):
    rng = random.Random(seed)
    prompts, groups = [], []
    for p in range(4):
        ids = [rng.randrange(1, 64) for _ in range(rng.randint(3, 7))]
        prompts.append(PromptRecord(f"p{p}", ids, "gt", "x", p))
        group = []
        for _ in range(3):
            n = rng.randint(1, 8)
            group.append(Completion([rng.randrange(1, 64) for _ in range(n)], [-1.0] * n, "t", "stop"))
        groups.append(group)
    return prompts, groups


def test_values_are_read_at_the_position_that_predicts_each_token():
    from grpo.train.packing import FlopModel, forward_layout, layout_values, padded_layout

    model = tiny_value_model()
    prompts, groups = rollout_rows()
    (mb,) = build_micro_batches(prompts, groups, 12, 0, torch.device("cpu"))
    with torch.no_grad():
        padded = layout_values(model, mb, padded_layout(mb))
        packed_layout = forward_layout(mb, FlopModel.from_config(model.config))
        assert packed_layout.packed  # 4 prompts x 3 completions: packing pays, so both layouts are checked
        packed = layout_values(model, mb, packed_layout)
        for b, (prompt, completion) in enumerate((p.prompt_ids, c) for p, g in zip(prompts, groups) for c in g):
            ids = prompt + completion.token_ids
            alone = model(input_ids=torch.tensor([ids])).logits[0, :, 0]
            # token t of the completion sits at len(prompt) + t; the state before it ends at len(prompt) - 1 + t
            expected = alone[len(prompt) - 1:len(prompt) - 1 + len(completion.token_ids)]
            n = len(completion.token_ids)
            torch.testing.assert_close(padded[b, :n], expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(packed[b, :n], expected, atol=1e-5, rtol=1e-5)


def test_gae_advantages_stay_with_their_sequences_when_micro_batches_are_cut_by_tokens():
    from grpo.train.packing import layout_values, padded_layout

    model = tiny_value_model()
    prompts, groups = rollout_rows(1)
    scores = [float(i % 3) - 0.5 for i in range(12)]
    algo = AlgoConfig(advantage="gae", gamma=0.99, gae_lambda=0.9)
    lengths = [(len(p.prompt_ids), len(c.token_ids)) for p, g in zip(prompts, groups) for c in g]
    per_sequence = []
    for bounds in (None, token_budget_bounds(lengths, 40, 12)):  # 12 in one, then cut by 40 padded tokens
        micro_batches = build_micro_batches(prompts, groups, 12, 0, torch.device("cpu"), bounds=bounds)
        with torch.no_grad():
            for mb in micro_batches:
                mb.old_values_BT = layout_values(model, mb, padded_layout(mb))
        assign_gae_advantages(micro_batches, scores, algo, None, lambda sums: sums)
        per_sequence.append([(row[mask > 0].tolist(), ret[mask > 0].tolist())
                             for mb in micro_batches
                             for row, ret, mask in zip(mb.advantages_BT, mb.returns_BT, mb.response_mask_BT)])
    assert len(token_budget_bounds(lengths, 40, 12)) > 1  # the second layout really is cut
    for (adv_a, ret_a), (adv_b, ret_b) in zip(*per_sequence):
        assert adv_a == pytest.approx(adv_b, abs=1e-5) and ret_a == pytest.approx(ret_b, abs=1e-5)


def test_gae_advantages_are_whitened_over_the_counting_tokens_of_every_rank():
    prompts, groups = rollout_rows(2)
    micro_batches = build_micro_batches(prompts, groups, 6, 0, torch.device("cpu"))
    for mb in micro_batches:
        mb.old_values_BT = torch.zeros_like(mb.response_mask_BT)
    flat = assign_gae_advantages(micro_batches, [float(i) for i in range(12)], AlgoConfig(advantage="gae"), None,
                                 lambda sums: sums)
    counting = torch.cat([mb.advantages_BT[mb.response_mask_BT > 0] for mb in micro_batches])
    assert torch.allclose(counting, flat)
    assert abs(float(counting.mean())) < 1e-5 and float(counting.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    assert all(float(mb.advantages_BT[mb.response_mask_BT == 0].abs().sum()) == 0.0 for mb in micro_batches)
