"""The one routing of the rewards: data_source -> kind -> (correctness check, training score, vote key).

Training and evaluation both route through here, so a dataset that trains also evaluates, and the
same check judges both. A kind is one way of reading and judging an answer (`KINDS`):
- `verify(response, ground_truth) -> bool`: correctness, in this process (`grpo.rewards.verify` runs it
  in the worker pool under a timeout);
- `score(response, ground_truth, prompt, settings) -> RewardResult`: the training score;
- `answer_key(response) -> str | None`: the final answer in a canonical spelling, for majority voting.

`kind_of(data_source)` finds a row's kind: first the exact names of public datasets and of verl /
TinyZero / DeepScaleR files (`DATA_SOURCE_KINDS`), then, for other names, the first hint of
`DATA_SOURCE_HINTS` the lower-cased name contains ("omni_math" -> math). `SCORERS` maps data_source
names to a score of their own; a user may register one there for a new name.

Scores:
- math, gsm8k and choice: accuracy (1 or 0) + settings.format_weight * format check (settings.format_mode);
- countdown and multiply: TinyZero's 1.0 / 0.1 / 0.0, unchanged by the settings.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from grpo.errors import UserError
from grpo.rewards.choice import choice_key, verify_choice
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


# -- vote keys: the final answer as the kind's check reads it, one spelling per answer


def _math_key(response: str) -> str | None:
    # normalize() maps typesetting variants (\dfrac12, \frac{1}{2}) to one key; the percent sign stays
    # in the key because 50% and 50 may be judged differently against the same gold answer.
    answer = extract_answer(response)
    if answer is None:
        return None
    norm = normalize(answer)
    return norm.key + ("%" if norm.percent else "") if norm.key else None


def _gsm8k_key(response: str) -> str | None:
    value = extract_gsm8k(response)  # an exact Fraction: "18", "18.0" and "$18" vote together
    return str(value) if value is not None else None


def _countdown_key(response: str) -> str | None:
    # the equation the check judges, spacing aside: two different correct equations vote apart
    block = last_answer_block(response)
    answer = block if block is not None else extract_answer(response)
    return ("".join(answer.split()) or None) if answer else None


def _multiply_key(response: str) -> str | None:
    value = parse_integer(extract_answer(response))
    return str(value) if value is not None else None


@dataclass(frozen=True)
class Kind:
    """One way of reading and judging an answer: its correctness check, training score and vote key."""

    verify: Callable[[str, Any], bool]
    score: Scorer
    answer_key: Callable[[str], str | None]


KINDS: dict[str, Kind] = {
    "math": Kind(verify_math, _accuracy_and_format(verify_math), _math_key),
    "gsm8k": Kind(verify_gsm8k, _accuracy_and_format(verify_gsm8k), _gsm8k_key),
    "countdown": Kind(_verify_countdown, _tinyzero(score_countdown), _countdown_key),
    "multiply": Kind(verify_multiply, _tinyzero(score_multiply), _multiply_key),
    "choice": Kind(verify_choice, _accuracy_and_format(verify_choice), choice_key),
}

# kind -> in-process correctness check (what the worker pool runs)
VERIFIERS: dict[str, Callable[[str, Any], bool]] = {name: kind.verify for name, kind in KINDS.items()}

# data_source -> kind, for the exact names of public datasets and of verl / TinyZero / DeepScaleR files
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
    **{name: "choice" for name in (  # multiple choice: the chosen letter (choice.py)
        "choice", "multiple_choice", "gpqa", "gpqa_diamond", "Idavidrein/gpqa", "mmlu", "cais/mmlu", "mmlu_pro",
        "TIGER-Lab/MMLU-Pro", "arc", "ai2_arc", "allenai/ai2_arc", "arc_challenge", "commonsense_qa",
    )},
}

# (substring, kind) for any other name, tried in order on the lower-cased name: "omni_math" -> math
DATA_SOURCE_HINTS: tuple[tuple[str, str], ...] = (
    ("gsm8k", "gsm8k"), ("countdown", "countdown"), ("gpqa", "choice"), ("mmlu", "choice"),
    *((hint, "math") for hint in ("math", "aime", "amc", "olympiad", "minerva", "deepscaler", "omni")),
)

# data_source -> a score of its own; kind_of() routes every other name. Register a scorer for a new name here.
SCORERS: dict[str, Scorer] = {name: KINDS[kind].score for name, kind in DATA_SOURCE_KINDS.items()}


def kind_of(data_source: str) -> str:
    """The kind (math, gsm8k, countdown, multiply, choice) that judges rows of `data_source`."""
    lowered = data_source.lower()
    kind = DATA_SOURCE_KINDS.get(data_source) or DATA_SOURCE_KINDS.get(lowered)
    if kind is not None:
        return kind
    for hint, hinted in DATA_SOURCE_HINTS:
        if hint in lowered:
            return hinted
    raise UserError(f"no built-in reward for data_source {data_source!r}; known names: "
                    f"{', '.join(sorted(DATA_SOURCE_KINDS))}; or a name containing "
                    f"{', '.join(hint for hint, _ in DATA_SOURCE_HINTS)}. Rename the rows' data_source, or "
                    "give your own reward with reward.functions=['package.module:function'].")


def scorer_for(data_source: str) -> Scorer:
    """The training score for rows of `data_source`: a scorer registered for the name, else its kind's."""
    return SCORERS.get(data_source) or KINDS[kind_of(data_source)].score


def answer_key(kind: str, response: str) -> str | None:
    """The final answer of `response` as `kind`'s check reads it, in a canonical spelling (None: no answer).

    For majority voting (maj@k): answers with equal keys are the same answer. Keys are canonical
    spellings, not values: "\\frac12" and "\\dfrac{1}{2}" share a key, "0.5" does not.
    """
    if kind not in KINDS:
        raise UserError(f"unknown kind {kind!r}; available: {', '.join(sorted(KINDS))}")
    return KINDS[kind].answer_key(response)


def verify_jobs() -> dict[str, Callable[[Any], bool]]:
    """Worker-pool setup for `grpo.rewards.verify`: one job, payload (kind, response, ground_truth)."""
    return {"verify": lambda payload: VERIFIERS[payload[0]](payload[1], payload[2])}
