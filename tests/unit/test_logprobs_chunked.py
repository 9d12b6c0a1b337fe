"""The fused, chunked logprob/entropy function: the same values and gradients as a plain float64
log-softmax, whatever the chunking, with tokens sharing positions, and keeping only the logits for
backward (no fp32 copy, no softmax of the whole batch).
"""
from __future__ import annotations

import pytest
import torch

from grpo.algorithms import gathered_logprobs_and_entropy, token_logprobs_and_entropy


def reference(logits_MV, position_BT, tokens_BT, temperature):
    """log p and entropy with plain autograd ops in float64."""
    logp_MV = torch.log_softmax(logits_MV.double() / temperature, dim=-1)
    logp_BT = logp_MV[position_BT, tokens_BT]
    entropy_BT = -(logp_MV.exp() * logp_MV).sum(-1)[position_BT]
    return logp_BT, entropy_BT


def case(seed=0, M=9, V=13):
    g = torch.Generator().manual_seed(seed)
    logits_MV = 3 * torch.randn(M, V, generator=g)
    # 3 sequences x 4 tokens; positions 0 and 4 are each read by several tokens (a shared prompt's end)
    position_BT = torch.tensor([[0, 1, 2, 3], [0, 5, 6, 0], [4, 7, 8, 4]])
    tokens_BT = torch.randint(0, V, (3, 4), generator=g)
    weights_BT = torch.randn(3, 4, generator=g, dtype=torch.float64)
    return logits_MV, position_BT, tokens_BT, weights_BT


@pytest.mark.parametrize("chunk_elements", [13, 2 * 13, 10**6])  # one position per chunk, two, all at once
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_values_and_gradients_match_float64_reference(chunk_elements, temperature):
    logits_MV, position_BT, tokens_BT, weights_BT = case()
    ours_MV = logits_MV.clone().requires_grad_()
    logp_BT, entropy_BT = gathered_logprobs_and_entropy(ours_MV, position_BT, tokens_BT, temperature,
                                                        entropy_grad=True, chunk_elements=chunk_elements)
    ref_MV = logits_MV.double().requires_grad_()
    ref_logp_BT, ref_entropy_BT = reference(ref_MV, position_BT, tokens_BT, temperature)
    torch.testing.assert_close(logp_BT.double(), ref_logp_BT, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy_BT.double(), ref_entropy_BT, atol=1e-5, rtol=1e-5)
    # One loss mixing both outputs with per-token weights: a token's gradient lands on its position
    # even when other tokens read the same one.
    (logp_BT.double() * weights_BT + 0.3 * entropy_BT.double() * weights_BT.flip(0)).sum().backward()
    (ref_logp_BT * weights_BT + 0.3 * ref_entropy_BT * weights_BT.flip(0)).sum().backward()
    torch.testing.assert_close(ours_MV.grad.double(), ref_MV.grad, atol=1e-5, rtol=1e-5)


def test_entropy_without_grad_and_logp_only_gradient():
    logits_MV, position_BT, tokens_BT, weights_BT = case(seed=1)
    ours_MV = logits_MV.clone().requires_grad_()
    logp_BT, entropy_BT = gathered_logprobs_and_entropy(ours_MV, position_BT, tokens_BT, 0.8, chunk_elements=26)
    assert not entropy_BT.requires_grad  # logged only
    (logp_BT.double() * weights_BT).sum().backward()
    ref_MV = logits_MV.double().requires_grad_()
    ref_logp_BT, _ = reference(ref_MV, position_BT, tokens_BT, 0.8)
    (ref_logp_BT * weights_BT).sum().backward()
    torch.testing.assert_close(ours_MV.grad.double(), ref_MV.grad, atol=1e-5, rtol=1e-5)


def test_bf16_logits_get_a_bf16_gradient_computed_in_fp32():
    logits_MV, position_BT, tokens_BT, weights_BT = case(seed=2)
    bf16_MV = logits_MV.to(torch.bfloat16).requires_grad_()
    logp_BT, _ = gathered_logprobs_and_entropy(bf16_MV, position_BT, tokens_BT, with_entropy=False, chunk_elements=26)
    assert logp_BT.dtype == torch.float32
    (logp_BT.double() * weights_BT).sum().backward()
    ref_MV = bf16_MV.detach().double().requires_grad_()  # the same bf16 values, upcast
    ref_logp_BT, _ = reference(ref_MV, position_BT, tokens_BT, 1.0)
    (ref_logp_BT * weights_BT).sum().backward()
    assert bf16_MV.grad.dtype == torch.bfloat16
    # the gradient is summed in fp32 and rounded to bf16 once: within bf16's relative precision (2^-8)
    torch.testing.assert_close(bf16_MV.grad.double(), ref_MV.grad, atol=4e-3, rtol=2**-8)


def test_only_the_logits_are_kept_for_backward():
    B, T, V = 4, 16, 256
    logits_BTV = torch.randn(B, T, V).to(torch.bfloat16).requires_grad_()
    tokens_BT = torch.randint(0, V, (B, T))
    saved_bytes = []

    def pack(tensor):
        saved_bytes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        token_logprobs_and_entropy(logits_BTV, tokens_BT, temperature=0.7, entropy_grad=True)
    # The bf16 logits themselves plus per-position scalars and indices. Plain autograd ops would keep
    # an fp32 copy (2x the bytes) for the log-softmax and a B x T x V softmax for the entropy.
    logits_bytes = logits_BTV.numel() * logits_BTV.element_size()
    assert sum(saved_bytes) < 1.2 * logits_bytes
