"""Policy losses, KL estimators and loss aggregation over response tokens.

Tensor names: `_BT` is a micro-batch of B sequences by T response positions; `mask_BT` is 1 on
real response tokens and 0 on padding.
"""
from __future__ import annotations

from typing import Callable

import torch


def ppo_clip_loss(logp_BT: torch.Tensor, old_logp_BT: torch.Tensor, adv_B: torch.Tensor, mask_BT: torch.Tensor,
                  clip_low: float = 0.2, clip_high: float = 0.2) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level PPO-clip: max(-A r, -A clip(r, 1-low, 1+high)), r = exp(logp - old_logp).

    Returns the per-token loss (not yet aggregated) and, as metrics, the number of masked tokens
    whose ratio was clipped (so the caller can turn it into a fraction over the whole step).
    """
    ratio_BT = torch.exp(logp_BT - old_logp_BT)
    adv_BT = adv_B.unsqueeze(-1)
    unclipped_BT = -adv_BT * ratio_BT
    clipped_BT = -adv_BT * torch.clamp(ratio_BT, 1.0 - clip_low, 1.0 + clip_high)
    loss_BT = torch.maximum(unclipped_BT, clipped_BT)
    with torch.no_grad():
        clipped_count = ((clipped_BT > unclipped_BT).float() * mask_BT).sum()
    return loss_BT, {"clipped_tokens": clipped_count}


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


def token_mean(loss_BT: torch.Tensor, mask_BT: torch.Tensor, step_tokens: float) -> torch.Tensor:
    """This micro-batch's share of the mean over every response token of the optimizer step.

    `step_tokens` counts the masked tokens of all micro-batches on all ranks, so summing the
    returned values over micro-batches and ranks gives exactly the step's token mean, however the
    tokens were split.
    """
    return (loss_BT * mask_BT).sum() / step_tokens


POLICY_LOSSES: dict[str, Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {"ppo_clip": ppo_clip_loss}
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}
LOSS_AGGREGATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]] = {"token_mean": token_mean}
