"""The name -> function registries of the rewards: correctness checks by kind, scores by data_source.

`VERIFIERS[kind](response, ground_truth) -> bool` is the in-process correctness check for each
kind (math, gsm8k, countdown, multiply); `grpo.rewards.verify` runs it in the worker pool with a
timeout. `SCORERS[data_source](response, ground_truth, prompt, settings) -> RewardResult` is the
training score, routed by a row's `data_source` the way verl's reward manager and TinyZero route
it: `DATA_SOURCE_KINDS` maps the public names of datasets to the four kinds (`kind_of`), and
`answer_key` gives the canonical final answer of a response for majority voting.

Scores:
- math and gsm8k: accuracy (1 or 0) + settings.format_weight * format check (settings.format_mode);
- countdown and multiply: TinyZero's 1.0 / 0.1 / 0.0, unchanged by the settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from grpo.errors import UserError
from grpo.rewards.countdown import score_countdown, verify_countdown
from grpo.rewards.extract import extract_answer, last_answer_block
from grpo.rewards.format import FORMAT_CHECKS
from grpo.rewards.gsm8k import extract_gsm8k, verify_gsm8k
from grpo.rewards.latex import normalize
from grpo.rewards.math import verify_math
from grpo.rewards.multiply import parse_integer, score_multiply, verify_multiply
from grpo.types import RewardResult


@dataclass(frozen=True)
class ScoreSettings:
    """How the built-in scores combine accuracy and format (the recipe's reward section)."""

    format_weight: float = 0.0
    format_mode: str = "strict"

    def __post_init__(self):
        if self.format_mode not in FORMAT_CHECKS:
            raise UserError(f"reward.format_mode: unknown check {self.format_mode!r}; "
                            f"available: {', '.join(sorted(FORMAT_CHECKS))}")


def _verify_countdown(response: str, ground_truth: Any) -> bool:
    """Countdown correctness of a tagged output, or of a bare / boxed equation (for eval)."""
    if "</answer>" not in response:
        bare = extract_answer(response)
        if bare is not None:
            response = f"<answer>{bare}</answer>"
    return verify_countdown(response, ground_truth)


VERIFIERS: dict[str, Callable[[str, Any], bool]] = {
    "math": verify_math,
    "gsm8k": verify_gsm8k,
    "countdown": _verify_countdown,
    "multiply": verify_multiply,
}

Scorer = Callable[[str, Any, str, ScoreSettings], RewardResult]


def _accuracy_and_format(verify: Callable[[str, Any], bool]) -> Scorer:
    def scorer(response: str, ground_truth: Any, prompt: str, settings: ScoreSettings) -> RewardResult:
        accuracy = 1.0 if verify(response, ground_truth) else 0.0
        form = FORMAT_CHECKS[settings.format_mode](response, prompt)
        return RewardResult(accuracy + settings.format_weight * form, {"accuracy": accuracy, "format": form})

    scorer.__name__ = f"score_{verify.__name__.removeprefix('verify_')}"
    return scorer


def _tinyzero(score: Callable[[str, Any], RewardResult]) -> Scorer:
    def scorer(response: str, ground_truth: Any, prompt: str, settings: ScoreSettings) -> RewardResult:
        return score(response, ground_truth)

    scorer.__name__ = score.__name__
    return scorer


# kind -> training score
KIND_SCORERS: dict[str, Scorer] = {
    "math": _accuracy_and_format(verify_math),
    "gsm8k": _accuracy_and_format(verify_gsm8k),
    "countdown": _tinyzero(score_countdown),
    "multiply": _tinyzero(score_multiply),
}

# data_source -> kind. Names are those of the public datasets and of verl / TinyZero / DeepScaleR
# data files; add an entry to route a new name.
DATA_SOURCE_KINDS: dict[str, str] = {
    "countdown": "countdown",
    "multiply": "multiply",
    "arithmetic": "multiply",
    "gsm8k": "gsm8k",
    "openai/gsm8k": "gsm8k",
    **{name: "math" for name in (
        "math", "lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500", "math500",
        "math_dapo", "aime", "aime2024", "aime2025", "aime24", "aime25", "amc", "amc23",
        "deepscaler", "agentica-org/DeepScaleR-Preview-Dataset", "olympiad_bench", "minerva",
    )},
}

# data_source -> scorer: what the trainer routes by (a user may register a scorer for a new name)
SCORERS: dict[str, Scorer] = {name: KIND_SCORERS[kind] for name, kind in DATA_SOURCE_KINDS.items()}


def kind_of(data_source: str) -> str:
    """The verify kind (math, gsm8k, countdown, multiply) of a data_source name."""
    kind = DATA_SOURCE_KINDS.get(data_source)
    if kind is None:
        raise UserError(f"no correctness check for data_source {data_source!r}; known: {sorted(DATA_SOURCE_KINDS)}")
    return kind


def scorer_for(data_source: str) -> Scorer:
    """The scorer registered for `data_source`; a UserError naming the known ones otherwise."""
    scorer = SCORERS.get(data_source)
    if scorer is None:
        raise UserError(
            f"no built-in reward for data_source {data_source!r}; known: {sorted(SCORERS)}. "
            f"Give your own function with reward.functions=['package.module:function']."
        )
    return scorer


def answer_key(kind: str, response: str) -> str | None:
    """The final answer of `response` as `verify` reads it, in a canonical spelling (None if none).

    For majority voting (maj@k): answers with equal keys are the same answer. Keys are
    canonical spellings, not values: "\\frac12" and "\\dfrac{1}{2}" share a key, "0.5" does not.
    """
    if kind == "math":
        answer = extract_answer(response)
        return normalize(answer).key if answer is not None else None
    if kind == "gsm8k":
        value = extract_gsm8k(response)
        return str(value) if value is not None else None
    if kind == "multiply":
        value = parse_integer(extract_answer(response))
        return str(value) if value is not None else None
    if kind == "countdown":
        block = last_answer_block(response)
        answer = block if block is not None else extract_answer(response)
        return "".join(answer.split()) if answer else None
    raise UserError(f"unknown kind {kind!r}; available: {', '.join(sorted(VERIFIERS))}")


def verify_jobs() -> dict[str, Callable[[Any], bool]]:
    """Worker-pool setup for `grpo.rewards.verify`: one job, payload (kind, response, ground_truth)."""
    return {"verify": lambda payload: VERIFIERS[payload[0]](payload[1], payload[2])}
