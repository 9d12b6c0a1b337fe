"""Micro-batches cut by a token budget (train.micro_batch_tokens): the ranges, the split that gives every
rank the same number, and the config rule that goes with them."""
from __future__ import annotations

import pytest

from grpo.batching import build_micro_batches, split_to_count, token_budget_bounds
from grpo.config import Config, ConfigError
from grpo.types import Completion, PromptRecord


def test_ranges_grow_while_the_padded_size_fits():
    # (prompt, completion) lengths; budget 60 padded tokens, at most 4 rows
    lengths = [(10, 5), (10, 5), (10, 5), (10, 20), (10, 20), (10, 40), (10, 2), (10, 2)]
    # rows 0-2: 3 x (10 + 5) = 45; adding row 3 makes 4 x (10 + 20) = 120 > 60 -> cut
    # rows 3-4: 2 x 30 = 60 fits; adding row 5 makes 3 x 50 = 150 -> cut
    # row 5 alone: 50; adding row 6 makes 2 x 50 = 100 -> cut
    # rows 6-7: 2 x 12 = 24
    assert token_budget_bounds(lengths, 60, 4) == [(0, 3), (3, 5), (5, 6), (6, 8)]
    # a row cap: at most 2 rows even when the tokens would fit
    assert token_budget_bounds([(1, 1)] * 5, 1000, 2) == [(0, 2), (2, 4), (4, 5)]
    # a sequence longer than the budget still gets a micro-batch, of its own
    assert token_budget_bounds([(10, 5), (100, 100), (10, 5)], 60, 4) == [(0, 1), (1, 2), (2, 3)]
    assert token_budget_bounds([], 60, 4) == []



def test_packed_ranges_count_each_prompt_once_and_no_padding():
    # Two groups of 4 (prompts of 100 and 80 tokens) with long-tailed completions; budget 400 packed tokens.
    lengths = [(100, 10), (100, 200), (100, 5), (100, 30), (80, 8), (80, 12), (80, 150), (80, 3)]
    groups = [0, 0, 0, 0, 1, 1, 1, 1]
    # rows 0-3: 100 + 10 + 200 + 5 + 30 = 345 fits; row 4 brings its prompt: 345 + 80 + 8 = 433 > 400 -> cut
    # rows 4-7: 80 + 8 + 12 + 150 + 3 = 253
    assert token_budget_bounds(lengths, 400, 8, groups) == [(0, 4), (4, 8)]
    # padded, the same budget holds far less: rows 0-1 are 2 x (100 + 200) = 600 > 400; rows 2-4 are
    # 3 x (100 + 30) = 390, with row 5 4 x 130 = 520; rows 5-6 are 2 x (80 + 150) = 460, and so on
    assert token_budget_bounds(lengths, 400, 8) == [(0, 1), (1, 2), (2, 5), (5, 6), (6, 7), (7, 8)]
    # splitting to a count sizes ranges the same way: the 345-token range is halved first
    assert split_to_count([(0, 4), (4, 8)], 3, lengths, groups) == [(0, 2), (2, 4), (4, 8)]

def test_split_to_count_halves_the_largest_range():
    lengths = [(10, 5)] * 4 + [(10, 30)] * 2
    bounds = [(0, 4), (4, 6)]  # padded 4 x 15 = 60 and 2 x 40 = 80
    assert split_to_count(bounds, 2, lengths) == bounds
    # the 80-token range is larger, so it is halved first; then (0, 4) at 60 beats the 40s
    assert split_to_count(bounds, 3, lengths) == [(0, 4), (4, 5), (5, 6)]
    assert split_to_count(bounds, 4, lengths) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    with pytest.raises(ValueError, match="cannot make 7 micro-batches of 6 sequences"):
        split_to_count(bounds, 7, lengths)


def test_build_micro_batches_follows_the_ranges():
    prompts = [PromptRecord(prompt_text="abc", prompt_ids=[5, 6, 7], ground_truth=None, data_source="x", index=0)]
    group = [Completion(token_ids=[1] * n, logprobs=[-0.5] * n, text="", finish_reason="stop") for n in (2, 2, 9)]
    batches = build_micro_batches(prompts, [group], micro_batch_size=8, pad_id=0, device="cpu",
                                  bounds=[(0, 2), (2, 3)])
    assert [mb.input_ids_BL.shape for mb in batches] == [(2, 3 + 2), (1, 3 + 9)]  # each padded to its own longest
    assert [float(mb.response_mask_BT.sum()) for mb in batches] == [4.0, 9.0]


def test_token_budget_needs_one_mini_batch():
    cfg = Config()
    cfg.data.train_files = ["train.parquet"]
    cfg.train.micro_batch_tokens, cfg.algo.mini_batches = 4096, 2
    cfg.train.prompts_per_step, cfg.rollout.n, cfg.train.micro_batch_size = 8, 8, 4
    with pytest.raises(ConfigError, match="needs algo.mini_batches = 1"):
        cfg.finalize(2)
    cfg.algo.mini_batches = 1
    assert cfg.finalize(2).train.micro_batch_tokens == 4096
