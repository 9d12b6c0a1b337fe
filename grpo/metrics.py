"""Per-step metrics: phase timers, the cross-rank reduction, and rank 0's writers.

Rank 0 writes one JSON object per step to `metrics.jsonl`, the same scalars to TensorBoard, sample
completions to `samples.jsonl` (and as TensorBoard text), and draws a console progress bar. Files
are flushed every step, so a crash loses nothing already logged.
"""
from __future__ import annotations

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from grpo import watchdog
from grpo.device import memory_now_gb
from grpo.stats import StepStats, flatten, unflatten

# Words the R1-Zero write-ups watch for the "aha moment": the model starts to re-check itself.
REFLECTION_WORDS = ("wait", "re-check", "recheck", "re-examine", "re-evaluate", "verify", "double-check",
                    "double check", "let me check", "mistake")
_REFLECTION = re.compile(r"\b(" + "|".join(re.escape(w) for w in REFLECTION_WORDS) + r")\b", re.IGNORECASE)


def is_reflective(text: str) -> bool:
    """Whether the text uses at least one reflection word (whole words, any case)."""
    return _REFLECTION.search(text) is not None


class PhaseTimer:
    """Wall-clock seconds and memory per named phase of a step (generate, score, logprobs, train, sync).

    Memory is read when a phase ends: the accelerator's peak during the phase, or the resident set on CPU.
    Entering and leaving a phase also moves this rank's position for the stall watchdog (grpo/watchdog.py).
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.memory_gb: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        watchdog.enter(phase)
        try:
            yield
        finally:
            watchdog.leave(phase)
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start
            self.memory_gb[phase] = max(self.memory_gb.get(phase, 0.0), memory_now_gb())

    def as_metrics(self) -> dict[str, float]:
        return {**{f"time/{k}": v for k, v in self.seconds.items()},
                **{f"memory/{k}_gb": v for k, v in self.memory_gb.items()}}


def _all_reduce(values: dict[str, float], op: str, device: torch.device) -> dict[str, float]:
    """`values` reduced over all ranks with op sum, max or min (one collective; every rank passes the same keys)."""
    import torch.distributed as dist

    if not values:
        return {}
    keys = sorted(values)  # same order on every rank
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return dict(zip(keys, t.tolist()))


def reduce_across_ranks(sums: dict[str, float], maxes: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum the `sums` and take the max of `maxes` over all ranks (one collective each)."""
    return {**_all_reduce(sums, "sum", device), **_all_reduce(maxes, "max", device)}


def reduce_stats(stats: list[StepStats], device: torch.device) -> list[StepStats]:
    """Copies of the step statistics reduced over all ranks, each field as it declares (grpo/stats.py)."""
    reduced: dict[str, float] = {}
    for op, values in flatten(stats).items():
        reduced.update(_all_reduce(values, op, device))
    return unflatten(stats, reduced)


class MetricsWriter:
    """Rank 0's sinks; on other ranks every method is a no-op."""

    def __init__(self, run_dir: str, rank: int, start_step: int, total_steps: int, tensorboard: bool, progress: bool):
        """start_step > 0 continues a resumed run: records of later steps (written after the checkpoint,
        before a crash) are dropped from the files and from TensorBoard, so every step appears once."""
        self.enabled = rank == 0
        self.run_dir = Path(run_dir)
        self._tb = None
        self._bar = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "samples.jsonl", "eval_samples.jsonl", "eval_completions.jsonl"):
            _keep_steps_up_to(self.run_dir / name, start_step)
        self._metrics = open(self.run_dir / "metrics.jsonl", "a")
        self._samples = open(self.run_dir / "samples.jsonl", "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"),
                                     purge_step=start_step + 1 if start_step else None)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="grpo", unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._metrics.write(json.dumps({"step": step, **metrics}) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._bar is not None:
            # postfix first without a redraw, then one redraw by update: one line per step in a log file
            self._bar.set_postfix(reward=f"{metrics.get('reward/mean', 0):.3f}",
                                  acc=f"{metrics.get('reward/accuracy', 0):.2f}",
                                  len=f"{metrics.get('response/length_mean', 0):.0f}",
                                  s=f"{metrics.get('time/step', 0):.1f}", refresh=False)
            self._bar.update(1)

    def log_eval(self, step: int, metrics: dict[str, float]) -> None:
        """Evaluation results: TensorBoard scalars at `step`, and LOG_DIR/eval.json keyed "step N"."""
        if not self.enabled:
            return
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        path = self.run_dir / "eval.json"
        results = json.loads(path.read_text()) if path.exists() else {}
        results = {label: r for label, r in results.items() if int(label.split()[-1]) < step}  # a resumed run redoes later ones
        results[f"step {step}"] = metrics
        path.write_text(json.dumps(results, indent=1))

    def log_eval_samples(self, step: int, samples: list[dict]) -> None:
        """A few greedy evaluation completions (rank 0's) to LOG_DIR/eval_samples.jsonl: the same held-out
        prompts at every evaluation, so the report can show one before and after training."""
        self._append_with_step("eval_samples.jsonl", step, samples)

    def log_eval_completions(self, step: int, completions: list[dict]) -> None:
        """Every evaluated completion (eval.save_completions) to LOG_DIR/eval_completions.jsonl, one line each
        with the step, benchmark, prompt index, sample ("greedy" or 0..k-1), response and verdict."""
        self._append_with_step("eval_completions.jsonl", step, completions)

    def _append_with_step(self, name: str, step: int, rows: list[dict]) -> None:
        if not self.enabled or not rows:
            return
        with open(self.run_dir / name, "a") as f:
            for row in rows:
                f.write(json.dumps({"step": step, **row}, default=jsonable) + "\n")

    def log_samples(self, step: int, samples: list[dict]) -> None:
        if not self.enabled or not samples:
            return
        for sample in samples:
            self._samples.write(json.dumps({"step": step, **sample}) + "\n")
        self._samples.flush()
        if self._tb is not None:
            text = "\n\n---\n\n".join(f"**reward {s['reward']:.2f}**\n\n```\n{s['prompt'][-300:]}{s['response']}\n```"
                                      for s in samples)
            self._tb.add_text("samples", text, step)

    def message(self, text: str) -> None:
        """Print on rank 0 without breaking the progress bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._metrics.close()
        self._samples.close()


def jsonable(value):
    """json.dumps' fallback: numpy arrays and scalars (parquet ground truths) as lists and numbers, the rest as text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _keep_steps_up_to(path: Path, last_step: int) -> None:
    """Rewrite a jsonl log keeping only records of steps <= last_step: a resumed run drops what came
    after its checkpoint; a fresh run (last_step 0) in an old directory starts the log anew."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in kept))
