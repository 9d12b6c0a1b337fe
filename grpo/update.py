"""The updates of a step: algo.ppo_epochs passes over the rollout, each in algo.mini_batches optimizer steps,
every step a sum of micro-batch losses whose backward accumulates one gradient. `policy_update` trains the
policy on the policy loss; `critic_update` (PPO with gae) trains the critic on the clipped value loss.

Each micro-batch's loss is its share of the update's loss: the aggregation divides by the update's
global normaliser (tokens or sequences summed over ranks, `StepNorm`), so the split into
micro-batches and ranks does not change the gradient. What they measured comes back as stats.
"""
from __future__ import annotations

from typing import Callable, Iterator

from grpo.algorithms import (KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES, StepNorm, clipped_value_loss,
                             truncated_importance_weights)
from grpo.batching import local_counts, step_norm
from grpo.config import AlgoConfig, CriticConfig
from grpo.stats import CriticStats, UpdateStats
from grpo.train import CriticEngine, PolicyEngine
from grpo.types import MicroBatch

SumOverRanks = Callable[[dict[str, float]], dict[str, float]]


def update_schedule(micro_batches: list[MicroBatch], epochs: int, per_update: int, max_new_tokens: int,
                    sum_over_ranks: SumOverRanks) -> Iterator[tuple[int, MicroBatch, StepNorm, bool]]:
    """(epoch, micro-batch, its update's normaliser, whether it is the update's last) in training order."""
    updates = [micro_batches[i:i + per_update] for i in range(0, len(micro_batches), per_update)]
    norms = [step_norm(sum_over_ranks(local_counts(chunk)), max_new_tokens) for chunk in updates]
    for epoch in range(epochs):
        for chunk, norm in zip(updates, norms):
            for i, mb in enumerate(chunk):
                yield epoch, mb, norm, i == len(chunk) - 1


def _count_step(stats: UpdateStats | CriticStats, grad_norm: float | None) -> None:
    """An optimizer step's outcome: its gradient norm, or a skip (None: the norm was NaN or inf)."""
    if grad_norm is None:
        stats.skipped_updates += 1
    else:
        stats.applied_updates += 1
        stats.grad_norm_sum += grad_norm


def updates_per_step(micro_batches: list[MicroBatch], epochs: int, per_update: int) -> int:
    return epochs * -(-len(micro_batches) // per_update)


def policy_update(engine: PolicyEngine, micro_batches: list[MicroBatch], algo: AlgoConfig, *, temperature: float,
                  per_update: int, max_new_tokens: int, sum_over_ranks: SumOverRanks) -> UpdateStats:
    """Train on the step's micro-batches, `per_update` micro-batches per optimizer step; returns this rank's stats."""
    policy_loss, aggregate = POLICY_LOSSES[algo.policy_loss], LOSS_AGGREGATIONS[algo.loss_agg]
    kl_estimator = KL_ESTIMATORS[algo.kl_estimator]
    stats = UpdateStats(updates=float(updates_per_step(micro_batches, algo.ppo_epochs, per_update)),
                        micro_batches=float(len(micro_batches)),
                        loss_tokens=local_counts(micro_batches)["norm/tokens"])
    if algo.importance_cap <= 0:
        stats.importance_weight_sum = stats.importance_capped_tokens = None  # not measured without the cap
    for epoch, mb, norm, last in update_schedule(micro_batches, algo.ppo_epochs, per_update, max_new_tokens,
                                                 sum_over_ranks):
        logp_BT, entropy_BT = engine.policy_logprobs(mb, temperature)
        mask_BT = mb.response_mask_BT
        # With one on-policy update the policy that sampled is the current one, so the old
        # logprobs are these, detached (a separate forward would compute the same numbers).
        old_logp_BT = mb.old_logp_BT if mb.old_logp_BT is not None else logp_BT.detach()
        pg_BT, pg_metrics = policy_loss(logp_BT, old_logp_BT, mb.advantages, mask_BT, clip_low=algo.clip_low,
                                        clip_high=algo.clip_high, dual_clip=algo.dual_clip)
        if algo.importance_cap > 0:
            weights_BT, w_metrics = truncated_importance_weights(
                old_logp_BT, mb.sampler_logp_BT, mask_BT, algo.importance_cap, algo.importance_level)
            pg_BT = pg_BT * weights_BT
            stats.importance_weight_sum += float(w_metrics["weight_sum"])
            stats.importance_capped_tokens += float(w_metrics["capped_tokens"])
        loss_BT = pg_BT
        if mb.ref_logp_BT is not None:
            kl_BT = kl_estimator(logp_BT, mb.ref_logp_BT)
            if algo.kl_in == "loss":
                loss_BT = loss_BT + algo.kl_coef * kl_BT
            stats.loss_kl += float(aggregate(kl_BT.detach(), mask_BT, norm))
        if algo.entropy_coef > 0:
            loss_BT = loss_BT - algo.entropy_coef * entropy_BT
        loss = aggregate(loss_BT, mask_BT, norm)
        engine.backward(loss, last=last)
        if last:
            _count_step(stats, engine.step())
        stats.loss_policy += float(aggregate(pg_BT.detach(), mask_BT, norm))
        stats.loss_total += float(loss.detach())
        stats.entropy += float(aggregate(entropy_BT.detach(), mask_BT, norm))
        stats.approx_kl += float(aggregate(KL_ESTIMATORS["k3"](logp_BT.detach(), old_logp_BT), mask_BT, norm))
        stats.loss_token_passes += float(mask_BT.sum())
        stats.clipped_tokens += float(pg_metrics["clipped_tokens"])
        stats.dual_clipped_tokens += float(pg_metrics.get("dual_clipped_tokens", 0.0))
        if epoch == 0:  # the engine/trainer mismatch, on the weights the engine sampled with
            generated_BT = mb.attention_mask_BL[:, mb.prompt_width:].float()  # masked or not
            diff_BT = (old_logp_BT - mb.sampler_logp_BT).abs() * generated_BT
            stats.generated_tokens += float(generated_BT.sum())
            stats.logprob_diff_sum += float(diff_BT.sum())
            stats.logprob_diff_max = max(stats.logprob_diff_max, float(diff_BT.max()))
    return stats


def critic_update(critic: CriticEngine, micro_batches: list[MicroBatch], algo: AlgoConfig, critic_cfg: CriticConfig, *,
                  per_update: int, max_new_tokens: int, sum_over_ranks: SumOverRanks) -> CriticStats:
    """Train the critic toward the returns (mb.returns_BT) with the clipped value loss around mb.old_values_BT,
    aggregated like the policy loss (algo.loss_agg over each update); returns this rank's stats."""
    aggregate = LOSS_AGGREGATIONS[algo.loss_agg]
    stats = CriticStats(updates=float(updates_per_step(micro_batches, algo.ppo_epochs, per_update)))
    for epoch, mb, norm, last in update_schedule(micro_batches, algo.ppo_epochs, per_update, max_new_tokens,
                                                 sum_over_ranks):
        mask_BT = mb.response_mask_BT
        values_BT = critic.values(mb)
        loss_BT, metrics = clipped_value_loss(values_BT, mb.old_values_BT, mb.returns_BT, mask_BT, critic_cfg.clip)
        loss = aggregate(loss_BT, mask_BT, norm)
        critic.backward(loss, last=last)
        if last:
            _count_step(stats, critic.step())
        stats.value_loss += float(loss.detach())
        stats.loss_token_passes += float(mask_BT.sum())
        stats.clipped_tokens += float(metrics["clipped_tokens"])
        if epoch == 0:  # how well the values before the update predicted the returns
            old_BT, returns_BT = mb.old_values_BT * mask_BT, mb.returns_BT * mask_BT
            stats.tokens += float(mask_BT.sum())
            stats.value_sum += float(old_BT.sum())
            stats.return_sum += float(returns_BT.sum())
            stats.return_sq_sum += float((returns_BT ** 2).sum())
            stats.error_sum += float((returns_BT - old_BT).sum())
            stats.error_sq_sum += float(((returns_BT - old_BT) ** 2).sum())
    return stats
