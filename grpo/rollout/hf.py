"""A transformers rollout engine: its own copy of the model and a batched sampler with a KV cache.

It samples with temperature, top-k and top-p, stops at EOS or stop strings, and reports the
sampler's log-probability of every drawn token under the temperature-scaled distribution (before
top-k/top-p filtering), which is exactly what the trainer recomputes. The engine holds its own
weights, like vLLM; the weight-sync module copies trained weights in with `load_weights`.

Where the time goes, and what keeps it down: each distinct prompt of a batch is prefilled once and
its KV cache rows are repeated for its n samples; the cache appends into preallocated room instead of
being re-concatenated every token; rows that finished are dropped from the batch once a quarter of
it is done; stop strings are only checked for tokens that can complete one; and on CPU grouped-query
attention runs in SDPA without repeating the K/V heads. Decoding then costs what the model's matmuls
cost (measured in benchmarks/README.md).
"""
from __future__ import annotations

from typing import Iterable

import torch

from grpo.config import LoraConfig
from grpo.device import is_host, torch_dtype
from grpo.lora import ADAPTER, PREFIX, AdapterWeights, live_name, peft_config
from grpo.types import Completion, SamplingSettings


class HFRolloutEngine:
    def __init__(self, model_path: str, dtype: torch.dtype, device: torch.device, tokenizer, batch_size: int = 256,
                 lora: LoraConfig | None = None):
        """`lora`: take LoRA adapters through `load_adapter` (sync.lora_mode=adapter) on top of the base weights,
        which then never change; without it the engine takes whole (or merged) weights through `load_weights`."""
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
        if self.model.config._attn_implementation == "sdpa":
            self.model.set_attn_implementation(_register_gqa_sdpa())
        if lora is not None:  # the adapter layers go into the plain model, whose forward stays as it is
            from peft import inject_adapter_in_model

            inject_adapter_in_model(peft_config(lora), self.model, adapter_name=ADAPTER)
        self.model.requires_grad_(False)
        self.device = device
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        self.eos_ids = torch.tensor(sorted(eos_ids), device=device, dtype=torch.long)
        # remove_duplicate=False keeps tied names (lm_head.weight) addressable, as a sync may send them
        self._params = dict(self.model.named_parameters(remove_duplicate=False))
        self._stop_tables: dict[tuple[str, ...], torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg, tokenizer, dist) -> "HFRolloutEngine":
        adapter_mode = cfg.model.lora.rank > 0 and cfg.sync.lora_mode == "adapter"
        return cls(cfg.model.path, torch_dtype(cfg.model.dtype), dist.device, tokenizer, cfg.rollout.batch_size,
                   lora=cfg.model.lora if adapter_mode else None)

    # -- weights -----------------------------------------------------------------------------
    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        for name, tensor in named_tensors:
            param = self._params.get(name)
            if param is None:
                raise KeyError(f"weight sync sent {name!r}, which the rollout model does not have")
            if param.shape != tensor.shape:
                raise ValueError(f"weight sync sent {name!r} with shape {tuple(tensor.shape)}, "
                                 f"the rollout model expects {tuple(param.shape)}")
            param.copy_(tensor)

    @torch.no_grad()
    def load_adapter(self, adapter: AdapterWeights) -> None:
        """Copy a LoRA adapter (peft's saved names) into the adapter layers of the engine's model."""
        for saved, tensor in adapter.tensors:
            name = live_name(saved).removeprefix(PREFIX)  # the layers sit in the plain model, not under peft's wrapper
            param = self._params.get(name)
            if param is None:
                raise KeyError(f"weight sync sent adapter tensor {saved!r}, which the rollout model does not have "
                               f"(looked for {name!r}); were both built with the same model.lora?")
            param.copy_(tensor)

    def named_weights(self) -> dict[str, torch.Tensor]:
        return self._params

    def wake_weights(self) -> None:
        """The transformers engine keeps its weights resident; nothing to restore."""

    def wake(self) -> None:
        """The KV cache is built inside each generate call; nothing to restore."""

    def sleep(self) -> None:
        """Nothing to release: the KV cache lives only inside a generate call."""

    # -- sampling ----------------------------------------------------------------------------
    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        flat = [ids for ids in prompt_ids for _ in range(sampling.n)]
        generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        completions: list[Completion] = []
        for start in range(0, len(flat), self.batch_size):
            completions += self._generate_batch(flat[start:start + self.batch_size], sampling, generator)
        return [completions[i * sampling.n:(i + 1) * sampling.n] for i in range(len(prompt_ids))]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], s: SamplingSettings,
                        generator: torch.Generator) -> list[Completion]:
        B, device = len(prompts), self.device
        # Each distinct prompt is prefilled once and its KV cache rows are repeated for its samples:
        # with n samples per prompt the prefill costs 1/n of prefilling every row.
        distinct = list(dict.fromkeys(map(tuple, prompts)))
        where = {ids: i for i, ids in enumerate(distinct)}
        source_B = torch.tensor([where[tuple(ids)] for ids in prompts], device=device)
        U, P = len(distinct), max(len(ids) for ids in distinct)
        input_ids_UP = torch.full((U, P), self.pad_id, dtype=torch.long)
        mask_UP = torch.zeros((U, P), dtype=torch.long)
        for i, ids in enumerate(distinct):  # left padding: every prompt ends at column P - 1
            input_ids_UP[i, P - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask_UP[i, P - len(ids):] = 1
        input_ids_UP, mask_UP = input_ids_UP.to(device), mask_UP.to(device)
        cache = _kv_cache(self.model.config, P + s.max_new_tokens)
        out = self.model(input_ids=input_ids_UP, attention_mask=mask_UP,
                         position_ids=(mask_UP.cumsum(-1) - 1).clamp(min=0),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits_AV = out.logits[:, -1].index_select(0, source_B)
        if U < B:
            cache.batch_select_indices(source_B)
        # The A rows still running: finished rows are dropped from the batch (and the cache) as they
        # pile up, so late steps do not pay for sequences that already stopped.
        active_A = torch.arange(B, device=device)
        mask_AL = mask_UP.index_select(0, source_B)
        position_A1 = (mask_AL.sum(-1, keepdim=True) - 1).clamp(min=0)
        tokens_BT = torch.full((B, s.max_new_tokens), self.pad_id, dtype=torch.long, device=device)
        logps_BT = torch.zeros((B, s.max_new_tokens), dtype=torch.float32, device=device)
        length_B = torch.zeros(B, dtype=torch.long, device=device)
        stopped_B = torch.zeros(B, dtype=torch.bool, device=device)
        stop_tail = max((len(x) for x in s.stop), default=0) + 1  # tokens: each decodes to >= 1 character
        may_stop_V = self._may_end_stop_string(tuple(s.stop)) if s.stop else None
        for step in range(s.max_new_tokens):
            running_A = ~stopped_B[active_A]
            token_A, logp_A = sample_tokens(logits_AV, s.temperature, s.top_k, s.top_p, generator)
            tokens_BT[active_A, step] = token_A  # a stopped row's draws land past its end and are ignored
            logps_BT[active_A, step] = logp_A.float()
            length_B[active_A] += running_A.long()
            done_A = torch.isin(token_A, self.eos_ids) & running_A
            if s.stop:
                done_A |= self._hit_stop_string(tokens_BT, active_A, step, done_A | ~running_A, may_stop_V, s.stop,
                                                stop_tail)
            stopped_A = stopped_B[active_A] | done_A
            stopped_B[active_A] = stopped_A
            finished = int(stopped_A.sum())
            if finished == len(active_A) or step == s.max_new_tokens - 1:
                break
            token_A1 = token_A.unsqueeze(-1)
            if finished * 4 >= len(active_A):
                # Compacting copies the cache, so it waits until a quarter of the rows are done.
                keep_K = (~stopped_A).nonzero().squeeze(-1)
                cache.batch_select_indices(keep_K)
                active_A, mask_AL, position_A1, token_A1 = (active_A[keep_K], mask_AL[keep_K], position_A1[keep_K],
                                                            token_A1[keep_K])
            mask_AL = torch.cat([mask_AL, torch.ones_like(mask_AL[:, :1])], dim=1)
            position_A1 = position_A1 + 1
            out = self.model(input_ids=token_A1, attention_mask=mask_AL, position_ids=position_A1,
                             past_key_values=cache, use_cache=True)
            logits_AV = out.logits[:, -1]
        lengths = length_B.cpu().tolist()
        stopped = stopped_B.cpu().tolist()
        tokens = tokens_BT.cpu()
        logps = logps_BT.cpu()
        result = []
        for i in range(B):
            ids = tokens[i, :lengths[i]].tolist()
            result.append(Completion(token_ids=ids, logprobs=logps[i, :lengths[i]].tolist(),
                                     text=self.tokenizer.decode(ids, skip_special_tokens=True),
                                     finish_reason="stop" if stopped[i] else "length"))
        return result

    def _may_end_stop_string(self, stops: tuple[str, ...]) -> torch.Tensor:
        """Per vocabulary id: can this token be the one that completes a stop string? (cached per stop set)

        A stop string is completed by the token holding its last character, so only tokens whose text
        contains one of those characters (or a partial UTF-8 character, decoded alone) are checked.
        """
        if stops not in self._stop_tables:
            vocab = len(self.tokenizer)
            texts = self.tokenizer.batch_decode([[i] for i in range(vocab)], skip_special_tokens=False)
            finals = {stop[-1] for stop in stops} | {"\ufffd"}
            size = max(vocab, self.model.get_output_embeddings().weight.shape[0])
            table = torch.zeros(size, dtype=torch.bool)
            table[:vocab] = torch.tensor([any(c in text for c in finals) for text in texts])
            self._stop_tables[stops] = table.to(self.device)
        return self._stop_tables[stops]

    def _hit_stop_string(self, tokens_BT: torch.Tensor, active_A: torch.Tensor, step: int, skip_A: torch.Tensor,
                         may_stop_V: torch.Tensor, stops: list[str], tail_tokens: int) -> torch.Tensor:
        """True for the rows (not in skip_A) whose newest text contains a stop string."""
        hit_A = torch.zeros_like(skip_A)
        newest_A = tokens_BT[active_A, step]
        check = (may_stop_V[newest_A] & ~skip_A).nonzero().squeeze(-1).tolist()
        if not check:
            return hit_A
        # Checked after every token, so a stop string found now has just been completed; its text spans
        # at most len(stop) tokens, hence decoding the newest few tokens is enough.
        window_CW = tokens_BT[active_A[check], max(0, step + 1 - tail_tokens):step + 1].cpu().tolist()
        for a, window in zip(check, window_CW):
            text = self.tokenizer.decode(window, skip_special_tokens=False)
            if any(stop in text for stop in stops):
                hit_A[a] = True
        return hit_A


def _kv_cache(config, capacity: int):
    """A DynamicCache whose layers append into preallocated room for `capacity` tokens.

    transformers' DynamicLayer concatenates its whole cache with every new token (a copy of the KV
    cache per layer and step); these layers write the token into spare room and hand out a view.
    Models with sliding-window layers keep the stock cache.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            used, new = self.get_seq_length(), key_states.shape[-2]
            if used == 0 or used + new > self._key_room.shape[-2]:
                room = max(capacity, 2 * (used + new))
                shape = (*key_states.shape[:-2], room, key_states.shape[-1])
                key_room, value_room = key_states.new_empty(shape), value_states.new_empty(shape)
                if used:
                    key_room[..., :used, :], value_room[..., :used, :] = self.keys, self.values
                self._key_room, self._value_room = key_room, value_room
            self._key_room[..., used:used + new, :] = key_states
            self._value_room[..., used:used + new, :] = value_states
            self.keys = self._key_room[..., :used + new, :]
            self.values = self._value_room[..., :used + new, :]
            return self.keys, self.values

        def batch_select_indices(self, indices):
            if self.get_seq_length() > 0:
                used = self.get_seq_length()
                self._key_room, self._value_room = self._key_room[indices], self._value_room[indices]
                self.keys, self.values = self._key_room[..., :used, :], self._value_room[..., :used, :]

    cache = DynamicCache(config=config)
    if all(type(layer) is DynamicLayer for layer in cache.layers):
        cache.layers = [GrowingLayer() for _ in cache.layers]
    return cache


def _gqa_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                        **kwargs):
    """transformers' sdpa attention, except that on CPU grouped K/V heads go to SDPA as they are.

    With a padding mask transformers repeats every K/V head for each query head it serves before
    calling SDPA (CUDA's fused kernels take no mask with grouped heads); on CPU that copies the whole
    KV cache several times per layer and token, which made decoding about 10x slower than SDPA's own
    grouped-query path (measured: 46 ms vs 4 ms per layer at batch 64, 172 cached tokens, 12/4 heads).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if (groups == 1 or attention_mask is None or not is_host(query.device) or kwargs.get("position_bias") is not None
            or kwargs.get("cache") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def _register_gqa_sdpa() -> str:
    """Register _gqa_sdpa_attention with transformers (sdpa's masks) and return its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("grpo_gqa_sdpa", _gqa_sdpa_attention)
    AttentionMaskInterface.register("grpo_gqa_sdpa", sdpa_mask)
    return "grpo_gqa_sdpa"


def sample_tokens(logits_BV: torch.Tensor, temperature: float, top_k: int, top_p: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row; return it and its log-probability under softmax(logits / temperature)."""
    logits_BV = logits_BV.float() / temperature
    logp_BV = torch.log_softmax(logits_BV, dim=-1)
    filtered_BV = logp_BV
    if top_k > 0 and top_k < logp_BV.shape[-1]:
        kth_B1 = torch.topk(logp_BV, top_k, dim=-1).values[:, -1:]
        filtered_BV = filtered_BV.masked_fill(filtered_BV < kth_B1, float("-inf"))
    if top_p < 1.0:
        sorted_BV, order_BV = torch.sort(filtered_BV, dim=-1, descending=True)
        # top-p sees what top-k left, renormalised (as vLLM and transformers do)
        sorted_probs_BV = torch.softmax(sorted_BV, dim=-1)
        cumulative_BV = sorted_probs_BV.cumsum(-1)
        # drop a token when the mass before it already reaches top_p (the most likely one always stays)
        drop_sorted_BV = (cumulative_BV - sorted_probs_BV) >= top_p
        drop_BV = torch.zeros_like(drop_sorted_BV).scatter(-1, order_BV, drop_sorted_BV)
        filtered_BV = filtered_BV.masked_fill(drop_BV, float("-inf"))
    probs_BV = torch.softmax(filtered_BV, dim=-1)
    token_B = torch.multinomial(probs_BV, 1, generator=generator).squeeze(-1)
    return token_B, logp_BV.gather(-1, token_B.unsqueeze(-1)).squeeze(-1)
