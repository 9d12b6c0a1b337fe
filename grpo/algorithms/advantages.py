"""Advantage estimators: a reward per completion in, an advantage per completion out.

Rewards arrive as `rewards_PG`: P prompts (groups) by G completions each. A group must be complete
(all G samples of a prompt) for its statistics to be right; the trainer guarantees that by keeping a
prompt's samples on one rank. Estimators that normalise over the whole batch (REINFORCE++) say so
with `whiten_over_batch`; the trainer then reduces the statistics over all ranks and calls `whiten`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def grpo_advantages(rewards_PG: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (DeepSeekMath): (r - group mean) / (group std + eps), std unbiased as in verl and TRL.

    A group whose rewards are all equal gets advantage 0 for every member: it carries no signal.
    """
    _need_groups(rewards_PG, 2, "GRPO")
    mean_P1 = rewards_PG.mean(dim=1, keepdim=True)
    std_P1 = rewards_PG.std(dim=1, keepdim=True)
    return (rewards_PG - mean_P1) / (std_P1 + eps)


def dr_grpo_advantages(rewards_PG: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Dr. GRPO (Liu et al. 2025): r - group mean, without the std division that favours easy/hard groups."""
    _need_groups(rewards_PG, 2, "Dr. GRPO")
    return rewards_PG - rewards_PG.mean(dim=1, keepdim=True)


def rloo_advantages(rewards_PG: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RLOO: r_i minus the mean of the other G-1 rewards of its group, = G/(G-1) (r_i - group mean)."""
    _need_groups(rewards_PG, 2, "RLOO")
    G = rewards_PG.shape[1]
    others_mean_PG = (rewards_PG.sum(dim=1, keepdim=True) - rewards_PG) / (G - 1)
    return rewards_PG - others_mean_PG


def reinforce_pp_advantages(rewards_PG: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++ (Hu 2025): the reward itself, whitened over the whole batch (by the trainer)."""
    return rewards_PG.clone()


def reinforce_pp_baseline_advantages(rewards_PG: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """REINFORCE++ with a group baseline: r - group mean, then whitened over the whole batch."""
    _need_groups(rewards_PG, 2, "REINFORCE++ with a group baseline")
    return rewards_PG - rewards_PG.mean(dim=1, keepdim=True)


def whiten(adv: torch.Tensor, mean: float, std: float, eps: float = 1e-6) -> torch.Tensor:
    """(adv - batch mean) / (batch std + eps), with statistics over every rank's batch."""
    return (adv - mean) / (std + eps)


def _need_groups(rewards_PG: torch.Tensor, least: int, name: str) -> None:
    if rewards_PG.shape[1] < least:
        raise ValueError(f"{name} needs at least {least} completions per group, got {rewards_PG.shape[1]}")


@dataclass(frozen=True)
class AdvantageEstimator:
    fn: Callable[..., torch.Tensor]
    whiten_over_batch: bool = False


# The group size each needs is checked when the config is loaded (grpo.config.ADVANTAGE_GROUP_SIZES).
ADVANTAGES: dict[str, AdvantageEstimator] = {
    "grpo": AdvantageEstimator(grpo_advantages),
    "dr_grpo": AdvantageEstimator(dr_grpo_advantages),
    "rloo": AdvantageEstimator(rloo_advantages),
    "reinforce_pp": AdvantageEstimator(reinforce_pp_advantages, whiten_over_batch=True),
    "reinforce_pp_baseline": AdvantageEstimator(reinforce_pp_baseline_advantages, whiten_over_batch=True),
}
