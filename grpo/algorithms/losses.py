"""Policy losses, KL estimators and loss aggregation over response tokens.

Tensor names: `_BT` is a micro-batch of B sequences by T response positions; `mask_BT` is 1 on
tokens that count in the loss and 0 on padding (and on masked completions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _clipped_objective(ratio_BT: torch.Tensor, adv_BT: torch.Tensor, mask_BT: torch.Tensor, clip_low: float,
                       clip_high: float, dual_clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * torch.clamp(ratio_BT, 1.0 - clip_low, 1.0 + clip_high)
    loss_BT = torch.maximum(unclipped_BT, clipped_BT)
    with torch.no_grad():
        metrics = {"clipped_tokens": ((clipped_BT > unclipped_BT).float() * mask_BT).sum()}
    if dual_clip > 1.0:
        # Dual-clip (Ye et al. 2020): for A < 0 a huge ratio would make the loss unbounded; cap it at -A*c.
        capped_BT = torch.minimum(loss_BT, -adv_BT * dual_clip)
        with torch.no_grad():
            hit_BT = (adv_BT < 0) & (capped_BT < loss_BT)
            metrics["dual_clipped_tokens"] = (hit_BT.float() * mask_BT).sum()
        loss_BT = torch.where(adv_BT < 0, capped_BT, loss_BT)
    return loss_BT, metrics


def _per_token(adv: torch.Tensor) -> torch.Tensor:
    """Advantages as [B, T]: per-sequence ones ([B]) broadcast over their tokens, per-token ones (GAE) as given."""
    return adv.unsqueeze(-1) if adv.dim() == 1 else adv


def ppo_clip_loss(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_B: torch.Tensor, mask_BT: torch.Tensor,
                  clip_low: float = 0.2, clip_high: float = 0.2,
                  dual_clip: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level PPO-clip: max(-A r, -A clip(r, 1-low, 1+high)), r = exp(logp - old_logp).

    clip_high > clip_low is DAPO's clip-higher; dual_clip > 1 adds the dual clip for negative
    advantages. Returns the per-token loss (not yet aggregated) and, as metrics, counts of masked
    tokens whose ratio was clipped (the caller turns them into fractions over the step). `adv_B` may
    also be per token ([B, T], GAE).
    """
    ratio_BT = torch.exp(logp_BT - old_logp_BT)
    return _clipped_objective(ratio_BT, _per_token(adv_B), mask_BT, clip_low, clip_high, dual_clip)


def gspo_loss(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_B: torch.Tensor, mask_BT: torch.Tensor,
              clip_low: float = 3e-4, clip_high: float = 4e-4,
              dual_clip: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO (Zheng et al. 2025): one ratio per sequence, exp(mean over its tokens of logp - old_logp).

    Written in GSPO-token form, sg[s_i] * pi(y_t) / sg[pi(y_t)], whose value is the sequence ratio
    at every token and whose gradient is the sequence-level one. Clip ranges are ~1e-4, not 0.2.
    """
    length_B = mask_BT.sum(-1).clamp(min=1.0)
    seq_log_ratio_B = ((logp_BT - old_logp_BT) * mask_BT).sum(-1) / length_B
    log_ratio_BT = logp_BT - logp_BT.detach() + seq_log_ratio_B.detach().unsqueeze(-1)
    ratio_BT = torch.exp(log_ratio_BT.clamp(max=10.0))  # exp(10) already means "far off-policy"
    return _clipped_objective(ratio_BT, _per_token(adv_B), mask_BT, clip_low, clip_high, dual_clip)


def kl_k1(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor) -> torch.Tensor:
    """k1 = log pi - log ref: unbiased, can be negative per token."""
    return logp_BT - ref_logp_BT


def kl_k2(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor) -> torch.Tensor:
    """k2 = (log pi - log ref)^2 / 2: biased, low variance, non-negative."""
    return 0.5 * (logp_BT - ref_logp_BT) ** 2


def kl_k3(logp_BT: torch.Tensor, ref_logp_BT: torch.Tensor) -> torch.Tensor:
    """k3 = ref/pi - log(ref/pi) - 1 (Schulman): unbiased and non-negative; GRPO's choice."""
    log_ratio_BT = ref_logp_BT - logp_BT
    return torch.exp(log_ratio_BT) - log_ratio_BT - 1.0


@dataclass(frozen=True)
class StepNorm:
    """Counts over the whole optimizer step (every micro-batch on every rank) that aggregation divides by."""

    tokens: float  # masked tokens
    sequences: float  # sequences with at least one masked token
    max_len: float  # the constant of Dr. GRPO's normaliser: the longest allowed response


def token_mean(loss_BT: torch.Tensor, mask_BT: torch.Tensor, norm: StepNorm) -> torch.Tensor:
    """This micro-batch's share of the mean over every token of the step (DAPO's token-level loss).

    Summing the returned values over micro-batches and ranks gives exactly the step's token mean,
    however the tokens were split.
    """
    return (loss_BT * mask_BT).sum() / norm.tokens


def seq_mean_token_mean(loss_BT: torch.Tensor, mask_BT: torch.Tensor, norm: StepNorm) -> torch.Tensor:
    """Share of the mean over sequences of each sequence's token mean (the original GRPO loss)."""
    per_seq_B = (loss_BT * mask_BT).sum(-1) / mask_BT.sum(-1).clamp(min=1.0)
    return per_seq_B.sum() / norm.sequences


def seq_mean_token_sum_norm(loss_BT: torch.Tensor, mask_BT: torch.Tensor, norm: StepNorm) -> torch.Tensor:
    """Dr. GRPO: each sequence's token sum over a constant (the max response length), averaged over sequences."""
    return (loss_BT * mask_BT).sum() / norm.max_len / norm.sequences


POLICY_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {
    "ppo_clip": ppo_clip_loss, "gspo": gspo_loss}
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
LOSS_AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, StepNorm], torch.Tensor]] = {
    "token_mean": token_mean, "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm}
