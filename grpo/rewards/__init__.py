"""Rule-based rewards: correctness checks, training scores, and the worker pool that runs them.

Correctness (eval reuses it):
    verify(kind, response, ground_truth) -> bool          kind: math, gsm8k, countdown, multiply, choice
    verify_batch([(kind, response, ground_truth), ...]) -> (list[bool], metrics)
Both run in a shared worker pool with a hard per-item timeout (a timeout or crash is False).
`VERIFIERS[kind]` is the same check in this process, without the timeout; `kind_of(data_source)`
names the kind of a dataset, `answer_key(kind, response)` the canonical final answer (maj@k).
registry.py is the one routing data_source -> kind -> (check, score, vote key) that training and
evaluation share.

Training scores, routed by a row's `data_source` (`scorer_for`, registry.py):
    RewardFunction(specs, format_weight=..., format_mode=..., timeout_s=..., num_workers=...)
        (data_source, response, ground_truth, prompt) -> RewardResult     in process
        .score_batch(items) -> (list[RewardResult], {"reward/timeouts", "reward/errors"})   pooled
    score(data_source, response, ground_truth, prompt, settings) -> RewardResult   in process
Every result's components hold at least "accuracy" and "format", so logs look the same whichever
scorer ran.

Importing this package is cheap: sympy loads only when an answer needs the symbolic fallback.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Sequence

from grpo.errors import UserError
from grpo.rewards.countdown import score_countdown, verify_countdown
from grpo.rewards.format import FORMAT_CHECKS, check_format, check_format_loose, check_format_strict
from grpo.rewards.function import RewardFunction, load_reward_function, score
from grpo.rewards.pool import DEFAULT_TIMEOUT_S, WorkerPool
from grpo.rewards.registry import (DATA_SOURCE_KINDS, KINDS, SCORERS, VERIFIERS, ScoreSettings, answer_key, kind_of,
                                   scorer_for)

__all__ = [
    "DATA_SOURCE_KINDS",
    "FORMAT_CHECKS",
    "KINDS",
    "SCORERS",
    "VERIFIERS",
    "RewardFunction",
    "ScoreSettings",
    "answer_key",
    "check_format",
    "check_format_loose",
    "check_format_strict",
    "kind_of",
    "load_reward_function",
    "score",
    "score_countdown",
    "scorer_for",
    "verify",
    "verify_batch",
    "verify_countdown",
]

_shared_pool: WorkerPool | None = None
_shared_pool_lock = threading.Lock()


def _verify_pool() -> WorkerPool:
    global _shared_pool
    with _shared_pool_lock:
        if _shared_pool is None:
            workers = max(1, min(4, os.cpu_count() or 1))
            _shared_pool = WorkerPool("grpo.rewards.registry:verify_jobs", num_workers=workers)
        return _shared_pool


def verify_batch(items: Sequence[tuple[str, str, Any]], timeout_s: float = DEFAULT_TIMEOUT_S
                 ) -> tuple[list[bool], dict[str, float]]:
    """Check (kind, response, ground_truth) items in the shared pool, each within `timeout_s`.

    Returns the verdicts in order (a timeout or crash is False) and
    {"reward/timeouts": k, "reward/errors": m}. Raises UserError for an unknown kind or a
    malformed ground truth.
    """
    for kind, *_ in items:
        if kind not in VERIFIERS:
            raise UserError(f"verify: unknown kind {kind!r}; available: {', '.join(sorted(VERIFIERS))}")
    outcomes, counts = _verify_pool().map("verify", [tuple(item) for item in items], timeout_s)
    user_errors = [o.value for o in outcomes if o.status == "user_error"]
    if user_errors:
        raise UserError(user_errors[0])
    verdicts = [o.status == "ok" and o.value is True for o in outcomes]
    return verdicts, {"reward/timeouts": float(counts["timeout"]), "reward/errors": float(counts["error"])}


def verify(kind: str, response: str, ground_truth: Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Is `response` (a whole model output or a bare answer) correct for `ground_truth`?

    kind is one of math, gsm8k, countdown, multiply, choice. Runs in the shared worker pool with a hard
    timeout; a timeout or a crash is False.
    """
    return verify_batch([(kind, response, ground_truth)], timeout_s)[0][0]
