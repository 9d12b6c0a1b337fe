"""PPO with a critic: token rewards, generalized advantage estimation (GAE), VAPO's adaptive lambda, and the
clipped value loss. Pure functions on [B, T] tensors of one micro-batch.

Positions: column t is response token t; `mask_BT` is 1 on tokens that count (the loss's mask) and 0 on
padding and masked tokens, which never enter the backward scan: the "next" token of a counting token
is the next counting one, so a masked stretch in the middle is skipped as if it were not there.
Values `values_BT[:, t]` are the critic's estimates read at the position that predicts token t (the
same shift as the logprobs), i.e. the value of the state before token t is generated.
"""
from __future__ import annotations

import torch


def token_rewards(scores_B: torch.Tensor, mask_BT: torch.Tensor, kl_BT: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> torch.Tensor:
    """Each sequence's score on its last counting token, minus kl_coef x the per-token KL on every counting one."""
    rewards_BT = torch.zeros_like(mask_BT, dtype=torch.float32)
    counts_B = mask_BT.sum(-1)
    positions_T = torch.arange(mask_BT.shape[1], device=mask_BT.device)
    last_B = (positions_T * (mask_BT > 0)).max(-1).values  # index of the last counting token (0 when none)
    has_any_B = counts_B > 0
    rows_B = torch.arange(mask_BT.shape[0], device=mask_BT.device)
    rewards_BT[rows_B[has_any_B], last_B[has_any_B]] = scores_B[has_any_B].float()
    if kl_BT is not None and kl_coef:
        rewards_BT = rewards_BT - kl_coef * kl_BT.float() * mask_BT
    return rewards_BT


def gae(rewards_BT: torch.Tensor, values_BT: torch.Tensor, mask_BT: torch.Tensor, gamma: float,
        lam: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages_BT, returns_BT) by Schulman et al.'s GAE, backwards over each sequence's counting tokens:

        delta_t = r_t + gamma V_next - V_t,   A_t = delta_t + gamma lam A_next,   R_t = A_t + V_t,

    where "next" is the next counting token (V and A are 0 after the last one). `lam` is a number or one
    per sequence ([B], VAPO's length-adaptive lambda). Masked positions get advantage and return 0.
    With gamma = lam = 1 and the score on the last token, A_t = score - V_t.
    """
    B, T = rewards_BT.shape
    lam_B = torch.as_tensor(lam, dtype=torch.float32, device=rewards_BT.device).expand(B)
    counting_BT = mask_BT > 0
    values_BT = values_BT.float()
    advantages_BT = torch.zeros(B, T, dtype=torch.float32, device=rewards_BT.device)
    next_value_B = torch.zeros(B, dtype=torch.float32, device=rewards_BT.device)
    next_advantage_B = torch.zeros(B, dtype=torch.float32, device=rewards_BT.device)
    for t in range(T - 1, -1, -1):
        delta_B = rewards_BT[:, t] + gamma * next_value_B - values_BT[:, t]
        advantage_B = delta_B + gamma * lam_B * next_advantage_B
        here_B = counting_BT[:, t]
        advantages_BT[:, t] = torch.where(here_B, advantage_B, 0.0)
        next_value_B = torch.where(here_B, values_BT[:, t], next_value_B)
        next_advantage_B = torch.where(here_B, advantage_B, next_advantage_B)
    returns_BT = (advantages_BT + values_BT) * counting_BT
    return advantages_BT, returns_BT


def adaptive_lambda(lengths_B: torch.Tensor, alpha: float) -> torch.Tensor:
    """VAPO's length-adaptive lambda for the policy's advantages: 1 - 1 / (alpha x length), at least 0."""
    return (1.0 - 1.0 / (alpha * lengths_B.float().clamp(min=1.0))).clamp(min=0.0)


def clipped_value_loss(values_BT: torch.Tensor, old_values_BT: torch.Tensor, returns_BT: torch.Tensor,
                       mask_BT: torch.Tensor, clip: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """0.5 max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2) per token (PPO's clipped value loss),
    not yet aggregated; metrics: counting tokens where the clipped term was the larger one."""
    clipped_BT = old_values_BT + (values_BT - old_values_BT).clamp(-clip, clip)
    unclipped_loss_BT = (values_BT - returns_BT) ** 2
    clipped_loss_BT = (clipped_BT - returns_BT) ** 2
    loss_BT = 0.5 * torch.maximum(unclipped_loss_BT, clipped_loss_BT)
    with torch.no_grad():
        clipped_tokens = ((clipped_loss_BT > unclipped_loss_BT).float() * mask_BT).sum()
    return loss_BT, {"clipped_tokens": clipped_tokens}
