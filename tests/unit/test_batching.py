"""grpo.batching: laying scored completions out as micro-batches, and the counts the loss divides by.

Built from plain PromptRecord/Completion objects (no model, no tokenizer). Each expected tensor is
written out with the layout rule that produces it: `[left-padded prompt | right-padded response]`,
padded only to the micro-batch's own longest prompt (P) and response (T).
"""
from __future__ import annotations

import pytest
import torch

from grpo.algorithms import LOSS_AGGREGATIONS, StepNorm
from grpo.batching import assign_advantages, build_micro_batches, local_counts, step_norm
from grpo.types import Completion, PromptRecord

CPU = torch.device("cpu")
PAD = 0


def record(ids: list[int], index: int) -> PromptRecord:
    return PromptRecord(prompt_text=f"prompt {index}", prompt_ids=ids, ground_truth=None, data_source="test",
                        index=index)


def completion(ids: list[int], finish_reason: str = "stop") -> Completion:
    # logprob of token k is -k/100, so a misplaced logprob shows which token it belonged to
    return Completion(token_ids=ids, logprobs=[-k / 100 for k in ids], text="", finish_reason=finish_reason)


def example():
    """Two prompts (2 and 3 tokens), two completions each; the second of each group hit the length limit."""
    prompts = [record([11, 12], 0), record([21, 22, 23], 1)]
    groups = [[completion([101, 102, 103]), completion([104], "length")],
              [completion([201, 202]), completion([203, 204, 205, 206], "length")]]
    return prompts, groups


def test_layout_of_a_micro_batch():
    prompts, groups = example()
    mb0, mb1 = build_micro_batches(prompts, groups, micro_batch_size=3, pad_id=PAD, device=CPU)
    # Prompt-major rows: (p0, 101..103), (p0, 104), (p1, 201 202) | (p1, 203..206).
    # Micro-batch 0: longest prompt P = 3 (prompt 1), longest response T = 3, so L = 6.
    assert mb0.prompt_width == 3
    assert torch.equal(mb0.input_ids_BL, torch.tensor([
        [PAD, 11, 12, 101, 102, 103],  # prompt left-padded by 1
        [PAD, 11, 12, 104, PAD, PAD],  # response right-padded by 2
        [21, 22, 23, 201, 202, PAD],
    ]))
    assert torch.equal(mb0.attention_mask_BL, torch.tensor([
        [0, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
    ]))
    # Positions count real tokens from 0 (cumsum(attention) - 1); left padding sits at 0 and right padding
    # repeats the last position (both are masked out of attention and loss).
    assert torch.equal(mb0.position_ids_BL, torch.tensor([
        [0, 0, 1, 2, 3, 4],
        [0, 0, 1, 2, 2, 2],
        [0, 1, 2, 3, 4, 4],
    ]))
    assert torch.equal(mb0.response_ids_BT, torch.tensor([[101, 102, 103], [104, PAD, PAD], [201, 202, PAD]]))
    assert torch.equal(mb0.response_mask_BT, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]))
    # The sampler's logprobs sit under their tokens (-id/100), 0 on padding.
    torch.testing.assert_close(mb0.sampler_logp_BT, torch.tensor([[-1.01, -1.02, -1.03], [-1.04, 0.0, 0.0],
                                                                  [-2.01, -2.02, 0.0]]))
    assert mb0.response_mask_BT.dtype == mb0.sampler_logp_BT.dtype == torch.float32
    assert mb0.input_ids_BL.dtype == torch.long
    # Filled later: advantages once rewards are final, ref/old logprobs when the algorithm needs them.
    assert mb0.advantages_B is None and mb0.ref_logp_BT is None and mb0.old_logp_BT is None

    # Micro-batch 1 pads only to its own sequence: P = 3, T = 4, nothing padded.
    assert mb1.prompt_width == 3
    assert torch.equal(mb1.input_ids_BL, torch.tensor([[21, 22, 23, 203, 204, 205, 206]]))
    assert torch.equal(mb1.attention_mask_BL, torch.ones(1, 7, dtype=torch.long))
    assert torch.equal(mb1.position_ids_BL, torch.arange(7)[None, :])
    assert torch.equal(mb1.response_mask_BT, torch.ones(1, 4))


def test_micro_batch_size_splits_rows_in_prompt_major_order():
    prompts, groups = example()
    for size, expected in [(1, [1, 1, 1, 1]), (2, [2, 2]), (3, [3, 1]), (4, [4]), (10, [4])]:
        mbs = build_micro_batches(prompts, groups, micro_batch_size=size, pad_id=PAD, device=CPU)
        assert [mb.input_ids_BL.shape[0] for mb in mbs] == expected
        # Same responses in the same order whatever the split: a group's samples stay adjacent.
        first_tokens = [int(ids[0]) for mb in mbs for ids in mb.response_ids_BT]
        assert first_tokens == [101, 104, 201, 203]


def test_mask_truncated_zeroes_only_length_completions():
    prompts, groups = example()
    plain = build_micro_batches(prompts, groups, micro_batch_size=4, pad_id=PAD, device=CPU)[0]
    masked = build_micro_batches(prompts, groups, micro_batch_size=4, pad_id=PAD, device=CPU,
                                 mask_truncated=True)[0]
    # Rows 1 (104) and 3 (203..206) finished with "length": their masks become all 0; rows 0 and 2 ("stop")
    # keep theirs. T = 4 here (the longest response).
    assert torch.equal(plain.response_mask_BT, torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                                                             [1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
    assert torch.equal(masked.response_mask_BT, torch.tensor([[1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0],
                                                              [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    # They keep their place: tokens, attention, positions and sampler logprobs are unchanged.
    for field in ["input_ids_BL", "attention_mask_BL", "position_ids_BL", "sampler_logp_BT"]:
        assert torch.equal(getattr(plain, field), getattr(masked, field)), field


def test_empty_completions_get_one_masked_column():
    prompts = [record([5, 6], 0)]
    groups = [[completion([]), completion([], "length")]]
    (mb,) = build_micro_batches(prompts, groups, micro_batch_size=2, pad_id=PAD, device=CPU)
    # T = max(longest response 0, 1) = 1, so the response slice exists; it is padding and masked.
    assert torch.equal(mb.input_ids_BL, torch.tensor([[5, 6, PAD], [5, 6, PAD]]))
    assert torch.equal(mb.attention_mask_BL, torch.tensor([[1, 1, 0], [1, 1, 0]]))
    assert torch.equal(mb.response_mask_BT, torch.zeros(2, 1))


def test_assign_advantages_in_prompt_major_order():
    prompts, groups = example()
    mbs = build_micro_batches(prompts, groups, micro_batch_size=3, pad_id=PAD, device=CPU)
    adv_PG = torch.tensor([[0.1, 0.2], [0.3, 0.4]])  # [prompt][sample]
    assign_advantages(mbs, adv_PG)
    # Rows are (p0 s0, p0 s1, p1 s0 | p1 s1): the flattened [P, G] tensor, row-major.
    torch.testing.assert_close(mbs[0].advantages_B, torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(mbs[1].advantages_B, torch.tensor([0.4]))
    assert mbs[0].advantages_B.dtype == torch.float32


def test_local_counts_and_step_norm():
    prompts, groups = example()
    mbs = build_micro_batches(prompts, groups, micro_batch_size=3, pad_id=PAD, device=CPU)
    # Response lengths 3 + 1 + 2 + 4 = 10 masked tokens in 4 sequences.
    assert local_counts(mbs) == {"norm/tokens": 10.0, "norm/sequences": 4.0}
    assert step_norm(local_counts(mbs), max_len=8) == StepNorm(tokens=10.0, sequences=4.0, max_len=8.0)
    # With truncated completions masked, only rows 0 and 2 count: 3 + 2 = 5 tokens, 2 sequences.
    masked = build_micro_batches(prompts, groups, micro_batch_size=3, pad_id=PAD, device=CPU, mask_truncated=True)
    assert local_counts(masked) == {"norm/tokens": 5.0, "norm/sequences": 2.0}
    # Counts over several "ranks" add up: the trainer sums them across ranks before step_norm.
    rank_counts = [local_counts(masked[:1]), local_counts(masked[1:])]
    assert rank_counts == [{"norm/tokens": 5.0, "norm/sequences": 2.0}, {"norm/tokens": 0.0, "norm/sequences": 0.0}]


def test_step_norm_guards_a_fully_masked_step():
    prompts = [record([5, 6], 0)]
    groups = [[completion([7, 8], "length"), completion([9], "length")]]
    mbs = build_micro_batches(prompts, groups, micro_batch_size=2, pad_id=PAD, device=CPU, mask_truncated=True)
    counts = local_counts(mbs)
    assert counts == {"norm/tokens": 0.0, "norm/sequences": 0.0}
    step = step_norm(counts, max_len=16)
    # max(0, 1) = 1 for both counts: the loss is a sum of zeros over 1, i.e. 0, never 0/0 = nan.
    assert step == StepNorm(tokens=1.0, sequences=1.0, max_len=16.0)
    loss_BT = torch.full_like(mbs[0].response_mask_BT, 5.0)
    for name, aggregate in LOSS_AGGREGATIONS.items():
        assert aggregate(loss_BT, mbs[0].response_mask_BT, step).item() == 0.0, name


@pytest.mark.parametrize("name", list(LOSS_AGGREGATIONS))
@pytest.mark.parametrize("mask_truncated", [False, True])
def test_step_loss_is_independent_of_micro_batch_size(name, mask_truncated):
    # The same completions, micro-batched 1..5 at a time: each response token carries a fixed loss value
    # (a function of its token id), so the step's aggregated loss must not depend on the split.
    prompts, groups = example()
    totals = []
    for size in range(1, 6):
        mbs = build_micro_batches(prompts, groups, micro_batch_size=size, pad_id=PAD, device=CPU,
                                  mask_truncated=mask_truncated)
        step = step_norm(local_counts(mbs), max_len=4)
        total = 0.0
        for mb in mbs:
            loss_BT = torch.sin(mb.response_ids_BT.double())  # padding gets sin(0) = 0, masked anyway
            total += float(LOSS_AGGREGATIONS[name](loss_BT, mb.response_mask_BT.double(), step))
        totals.append(total)
    assert totals == pytest.approx([totals[0]] * 5, rel=1e-12, abs=1e-12)
    assert totals[0] != 0.0
