"""Reward shaping and sample weighting around the loss: DAPO's overlong penalty and dynamic-sampling
filter, KL folded into the reward, and truncated importance weights for the engine/trainer mismatch.
"""
from __future__ import annotations

import torch


def overlong_penalty(lengths_B: torch.Tensor, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment: 0 up to max_len - buffer, then falling linearly to -factor at max_len."""
    if buffer <= 0:
        return torch.zeros_like(lengths_B, dtype=torch.float32)
    over_B = (lengths_B.float() - (max_len - buffer)).clamp(min=0.0)
    return -factor * (over_B / buffer).clamp(max=1.0)


def groups_with_signal(rewards_PG: torch.Tensor) -> torch.Tensor:
    """DAPO dynamic sampling: True for groups whose rewards are not all equal (others have zero advantage)."""
    return (rewards_PG.max(dim=1).values - rewards_PG.min(dim=1).values) > 0


def kl_penalised_rewards(rewards_PG: torch.Tensor, kl_sum_PG: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """KL in the reward (algo.kl_in=reward): r - beta * (sum over the completion's tokens of the KL estimate)."""
    return rewards_PG - kl_coef * kl_sum_PG


def truncated_importance_weights(old_logp_BT: torch.Tensor, sampler_logp_BT: torch.Tensor, mask_BT: torch.Tensor,
                                 cap: float, level: str = "token") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """min(pi_trainer / pi_sampler, cap) per token or per sequence: corrects for the rollout engine
    sampling from a slightly different distribution than the trainer computes (precision, kernels).
    """
    log_ratio_BT = (old_logp_BT - sampler_logp_BT) * mask_BT
    if level == "token":
        ratio_BT = torch.exp(log_ratio_BT)
    elif level == "sequence":
        ratio_BT = torch.exp(log_ratio_BT.sum(-1, keepdim=True)).expand_as(log_ratio_BT)
    else:
        raise ValueError(f"importance weight level must be 'token' or 'sequence', got {level!r}")
    weights_BT = ratio_BT.clamp(max=cap)
    metrics = {"weight_sum": (weights_BT * mask_BT).sum(), "capped_tokens": ((ratio_BT > cap).float() * mask_BT).sum()}
    return weights_BT.detach(), metrics
