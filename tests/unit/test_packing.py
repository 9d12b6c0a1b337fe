"""grpo.train.packing: a packed forward (each distinct prompt once, then its completions) gives the same
logprobs, entropies and parameter gradients as the padded one, on the tiny Qwen2 model.

The micro-batch holds two groups (prompts of different lengths, so the prompt columns need left
padding) with completions of different lengths, plus a prompt that appears once.
"""
from __future__ import annotations

import pytest
import torch

from grpo.batching import build_micro_batches
from grpo.train.packing import FlopModel, forward_layout, layout_logprobs, packed_layout, padded_layout
from grpo.types import Completion, PromptRecord

CPU = torch.device("cpu")


def micro_batch_of(prompt_lengths: list[int], completion_lengths: list[list[int]], seed: int, micro_batch_size: int,
                   pad_id: int):
    """One micro-batch of random prompts (token ids) and, per prompt, completions of the given lengths."""
    g = torch.Generator().manual_seed(seed)
    prompts = [PromptRecord(prompt_text="", prompt_ids=torch.randint(5, 900, (n,), generator=g).tolist(),
                            ground_truth=None, data_source="test", index=i) for i, n in enumerate(prompt_lengths)]
    groups = [[Completion(token_ids=torch.randint(5, 900, (n,), generator=g).tolist(), logprobs=[0.0] * n, text="",
                          finish_reason="stop") for n in lengths] for lengths in completion_lengths]
    (mb,) = build_micro_batches(prompts, groups, micro_batch_size=micro_batch_size, pad_id=pad_id, device=CPU)
    return mb


def micro_batch(pad_id: int):
    return micro_batch_of([7, 4, 5], [[3, 6, 1], [5, 2], [4]], seed=0, micro_batch_size=6, pad_id=pad_id)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, tiny_dir):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32,
                                             attn_implementation=request.param)
    return m.train()  # dropout is 0 in Qwen2: train mode only matters for the autograd graph


def run(model, mb, layout, temperature=0.7):
    model.zero_grad()
    logp_BT, entropy_BT = layout_logprobs(model, mb, layout, temperature, with_entropy=True, entropy_grad=True)
    mask_BT = mb.response_mask_BT
    # a loss that weighs every token differently, so a misplaced gradient cannot cancel out
    weights_BT = torch.linspace(-1.0, 1.0, mask_BT.numel()).view_as(mask_BT)
    ((logp_BT * weights_BT + 0.1 * entropy_BT) * mask_BT).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return logp_BT.detach() * mask_BT, entropy_BT.detach() * mask_BT, grads


def test_packed_forward_matches_padded(model):
    mb = micro_batch(pad_id=0)
    packed = packed_layout(mb, additive_mask=model.config._attn_implementation == "eager")
    # 3 distinct prompts -> 3 rows; the longest row is P = 7 plus 3 + 6 + 1 completion tokens
    assert packed.input_ids_RL.shape == (3, 7 + 10)
    logp_a, entropy_a, grads_a = run(model, mb, padded_layout(mb))
    logp_b, entropy_b, grads_b = run(model, mb, packed)
    torch.testing.assert_close(logp_b, logp_a, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(entropy_b, entropy_a, atol=2e-5, rtol=1e-5)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_layout_choice(model):
    mb = micro_batch(pad_id=0)
    flops = FlopModel.from_config(model.config)
    assert forward_layout(mb, flops).packed  # two prompts repeat, and the packed rows are shorter overall
    assert not forward_layout(mb, None).packed  # packing switched off
    # every prompt distinct: nothing to share
    mb.input_ids_BL[:, :mb.prompt_width] = torch.arange(mb.input_ids_BL.shape[0])[:, None] + 10
    assert not forward_layout(mb, flops).packed


def test_packed_forward_under_gradient_checkpointing(tiny_dir):
    # Checkpointing recomputes each layer in backward with the same 4-D mask: gradients are unchanged.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32).train()
    mb = micro_batch(pad_id=0)
    _, _, plain = run(model, mb, padded_layout(mb))
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _, _, checkpointed = run(model, mb, packed_layout(mb))
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def uneven_micro_batch(pad_id: int):
    """Two prompts shared by 4 and 3 completions of very different lengths (1 to 40 tokens), one prompt alone,
    and one completion that is empty: the padded layout is mostly padding, the row-packed one has none."""
    return micro_batch_of([9, 3, 6], [[40, 1, 7, 2], [25, 0, 3], [12]], seed=1, micro_batch_size=8, pad_id=pad_id)


@pytest.mark.parametrize("inner", ["sdpa", "eager"])
def test_row_packed_forward_matches_padded(tiny_dir, inner):
    from transformers import AutoModelForCausalLM

    from grpo.train.packing import layout_flops, row_packed_layout, use_row_packing

    padded_model = AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32,
                                                        attn_implementation=inner).train()
    packed_model = AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32,
                                                        attn_implementation=inner).train()
    assert use_row_packing(packed_model)
    mb = uneven_micro_batch(pad_id=0)
    flops = FlopModel.from_config(packed_model.config)
    layout = forward_layout(mb, flops)
    assert layout.spans is not None
    # one row of real tokens only: prompts 9 + 3 + 6 once, completions 40+1+7+2 + 25+0+3 + 12 = 90
    assert layout.input_ids_RL.shape == (1, 18 + 90)
    # spans: 3 prompts and 7 non-empty completions; one kept logit row per response token
    assert len(layout.spans.spans) == 3 + 7 and layout.keep.numel() == 90
    logp_a, entropy_a, grads_a = run(padded_model, mb, padded_layout(mb))
    logp_b, entropy_b, grads_b = run(packed_model, mb, layout)
    torch.testing.assert_close(logp_b, logp_a, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(entropy_b, entropy_a, atol=2e-5, rtol=1e-5)
    for name, grad in grads_a.items():
        torch.testing.assert_close(grads_b[name], grad, atol=1e-5, rtol=1e-4, msg=name)
    # Padding work: the padded layout is 8 rows x (9 + 40) columns = 392 positions for 108 real tokens, so
    # most of its FLOPs are padding (73% on the tiny model); row-packed, the only extra work is each span's
    # masked upper triangle, p (p - 1) / 2 or c (c - 1) / 2 pairs: prompts 36 + 3 + 15, completions
    # 780 + 0 + 21 + 1 + 300 + 3 + 66, 1225 pairs in all.
    computed_padded, needed = layout_flops(flops, mb, padded_layout(mb))
    computed_row, needed_row = layout_flops(flops, mb, layout)
    assert needed_row == needed
    assert 1 - needed / computed_padded > 0.7
    assert computed_row - needed == 1225 * flops.per_pair

def test_row_packed_forward_under_gradient_checkpointing(tiny_dir):
    from transformers import AutoModelForCausalLM

    from grpo.train.packing import row_packed_layout, use_row_packing

    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "model", dtype=torch.float32).train()
    mb = uneven_micro_batch(pad_id=0)
    _, _, plain = run(model, mb, padded_layout(mb))
    use_row_packing(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _, _, checkpointed = run(model, mb, row_packed_layout(mb))
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-5, rtol=1e-4, msg=name)
