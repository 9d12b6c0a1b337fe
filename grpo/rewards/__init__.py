"""The reward entry point for the training loop: score one completion of one prompt.

`score` routes by a row's `data_source` through `SCORERS`; `RewardFunction` is what the trainer
holds: the built-in routing, or the user's own functions named in the recipe's
`reward.functions` as "package.module:function".

Every result's components hold at least "accuracy" and "format", so logs look the same whichever
scorer ran.

A user function has the signature `fn(data_source, response, ground_truth, prompt)` and returns
a float or a `RewardResult`:
- a float becomes RewardResult(value, {"accuracy": 1.0 if value >= 1.0 else 0.0,
  "format": check_format(response, prompt)});
- a RewardResult is kept, with "accuracy"/"format" added by the same rule when missing.
With several functions the score is the sum of their scores and the components are the first
function's.
"""
from __future__ import annotations

import importlib
import numbers
from typing import Any, Callable

from grpo.errors import UserError
from grpo.rewards.countdown import score_countdown, verify_countdown
from grpo.rewards.format import check_format
from grpo.types import RewardResult

__all__ = [
    "SCORERS",
    "RewardFunction",
    "check_format",
    "load_reward_function",
    "score",
    "score_countdown",
    "verify_countdown",
]

# data_source -> scorer(response, ground_truth) -> RewardResult
SCORERS: dict[str, Callable[[str, Any], RewardResult]] = {
    "countdown": score_countdown,
}


def _with_required_components(result: RewardResult, response: str, prompt: str) -> RewardResult:
    """`result` with "accuracy" and "format" filled in when its scorer did not set them."""
    components = dict(result.components)
    components.setdefault("accuracy", 1.0 if result.score >= 1.0 else 0.0)
    if "format" not in components:
        components["format"] = check_format(response, prompt)
    return RewardResult(float(result.score), components)


def score(data_source: str, response: str, ground_truth: Any, prompt: str = "") -> RewardResult:
    """Score `response` with the built-in scorer for `data_source`."""
    scorer = SCORERS.get(data_source)
    if scorer is None:
        raise UserError(
            f"no built-in reward for data_source {data_source!r}; known: {sorted(SCORERS)}. "
            f"Give your own function with reward.functions=['package.module:function']."
        )
    return _with_required_components(scorer(response, ground_truth), response, prompt)


def load_reward_function(spec: str) -> Callable[..., Any]:
    """Import the callable named by "package.module:function"."""
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise UserError(
            f"reward function {spec!r} must be written 'package.module:function' "
            f"(module path, a colon, then the function name)"
        )
    try:
        module = importlib.import_module(module_name)
    except (ImportError, SyntaxError) as exc:
        raise UserError(
            f"reward function {spec!r}: cannot import module {module_name!r} "
            f"({type(exc).__name__}: {exc}); is it on PYTHONPATH?"
        ) from exc
    if not hasattr(module, attr):
        raise UserError(f"reward function {spec!r}: module {module_name!r} has no attribute {attr!r}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise UserError(
            f"reward function {spec!r}: {attr!r} is a {type(fn).__name__}, not a callable"
        )
    return fn


def _as_result(spec: str, value: Any, response: str, prompt: str) -> RewardResult:
    """A user function's return value as a RewardResult with the required components."""
    if isinstance(value, RewardResult):
        return _with_required_components(value, response, prompt)
    if isinstance(value, numbers.Real):  # also numpy scalars and bools
        return _with_required_components(RewardResult(float(value)), response, prompt)
    raise UserError(
        f"reward function {spec!r} returned {type(value).__name__}; "
        f"it must return a float or a grpo.types.RewardResult"
    )


class RewardFunction:
    """The reward the trainer calls: built-in routing, or the sum of the user's functions."""

    def __init__(self, specs: list[str] | tuple[str, ...] = ()):
        if isinstance(specs, str):  # a bare string would be iterated character by character
            raise UserError(f"reward.functions must be a list of specs, got the string {specs!r}")
        self.specs = list(specs)
        self.functions = [load_reward_function(spec) for spec in self.specs]

    def __call__(self, data_source: str, response: str, ground_truth: Any, prompt: str = "") -> RewardResult:
        if not self.functions:
            return score(data_source, response, ground_truth, prompt)
        results = [
            _as_result(spec, fn(data_source, response, ground_truth, prompt), response, prompt)
            for spec, fn in zip(self.specs, self.functions)
        ]
        return RewardResult(sum(r.score for r in results), results[0].components)

    def __repr__(self) -> str:
        return f"RewardFunction({self.specs!r})"
