"""How a micro-batch goes through the model: padded as built, one row per distinct prompt, or all in one row.

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

Row packing (`row_packed_layout`) goes further and removes padding altogether: the whole micro-batch
becomes one row of its real tokens, `[prompt 1 | its completions | prompt 2 | ...]`, each distinct
prompt once, position ids restarting per sequence as in the padded layout. No 4-D mask is built;
instead the model's attention is `packed_attention` (installed by `use_row_packing`), which attends
span by span: a prompt causally over itself, a completion over its prompt and its own earlier tokens
(one SDPA call each, with a small (c, p + c) mask). Linear layers then see only real tokens, and
attention computes sum(p^2) + sum(c (p + c)) pairs instead of rows x L^2, so uneven completion lengths
(R1-Zero's: most short, a few at the cap) cost what their tokens cost. Only the logits of the columns
that predict a response token are computed (`logits_to_keep` as an index tensor).

Either way only the logits that predict response tokens are computed (`logits_to_keep`), and
`position_BT` says which row of the flattened (rows x keep) logits predicts response token (b, t).
`layout_flops` counts what a layout computes and what of it was needed, for the share of forward
FLOPs spent on padding and masked-out attention pairs.
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


# The attention implementation names under which packed_attention is registered with transformers: this
# prefix and the implementation it wraps ("grpo_packed_sdpa"), whose mask function the name keeps.
PACKED_ATTENTION = "grpo_packed"


@dataclass
class ForwardLayout:
    input_ids_RL: torch.Tensor
    # (R, L) of 0/1 when padded; (R, 1, L, L) when packed (bool, or additive float); when row-packed a dict of
    # no mask per layer type (transformers then builds none: packed_attention keeps the sequences apart)
    attention_mask: torch.Tensor | dict
    position_ids_RL: torch.Tensor
    keep: int | torch.Tensor  # logits of the last `keep` columns of each row, or of these columns (row-packed)
    position_BT: torch.Tensor  # index into the flattened kept logit rows that predicts response token (b, t)
    packed: bool
    spans: "PackedSpans | None" = None  # row-packed: what each query span attends to

    def model_inputs(self) -> dict:
        inputs = dict(input_ids=self.input_ids_RL, attention_mask=self.attention_mask,
                      position_ids=self.position_ids_RL, use_cache=False, logits_to_keep=self.keep)
        if self.spans is not None:
            inputs["packed_spans"] = self.spans
        return inputs


@dataclass
class PackedSpans:
    """The attention structure of one packed row: `(start, stop, context_start, context_stop, mask)` per span.

    Queries [start, stop) attend to keys [context_start, context_stop) followed by keys [start, stop):
    a prompt has an empty context and attends causally to itself (mask None); a completion's context is
    its prompt and its (c, p + c) bool mask is [all prompt keys | causal over its own tokens]. Spans are in
    row order and cover the row.
    """

    spans: list[tuple[int, int, int, int, torch.Tensor | None]]


@dataclass(frozen=True)
class FlopModel:
    """Rough forward FLOPs of a decoder: per token (linear layers) and per attended query-key pair."""

    per_token: float
    per_pair: float
    per_logit_row: float
    mask_kind: str  # "bool" (sdpa), "additive" (eager) or "" (cannot take a 4-D mask: never pack)
    row_packing: bool = False  # the model attends through packed_attention: whole micro-batches go in one row

    @classmethod
    def from_config(cls, config) -> "FlopModel":
        h, i = config.hidden_size, config.intermediate_size
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or h // heads
        kv = getattr(config, "num_key_value_heads", None) or heads
        layers = config.num_hidden_layers
        linear = h * heads * head_dim * 2 + h * kv * head_dim * 2 + 3 * h * i  # q, o, k, v, gate/up/down
        kinds = {"sdpa": "bool", "eager": "additive"}
        attention = getattr(config, "_attn_implementation", None) or "eager"
        packed = attention.startswith(PACKED_ATTENTION + "_")
        if packed:  # use_row_packing installed it over the model's own implementation
            attention = config._grpo_inner_attention
        mask_kind = kinds.get(attention, "")
        layer_types = getattr(config, "layer_types", None) or []
        if any(kind != "full_attention" for kind in layer_types):
            mask_kind = ""  # a 4-D mask would replace the sliding-window masks of those layers
        row_packing = mask_kind != "" and packed
        return cls(per_token=2.0 * layers * linear, per_pair=4.0 * layers * heads * head_dim,
                   per_logit_row=2.0 * h * config.vocab_size, mask_kind=mask_kind, row_packing=row_packing)

    def cost(self, rows: int, length: int, keep: int) -> float:
        return rows * (length * self.per_token + length * length * self.per_pair + keep * self.per_logit_row)


def layout_flops(flops: FlopModel, mb: MicroBatch, layout: ForwardLayout) -> tuple[float, float]:
    """(computed, needed) forward FLOPs of `mb` in `layout`, by the FLOP model.

    Needed: every real token through the linear layers, each real query against the real keys it may
    see (its prompt and its own earlier tokens, itself included), one logit row per response token.
    Computed: every position of the layout, every (query, key) pair its attention calls evaluate (a
    dense mask evaluates all of them), every kept logit row. The difference is padding work.
    """
    P = mb.prompt_width
    prompt_B = mb.attention_mask_BL[:, :P].sum(-1).double()
    completion_B = mb.attention_mask_BL[:, P:].sum(-1).double()
    group_B, _ = _groups(mb) if P > 0 else (torch.arange(len(prompt_B)), len(prompt_B))
    first = {}
    for b, g in enumerate(group_B.tolist()):
        first.setdefault(g, b)
    prompts = prompt_B[list(first.values())]
    tokens = float(prompts.sum() + completion_B.sum())
    pairs = float((prompts * (prompts + 1) / 2).sum() + (completion_B * prompt_B + completion_B * (completion_B + 1) / 2).sum())
    needed = tokens * flops.per_token + pairs * flops.per_pair + float(completion_B.sum()) * flops.per_logit_row
    if layout.spans is not None:
        computed_pairs = sum((stop - start) * (stop - start + context_stop - context_start)
                             for start, stop, context_start, context_stop, _ in layout.spans.spans)
        computed = (layout.input_ids_RL.numel() * flops.per_token + computed_pairs * flops.per_pair
                    + layout.keep.numel() * flops.per_logit_row)
    else:
        rows, length = layout.input_ids_RL.shape
        computed = flops.cost(rows, length, layout.keep)
    return computed, needed


def layout_logprobs(model, mb: MicroBatch, layout: ForwardLayout, temperature: float, with_entropy: bool,
                    entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logp_BT, entropy_BT) of the micro-batch's response tokens from one forward of `model` in `layout`."""
    logits_RKV = model(**layout.model_inputs()).logits
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
    """The row-packed layout when the model attends through packed_attention; else the per-prompt packed
    layout when it is allowed and cheaper by the FLOP count; else the padded one."""
    plain = padded_layout(mb)
    if flops is None or not flops.mask_kind:
        return plain
    if flops.row_packing and bool((mb.attention_mask_BL[:, :mb.prompt_width].sum(-1) > 0).all()):
        return row_packed_layout(mb)
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


def row_packed_layout(mb: MicroBatch) -> ForwardLayout:
    """The micro-batch's real tokens in one row: each distinct prompt once, then its completions back to back.

    Every prompt must have at least one token (its last column predicts its completions' first tokens).
    """
    device = mb.input_ids_BL.device
    P = mb.prompt_width
    B, T = mb.input_ids_BL.shape[0], mb.input_ids_BL.shape[1] - P
    group_B, _ = _groups(mb)
    prompt_B = mb.attention_mask_BL[:, :P].sum(-1).tolist()
    completion_B = mb.attention_mask_BL[:, P:].sum(-1).tolist()
    members: dict[int, list[int]] = {}
    for b, g in enumerate(group_B.tolist()):
        members.setdefault(g, []).append(b)
    ids, positions, spans, keep = [], [], [], []
    position_BT = torch.zeros((B, T), dtype=torch.long)  # padding tokens read kept row 0 (masked later)
    cursor = 0
    for group in members.values():
        p = prompt_B[group[0]]
        ids.append(mb.input_ids_BL[group[0], P - p:P])
        positions.append(torch.arange(p))
        spans.append((cursor, cursor + p, 0, 0, None))
        prompt_start, cursor = cursor, cursor + p
        for b in group:
            c = completion_B[b]
            if c == 0:
                continue
            ids.append(mb.input_ids_BL[b, P:P + c])
            positions.append(torch.arange(p, p + c))  # as in the padded layout: the prompt's real tokens, then on
            mask = torch.ones((c, p + c), dtype=torch.bool)
            mask[:, p:] = torch.ones((c, c), dtype=torch.bool).tril()
            spans.append((cursor, cursor + c, prompt_start, prompt_start + p, mask.to(device)))
            # the prompt's last column predicts token 0; the completion's column t - 1 predicts token t
            position_BT[b, :c] = torch.arange(len(keep), len(keep) + c)
            keep.append(prompt_start + p - 1)
            keep.extend(range(cursor, cursor + c - 1))
            cursor += c
    input_ids_1N = torch.cat(ids).to(device)[None, :]
    position_ids_1N = torch.cat(positions).to(device=device, dtype=mb.position_ids_BL.dtype)[None, :]
    keep_K = torch.tensor(keep if keep else [0], dtype=torch.long, device=device)
    return ForwardLayout(input_ids_1N, {"full_attention": None}, position_ids_1N, keep_K, position_BT.to(device),
                         packed=True, spans=PackedSpans(spans))


def packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, packed_spans=None,
                     **kwargs):
    """Attention for row-packed forwards (span by span, see PackedSpans); any other call goes to the
    implementation the model had before (`module.config._grpo_inner_attention`)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if packed_spans is None:
        inner = ALL_ATTENTION_FUNCTIONS[module.config._grpo_inner_attention]
        return inner(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    grouped = query.shape[1] != key.shape[1]
    pieces = []
    for start, stop, context_start, context_stop, mask in packed_spans.spans:
        q = query[:, :, start:stop]
        if mask is None:
            out = sdpa(q, key[:, :, start:stop], value[:, :, start:stop], is_causal=True, dropout_p=dropout,
                       scale=scaling, enable_gqa=grouped)
        else:
            k = torch.cat([key[:, :, context_start:context_stop], key[:, :, start:stop]], dim=2)
            v = torch.cat([value[:, :, context_start:context_stop], value[:, :, start:stop]], dim=2)
            out = sdpa(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, enable_gqa=grouped)
        pieces.append(out)
    return torch.cat(pieces, dim=2).transpose(1, 2).contiguous(), None


def use_row_packing(model) -> bool:
    """Make `model` attend through packed_attention (its own implementation still serves every other call),
    when its attention can: every layer global, sdpa or eager. Returns whether it now does."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    config = model.config
    inner = getattr(config, "_attn_implementation", None) or "eager"
    if inner.startswith(PACKED_ATTENTION + "_"):
        return True
    if not FlopModel.from_config(config).mask_kind:
        return False
    name = f"{PACKED_ATTENTION}_{inner}"
    AttentionInterface.register(name, packed_attention)
    AttentionMaskInterface.register(name, AttentionMaskInterface._global_mapping[inner])
    model.set_attn_implementation(name)
    for module in model.modules():  # every config object the model holds, sub-configs included
        if hasattr(module, "config") and hasattr(module.config, "_attn_implementation"):
            module.config._grpo_inner_attention = inner
    return True
