"""`RewardFunction`: the reward the trainer holds, built-in routing or the user's own functions.

Two ways to call it:
- `reward_fn(data_source, response, ground_truth, prompt) -> RewardResult` scores one completion
  in this process, with no timeout (for tests, notebooks, and inside the workers);
- `reward_fn.score_batch(items) -> (results, metrics)` scores a whole rollout in the worker pool
  (pool.py) with a hard per-sample timeout and a deadline for the whole batch (step_timeout_s): what
  the training loop calls. A sample that times out, is not scored by the deadline, or crashes its
  scorer gets 0.0 with accuracy and format 0.0, and is counted in metrics["reward/timeouts"] (the
  first two) / metrics["reward/errors"]. Bad data (an unknown data_source, a
  malformed ground truth, a user function returning a string) still raises UserError: that is a
  mistake to fix, not a sample to skip.

A user function ("package.module:function" in `reward.functions`) has the signature
`fn(data_source, response, ground_truth, prompt)` and returns a float or a `RewardResult`:
- a float becomes RewardResult(value, {"accuracy": 1.0 if value >= 1.0 else 0.0,
  "format": check_format(response, prompt)});
- a RewardResult is kept, with "accuracy"/"format" added by the same rule when missing.
With several functions the score is the sum of their scores and the components are the first
function's. User functions run in the workers too, so they must be importable there: a module on
sys.path (as it is when the pool first starts) or an installed package.
"""
from __future__ import annotations

import importlib
import numbers
from typing import Any, Callable, Sequence

from grpo.errors import UserError
from grpo.rewards.format import check_format
from grpo.rewards.pool import DEFAULT_TIMEOUT_S, WorkerPool
from grpo.rewards.registry import ScoreSettings, scorer_for
from grpo.types import RewardResult

DEFAULT_WORKERS = 2
DEFAULT_STEP_TIMEOUT_S = 60.0  # far above a healthy step's scoring (a few seconds), far below its generation
# what a sample gets when its scorer timed out or crashed
FAILED = RewardResult(0.0, {"accuracy": 0.0, "format": 0.0})


def _with_required_components(result: RewardResult, response: str, prompt: str) -> RewardResult:
    """`result` with "accuracy" and "format" filled in when its scorer did not set them."""
    components = dict(result.components)
    components.setdefault("accuracy", 1.0 if result.score >= 1.0 else 0.0)
    if "format" not in components:
        components["format"] = check_format(response, prompt)
    return RewardResult(float(result.score), components)


def score(data_source: str, response: str, ground_truth: Any, prompt: str = "",
          settings: ScoreSettings = ScoreSettings()) -> RewardResult:
    """Score `response` with the built-in scorer for `data_source` (in this process)."""
    result = scorer_for(data_source)(response, ground_truth, prompt, settings)
    return _with_required_components(result, response, prompt)


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

    def __init__(self, specs: Sequence[str] = (), *, format_weight: float = 0.0, format_mode: str = "strict",
                 timeout_s: float = DEFAULT_TIMEOUT_S, num_workers: int = DEFAULT_WORKERS,
                 step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S):
        if isinstance(specs, str):  # a bare string would be iterated character by character
            raise UserError(f"reward.functions must be a list of specs, got the string {specs!r}")
        if not timeout_s > 0:
            raise UserError(f"reward.timeout_s must be > 0 seconds, got {timeout_s}")
        if num_workers < 1:
            raise UserError(f"reward.num_workers must be at least 1, got {num_workers}")
        if step_timeout_s < 0:
            raise UserError(f"reward.step_timeout_s must be >= 0 seconds (0: no deadline), got {step_timeout_s}")
        self.specs = list(specs)
        self.functions = [load_reward_function(spec) for spec in self.specs]
        self.settings = ScoreSettings(float(format_weight), format_mode)
        self.timeout_s = float(timeout_s)
        self.step_timeout_s = float(step_timeout_s)
        self.num_workers = int(num_workers)
        self._pool: WorkerPool | None = None

    @classmethod
    def from_config(cls, reward_cfg: Any) -> "RewardFunction":
        """Build from the recipe's `reward` section (grpo.config.RewardConfig)."""
        return cls(reward_cfg.functions, format_weight=reward_cfg.format_weight,
                   format_mode=reward_cfg.format_mode, timeout_s=reward_cfg.timeout_s,
                   num_workers=reward_cfg.num_workers, step_timeout_s=reward_cfg.step_timeout_s)

    def __call__(self, data_source: str, response: str, ground_truth: Any, prompt: str = "") -> RewardResult:
        if not self.functions:
            return score(data_source, response, ground_truth, prompt, self.settings)
        results = [
            _as_result(spec, fn(data_source, response, ground_truth, prompt), response, prompt)
            for spec, fn in zip(self.specs, self.functions)
        ]
        return RewardResult(sum(r.score for r in results), results[0].components)

    def score_batch(self, items: Sequence[tuple[str, str, Any, str]]
                    ) -> tuple[list[RewardResult], dict[str, float]]:
        """Score (data_source, response, ground_truth, prompt) items in the worker pool.

        Returns one RewardResult per item, in order, and {"reward/timeouts": k, "reward/errors": m}; the items
        not scored within step_timeout_s (after the pool is up) count as timeouts.
        """
        if self._pool is None:
            self._pool = WorkerPool(
                "grpo.rewards.function:score_jobs",
                {"specs": self.specs, "format_weight": self.settings.format_weight,
                 "format_mode": self.settings.format_mode},
                num_workers=self.num_workers,
            )
        outcomes, counts = self._pool.map("score", [tuple(item) for item in items], self.timeout_s,
                                          deadline_s=self.step_timeout_s or None)
        user_errors = [o.value for o in outcomes if o.status == "user_error"]
        if user_errors:
            raise UserError(user_errors[0])
        results = [o.value if o.status == "ok" else FAILED for o in outcomes]
        return results, {"reward/timeouts": float(counts["timeout"]), "reward/errors": float(counts["error"])}

    def close(self) -> None:
        """Stop the worker processes now (they also stop at exit)."""
        if self._pool is not None:
            self._pool.close()

    def __repr__(self) -> str:
        return f"RewardFunction({self.specs!r}, {self.settings})"


def score_jobs(specs: list[str], format_weight: float, format_mode: str) -> dict[str, Callable[[Any], Any]]:
    """Worker-pool setup for `RewardFunction.score_batch`: the same RewardFunction, in the worker."""
    reward_fn = RewardFunction(specs, format_weight=format_weight, format_mode=format_mode)
    return {"score": lambda item: reward_fn(*item)}
