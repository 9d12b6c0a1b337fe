"""Plain dataclasses that cross stage boundaries (data -> rollout -> reward -> training).

Shapes are in the names: `_P` prompts, `_G` completions per prompt, `_B` the sequences of a
micro-batch, `_T` response tokens, `_L` whole rows. Lists hold python ints/floats; the tensors
(typed Any to keep this module torch-free) are built by the trainer and the training engine.
The step's statistics, and how they reduce over ranks, are in grpo/stats.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PromptRecord:
    """One training prompt, templated and tokenised, with what the reward needs to judge it."""

    prompt_text: str  # the exact text given to the model (template applied)
    prompt_ids: list[int]  # tokenised prompt_text
    ground_truth: Any  # reward_model.ground_truth of the row (str, number, dict, ...)
    data_source: str  # routes the reward: "countdown", "gsm8k", "math", ...
    index: int  # row number in the concatenated source files (for logs and resume)


@dataclass
class SamplingSettings:
    """How the rollout engine samples. top_k=0 and top_p=1.0 switch those filters off."""

    n: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int = 0


def sampling_seed(base_seed: int, rank: int, index: int, attempt: int = 1) -> int:
    """A seed distinct per rank, index (a step, a benchmark) and attempt (a dynamic-sampling round), reproducible
    from `base_seed`; the trainer's rollouts and the evaluator's samples both draw theirs here."""
    return (base_seed * 1_000_003 + rank * 10_007 + index * 101 + attempt) % 2**63


@dataclass
class Completion:
    """One sampled continuation of a prompt."""

    token_ids: list[int]  # generated tokens, the EOS token included when sampling stopped on it
    logprobs: list[float]  # sampler's log-probability of each token in token_ids (after temperature)
    text: str  # decoded token_ids without special tokens
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (hit max_new_tokens)


@dataclass
class RewardResult:
    """A score and the parts it was made of, for logging (e.g. {"accuracy": 1.0, "format": 1.0})."""

    score: float
    components: dict[str, float] = field(default_factory=dict)


@dataclass
class Rollout:
    """One rank's scored rollout of a step: P prompts with G completions each, whole groups, prompt-major.

    `rewards_PG` is what the advantages see: each completion's score, plus DAPO's overlong shaping,
    minus the KL penalty when the KL goes in the reward (the trainer subtracts it once the reference
    logprobs exist). The counters say how the rollout was collected, for the step's statistics.
    """

    prompts: list[PromptRecord]  # P
    groups: list[list[Completion]]  # P x G
    results: list[list[RewardResult]]  # P x G: the reward's score and components of each completion
    rewards_PG: Any  # P x G float tensor
    overlong_PG: Any  # P x G float tensor: the overlong shaping included in rewards_PG (0 or negative)
    kl_penalty_PG: Any = None  # P x G float tensor subtracted from rewards_PG (algo.kl_in=reward), else None
    tries: int = 1  # generation rounds (dynamic sampling draws more prompts while groups lack signal)
    filled_groups: int = 0  # groups without signal taken back to fill the batch when the rounds ran out
    dropped_groups: int = 0  # groups without signal left out
    reward_timeouts: int = 0  # completions whose scorer ran past reward.timeout_s (scored 0)
    reward_errors: int = 0  # completions whose scorer crashed (scored 0)

    def completions(self) -> list[Completion]:
        """Every completion, in prompt-major order (the order of micro-batches and of rewards_PG.flatten())."""
        return [c for group in self.groups for c in group]


@dataclass
class MicroBatch:
    """Sequences laid out for one training forward: [left-padded prompt | right-padded response].

    `L = P + T`: the first P columns are prompts (padded on the left), the last T are responses
    (padded on the right). The logits that predict response token t sit at column P - 1 + t.
    Tensors are torch tensors on the training device (typed Any to keep this module torch-free).
    """

    input_ids_BL: Any
    attention_mask_BL: Any
    position_ids_BL: Any
    response_mask_BT: Any  # 1.0 on generated tokens, 0.0 on padding
    prompt_width: int  # P
    advantages_B: Any  # one per sequence (group estimators), filled once the step's rewards are final
    sampler_logp_BT: Any  # the rollout engine's logprobs of the sampled tokens (0 on padding)
    ref_logp_BT: Any = None  # frozen reference model's logprobs, filled when the KL coefficient is > 0
    old_logp_BT: Any = None  # the trainer's logprobs before any update of this step, when they are needed
    advantages_BT: Any = None  # one per token (algo.advantage=gae), replacing advantages_B
    old_values_BT: Any = None  # the critic's values before this step's updates (gae)
    returns_BT: Any = None  # GAE's returns: the critic's targets (gae)

    @property
    def response_ids_BT(self):
        return self.input_ids_BL[:, self.prompt_width:]

    @property
    def advantages(self):
        """What the policy loss weighs each token with: per-token advantages, or the sequence's."""
        return self.advantages_BT if self.advantages_BT is not None else self.advantages_B
