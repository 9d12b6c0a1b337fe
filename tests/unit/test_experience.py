"""The rollout phase (grpo/experience.py) and the step statistics (grpo/stats.py): DAPO dynamic sampling keeps,
drops and fills groups as documented and keeps ranks in lockstep (also across two real gloo processes), and
statistics reduce over ranks and become metrics the way their fields declare.

The rollout engine and the reward here are fakes: a prompt whose first token is 1 gets completions that
score 0, 1, 0, 1, ... (a group with signal), any other prompt gets completions that all score 0.
"""
from __future__ import annotations

import math
import os
import socket

import torch
import torch.multiprocessing as mp

from grpo.config import AlgoConfig
from grpo.data import PromptSampler
from grpo.experience import collect_rollout
from grpo.metrics import PhaseTimer, reduce_across_ranks, reduce_stats
from grpo.stats import PhaseStats, RolloutStats, UpdateStats, flatten, unflatten
from grpo.types import Completion, PromptRecord, RewardResult, SamplingSettings

G = 4  # completions per prompt


class ScoreByText:
    """A reward that reads the score written in the completion (no pool: a fake of the reward function)."""

    def score_batch(self, items):
        return [RewardResult(float(text), {"accuracy": float(text)}) for _, text, _, _ in items], \
            {"reward/timeouts": 0.0, "reward/errors": 0.0}


class ScriptedEngine:
    def __init__(self):
        self.seeds: list[int] = []

    def generate(self, prompt_ids, sampling: SamplingSettings):
        self.seeds.append(sampling.seed)
        return [[Completion([7], [-0.1], str(i % 2 if ids[0] == 1 else 0), "stop") for i in range(sampling.n)]
                for ids in prompt_ids]

    def wake(self):
        pass

    def sleep(self):
        pass


class NothingGathered:
    def release_gathered(self):
        pass


def records(signal: list[bool]) -> list[PromptRecord]:
    return [PromptRecord(f"q{i}", [1 if s else 0, 100 + i], "gt", "fake", i) for i, s in enumerate(signal)]


def collect(signal: list[bool], need: int, dynamic: bool = True, max_tries: int = 3, other_rank_short=lambda: False):
    algo = AlgoConfig(dynamic_sampling=dynamic, dynamic_sampling_max_tries=max_tries)
    sampler = PromptSampler(records(signal), need, rank=0, world_size=1, seed=0, shuffle=False)
    engine = ScriptedEngine()
    rollout = collect_rollout(sampler=sampler, engine=engine, source=NothingGathered(), reward_fn=ScoreByText(),
                              sampling=lambda attempt: SamplingSettings(n=G, seed=attempt), need=need, algo=algo,
                              max_new_tokens=8, any_rank=lambda short: short or other_rank_short(), timer=PhaseTimer())
    return rollout, engine


def test_without_dynamic_sampling_one_round_keeps_every_group():
    rollout, engine = collect([True, False, True, False], need=4, dynamic=False)
    assert [r.index for r in rollout.prompts] == [0, 1, 2, 3] and engine.seeds == [1]
    assert (rollout.tries, rollout.filled_groups, rollout.dropped_groups) == (1, 0, 0)
    assert rollout.rewards_PG.tolist() == [[0, 1, 0, 1], [0, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0]]


def test_dynamic_sampling_drops_flat_groups_and_samples_again_until_full():
    # 4 prompts a round, every other one flat: round 1 keeps 0 and 2, round 2 keeps 4 and 6 -> full after 2 rounds
    rollout, engine = collect([True, False] * 8, need=4)
    assert [r.index for r in rollout.prompts] == [0, 2, 4, 6]
    assert (rollout.tries, rollout.filled_groups, rollout.dropped_groups) == (2, 0, 4)  # 1, 3, 5, 7 dropped
    assert engine.seeds == [1, 2]  # each round samples with its own seed
    assert all(len(set(row)) > 1 for row in rollout.rewards_PG.tolist())  # every group kept carries signal


def test_when_the_rounds_run_out_dropped_groups_fill_the_batch_in_order():
    rollout, _ = collect([False] * 12 + [True] * 4, need=4, max_tries=3)
    # 3 rounds x 4 flat prompts: nothing kept, the first 4 dropped ones fill the batch
    assert [r.index for r in rollout.prompts] == [0, 1, 2, 3]
    assert (rollout.tries, rollout.filled_groups, rollout.dropped_groups) == (3, 4, 12)


def test_a_rank_that_is_full_keeps_sampling_while_another_is_short():
    # this rank is full after round 1, but every round is collective: it goes on while the other rank is short
    short_rounds = iter([True, False])  # the other rank is short after round 1, full after round 2
    rollout, engine = collect([True] * 8, need=4, other_rank_short=lambda: next(short_rounds))
    assert rollout.tries == 2 and engine.seeds == [1, 2]
    assert [r.index for r in rollout.prompts] == [0, 1, 2, 3]  # still its first 4 groups with signal


def test_overlong_shaping_is_part_of_the_reward():
    algo = AlgoConfig(overlong_buffer=4, overlong_penalty=1.0)
    sampler = PromptSampler(records([True]), 1, rank=0, world_size=1, seed=0, shuffle=False)

    class LongEngine(ScriptedEngine):
        def generate(self, prompt_ids, sampling):
            return [[Completion([7] * length, [-0.1] * length, "1", "stop") for length in (4, 6, 7, 8)]]

    rollout = collect_rollout(sampler=sampler, engine=LongEngine(), source=NothingGathered(), reward_fn=ScoreByText(),
                              sampling=lambda attempt: SamplingSettings(n=4), need=1, algo=algo, max_new_tokens=8,
                              any_rank=lambda short: short, timer=PhaseTimer())
    # max 8 tokens, buffer 4: no penalty up to 4 tokens, then -(length - 4) / 4
    assert rollout.overlong_PG.tolist() == [[0.0, -0.5, -0.75, -1.0]]
    assert rollout.rewards_PG.tolist() == [[1.0, 0.5, 0.25, 0.0]]


# ---------------------------------------------------------------- step statistics


def test_metrics_divide_by_the_declared_denominators_and_skip_what_was_not_measured():
    stats = RolloutStats(completions=8, reward_sum=4, reward_sq_sum=4, response_tokens=80, accuracy_sum=2,
                         accuracy_by_source={"a": 2.0, "b": 0.0}, completions_by_source={"a": 4.0, "b": 0.0},
                         tries=None, filled_groups=None, dropped_groups=None, kl_penalty_sum=None)
    metrics = stats.metrics()
    # rewards 1,1,1,1,0,0,0,0: mean 4/8, population std sqrt(4/8 - 0.25) = 0.5
    assert metrics["reward/mean"] == 0.5 and metrics["reward/std"] == 0.5
    assert metrics["response/length_mean"] == 10.0 and metrics["reward/accuracy"] == 0.25
    assert metrics["reward/accuracy/a"] == 0.5 and "reward/accuracy/b" not in metrics  # b had no completions
    assert not any(key.startswith("dynamic/") or key == "reward/kl_penalty" for key in metrics)  # None: not measured
    # no response had a reflection word: no reflective accuracy (not 0), the rest's is the overall 2/8
    assert "response/reflective_accuracy" not in metrics and metrics["response/plain_accuracy"] == 0.25
    update = UpdateStats(updates=2, loss_total=3.0, loss_token_passes=0.0, clipped_tokens=0.0)
    assert update.metrics()["loss/total"] == 1.5 and update.metrics()["policy/clip_frac"] == 0.0  # 0/0 reads 0


def test_reflective_and_plain_accuracy_split_the_right_answers():
    # 8 responses, 3 with reflection words of which 2 are right; 5 without, of which 1 is right (3 right in all)
    metrics = RolloutStats(completions=8, accuracy_sum=3, reflective_responses=3, reflective_correct=2,
                           tries=None, filled_groups=None, dropped_groups=None, kl_penalty_sum=None).metrics()
    assert metrics["response/reflection_rate"] == 3 / 8
    assert metrics["response/reflective_accuracy"] == 2 / 3 and metrics["response/plain_accuracy"] == 1 / 5
    everyone = RolloutStats(completions=4, accuracy_sum=1, reflective_responses=4, reflective_correct=1,
                            tries=None, filled_groups=None, dropped_groups=None, kl_penalty_sum=None).metrics()
    assert everyone["response/reflective_accuracy"] == 0.25 and "response/plain_accuracy" not in everyone


def test_flatten_and_unflatten_round_trip():
    stats = [RolloutStats(completions=3, advantage_min=-2.0, accuracy_by_source={"x/y": 1.0}, tries=None),
             PhaseStats(peaks={"time/step": 2.5})]
    flat = flatten(stats)
    assert flat["min"] == {"0\tadvantage_min": -2.0} and flat["max"]["1\tpeaks\ttime/step"] == 2.5
    assert "0\ttries" not in flat["max"]  # None is not reduced
    back = unflatten(stats, {k: v for values in flat.values() for k, v in values.items()})
    assert back == stats


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_ranks(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    from grpo.device import HOST, init_host_group

    torch.set_num_threads(1)
    init_host_group(rank, 2, port, timeout_s=60)  # a rank left waiting in a collective fails, not hangs
    try:
        device = HOST
        # rank 0's prompts all carry signal, rank 1's none: rank 0 is full at once but must follow rank 1's rounds
        signal = [True] * 12 if rank == 0 else [False] * 12
        any_rank = lambda short: bool(reduce_across_ranks({}, {"short": float(short)}, device)["short"])  # noqa: E731
        sampler = PromptSampler(records(signal), 4, rank=0, world_size=1, seed=0, shuffle=False)
        rollout = collect_rollout(sampler=sampler, engine=ScriptedEngine(), source=NothingGathered(),
                                  reward_fn=ScoreByText(), sampling=lambda attempt: SamplingSettings(n=G, seed=attempt),
                                  need=4, algo=AlgoConfig(dynamic_sampling=True, dynamic_sampling_max_tries=3),
                                  max_new_tokens=8, any_rank=any_rank, timer=PhaseTimer())
        stats = RolloutStats(completions=float(4 * G), reward_sum=float(rollout.rewards_PG.sum()),
                             reward_sq_sum=float((rollout.rewards_PG ** 2).sum()), advantage_min=-rank,
                             advantage_max=rank, tries=float(rollout.tries), filled_groups=float(rollout.filled_groups),
                             accuracy_by_source={"fake": float(rollout.rewards_PG.sum())},
                             completions_by_source={"fake": float(4 * G)})
        (reduced,) = reduce_stats([stats], device)
        out.put((rank, rollout.tries, rollout.filled_groups, [r.index for r in rollout.prompts], reduced.metrics()))
        dist.barrier()  # neither rank tears the group down while the other still talks through it
    finally:
        dist.destroy_process_group()
    # Done: leave without the interpreter's C++ teardown, which about one run in ten aborts here ("terminate
    # called without an active exception", after the group is destroyed) and would fail a finished test.
    os._exit(0)


def test_two_ranks_sample_in_lockstep_and_reduce_their_statistics():
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    mp.start_processes(_two_ranks, args=(_free_port(), out), nprocs=2, start_method="spawn")
    results = sorted(out.get() for _ in range(2))
    (_, tries0, filled0, kept0, metrics), (_, tries1, filled1, kept1, metrics1) = results
    assert tries0 == tries1 == 3  # rank 1 stays short, so both run every round
    assert (filled0, kept0) == (0, [0, 1, 2, 3])  # rank 0: its first 4 groups, all with signal
    assert (filled1, kept1) == (4, [0, 1, 2, 3])  # rank 1: filled with its first 4 dropped groups
    assert metrics == metrics1  # every rank logs the same numbers
    # rank 0: 4 groups x rewards 0,1,0,1 = 8; rank 1: 0 -> 8 over 32 completions
    assert metrics["reward/mean"] == 8 / 32 and metrics["reward/accuracy/fake"] == 8 / 32
    assert metrics["advantage/min"] == -1.0 and metrics["advantage/max"] == 1.0
    assert metrics["dynamic/tries"] == 3 and metrics["dynamic/filled_groups"] == 4
    assert math.isclose(metrics["reward/std"], math.sqrt(8 / 32 - (8 / 32) ** 2))
