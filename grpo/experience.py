"""The rollout phase of a step: draw prompts, generate n completions each, score them, and (DAPO) sample again
while groups carry no signal.

`collect_rollout` returns one rank's `Rollout` of whole groups. With dynamic sampling, groups whose
rewards are all equal are set aside and more prompts are drawn, every rank in lockstep (each round
is a collective generate/score on every rank, so all ranks keep going while any rank is short),
until each rank has enough or the rounds run out; then the batch is filled with set-aside groups so
every rank trains on the same number of sequences.
"""
from __future__ import annotations

from typing import Callable

import torch

from grpo.algorithms import groups_with_signal, overlong_penalty
from grpo.config import AlgoConfig
from grpo.data import PromptSampler
from grpo.metrics import PhaseTimer
from grpo.rewards import RewardFunction
from grpo.rollout import RolloutEngine
from grpo.types import Completion, PromptRecord, RewardResult, Rollout, SamplingSettings
from grpo.weight_sync import SyncSource, generation_mode, training_mode


def score_groups(reward_fn: RewardFunction, prompts: list[PromptRecord], groups: list[list[Completion]],
                 algo: AlgoConfig, max_new_tokens: int) -> Rollout:
    """Score every completion (in the reward pool, under its per-sample timeout) and add DAPO's overlong shaping."""
    items = [(record.data_source, c.text, record.ground_truth, record.prompt_text)
             for record, group in zip(prompts, groups) for c in group]
    results, counts = reward_fn.score_batch(items)
    lengths = torch.tensor([len(c.token_ids) for group in groups for c in group])
    penalty = overlong_penalty(lengths, max_new_tokens, algo.overlong_buffer, algo.overlong_penalty)
    rewards = torch.tensor([r.score for r in results], dtype=torch.float32) + penalty
    G = len(groups[0]) if groups else 0
    per_group: list[list[RewardResult]] = [results[p * G:(p + 1) * G] for p in range(len(prompts))]
    return Rollout(prompts=list(prompts), groups=list(groups), results=per_group,
                   rewards_PG=rewards.view(len(prompts), G), overlong_PG=penalty.float().view(len(prompts), G),
                   reward_timeouts=int(counts["reward/timeouts"]), reward_errors=int(counts["reward/errors"]))


def _take(rollouts: list[Rollout], picks: list[tuple[int, int]]) -> tuple[list, list, list, list, list]:
    """The (rollout, group) pairs in `picks`, as the columns of a Rollout."""
    columns: tuple[list, list, list, list, list] = ([], [], [], [], [])
    for r, p in picks:
        one = rollouts[r]
        for column, value in zip(columns, (one.prompts[p], one.groups[p], one.results[p], one.rewards_PG[p],
                                           one.overlong_PG[p])):
            column.append(value)
    return columns


def collect_rollout(*, sampler: PromptSampler, engine: RolloutEngine, source: SyncSource, reward_fn: RewardFunction,
                    sampling: Callable[[int], SamplingSettings], need: int, algo: AlgoConfig, max_new_tokens: int,
                    any_rank: Callable[[bool], bool], timer: PhaseTimer) -> Rollout:
    """This rank's scored rollout of `need` prompts; `sampling(round)` gives each round's settings (its seed),
    `any_rank(flag)` is True when the flag is True on any rank (a collective)."""
    rounds: list[Rollout] = []
    kept: list[tuple[int, int]] = []
    dropped: list[tuple[int, int]] = []
    while True:
        prompts = sampler.next_batch()
        with timer("generate"):
            generation_mode(source, engine)
            groups = engine.generate([p.prompt_ids for p in prompts], sampling(len(rounds) + 1))
            training_mode(engine)
        with timer("score"):
            scored = score_groups(reward_fn, prompts, groups, algo, max_new_tokens)
        rounds.append(scored)
        signal_P = (groups_with_signal(scored.rewards_PG) if algo.dynamic_sampling
                    else torch.ones(len(prompts), dtype=torch.bool))
        for p in range(len(prompts)):
            (kept if signal_P[p] else dropped).append((len(rounds) - 1, p))
        if not algo.dynamic_sampling or len(rounds) >= algo.dynamic_sampling_max_tries:
            break
        if not any_rank(len(kept) < need):
            break
    filled = max(need - len(kept), 0)
    prompts, groups, results, rewards, overlong = _take(rounds, kept[:need] + dropped[:filled])
    return Rollout(prompts=prompts, groups=groups, results=results, rewards_PG=torch.stack(rewards),
                   overlong_PG=torch.stack(overlong), tries=len(rounds), filled_groups=filled,
                   dropped_groups=len(dropped), reward_timeouts=sum(r.reward_timeouts for r in rounds),
                   reward_errors=sum(r.reward_errors for r in rounds))
