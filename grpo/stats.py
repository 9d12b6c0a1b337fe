"""Step statistics: what each phase of a step counts, how each count reduces over ranks, and the metric it becomes.

A statistic is a field of a dataclass, declared with how it reduces and what it is logged as:

    reward_sum: float = summed("reward/mean", per="completions")

reads: add it up over ranks, then log `reward_sum / completions` as "reward/mean". A field without a
metric name is a denominator, or an input of the class's `extra_metrics()` (a standard deviation, a
rate over another phase's time). A field set to None was not measured in this run (the config
decides, so it is None on every rank): it is neither reduced nor logged. Dict fields hold one value
per key (a data source, a phase) and reduce key by key; every rank must hold the same keys.

`grpo.metrics.reduce_stats` does the reduction (two collectives for any number of classes) and
`metrics()` turns a reduced instance into the logged dict. Adding a metric is adding one field here
and the line that counts it.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

REDUCTIONS = ("sum", "max", "min")


def summed(metric: str | None = None, per: str | None = None) -> Any:
    """A count added up over ranks; logged as `metric`, divided by the field `per` when given."""
    return field(default=0.0, metadata={"reduce": "sum", "metric": metric, "per": per})


def maxed(metric: str | None = None, per: str | None = None) -> Any:
    """The largest value over ranks (also for values every rank holds alike, such as a global grad norm)."""
    return field(default=0.0, metadata={"reduce": "max", "metric": metric, "per": per})


def minned(metric: str | None = None) -> Any:
    """The smallest value over ranks."""
    return field(default=0.0, metadata={"reduce": "min", "metric": metric, "per": None})


def summed_by_key(metric: str | None = None, per: str | None = None) -> Any:
    """Counts keyed by name, added up key by key; `metric` is a pattern with {key} ('reward/accuracy/{key}')."""
    return field(default_factory=dict, metadata={"reduce": "sum", "metric": metric, "per": per})


def maxed_by_key(metric: str = "{key}") -> Any:
    """Values keyed by name, maxed key by key (phase seconds and memory peaks)."""
    return field(default_factory=dict, metadata={"reduce": "max", "metric": metric, "per": None})


class StepStats:
    """Base of the statistics dataclasses: `metrics()` renders the declared fields, then `extra_metrics()`."""

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for f in dataclasses.fields(self):
            name, per, value = f.metadata.get("metric"), f.metadata.get("per"), getattr(self, f.name)
            if name is None or value is None:
                continue
            if isinstance(value, dict):
                denominators = getattr(self, per) if per else {}
                for key, v in value.items():
                    if per and not denominators.get(key):
                        continue  # a key with nothing counted this step (a data source not drawn) is not measured
                    out[name.format(key=key)] = v / denominators[key] if per else v
            else:
                denominator = getattr(self, per) if per else 1.0
                out[name] = value / denominator if denominator else 0.0
        out.update(self.extra_metrics())
        return out

    def extra_metrics(self) -> dict[str, float]:
        return {}


def _std(square_sum: float, total: float, count: float) -> float:
    """Population standard deviation from a sum of squares and a sum; 0 for no data."""
    if not count:
        return 0.0
    mean = total / count
    return math.sqrt(max(square_sum / count - mean * mean, 0.0))


@dataclass
class RolloutStats(StepStats):
    """What the step's rollout held: rewards, their parts, responses, advantages and how they were collected."""

    completions: float = summed()
    reward_sum: float = summed("reward/mean", per="completions")
    reward_sq_sum: float = summed()
    accuracy_sum: float = summed("reward/accuracy", per="completions")
    format_sum: float = summed("reward/format", per="completions")
    overlong_sum: float = summed("reward/overlong_penalty", per="completions")
    kl_penalty_sum: float | None = summed("reward/kl_penalty", per="completions")  # algo.kl_in=reward only
    reward_timeouts: float = summed("reward/timeouts")
    reward_errors: float = summed("reward/errors")
    response_tokens: float = summed("response/length_mean", per="completions")
    response_length_max: float = maxed("response/length_max")
    clipped_responses: float = summed("response/clipped_frac", per="completions")
    reflective_responses: float = summed("response/reflection_rate", per="completions")
    reflective_correct: float = summed()  # reflective responses whose answer is right
    advantages: float = summed()  # how many advantages: one per completion, or per token with gae
    advantage_sum: float = summed("advantage/mean", per="advantages")
    advantage_sq_sum: float = summed()
    advantage_max: float = maxed("advantage/max")
    advantage_min: float = minned("advantage/min")
    accuracy_by_source: dict[str, float] = summed_by_key("reward/accuracy/{key}", per="completions_by_source")
    completions_by_source: dict[str, float] = summed_by_key()
    # DAPO dynamic sampling only: generation rounds (alike on every rank), groups filled back, groups dropped
    tries: float | None = maxed("dynamic/tries")
    filled_groups: float | None = summed("dynamic/filled_groups")
    dropped_groups: float | None = summed("dynamic/dropped_groups")

    def extra_metrics(self) -> dict[str, float]:
        out = {"reward/std": _std(self.reward_sq_sum, self.reward_sum, self.completions),
               "advantage/std": _std(self.advantage_sq_sum, self.advantage_sum, self.advantages)}
        # whether reflecting pays: answer accuracy of the responses with reflection words and of the rest,
        # each only when the step had such responses (no responses is not an accuracy of 0)
        plain = self.completions - self.reflective_responses
        if self.reflective_responses:
            out["response/reflective_accuracy"] = self.reflective_correct / self.reflective_responses
        if plain:
            out["response/plain_accuracy"] = (self.accuracy_sum - self.reflective_correct) / plain
        return out


@dataclass
class UpdateStats(StepStats):
    """What the policy update did: losses per optimizer step, clipping, the sampler/trainer gap, the gradient."""

    updates: float = maxed()  # optimizer steps this RL step (alike on every rank)
    loss_policy: float = summed("loss/policy", per="updates")  # each update's global mean, added over updates
    loss_kl: float = summed("loss/kl", per="updates")
    loss_total: float = summed("loss/total", per="updates")
    entropy: float = summed("policy/entropy", per="updates")
    approx_kl: float = summed("policy/approx_kl", per="updates")
    loss_tokens: float = summed("train/loss_tokens")  # tokens in the loss (masked out ones excluded), one pass
    loss_token_passes: float = summed()  # loss tokens times the passes over them (algo.ppo_epochs)
    clipped_tokens: float = summed("policy/clip_frac", per="loss_token_passes")
    dual_clipped_tokens: float = summed("policy/dual_clip_frac", per="loss_token_passes")
    importance_weight_sum: float | None = summed("rollout/importance_weight_mean", per="loss_token_passes")
    importance_capped_tokens: float | None = summed("rollout/importance_capped_frac", per="loss_token_passes")
    generated_tokens: float = summed()  # every sampled token, masked or not
    logprob_diff_sum: float = summed("rollout/logprob_diff_mean", per="generated_tokens")
    logprob_diff_max: float = maxed("rollout/logprob_diff_max")
    grad_norm_sum: float = maxed("train/grad_norm", per="applied_updates")  # a global norm: alike on every rank
    applied_updates: float = maxed()  # updates whose gradient norm was finite (alike on every rank)
    skipped_updates: float = maxed("train/skipped_steps")  # updates skipped for a NaN/inf gradient norm
    micro_batches: float = maxed("train/micro_batches")  # per rank, alike on every rank


@dataclass
class CriticStats(StepStats):
    """What the critic update did, and how well the values before it predicted the returns (PPO with gae)."""

    updates: float = maxed()  # the critic's optimizer steps this RL step (alike on every rank)
    value_loss: float = summed("critic/value_loss", per="updates")
    loss_token_passes: float = summed()
    clipped_tokens: float = summed("critic/clip_frac", per="loss_token_passes")
    grad_norm_sum: float = maxed("critic/grad_norm", per="applied_updates")
    applied_updates: float = maxed()
    skipped_updates: float = maxed("critic/skipped_steps")
    tokens: float = summed()  # tokens in the loss, one pass
    value_sum: float = summed("critic/value_mean", per="tokens")  # values before the update
    return_sum: float = summed("critic/returns_mean", per="tokens")
    return_sq_sum: float = summed()
    error_sum: float = summed()  # returns - values
    error_sq_sum: float = summed()

    def extra_metrics(self) -> dict[str, float]:
        # 1 - Var(R - V) / Var(R): 1 is a perfect critic, 0 one no better than the mean return
        returns_var = _std(self.return_sq_sum, self.return_sum, self.tokens) ** 2
        error_var = _std(self.error_sq_sum, self.error_sum, self.tokens) ** 2
        return {"critic/explained_variance": 1.0 - error_var / returns_var if returns_var > 0 else 0.0}


@dataclass
class ForwardFlopStats(StepStats):
    """Forward FLOPs of the step's training forwards: what the layouts computed and what the tokens needed
    (grpo.train.packing.layout_flops); the rest went to padding and masked-out attention pairs."""

    computed: float = summed()
    needed: float = summed()

    def extra_metrics(self) -> dict[str, float]:
        return {"train/padding_flops_share": 1.0 - self.needed / self.computed if self.computed else 0.0}


@dataclass
class PhaseStats(StepStats):
    """Seconds and memory per phase ("time/generate", "memory/train_gb", ...), the slowest rank's."""

    peaks: dict[str, float] = maxed_by_key()


def flatten(stats: list[StepStats]) -> dict[str, dict[str, float]]:
    """reduction -> {address: value} over every measured field of `stats` (addresses name the instance, field, key)."""
    out: dict[str, dict[str, float]] = {op: {} for op in REDUCTIONS}
    for index, one in enumerate(stats):
        for f in dataclasses.fields(one):
            value, op = getattr(one, f.name), f.metadata.get("reduce")
            if value is None or op is None:
                continue
            if isinstance(value, dict):
                out[op].update({f"{index}\t{f.name}\t{key}": float(v) for key, v in value.items()})
            else:
                out[op][f"{index}\t{f.name}"] = float(value)
    return out


def unflatten(stats: list[StepStats], reduced: dict[str, float]) -> list[StepStats]:
    """Copies of `stats` holding the reduced values (the inverse of `flatten`)."""
    updates: list[dict[str, Any]] = [{} for _ in stats]
    for address, value in reduced.items():
        index, name, *key = address.split("\t")
        target = updates[int(index)]
        if key:
            target.setdefault(name, {})[key[0]] = value
        else:
            target[name] = value
    return [dataclasses.replace(one, **changes) for one, changes in zip(stats, updates)]
