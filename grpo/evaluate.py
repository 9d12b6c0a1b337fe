"""Evaluation through the rollout engine: greedy pass@1 and sampled avg@k, maj@k and pass@k per benchmark.

Every prompt gets one greedy completion (top_k=1) and k sampled ones (eval.temperature), all judged
by the same `grpo.rewards.verify` check as training, routed by the row's data_source. Per benchmark:
- pass@1: fraction of prompts whose greedy completion is correct;
- avg@k: mean correctness of all sampled completions;
- maj@k: fraction of prompts whose most common final answer among the k samples is correct;
- pass@k: the unbiased estimator 1 - C(n-c, k) / C(n, k) averaged over prompts (n samples, c correct;
  with n = k samples it is the fraction of prompts with at least one correct sample).

The pure arithmetic (`pass_at_k`, `majority_index`, `maj_at_k`, `avg_at_k`) comes
first; `Evaluator` is the SPMD driver: rank r takes every world_size-th prompt, generates and
verifies its share, and the per-benchmark counts are summed over ranks, so every rank returns the
same metrics. `format_table` and `write_eval_json` present them.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

from grpo.data import load_prompt_records
from grpo.errors import UserError
from grpo.rewards import answer_key, kind_of, verify_batch
from grpo.templates import stop_strings
from grpo.types import PromptRecord, SamplingSettings, sampling_seed

# ---------------------------------------------------------------- metric arithmetic


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k) (Chen et al., 2021)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def majority_index(answers: list[Hashable | None]) -> int | None:
    """Index of the first sample carrying the most common answer; None when no sample has an answer.

    Ties go to the answer seen first (the one whose first occurrence has the lowest index), so the
    result does not depend on hashing or sort order.
    """
    counts: dict[Hashable, int] = {}
    first: dict[Hashable, int] = {}
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        counts[answer] = counts.get(answer, 0) + 1
        first.setdefault(answer, i)
    if not counts:
        return None
    best = max(counts.values())
    return min(first[a] for a, count in counts.items() if count == best)


def maj_at_k(answers: list[Hashable | None], verdicts: list[bool]) -> bool:
    """Is the majority answer correct? Judged by the verdict of its first sample (same answer, same check)."""
    winner = majority_index(answers)
    return winner is not None and bool(verdicts[winner])


def avg_at_k(verdicts: list[bool]) -> float:
    """Mean correctness of the samples."""
    return sum(map(bool, verdicts)) / len(verdicts) if verdicts else 0.0


@dataclass
class BenchmarkCounts:
    """One rank's sums for one benchmark; summed over ranks, they give the metrics (`benchmark_metrics`)."""

    prompts: int = 0
    greedy_correct: int = 0
    greedy_tokens: int = 0
    samples: int = 0
    sampled_correct: int = 0
    maj_correct: int = 0
    pass_k_sum: float = 0.0  # the pass@k estimate summed over prompts

    def add(self, greedy_ok: bool, greedy_tokens: int, verdicts: list[bool], answers: list[Hashable | None]) -> None:
        """Count one prompt: its greedy verdict and length, and the verdicts and answers of its samples."""
        self.prompts += 1
        self.greedy_correct += int(greedy_ok)
        self.greedy_tokens += greedy_tokens
        if verdicts:
            self.samples += len(verdicts)
            self.sampled_correct += sum(map(bool, verdicts))
            self.maj_correct += int(maj_at_k(answers, verdicts))
            self.pass_k_sum += pass_at_k(len(verdicts), sum(map(bool, verdicts)), len(verdicts))


def benchmark_metrics(name: str, counts: BenchmarkCounts, k: int, size: int | None = None) -> dict[str, float]:
    """`eval/<name>/...` metrics from (all ranks') counts: n, size (rows in the file, when given), pass@1, avg@k,
    maj@k, pass@k, length. n below size means eval.max_prompts chose a part of the set."""
    n = max(counts.prompts, 1)
    out = {f"eval/{name}/n": float(counts.prompts)}
    if size is not None:
        out[f"eval/{name}/size"] = float(size)
    out[f"eval/{name}/pass@1"] = counts.greedy_correct / n
    if k >= 1:
        out[f"eval/{name}/avg@{k}"] = counts.sampled_correct / max(counts.samples, 1)
        out[f"eval/{name}/maj@{k}"] = counts.maj_correct / n
    if k >= 2:  # sampled pass@1 would clash with the greedy one, and equals avg@1 anyway
        out[f"eval/{name}/pass@{k}"] = counts.pass_k_sum / n
    out[f"eval/{name}/length"] = counts.greedy_tokens / n  # mean greedy response length in tokens
    return out


# ---------------------------------------------------------------- benchmarks


def parse_benchmark_spec(spec: str) -> tuple[str, str]:
    """'name=path' -> (name, path); a bare path is named by its file stem ('data/math500/test.parquet' -> 'test')."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).stem, spec
    name, path = name.strip(), path.strip()
    if not name or not path or "/" in name:
        raise UserError(f"benchmark {spec!r}: give a file path or name=path (a name without '/'), "
                        "e.g. math500=data/math500/test.parquet")
    return name, path


def load_benchmarks(specs: list[str], template: str, tokenizer: Any, templates_file: str | None = None,
                    max_prompts: int = 0, skip_malformed: bool = False, log: Callable[[str], None] | None = None
                    ) -> tuple[dict[str, list[PromptRecord]], dict[str, int]]:
    """(name -> templated, tokenised prompts of each benchmark file, the first `max_prompts` when > 0;
    name -> rows in the file). No prompt is left out for its length: see `Evaluator.from_config`."""
    benchmarks: dict[str, list[PromptRecord]] = {}
    sizes: dict[str, int] = {}
    for spec in specs:
        name, path = parse_benchmark_spec(spec)
        if name in benchmarks:
            raise UserError(f"benchmark name {name!r} is given twice; name them apart with name=path")
        records, report = load_prompt_records([path], template, tokenizer, None, templates_file, skip_malformed)
        for source in sorted({r.data_source for r in records}):
            kind_of(source)  # an unknown data_source fails now, not after generating
        if report and log:
            log(f"eval {name}: " + report.describe())
        benchmarks[name] = records[:max_prompts] if max_prompts > 0 else records
        sizes[name] = report.rows
    return benchmarks, sizes


def fit_prompt_length(benchmarks: dict[str, list[PromptRecord]], max_prompt_length: int, grow: bool) -> int:
    """The prompt length the rollout engine must take for every benchmark prompt to be evaluated.

    A benchmark figure that silently covers part of the set cannot be compared with a published one,
    so no prompt is dropped: with `grow` the limit rises to the longest prompt (launch/eval.py sizes its
    engine by it); otherwise a prompt over `max_prompt_length` is an error saying how many and what to raise.
    """
    longest = max(len(r.prompt_ids) for records in benchmarks.values() for r in records)
    if longest <= max_prompt_length or grow:
        return max(longest, max_prompt_length)
    over = {name: sum(len(r.prompt_ids) > max_prompt_length for r in records) for name, records in benchmarks.items()}
    listed = ", ".join(f"{name}: {count} of {len(benchmarks[name])}" for name, count in over.items() if count)
    raise UserError(f"eval: prompts longer than data.max_prompt_length = {max_prompt_length} tokens ({listed}; the "
                    f"longest has {longest}). Evaluation leaves no prompt out, so raise data.max_prompt_length to at "
                    f"least {longest} (it also sizes the vllm engine's context).")


def should_evaluate(step: int, max_steps: int, every_steps: int, at_start: bool, at_end: bool) -> bool:
    """Whether the trainer evaluates after `step` (step 0: before the first step)."""
    if step == 0:
        return at_start
    return (every_steps > 0 and step % every_steps == 0) or (at_end and step == max_steps)


# ---------------------------------------------------------------- the driver


class Evaluator:
    """Evaluate benchmarks with a rollout engine, each rank on its share; `run` is collective (every rank calls it)."""

    def __init__(self, benchmarks: dict[str, list[PromptRecord]], k: int = 4, temperature: float = 1.0,
                 max_new_tokens: int = 1024, stop: list[str] | tuple[str, ...] = (), seed: int = 0, rank: int = 0,
                 world_size: int = 1, device: Any = None, log: Callable[[str], None] | None = None,
                 num_samples: int = 2, sizes: dict[str, int] | None = None, save_completions: bool = False):
        for key, ok, problem in [("eval.k", k >= 0, f"must be >= 0 (0: greedy only), got {k}"),
                                 ("eval.temperature", temperature > 0, f"must be > 0, got {temperature}"),
                                 ("eval.max_new_tokens", max_new_tokens >= 1, f"must be at least 1, got {max_new_tokens}")]:
            if not ok:
                raise UserError(f"{key} {problem}")
        if not benchmarks or not all(benchmarks.values()):
            raise UserError("eval: no benchmark prompts to evaluate; give prepared files in eval.files")
        self.benchmarks = benchmarks
        self.sizes = {name: len(records) for name, records in benchmarks.items()} | (sizes or {})  # rows in each file
        self.k, self.temperature, self.max_new_tokens = k, temperature, max_new_tokens
        self.stop, self.seed = list(stop), seed
        self.rank, self.world_size, self.device = rank, world_size, device
        self.log = log if rank == 0 else None
        self.num_samples = num_samples
        self.samples: list[dict[str, Any]] = []  # a few of this rank's greedy completions per benchmark, from the last run
        self.save_completions = save_completions
        self.completions: list[dict[str, Any]] = []  # with save_completions: every rank's, after the last run

    @classmethod
    def from_config(cls, cfg, tokenizer, dist, log: Callable[[str], None] | None = None,
                    grow_prompt_length: bool = False) -> "Evaluator":
        """Built from the run's Config (eval.*, data.template, rollout.stop and max_new_tokens, train.seed) and DistInfo.

        Benchmark prompts longer than data.max_prompt_length are an error, or with `grow_prompt_length` (an
        engine not built yet) raise cfg.data.max_prompt_length to the longest (`fit_prompt_length`).
        """
        e, r = cfg.eval, cfg.rollout
        if not e.files:
            raise UserError("eval.files is empty: give prepared benchmark files, e.g. eval.files=[math500=data/math500/test.parquet]")
        for key, value in [("eval.max_new_tokens", e.max_new_tokens), ("eval.max_prompts", e.max_prompts),
                           ("eval.every_steps", e.every_steps)]:
            if value < 0:
                raise UserError(f"{key} must be >= 0, got {value} (in {cfg.source})")
        max_new_tokens = e.max_new_tokens or r.max_new_tokens
        if r.engine == "vllm" and max_new_tokens > r.max_new_tokens:
            raise UserError(f"eval.max_new_tokens = {max_new_tokens} exceeds rollout.max_new_tokens = {r.max_new_tokens}, "
                            f"which sizes the vllm engine's context; raise rollout.max_new_tokens (in {cfg.source})")
        benchmarks, sizes = load_benchmarks(e.files, cfg.data.template, tokenizer, cfg.data.templates_file, e.max_prompts,
                                            cfg.data.skip_malformed, log if dist.rank == 0 else None)
        length = fit_prompt_length(benchmarks, cfg.data.max_prompt_length, grow_prompt_length)
        if length > cfg.data.max_prompt_length:
            if log and dist.rank == 0:
                log(f"eval: data.max_prompt_length raised from {cfg.data.max_prompt_length} to {length} tokens, the "
                    "longest benchmark prompt, so that every prompt is evaluated")
            cfg.data.max_prompt_length = length
        stop = stop_strings(cfg.data.template, cfg.data.templates_file, r.stop)
        return cls(benchmarks, k=e.k, temperature=e.temperature, max_new_tokens=max_new_tokens, stop=stop,
                   seed=cfg.train.seed, rank=dist.rank, world_size=dist.world_size, device=dist.device, log=log,
                   sizes=sizes, save_completions=e.save_completions)

    def run(self, engine) -> dict[str, float]:
        """Generate, verify and count every benchmark; returns the metrics summed over ranks (same on every rank)."""
        import torch.distributed as dist  # torch: imported here so launch/eval.py checks its input fast

        from grpo.metrics import reduce_across_ranks

        self.samples, self.completions = [], []
        sums: dict[str, float] = {}
        for index, (name, records) in enumerate(self.benchmarks.items()):
            counts = self._benchmark(index, name, records, engine)
            sums.update({f"{name}\t{field}": float(value) for field, value in asdict(counts).items()})
        total = reduce_across_ranks(sums, {}, self.device)
        if self.save_completions and self.world_size > 1 and dist.is_initialized():  # no group: this rank's own
            shares: list[Any] = [None] * self.world_size
            dist.all_gather_object(shares, self.completions)
            self.completions = [c for share in shares for c in share]
        metrics: dict[str, float] = {}
        for name in self.benchmarks:
            fields = {f: total[f"{name}\t{f}"] for f in BenchmarkCounts.__dataclass_fields__}
            metrics.update(benchmark_metrics(name, BenchmarkCounts(**fields), self.k, self.sizes[name]))
        return metrics

    def _benchmark(self, index: int, name: str, records: list[PromptRecord], engine) -> BenchmarkCounts:
        mine = records[self.rank::self.world_size]
        counted = bool(mine)
        # A rank left without prompts still generates (one prompt, not counted): tensor-parallel vLLM
        # peers submit their prompts together, so every rank must make the same generate calls.
        prompt_ids = [r.prompt_ids for r in (mine or records[:1])]
        start = time.perf_counter()
        greedy = engine.generate(prompt_ids, SamplingSettings(n=1, temperature=1.0, top_k=1,
                                                              max_new_tokens=self.max_new_tokens, stop=self.stop,
                                                              seed=self.seed))
        sampled = [[] for _ in prompt_ids]
        if self.k:
            seed = sampling_seed(self.seed, self.rank, index)  # distinct per rank and benchmark
            sampled = engine.generate(prompt_ids, SamplingSettings(n=self.k, temperature=self.temperature,
                                                                   max_new_tokens=self.max_new_tokens, stop=self.stop,
                                                                   seed=seed))
        generate_s = time.perf_counter() - start
        counts = BenchmarkCounts()
        if not counted:
            return counts
        kinds = [kind_of(r.data_source) for r in mine]
        items = [(kind, g[0].text, r.ground_truth) for kind, g, r in zip(kinds, greedy, mine)]
        items += [(kind, c.text, r.ground_truth) for kind, group, r in zip(kinds, sampled, mine) for c in group]
        verdicts, verify_metrics = verify_batch(items)
        greedy_ok, sampled_ok = verdicts[:len(mine)], verdicts[len(mine):]
        for p, (kind, record) in enumerate(zip(kinds, mine)):
            group_ok = sampled_ok[p * self.k:(p + 1) * self.k]
            answers = [answer_key(kind, c.text) for c in sampled[p]]
            counts.add(greedy_ok[p], len(greedy[p][0].token_ids), group_ok, answers)
            if self.save_completions:
                base = {"benchmark": name, "index": record.index, "ground_truth": record.ground_truth}
                self.completions.append({**base, "sample": "greedy", "response": greedy[p][0].text,
                                         "correct": bool(greedy_ok[p])})
                self.completions += [{**base, "sample": j, "response": c.text, "correct": bool(ok)}
                                     for j, (c, ok) in enumerate(zip(sampled[p], group_ok))]
        self.samples += [{"benchmark": name, "index": r.index, "prompt": r.prompt_text, "response": g[0].text,
                          "correct": bool(ok), "ground_truth": r.ground_truth}
                         for r, g, ok in list(zip(mine, greedy, greedy_ok))[:self.num_samples]]
        if self.log:
            failed = int(verify_metrics["reward/timeouts"] + verify_metrics["reward/errors"])
            note = f", {failed} verifications timed out or failed (counted wrong)" if failed else ""
            self.log(f"eval {name}: {len(records)} prompts ({len(mine)} on rank 0) x (1 greedy + {self.k} sampled) "
                     f"generated in {generate_s:.1f}s{note}")
        return counts


# ---------------------------------------------------------------- presenting results


def by_benchmark(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """{'eval/b/pass@1': x} -> {'b': {'pass@1': x}}, in the order the metrics came."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith("eval/"):
            name, _, metric = key[len("eval/"):].rpartition("/")
            out.setdefault(name, {})[metric] = value
    return out


def format_table(metrics: dict[str, float]) -> str:
    """A plain-text table, one row per benchmark, one column per metric (n and length as numbers, the rest as rates)."""
    table = by_benchmark(metrics)
    columns = list(dict.fromkeys(m for row in table.values() for m in row))
    width = max([len("benchmark")] + [len(name) for name in table])
    lines = [f"{'benchmark':<{width}}" + "".join(f"  {c:>8}" for c in columns)]
    for name, row in table.items():
        cells = "".join(f"  {'-':>8}" if c not in row else f"  {row[c]:>8.0f}" if c in ("n", "size") else
                        f"  {row[c]:>8.1f}" if c == "length" else f"  {row[c]:>8.3f}" for c in columns)
        lines.append(f"{name:<{width}}{cells}")
    return "\n".join(lines)


def write_eval_json(path: str | Path, metrics: dict[str, float], meta: dict[str, Any] | None = None) -> Path:
    """Write {..meta, "benchmarks": {name: {metric: value}}, "metrics": {flat key: value}} as JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**(meta or {}), "benchmarks": by_benchmark(metrics), "metrics": metrics}, indent=2) + "\n")
    return path
