"""A transformers rollout engine: its own copy of the model and a batched sampler with a KV cache.

It samples with temperature, top-k and top-p, stops at EOS or stop strings, and reports the
sampler's log-probability of every drawn token under the temperature-scaled distribution (before
top-k/top-p filtering), which is exactly what the trainer recomputes. The engine holds its own
weights, like vLLM; the weight-sync module copies trained weights in with `load_weights`.
"""
from __future__ import annotations

from typing import Iterable

import torch

from grpo.types import Completion, SamplingSettings


class HFRolloutEngine:
    def __init__(self, model_path: str, dtype: torch.dtype, device: torch.device, tokenizer, batch_size: int = 256):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(device).eval()
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

    @classmethod
    def from_config(cls, cfg, tokenizer, dist) -> "HFRolloutEngine":
        dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[cfg.model.dtype]
        return cls(cfg.model.path, dtype, dist.device, tokenizer, cfg.rollout.batch_size)

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
        B, P = len(prompts), max(len(p) for p in prompts)
        input_ids_BP = torch.full((B, P), self.pad_id, dtype=torch.long)
        mask_BL = torch.zeros((B, P), dtype=torch.long)
        for i, ids in enumerate(prompts):  # left padding: every prompt ends at column P - 1
            input_ids_BP[i, P - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask_BL[i, P - len(ids):] = 1
        input_ids_BP, mask_BL = input_ids_BP.to(self.device), mask_BL.to(self.device)
        position_B1 = (mask_BL.sum(-1, keepdim=True) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=input_ids_BP, attention_mask=mask_BL,
                         position_ids=(mask_BL.cumsum(-1) - 1).clamp(min=0),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits_BV = out.logits[:, -1]
        tokens, logps = [], []
        finished_B = torch.zeros(B, dtype=torch.bool, device=self.device)
        length_B = torch.zeros(B, dtype=torch.long, device=self.device)
        stop_tail = max((len(x) for x in s.stop), default=0) + 1  # tokens: each decodes to >= 1 character
        for step in range(s.max_new_tokens):
            token_B, logp_B = sample_tokens(logits_BV, s.temperature, s.top_k, s.top_p, generator)
            token_B = torch.where(finished_B, torch.full_like(token_B, self.pad_id), token_B)
            tokens.append(token_B)
            logps.append(torch.where(finished_B, torch.zeros_like(logp_B), logp_B))
            length_B += (~finished_B).long()
            finished_B |= torch.isin(token_B, self.eos_ids)
            if s.stop:
                finished_B |= self._hit_stop_string(tokens, finished_B, s.stop, stop_tail)
            if bool(finished_B.all()) or step == s.max_new_tokens - 1:
                break
            mask_BL = torch.cat([mask_BL, torch.ones((B, 1), dtype=mask_BL.dtype, device=self.device)], dim=1)
            position_B1 = position_B1 + 1
            out = self.model(input_ids=token_B.unsqueeze(-1), attention_mask=mask_BL, position_ids=position_B1,
                             past_key_values=cache, use_cache=True)
            logits_BV = out.logits[:, -1]
        tokens_BT = torch.stack(tokens, dim=1).cpu()
        logps_BT = torch.stack(logps, dim=1).float().cpu()
        lengths = length_B.cpu().tolist()
        stopped = finished_B.cpu().tolist()
        result = []
        for i in range(B):
            ids = tokens_BT[i, :lengths[i]].tolist()
            result.append(Completion(token_ids=ids, logprobs=logps_BT[i, :lengths[i]].tolist(),
                                     text=self.tokenizer.decode(ids, skip_special_tokens=True),
                                     finish_reason="stop" if stopped[i] else "length"))
        return result

    def _hit_stop_string(self, tokens: list[torch.Tensor], finished_B: torch.Tensor, stops: list[str],
                         tail_chars: int) -> torch.Tensor:
        """True for unfinished sequences whose newest text contains a stop string."""
        hit_B = torch.zeros_like(finished_B)
        # Checked after every token, so a stop string found now has just been completed; its text spans
        # at most len(stop) tokens, hence decoding the newest few tokens is enough.
        window_BW = torch.stack(tokens[-tail_chars:], dim=1).cpu()
        for i in (~finished_B).nonzero().flatten().tolist():
            text = self.tokenizer.decode(window_BW[i].tolist(), skip_special_tokens=False)
            if any(stop in text for stop in stops):
                hit_B[i] = True
        return hit_B


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
