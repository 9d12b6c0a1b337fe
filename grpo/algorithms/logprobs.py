"""Per-token log-probabilities and entropies from logits, computed in fp32 row by row of vocab.

`logits_BTV` may be bf16; the log-softmax is taken in fp32 through logsumexp, so the fp32
logits exist for one micro-batch at a time at most. Temperature divides the logits first, so the
trainer's logprobs describe the same distribution the sampler drew from.
"""
from __future__ import annotations

import torch


def token_logprobs_and_entropy(logits_BTV: torch.Tensor, tokens_BT: torch.Tensor, temperature: float = 1.0,
                               with_entropy: bool = True,
                               entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (logp_BT, entropy_BT): log p(tokens) and the entropy of each position's distribution.

    The entropy carries gradients only with entropy_grad (an entropy bonus in the loss); otherwise
    it is a logged number and its autograd graph (a full B x T x V softmax) is skipped.
    """
    logits_BTV = logits_BTV.float()
    if temperature != 1.0:
        logits_BTV = logits_BTV / temperature
    logz_BT = torch.logsumexp(logits_BTV, dim=-1)
    logp_BT = logits_BTV.gather(-1, tokens_BT.unsqueeze(-1)).squeeze(-1) - logz_BT
    entropy_BT = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            probs_BTV = torch.softmax(logits_BTV, dim=-1)
            entropy_BT = logz_BT - (probs_BTV * logits_BTV).sum(-1)
    return logp_BT, entropy_BT
