"""Long-tailed completion lengths for bench_step.py, the same rule on every side (ours hf, ours vLLM, TRL).

R1-Zero's completions are uneven: most stop early, a few run to the cap. A random model stops almost
never, so the benchmark makes it stop: at every decode step, a sequence that has generated t >= 1
tokens is made to emit EOS (all other logits set to -inf) when

    u(last token, t) < h(t) = 1 / (s + t + 1),   s = cap / 8,

where u is a fixed integer hash of the last generated token and t, read as a number in [0, 1). Since
the tokens are drawn at temperature 1, u acts as a uniform draw, and the chance of running past t
tokens is prod_{k<t} (1 - h(k)) = s / (s + t): a Pareto tail. At cap 256: half the completions stop
by 32 tokens, a fifth run past 128, one in nine reaches the cap; the mean is about 0.27 x cap.
The rule sees only what every engine has (the last token and how many were generated), so each side
draws its lengths from the same distribution; the sampled tokens differ, so each side's realised
mean length is reported next to its time.

Where each engine applies it:
- transformers (our hf engine, TRL's generate): a forward hook on the causal LM. Both decode all
  running rows in lock step, so t = (width of the attention mask) - (width of the last prefill).
- vLLM: a logits processor (vLLM's v1 interface), which sees each request's output tokens.
"""
from __future__ import annotations

import torch

HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative hash


def tail_scale(cap: int) -> float:
    return cap / 8.0


def stop_now(last_token_A: torch.Tensor, generated_A: torch.Tensor, cap: int) -> torch.Tensor:
    """Which rows must emit EOS next: u(last token, t) < 1 / (s + t + 1), for t >= 1 tokens generated."""
    key_A = last_token_A.long() * 1000003 + generated_A.long() * 7919 + 1
    u_A = ((key_A * HASH_MULTIPLIER) % 2**32).double() / 2**32
    return (generated_A >= 1) & (u_A < 1.0 / (tail_scale(cap) + generated_A.double() + 1.0))


def force_eos(logits_AV: torch.Tensor, rows_A: torch.Tensor, eos_id: int) -> None:
    if bool(rows_A.any()):
        logits_AV[rows_A] = float("-inf")
        logits_AV[rows_A, eos_id] = 0.0


def install_transformers_hook(model, eos_id: int, cap: int):
    """Stop rows by the rule inside `model`'s decode forwards (input width 1); returns the hook handle."""
    state = {"prefill_width": None}

    def hook(_module, _args, kwargs, output):
        input_ids = kwargs.get("input_ids")
        mask = kwargs.get("attention_mask")
        if input_ids is None or not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            return output
        if input_ids.shape[1] > 1:  # a prefill (or a training forward): t counts from its width
            state["prefill_width"] = mask.shape[1]
            return output
        if state["prefill_width"] is None:
            return output
        generated = mask.shape[1] - state["prefill_width"]  # tokens generated so far, the newest included
        generated_A = torch.full((input_ids.shape[0],), generated, device=input_ids.device)
        force_eos(output.logits[:, -1], stop_now(input_ids[:, -1], generated_A, cap), eos_id)
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


def vllm_logits_processor(eos_id: int, cap: int):
    """A vLLM v1 logits-processor class applying the rule (pass it in LLM(logits_processors=[...]))."""
    from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

    class UnevenLengths(LogitsProcessor):
        def __init__(self, vllm_config, device, is_pin_memory):
            self.outputs: dict[int, list[int]] = {}  # batch index -> the request's live output token list

        def is_argmax_invariant(self) -> bool:
            return False

        def update_state(self, batch_update: BatchUpdate | None) -> None:
            if batch_update is None:
                return
            for index in batch_update.removed:
                self.outputs.pop(index, None)
            for index, _params, _prompt, output in batch_update.added:
                self.outputs[index] = output
            for a, b, direction in batch_update.moved:  # a swap exchanges two slots; a move empties a into b
                from_a, from_b = self.outputs.pop(a, None), self.outputs.pop(b, None)
                if from_a is not None:
                    self.outputs[b] = from_a
                if direction == MoveDirectionality.SWAP and from_b is not None:
                    self.outputs[a] = from_b

        def apply(self, logits: torch.Tensor) -> torch.Tensor:
            rows = [(i, out[-1], len(out)) for i, out in self.outputs.items() if out and i < logits.shape[0]]
            if not rows:
                return logits
            index_A = torch.tensor([r[0] for r in rows], device=logits.device)
            stop_A = stop_now(torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows]), cap)
            if bool(stop_A.any()):
                chosen = index_A[stop_A.to(logits.device)]
                logits[chosen] = float("-inf")
                logits[chosen, eos_id] = 0.0
            return logits

    return UnevenLengths
