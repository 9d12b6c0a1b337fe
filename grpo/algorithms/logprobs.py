"""Per-token log-probabilities and entropies from logits, a chunk of positions at a time.

The log-softmax is taken in fp32 (the logits may be bf16) with temperature applied first, so the
trainer's logprobs describe the distribution the sampler drew from. A fused autograd function
computes, per chunk of positions, log Z, the entropy and the sampled token's logit, and its backward
recomputes the chunk's softmax: neither an fp32 copy of the logits nor a softmax ever exists for a
whole micro-batch, and only the logits themselves (in their own dtype) are kept for backward.

Several tokens may read the same position: `gathered_logprobs_and_entropy` takes the logits of M
positions and, per token, which position predicts it. With shared-prompt packing the last prompt
position predicts the first token of every completion of that prompt.
"""
from __future__ import annotations

import torch

# Positions x vocabulary entries per chunk: 2^24 fp32 values are 64 MiB of temporaries (a few live at once).
CHUNK_ELEMENTS = 2**24


def token_logprobs_and_entropy(logits_BTV: torch.Tensor, tokens_BT: torch.Tensor, temperature: float = 1.0,
                               with_entropy: bool = True,
                               entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return (logp_BT, entropy_BT): log p(tokens) and the entropy of each position's distribution.

    The entropy carries gradients only with entropy_grad (an entropy bonus in the loss); otherwise
    it is a logged number and gets no autograd graph.
    """
    B, T, V = logits_BTV.shape
    position_BT = torch.arange(B * T, device=logits_BTV.device).view(B, T)
    return gathered_logprobs_and_entropy(logits_BTV.reshape(B * T, V), position_BT, tokens_BT, temperature,
                                         with_entropy, entropy_grad)


def gathered_logprobs_and_entropy(logits_MV: torch.Tensor, position_BT: torch.Tensor, tokens_BT: torch.Tensor,
                                  temperature: float = 1.0, with_entropy: bool = True, entropy_grad: bool = False,
                                  chunk_elements: int = CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Like token_logprobs_and_entropy, for token (b, t) predicted by row position_BT[b, t] of logits_MV."""
    entropy_grad = entropy_grad and with_entropy and torch.is_grad_enabled()
    chunk = max(1, chunk_elements // logits_MV.shape[-1])
    logp_BT, entropy_BT = _FusedLogprobs.apply(logits_MV, position_BT, tokens_BT, float(temperature),
                                               with_entropy, entropy_grad, chunk)
    return logp_BT, (entropy_BT if with_entropy else None)


def _scaled_fp32(logits_CV: torch.Tensor, temperature: float) -> torch.Tensor:
    """A new fp32 tensor logits / temperature (never a view: callers modify it in place)."""
    if temperature != 1.0:
        return logits_CV.float() / temperature
    return logits_CV.to(torch.float32, copy=True)


class _FusedLogprobs(torch.autograd.Function):
    """log p(token) and entropy per token; the softmax is recomputed chunk by chunk in backward."""

    @staticmethod
    def forward(ctx, logits_MV, position_BT, tokens_BT, temperature, with_entropy, entropy_grad, chunk):
        ctx.set_materialize_grads(False)
        M = logits_MV.shape[0]
        logz_M = torch.empty(M, dtype=torch.float32, device=logits_MV.device)
        entropy_M = torch.empty(M, dtype=torch.float32, device=logits_MV.device) if with_entropy else None
        for start in range(0, M, chunk):
            x_CV = _scaled_fp32(logits_MV[start:start + chunk], temperature)
            logz_C = torch.logsumexp(x_CV, dim=-1)
            logz_M[start:start + chunk] = logz_C
            if with_entropy:  # H = log Z - sum p x, with p = exp(x - log Z)
                x_CV.sub_(logz_C[:, None])
                entropy_M[start:start + chunk] = -(x_CV.exp() * x_CV).sum(-1)
        target_BT = logits_MV[position_BT, tokens_BT].float()
        if temperature != 1.0:
            target_BT = target_BT / temperature
        logp_BT = target_BT - logz_M[position_BT]
        entropy_BT = entropy_M[position_BT] if with_entropy else torch.zeros_like(logp_BT)
        if not entropy_grad:
            ctx.mark_non_differentiable(entropy_BT)
        ctx.save_for_backward(logits_MV, position_BT, tokens_BT, logz_M, entropy_M if entropy_grad else None)
        ctx.temperature, ctx.chunk = temperature, chunk
        return logp_BT, entropy_BT

    @staticmethod
    def backward(ctx, grad_logp_BT, grad_entropy_BT):
        logits_MV, position_BT, tokens_BT, logz_M, entropy_M = ctx.saved_tensors
        temperature, chunk = ctx.temperature, ctx.chunk
        M = logits_MV.shape[0]
        flat_position = position_BT.reshape(-1)
        # Several tokens can read one position: their gradients add up there.
        g_logp_M = g_entropy_M = None
        if grad_logp_BT is not None:
            g_logp_M = torch.zeros(M, dtype=torch.float32, device=logits_MV.device)
            g_logp_M.index_add_(0, flat_position, grad_logp_BT.reshape(-1).float())
        if grad_entropy_BT is not None and entropy_M is not None:
            g_entropy_M = torch.zeros(M, dtype=torch.float32, device=logits_MV.device)
            g_entropy_M.index_add_(0, flat_position, grad_entropy_BT.reshape(-1).float())
        grad_MV = torch.zeros_like(logits_MV)
        if g_logp_M is None and g_entropy_M is None:
            return grad_MV, None, None, None, None, None, None
        flat_tokens = tokens_BT.reshape(-1)
        flat_grad = grad_logp_BT.reshape(-1).float() if g_logp_M is not None else None
        for start in range(0, M, chunk):
            stop = min(start + chunk, M)
            logp_CV = _scaled_fp32(logits_MV[start:stop], temperature)
            logp_CV.sub_(logz_M[start:stop, None])
            p_CV = logp_CV.exp()
            # d log p(k) / d x_j = 1[j = k] - p_j, summed over the tokens that read this position
            grad_CV = torch.zeros_like(p_CV)
            if g_logp_M is not None:
                grad_CV -= g_logp_M[start:stop, None] * p_CV
                here = (flat_position >= start) & (flat_position < stop)
                grad_CV.index_put_((flat_position[here] - start, flat_tokens[here]), flat_grad[here], accumulate=True)
            if g_entropy_M is not None:  # dH / dx_j = -p_j (log p_j + H)
                grad_CV -= g_entropy_M[start:stop, None] * p_CV * (logp_CV + entropy_M[start:stop, None])
            grad_MV[start:stop] = grad_CV / temperature if temperature != 1.0 else grad_CV
        return grad_MV, None, None, None, None, None, None
