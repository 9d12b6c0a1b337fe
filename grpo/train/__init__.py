"""Training engines: the protocols the loop, the checkpoints and the weight sync use, and (in deepspeed.py) the
DeepSpeed ZeRO engine that implements them.

`TrainEngine` is any model trained by an optimizer on the training ranks (the policy, the critic):
backward on a loss the trainer computed, an optimizer step, the learning rate, and its state saved
to / loaded from a checkpoint folder. `PolicyEngine` adds what the policy does besides: token
logprobs of micro-batches (current, before the update, and of the frozen reference), its parameters
for the weight sync, and a Hugging Face export. `CriticEngine` adds token values (critic.py).
Engines know nothing of RL.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from grpo.types import MicroBatch


class TrainEngine(Protocol):
    skips_in_a_row: int  # optimizer updates skipped (non-finite gradient norm) since the last applied one

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate d(loss)/d(theta); `last` marks the optimizer step's last micro-batch."""

    def step(self) -> float | None:
        """Apply the accumulated gradient (after the last micro-batch); returns the global gradient norm, or None
        when the norm was NaN or inf on any rank: then no rank changed its weights, optimizer state or
        learning-rate schedule, and the gradient is discarded."""

    def lr(self) -> float:
        """The learning rate the next step uses."""

    def save_state(self, folder: Path) -> None:
        """Write weights, optimizer and scheduler state into `folder` (collective: every rank writes its part)."""

    def load_state(self, folder: Path) -> None:
        """Restore what `save_state` wrote, exactly (collective)."""


class PolicyEngine(TrainEngine, Protocol):
    has_reference: bool  # a frozen reference model is loaded (algo.kl_coef > 0)
    packs_rows: bool  # training forwards are row-packed (grpo/train/packing.py): micro-batches cost real tokens
    forward_flops: dict[str, float]  # "computed" and "needed" forward FLOPs of policy_logprobs since the last reset

    def policy_logprobs(self, mb: MicroBatch, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Token logprobs (with autograd) and entropies of the current policy, each [B, T]."""

    def old_policy_logprobs(self, mb: MicroBatch, temperature: float) -> torch.Tensor:
        """The policy's logprobs before this step's updates, without autograd."""

    def reference_logprobs(self, mb: MicroBatch, temperature: float) -> torch.Tensor:
        """The frozen reference model's logprobs, without autograd."""

    # the weight sync's source (grpo/weight_sync.py)
    def named_parameters_for_sync(self) -> list[tuple[str, torch.nn.Parameter]]: ...
    def gathered(self, params: list[torch.nn.Parameter]) -> Any: ...
    def release_gathered(self) -> None: ...

    def model_config(self) -> Any:
        """The policy's Hugging Face config (a checkpoint keeps it for export)."""

    def save_hf(self, out_dir: str, tokenizer: Any) -> None:
        """Write the policy as a Hugging Face folder from rank 0 (collective)."""


class CriticEngine(TrainEngine, Protocol):
    def values(self, mb: MicroBatch) -> torch.Tensor:
        """Values of the micro-batch's response tokens [B, T] (fp32), with autograd."""

    def old_values(self, mb: MicroBatch) -> torch.Tensor:
        """The same without autograd: the values before this step's critic updates."""
