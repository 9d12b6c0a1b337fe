"""How a micro-batch goes through the model: padded as built, or one packed row per distinct prompt.

GRPO samples n completions of every prompt and `build_micro_batches` keeps a group's samples next to
each other, so a micro-batch repeats a few prompts many times; with R1-Zero prompts (a long fixed
preamble, short answers early in training) most of its tokens are repeated prompt tokens. The packed
layout writes each distinct prompt once, followed by all its completions, `[prompt | c1 | c2 | ...]`,
with a block attention mask in which a completion sees the prompt and its own earlier tokens only,
and position ids that continue from the prompt in every completion. Each completion token then has
exactly the context and positions it has in the padded layout, so its logits are the same up to
float rounding, and so is the gradient: the shared prompt activations receive the sum of the
completions' gradients, just as n copies of them would. The prompt is computed once, not n times.

A 4-D mask is dense (rows x L x L), and attention over a packed row costs more than over its
completions separately, so `forward_layout` packs only when a simple FLOP count says it is cheaper,
the model's attention takes a custom mask (sdpa or eager), and every layer attends globally.

Either way only the logits that predict response tokens are computed (`logits_to_keep`), and
`position_BT` says which row of the flattened (rows x keep) logits predicts response token (b, t).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from grpo.algorithms import gathered_logprobs_and_entropy
from grpo.types import MicroBatch

# Largest packed 4-D mask, in elements (bool: bytes), above which packing is not tried.
MAX_MASK_ELEMENTS = 2**28
# Packing must save at least this share of the estimated FLOPs to be worth its mask.
MIN_SAVING = 0.1


@dataclass
class ForwardLayout:
    input_ids_RL: torch.Tensor
    attention_mask: torch.Tensor  # (R, L) of 0/1 when padded; (R, 1, L, L) when packed (bool, or additive float)
    position_ids_RL: torch.Tensor
    keep: int  # logits of the last `keep` columns of each row are computed
    position_BT: torch.Tensor  # index into the (R * keep) logit rows that predicts response token (b, t)
    packed: bool


@dataclass(frozen=True)
class FlopModel:
    """Rough forward FLOPs of a decoder: per token (linear layers) and per attended query-key pair."""

    per_token: float
    per_pair: float
    per_logit_row: float
    mask_kind: str  # "bool" (sdpa), "additive" (eager) or "" (cannot take a 4-D mask: never pack)

    @classmethod
    def from_config(cls, config) -> "FlopModel":
        h, i = config.hidden_size, config.intermediate_size
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or h // heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        layers = config.num_hidden_layers
        linear = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * i  # q, o, k, v, gate/up/down
        kinds = {"sdpa": "bool", "eager": "additive"}
        mask_kind = kinds.get(getattr(config, "_attn_implementation", None) or "eager", "")
        layer_types = getattr(config, "layer_types", None) or []
        if any(kind != "full_attention" for kind in layer_types):
            mask_kind = ""  # a 4-D mask would replace the sliding-window masks of those layers
        return cls(per_token=2.0 * layers * linear, per_pair=4.0 * layers * heads * head_dim,
                   per_logit_row=2.0 * h * config.vocab_size, mask_kind=mask_kind)

    def cost(self, rows: int, length: int, keep: int) -> float:
        return rows * (length * self.per_token + length * length * self.per_pair + keep * self.per_logit_row)


def layout_logprobs(model, mb: MicroBatch, layout: ForwardLayout, temperature: float, with_entropy: bool,
                    entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logp_BT, entropy_BT) of the micro-batch's response tokens from one forward of `model` in `layout`."""
    logits_RKV = model(input_ids=layout.input_ids_RL, attention_mask=layout.attention_mask,
                       position_ids=layout.position_ids_RL, use_cache=False, logits_to_keep=layout.keep).logits
    return gathered_logprobs_and_entropy(logits_RKV.reshape(-1, logits_RKV.shape[-1]), layout.position_BT,
                                         mb.response_ids_BT, temperature, with_entropy, entropy_grad)


def layout_values(model, mb: MicroBatch, layout: ForwardLayout) -> torch.Tensor:
    """values_BT (fp32) of the micro-batch's response tokens from one forward of a one-output token-classification
    model in `layout`: the score at the column that predicts token t, the same shift as the logprobs."""
    scores_RL1 = model(input_ids=layout.input_ids_RL, attention_mask=layout.attention_mask,
                       position_ids=layout.position_ids_RL, use_cache=False).logits
    kept_K = scores_RL1[:, -layout.keep:, 0].reshape(-1)
    return kept_K[layout.position_BT].float()


def forward_layout(mb: MicroBatch, flops: FlopModel | None, dtype: torch.dtype = torch.float32) -> ForwardLayout:
    """The packed layout when it is allowed and cheaper by the FLOP count, else the padded one."""
    plain = padded_layout(mb)
    if flops is None or not flops.mask_kind:
        return plain
    plan = _packing_plan(mb)
    if plan is None:
        return plain
    rows, length, keep = plan
    B, L = mb.input_ids_BL.shape
    if rows * length * length > MAX_MASK_ELEMENTS:
        return plain
    if flops.cost(rows, length, keep) > (1 - MIN_SAVING) * flops.cost(B, L, plain.keep):
        return plain
    return packed_layout(mb, flops.mask_kind == "additive", dtype)


def padded_layout(mb: MicroBatch) -> ForwardLayout:
    """The micro-batch as built: logits from column P - 1 on (P - 1 + t predicts response token t)."""
    B, L = mb.input_ids_BL.shape
    T = L - mb.prompt_width
    keep = T + 1
    position_BT = (torch.arange(B, device=mb.input_ids_BL.device)[:, None] * keep
                   + torch.arange(T, device=mb.input_ids_BL.device)[None, :])
    return ForwardLayout(mb.input_ids_BL, mb.attention_mask_BL, mb.position_ids_BL, keep, position_BT, packed=False)


def _groups(mb: MicroBatch) -> tuple[torch.Tensor, int]:
    """Index of each sequence's distinct prompt (in order of first appearance) and the number of them."""
    P = mb.prompt_width
    key_BP = torch.where(mb.attention_mask_BL[:, :P].bool(), mb.input_ids_BL[:, :P], -1)
    _, inverse_B = torch.unique(key_BP, dim=0, return_inverse=True)
    first = {}
    for g in inverse_B.tolist():
        first.setdefault(g, len(first))
    order = torch.tensor([first[g] for g in inverse_B.tolist()], device=key_BP.device)
    return order, len(first)


def _packing_plan(mb: MicroBatch) -> tuple[int, int, int] | None:
    """(rows, row length, kept columns) of the packed layout, or None when no prompt repeats."""
    B = mb.input_ids_BL.shape[0]
    if mb.prompt_width < 1:
        return None
    group_B, rows = _groups(mb)
    if rows == B:
        return None
    lengths_B = mb.attention_mask_BL[:, mb.prompt_width:].sum(-1)
    per_row = torch.zeros(rows, dtype=lengths_B.dtype, device=lengths_B.device).index_add_(0, group_B, lengths_B)
    length = mb.prompt_width + max(int(per_row.max()), 1)
    return rows, length, length - mb.prompt_width + 1


def packed_layout(mb: MicroBatch, additive_mask: bool = False, dtype: torch.dtype = torch.float32) -> ForwardLayout:
    """One row per distinct prompt: [left-padded prompt (P columns) | its completions back to back | padding]."""
    device = mb.input_ids_BL.device
    B, L = mb.input_ids_BL.shape
    P, T = mb.prompt_width, L - mb.prompt_width
    group_B, R = _groups(mb)
    lengths_B = mb.attention_mask_BL[:, P:].sum(-1)
    # each sequence's offset within its row's completion area: the lengths of the earlier members
    offset_B = torch.zeros(B, dtype=torch.long, device=device)
    used_R = torch.zeros(R, dtype=torch.long, device=device)
    for b, g in enumerate(group_B.tolist()):  # B is a micro-batch: a few dozen at most
        offset_B[b] = used_R[g]
        used_R[g] += lengths_B[b]
    length = P + max(int(used_R.max()), 1)
    keep = length - P + 1
    first_B = torch.full((R,), -1, dtype=torch.long, device=device).scatter_reduce(
        0, group_B, torch.arange(B, device=device), reduce="amin", include_self=False)  # a member of each group

    input_ids_RL = torch.zeros((R, length), dtype=mb.input_ids_BL.dtype, device=device)
    position_ids_RL = torch.zeros((R, length), dtype=mb.position_ids_BL.dtype, device=device)
    segment_RL = torch.full((R, length), -1, dtype=torch.long, device=device)  # -1 padding, 0 prompt, 1 + b
    input_ids_RL[:, :P] = mb.input_ids_BL[first_B, :P]
    position_ids_RL[:, :P] = mb.position_ids_BL[first_B, :P]
    segment_RL[:, :P] = torch.where(mb.attention_mask_BL[first_B, :P].bool(), 0, -1)
    t_T = torch.arange(T, device=device)
    real_BT = t_T[None, :] < lengths_B[:, None]
    b_idx, t_idx = real_BT.nonzero(as_tuple=True)
    column = P + offset_B[b_idx] + t_idx
    input_ids_RL[group_B[b_idx], column] = mb.input_ids_BL[b_idx, P + t_idx]
    position_ids_RL[group_B[b_idx], column] = mb.position_ids_BL[b_idx, P + t_idx]
    segment_RL[group_B[b_idx], column] = 1 + b_idx

    # A query sees earlier real keys of the prompt or of its own completion; every query sees itself,
    # so padding rows of the mask are never empty (an empty row makes softmax NaN).
    q_seg, k_seg = segment_RL[:, :, None], segment_RL[:, None, :]
    causal = torch.ones((length, length), dtype=torch.bool, device=device).tril()
    visible = causal & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg)) & (q_seg >= 0)
    visible |= torch.eye(length, dtype=torch.bool, device=device)
    mask = visible[:, None]
    if additive_mask:
        mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)

    # Column P - 1 (the prompt's last) predicts every completion's first token; column P + offset + t - 1
    # predicts token t >= 1. Kept logits start at column P - 1. Padding tokens read row 0 (masked later).
    k_BT = torch.where(t_T[None, :] == 0, 0, offset_B[:, None] + t_T[None, :]) * real_BT
    position_BT = group_B[:, None] * keep + k_BT
    return ForwardLayout(input_ids_RL, mask, position_ids_RL, keep, position_BT, packed=True)
