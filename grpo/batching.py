"""Turning scored completions into training micro-batches, and counting what the loss divides by.

A micro-batch lays out `[left-padded prompt | right-padded response]` per sequence (see
`grpo.types.MicroBatch`), padded only to its own longest prompt and response.
"""
from __future__ import annotations

import torch

from typing import Callable

from grpo.algorithms import StepNorm, adaptive_lambda, gae, token_rewards
from grpo.config import AlgoConfig
from grpo.types import Completion, MicroBatch, PromptRecord


def token_budget_bounds(lengths: list[tuple[int, int]], budget: int, max_rows: int,
                        groups: list[int] | None = None) -> list[tuple[int, int]]:
    """[start, stop) ranges of consecutive sequences for micro-batches cut by a token budget.

    `lengths` holds (prompt, completion) lengths in order. A range grows while its size stays within
    `budget` and it has at most `max_rows` rows; a sequence longer than the budget on its own gets a range
    of its own. The size is the padded one, rows x (longest prompt + longest completion), or, with
    `groups` (each sequence's prompt index: the row-packed layout of grpo/train/packing.py), the packed
    one: each distinct prompt once plus every completion. Packed micro-batches carry no padding, so
    consecutive sequences fill every range but the last to the budget in any order; keeping prompt-major
    order (no sort by length) keeps a group's completions together, sharing their prompt.
    """
    size = _range_size(lengths, groups)
    bounds: list[tuple[int, int]] = []
    start = 0
    for i in range(len(lengths)):
        if i > start and (size(start, i + 1) > budget or i - start >= max_rows):
            bounds.append((start, i))
            start = i
    if lengths:
        bounds.append((start, len(lengths)))
    return bounds


def _range_size(lengths: list[tuple[int, int]], groups: list[int] | None):
    """size(start, stop) of a range of sequences: padded, or packed when `groups` is given."""
    def padded(start: int, stop: int) -> int:
        part = lengths[start:stop]
        return len(part) * (max(p for p, _ in part) + max(c for _, c in part))

    def packed(start: int, stop: int) -> int:
        prompts = {groups[i]: lengths[i][0] for i in range(start, stop)}
        return sum(prompts.values()) + sum(c for _, c in lengths[start:stop])

    return padded if groups is None else packed


def split_to_count(bounds: list[tuple[int, int]], count: int, lengths: list[tuple[int, int]],
                   groups: list[int] | None = None) -> list[tuple[int, int]]:
    """Halve the range of largest size (among those of 2+ rows; sized as token_budget_bounds does) until
    there are `count` ranges.

    Under ZeRO-3 every forward and backward is a collective, so every rank must run as many
    micro-batches as the rank that needs the most; this is how the others get there.
    """
    size = _range_size(lengths, groups)
    bounds = list(bounds)
    while len(bounds) < count:
        splittable = [i for i, (a, b) in enumerate(bounds) if b - a > 1]
        if not splittable:
            raise ValueError(f"cannot make {count} micro-batches of {len(lengths)} sequences")
        i = max(splittable, key=lambda j: size(*bounds[j]))
        a, b = bounds[i]
        bounds[i:i + 1] = [(a, (a + b) // 2), ((a + b) // 2, b)]
    return bounds


def build_micro_batches(prompts: list[PromptRecord], groups: list[list[Completion]], micro_batch_size: int,
                        pad_id: int, device: torch.device, mask_truncated: bool = False,
                        bounds: list[tuple[int, int]] | None = None) -> list[MicroBatch]:
    """Micro-batches of `micro_batch_size` sequences in prompt-major order (a group's samples adjacent,
    so the training forward can compute each shared prompt once: grpo/train/packing.py), or the
    [start, stop) ranges of that order in `bounds` (token_budget_bounds).

    With mask_truncated, completions cut at the length limit keep their place but count for nothing.
    """
    rows = [(record.prompt_ids, completion) for record, group in zip(prompts, groups) for completion in group]
    if bounds is None:
        bounds = [(start, min(start + micro_batch_size, len(rows))) for start in range(0, len(rows), micro_batch_size)]
    batches = []
    for start, stop in bounds:
        chunk = rows[start:stop]
        B = len(chunk)
        P = max(len(ids) for ids, _ in chunk)
        T = max(max(len(c.token_ids) for _, c in chunk), 1)
        input_ids_BL = torch.full((B, P + T), pad_id, dtype=torch.long)
        attention_BL = torch.zeros((B, P + T), dtype=torch.long)
        response_mask_BT = torch.zeros((B, T), dtype=torch.float32)
        sampler_logp_BT = torch.zeros((B, T), dtype=torch.float32)
        for i, (ids, completion) in enumerate(chunk):
            n = len(completion.token_ids)
            input_ids_BL[i, P - len(ids):P] = torch.tensor(ids, dtype=torch.long)
            input_ids_BL[i, P:P + n] = torch.tensor(completion.token_ids, dtype=torch.long)
            attention_BL[i, P - len(ids):P + n] = 1
            if not (mask_truncated and completion.finish_reason == "length"):
                response_mask_BT[i, :n] = 1.0
            sampler_logp_BT[i, :n] = torch.tensor(completion.logprobs, dtype=torch.float32)
        position_BL = (attention_BL.cumsum(-1) - 1).clamp(min=0)
        batches.append(MicroBatch(
            input_ids_BL=input_ids_BL.to(device), attention_mask_BL=attention_BL.to(device),
            position_ids_BL=position_BL.to(device), response_mask_BT=response_mask_BT.to(device),
            prompt_width=P, advantages_B=None, sampler_logp_BT=sampler_logp_BT.to(device)))
    return batches


def assign_advantages(micro_batches: list[MicroBatch], adv_PG: torch.Tensor) -> None:
    """Give each sequence its completion's advantage, in the prompt-major order of build_micro_batches."""
    flat = adv_PG.flatten().tolist()
    start = 0
    for mb in micro_batches:
        B = mb.input_ids_BL.shape[0]
        mb.advantages_B = torch.tensor(flat[start:start + B], dtype=torch.float32, device=mb.input_ids_BL.device)
        start += B


def assign_gae_advantages(micro_batches: list[MicroBatch], scores: list[float], algo: AlgoConfig,
                          kl_per_token: Callable[[MicroBatch], torch.Tensor] | None,
                          sum_over_ranks: Callable[[dict[str, float]], dict[str, float]]) -> torch.Tensor:
    """PPO: per-token advantages and returns of every micro-batch from its critic values (mb.old_values_BT).

    `scores` are the completions' rewards in prompt-major order (as `assign_advantages` takes them); each
    goes on its sequence's last counting token, and `kl_per_token(mb)` (algo.kl_in=reward), times
    algo.kl_coef, comes off every token. Advantages use algo.gae_lambda, or VAPO's length-adaptive lambda
    (returns then use lambda 1), and are whitened over the counting tokens of the whole step, on every
    rank. Returns this rank's whitened advantages of counting tokens, flat (for the step's statistics).
    """
    start, raw = 0, []
    for mb in micro_batches:
        B, mask_BT = mb.input_ids_BL.shape[0], mb.response_mask_BT
        scores_B = torch.tensor(scores[start:start + B], dtype=torch.float32, device=mask_BT.device)
        start += B
        kl_BT = kl_per_token(mb) if kl_per_token is not None else None
        rewards_BT = token_rewards(scores_B, mask_BT, kl_BT, algo.kl_coef)
        if algo.lambda_policy == "adaptive":
            lam_B = adaptive_lambda(mask_BT.sum(-1), algo.lambda_alpha)
            mb.advantages_BT, _ = gae(rewards_BT, mb.old_values_BT, mask_BT, algo.gamma, lam_B)
            _, mb.returns_BT = gae(rewards_BT, mb.old_values_BT, mask_BT, algo.gamma, 1.0)
        else:
            mb.advantages_BT, mb.returns_BT = gae(rewards_BT, mb.old_values_BT, mask_BT, algo.gamma, algo.gae_lambda)
        raw.append(mb.advantages_BT[mask_BT > 0])
    counting = torch.cat(raw) if raw else torch.zeros(0)
    total = sum_over_ranks({"n": float(counting.numel()), "sum": float(counting.sum()),
                            "sq": float((counting.double() ** 2).sum())})
    mean = total["sum"] / max(total["n"], 1.0)
    variance = max(total["sq"] / max(total["n"], 1.0) - mean * mean, 0.0)
    for mb in micro_batches:
        mb.advantages_BT = (mb.advantages_BT - mean) * (variance + 1e-8) ** -0.5 * mb.response_mask_BT
    return (counting - mean) * (variance + 1e-8) ** -0.5


def local_counts(micro_batches: list[MicroBatch]) -> dict[str, float]:
    """This rank's share of a StepNorm: masked tokens and sequences with at least one of them."""
    return {"norm/tokens": sum(float(mb.response_mask_BT.sum()) for mb in micro_batches),
            "norm/sequences": sum(float((mb.response_mask_BT.sum(-1) > 0).sum()) for mb in micro_batches)}


def step_norm(global_counts: dict[str, float], max_len: int) -> StepNorm:
    # max(., 1): when every completion is masked the loss is a sum of zeros, not 0/0
    return StepNorm(tokens=max(global_counts["norm/tokens"], 1.0), sequences=max(global_counts["norm/sequences"], 1.0),
                    max_len=float(max_len))
