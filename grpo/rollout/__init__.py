"""Rollout engines: the RolloutEngine protocol and the engines that implement it, by name.

An engine holds its own copy of the policy weights (as vLLM does), samples completions, and takes
new weights from the weight-sync module; it never shares the training module.
"""
from __future__ import annotations

from typing import Iterable, Protocol

import torch

from grpo.lora import AdapterWeights
from grpo.types import Completion, SamplingSettings


class RolloutEngine(Protocol):
    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSettings) -> list[list[Completion]]:
        """Sample `sampling.n` completions for each prompt; returns one list of n per prompt."""

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy full (unsharded) tensors with Hugging Face names into the engine's weights."""

    def load_adapter(self, adapter: AdapterWeights) -> None:
        """Use this LoRA adapter (peft's saved format) on top of the base weights from now on (sync.lora_mode=adapter)."""

    def wake_weights(self) -> None:
        """Make the weights resident before a sync loads into them (a no-op where nothing sleeps)."""

    def wake(self) -> None:
        """Make the KV cache resident before generating (a no-op where nothing sleeps)."""

    def sleep(self) -> None:
        """Release memory the trainer needs while it trains (a no-op where nothing sleeps)."""


# name -> "module:class", imported only when chosen so that vLLM is never imported unless used
ENGINES = {"hf": "grpo.rollout.hf:HFRolloutEngine", "vllm": "grpo.rollout.vllm:VLLMRolloutEngine"}


def build_rollout_engine(cfg, tokenizer, dist) -> RolloutEngine:
    """Build the engine named by cfg.rollout.engine from the run's Config, tokenizer and DistInfo."""
    import importlib

    module_name, _, class_name = ENGINES[cfg.rollout.engine].partition(":")
    return getattr(importlib.import_module(module_name), class_name).from_config(cfg, tokenizer, dist)
