"""Advantage estimators: a reward per completion in, an advantage per completion out.

Rewards arrive as `rewards_PG`: P prompts (groups) by G completions each. A group must be complete
(all G samples of a prompt) for its statistics to be right; the trainer guarantees that by keeping a
prompt's samples on one rank.
"""
from __future__ import annotations

from typing import Callable

import torch


def grpo_advantages(rewards_PG: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO (DeepSeekMath): (r - group mean) / (group std + eps), std unbiased as in verl and TRL.

    A group whose rewards are all equal gets advantage 0 for every member: it carries no signal.
    """
    if rewards_PG.shape[1] < 2:
        raise ValueError(f"GRPO needs at least 2 completions per group, got {rewards_PG.shape[1]}")
    mean_P1 = rewards_PG.mean(dim=1, keepdim=True)
    std_P1 = rewards_PG.std(dim=1, keepdim=True)
    return (rewards_PG - mean_P1) / (std_P1 + eps)


ADVANTAGES: dict[str, Callable[..., torch.Tensor]] = {"grpo": grpo_advantages}
