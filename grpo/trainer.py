"""The Trainer: builds the components from a Config, and `fit()` runs THE loop, the same on every rank.

One step: prompts -> n completions each (generation mode) -> rewards -> group advantages ->
reference logprobs -> micro-batched policy loss, backward, optimizer step (training mode) ->
push the new weights into the rollout engine -> log. Each rank owns its prompts' whole groups, so
advantages need no communication; the loss normaliser and the logged metrics are reduced over ranks.
"""
from __future__ import annotations

import difflib
import os
import random
import time
from pathlib import Path

import torch

from grpo.algorithms import (ADVANTAGES, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES, groups_with_signal,
                             kl_penalised_rewards, overlong_penalty, truncated_importance_weights, whiten)
from grpo.batching import (assign_advantages, build_micro_batches, local_counts, split_to_count, step_norm,
                            token_budget_bounds)
from grpo.checkpoint import load_checkpoint, remove_incomplete, resolve_resume, save_checkpoint
from grpo.config import Config
from grpo.data import PromptSampler, load_prompt_records, load_tokenizer
from grpo.device import init_distributed, max_memory_allocated_gb, peak_rss_gb
from grpo.errors import UserError
from grpo.evaluate import Evaluator, format_table, should_evaluate
from grpo.metrics import MetricsWriter, PhaseTimer, reduce_across_ranks, reflection_count
from grpo.report import write_report
from grpo.rewards import RewardFunction
from grpo.rollout import ENGINES, build_rollout_engine
from grpo.templates import load_user_templates, template_stop_strings
from grpo.types import Completion, MicroBatch, PromptRecord, SamplingSettings
from grpo.weight_sync import generation_mode, push_weights, training_mode

class Trainer:
    def __init__(self, cfg: Config):
        _check_choices(cfg)
        _check_model_path(cfg.model.path)
        self.dist = init_distributed()
        self.cfg = cfg.finalize(self.dist.world_size)
        self.run_dir = Path(cfg.log.dir)
        if self.dist.rank == 0:
            cfg.save(self.run_dir / "config.yaml")
        self.tokenizer = load_tokenizer(cfg.model.path)
        templates = load_user_templates(cfg.data.templates_file) if cfg.data.templates_file else None
        records, report = load_prompt_records(cfg.data.train_files, cfg.data.template, self.tokenizer,
                                              cfg.data.max_prompt_length, templates, cfg.data.skip_malformed)
        if report and self.dist.rank == 0:
            print("data: " + report.describe(cfg.data.max_prompt_length), flush=True)
        # the template's own stop strings (base_r1 ends at </answer>) plus any the recipe adds
        self.stop = list(dict.fromkeys(cfg.rollout.stop + template_stop_strings(cfg.data.template,
                                                                                cfg.data.templates_file or None)))
        self.sampler = PromptSampler(records, cfg.train.prompts_per_step, self.dist.rank, self.dist.world_size,
                                     seed=cfg.train.seed, shuffle=cfg.data.shuffle)
        self.data_sources = sorted({r.data_source for r in records})  # the same on every rank
        self.reward_fn = RewardFunction.from_config(cfg.reward)
        self.evaluator = (Evaluator.from_config(cfg, self.tokenizer, self.dist) if cfg.eval.files else None)
        # Rollout engine first, then the training engine: the order in which colocating vLLM with
        # ZeRO-3 was verified (shared/notes/colocate-cpu.md, order A).
        self.rollout = build_rollout_engine(cfg, self.tokenizer, self.dist)
        from grpo.train.deepspeed import DeepSpeedTrainEngine

        self.train = DeepSpeedTrainEngine(cfg, self.dist)
        _seed_everything(cfg.train.seed + self.dist.rank)
        self.step = 0
        if self.dist.rank == 0:
            for stale in remove_incomplete(self.run_dir):
                print(f"checkpoint: removed {stale.name}, left by a save that did not finish", flush=True)
        resume_from = resolve_resume(self.run_dir, cfg.checkpoint.resume)
        if resume_from is not None:
            self.step = load_checkpoint(self, resume_from)
            if self.dist.rank == 0:
                print(f"checkpoint: resumed from {resume_from} at step {self.step}", flush=True)
        # From here on the rollout engine only ever holds weights that came from the trainer (and may
        # have started from dummy weights): this push makes the two identical before the first step.
        self.rollout.wake_weights()
        push_weights(self.train, self.rollout, cfg.sync.bucket_mb)

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        """Train up to train.max_steps; returns this call's per-step metrics (identical on every rank)."""
        cfg = self.cfg
        writer = MetricsWriter(str(self.run_dir), self.dist.rank, self.step, cfg.train.max_steps,
                               cfg.log.tensorboard, cfg.log.progress)
        history = []
        try:
            if self.step == 0 and self._eval_due(0):
                self._evaluate(writer, 0)
            while self.step < cfg.train.max_steps:
                self.step += 1
                metrics, samples = self.train_step()
                if self._eval_due(self.step):
                    metrics.update(self._evaluate(writer, self.step))
                writer.log(self.step, metrics)
                writer.log_samples(self.step, samples)
                history.append(metrics)
                every = cfg.checkpoint.every_steps
                if every and (self.step % every == 0 or self.step == cfg.train.max_steps):
                    path = save_checkpoint(self, self.step, cfg.checkpoint.keep)
                    writer.message(f"checkpoint: saved {path}")
            if cfg.checkpoint.save_final:
                self.train.save_hf(str(self.run_dir / "final"), self.tokenizer)
                writer.message(f"saved the trained policy to {self.run_dir / 'final'}")
        finally:
            writer.close()
        if self.dist.rank == 0:
            print(f"report: {write_report(self.run_dir)}", flush=True)
        return history

    def _eval_due(self, step: int) -> bool:
        ev = self.cfg.eval
        return self.evaluator is not None and should_evaluate(step, self.cfg.train.max_steps, ev.every_steps,
                                                              ev.at_start, ev.at_end)

    def _evaluate(self, writer: MetricsWriter, step: int) -> dict[str, float]:
        """The eval benchmarks through the rollout engine, sharded over ranks (collective)."""
        generation_mode(self.train, self.rollout)
        metrics = self.evaluator.run(self.rollout)
        training_mode(self.rollout)
        writer.log_eval(step, metrics)
        writer.message(f"evaluation at step {step}:\n{format_table(metrics)}")
        return metrics

    def train_step(self) -> tuple[dict[str, float], list[dict]]:
        cfg, algo, timer, start = self.cfg, self.cfg.algo, PhaseTimer(), time.perf_counter()
        prompts, groups, rewards_PG, components, sums = self._rollout(timer)
        tries = sums.pop("dynamic/tries", None)
        bounds = self._token_budget_bounds(prompts, groups)
        micro_batches = build_micro_batches(prompts, groups, cfg.train.micro_batch_size, self.tokenizer.pad_token_id,
                                            self.dist.device, algo.mask_truncated, bounds)
        with timer("logprobs"):
            self._reference_and_old_logprobs(micro_batches)
        if self.train.ref_engine is not None and algo.kl_in == "reward":
            kl_sum_PG = torch.tensor([float(kl_estimate.sum()) for kl_estimate in self._sequence_kls(micro_batches)])
            rewards_PG = kl_penalised_rewards(rewards_PG, kl_sum_PG.view_as(rewards_PG), algo.kl_coef)
        assign_advantages(micro_batches, self._advantages(rewards_PG))
        with timer("train"):
            train_sums, maxes, grad_norm = self._optimize(micro_batches)
        with timer("sync"):
            self.rollout.wake_weights()
            sync_metrics = push_weights(self.train, self.rollout, cfg.sync.bucket_mb)
        timer.seconds["step"] = time.perf_counter() - start
        sums.update(train_sums)
        sums.update(_reward_sums(rewards_PG, components, groups))
        sums.update(self._per_source_sums(prompts, components))
        sums["response/reflection_count"] = float(reflection_count([c.text for g in groups for c in g]))
        sums.update(local_counts(micro_batches))
        maxes["train/micro_batches"] = float(len(micro_batches))  # per rank, the same on every rank
        sums["response/tokens"] = float(sum(len(c.token_ids) for g in groups for c in g))
        if tries is not None:
            maxes["dynamic/tries"] = tries  # the same on every rank: they sample in lockstep
        maxes.update({"response/length_max": max(len(c.token_ids) for g in groups for c in g),
                      "memory/peak_rss_gb": peak_rss_gb(), "memory/device_peak_gb": max_memory_allocated_gb(),
                      **timer.as_metrics()})
        total = reduce_across_ranks(sums, maxes, self.dist.device)
        return self._step_metrics(total, grad_norm, sync_metrics), self._samples(prompts, groups, rewards_PG)

    # -- pieces of a step ----------------------------------------------------------------------
    def _rollout(self, timer: PhaseTimer):
        """Generate and score this rank's prompts; with dynamic sampling, keep only groups that carry a
        signal and sample more prompts (every rank in lockstep) until each rank has enough or the tries
        run out, then fill up with dropped groups so every rank trains on the same number of sequences.
        """
        algo, need = self.cfg.algo, self.cfg.derived.prompts_per_rank
        kept, dropped, tries = [], [], 0
        self._scoring_counts: dict[str, float] = {}
        while True:
            tries += 1
            prompts = self.sampler.next_batch()
            with timer("generate"):
                generation_mode(self.train, self.rollout)
                groups = self.rollout.generate([p.prompt_ids for p in prompts], self._sampling(tries))
                training_mode(self.rollout)
            with timer("score"):
                rewards_PG, components = self._score(prompts, groups)
            signal_P = groups_with_signal(rewards_PG) if algo.dynamic_sampling else torch.ones(len(prompts), dtype=torch.bool)
            n = self.cfg.rollout.n
            for p, record in enumerate(prompts):
                entry = (record, groups[p], rewards_PG[p], components[p * n:(p + 1) * n])
                (kept if signal_P[p] else dropped).append(entry)
            if not algo.dynamic_sampling:
                break
            short = reduce_across_ranks({}, {"short": float(len(kept) < need)}, self.dist.device)["short"]
            if not short or tries >= algo.dynamic_sampling_max_tries:
                break
        filled = max(need - len(kept), 0)
        chosen = kept[:need] + dropped[:filled]
        stats = {"dynamic/tries": float(tries), "dynamic/filled_groups": float(filled),
                 "dynamic/dropped_groups": float(len(dropped))} if algo.dynamic_sampling else {}
        stats.update(self._scoring_counts)  # reward/timeouts and reward/errors, summed over ranks
        return ([c[0] for c in chosen], [c[1] for c in chosen], torch.stack([c[2] for c in chosen]),
                [comp for c in chosen for comp in c[3]], stats)

    def _score(self, prompts: list[PromptRecord], groups: list[list[Completion]]):
        """Rewards (in the scoring pool, under its per-sample timeout) plus DAPO's overlong shaping."""
        algo, max_len = self.cfg.algo, self.cfg.rollout.max_new_tokens
        items = [(record.data_source, c.text, record.ground_truth, record.prompt_text)
                 for record, group in zip(prompts, groups) for c in group]
        results, counts = self.reward_fn.score_batch(items)
        lengths = torch.tensor([len(c.token_ids) for group in groups for c in group])
        penalty = overlong_penalty(lengths, max_len, algo.overlong_buffer, algo.overlong_penalty)
        rewards = torch.tensor([r.score for r in results], dtype=torch.float32) + penalty
        components = [{**r.components, "overlong_penalty": float(p)} for r, p in zip(results, penalty)]
        self._scoring_counts = {k: self._scoring_counts.get(k, 0.0) + v for k, v in counts.items()}
        return rewards.view(len(prompts), -1), components

    def _per_source_sums(self, prompts: list[PromptRecord], components: list[dict[str, float]]) -> dict[str, float]:
        """Accuracy sums and counts per data source; every rank emits every source so the keys match."""
        n = self.cfg.rollout.n
        sums = {f"source/{name}/{kind}": 0.0 for name in self.data_sources for kind in ("accuracy_sum", "count")}
        for p, record in enumerate(prompts):
            sums[f"source/{record.data_source}/accuracy_sum"] += sum(c.get("accuracy", 0.0)
                                                                     for c in components[p * n:(p + 1) * n])
            sums[f"source/{record.data_source}/count"] += n
        return sums

    def _reference_and_old_logprobs(self, micro_batches: list[MicroBatch]) -> None:
        """Frozen reference logprobs (KL) and, when any update would not be on-policy, the old ones."""
        algo, temperature = self.cfg.algo, self.cfg.rollout.temperature
        need_old = (algo.ppo_epochs > 1 or algo.mini_batches > 1 or algo.importance_cap > 0
                    or (algo.kl_in == "reward" and self.train.ref_engine is not None))
        for mb in micro_batches:
            if self.train.ref_engine is not None:
                mb.ref_logp_BT = self.train.reference_logprobs(mb, temperature)
            if need_old:
                mb.old_logp_BT = self.train.old_policy_logprobs(mb, temperature)

    def _sequence_kls(self, micro_batches: list[MicroBatch]) -> list[torch.Tensor]:
        """Per sequence, the summed KL estimate between the old policy and the reference."""
        kl = KL_ESTIMATORS[self.cfg.algo.kl_estimator]
        return [seq for mb in micro_batches
                for seq in (kl(mb.old_logp_BT, mb.ref_logp_BT) * mb.response_mask_BT).sum(-1).cpu()]

    def _advantages(self, rewards_PG: torch.Tensor) -> torch.Tensor:
        estimator = ADVANTAGES[self.cfg.algo.advantage]
        adv_PG = estimator.fn(rewards_PG, eps=self.cfg.algo.adv_eps)
        if estimator.whiten_over_batch:
            total = reduce_across_ranks({"n": float(adv_PG.numel()), "sum": float(adv_PG.sum()),
                                         "sq": float((adv_PG ** 2).sum())}, {}, self.dist.device)
            mean = total["sum"] / total["n"]
            std = max(total["sq"] / total["n"] - mean * mean, 0.0) ** 0.5
            adv_PG = whiten(adv_PG, mean, std, self.cfg.algo.adv_eps)
        return adv_PG

    def _token_budget_bounds(self, prompts, groups) -> list[tuple[int, int]] | None:
        """Micro-batch ranges cut by train.micro_batch_tokens, as many on every rank (None when it is off)."""
        t = self.cfg.train
        if not t.micro_batch_tokens:
            return None
        lengths = [(len(record.prompt_ids), len(c.token_ids)) for record, group in zip(prompts, groups) for c in group]
        bounds = token_budget_bounds(lengths, t.micro_batch_tokens, t.micro_batch_size)
        count = reduce_across_ranks({}, {"micro_batches": len(bounds)}, self.dist.device)["micro_batches"]
        return split_to_count(bounds, int(count), lengths)

    def _optimize(self, micro_batches: list[MicroBatch]):
        """algo.ppo_epochs passes over the rollout, each in algo.mini_batches optimizer steps.

        Returns local sums (per-update means added up over updates), local maxes and the mean grad norm.
        """
        algo, temperature = self.cfg.algo, self.cfg.rollout.temperature
        policy_loss, aggregate = POLICY_LOSSES[algo.policy_loss], LOSS_AGGREGATIONS[algo.loss_agg]
        kl_estimator = KL_ESTIMATORS[algo.kl_estimator]
        # cut by tokens, all of a step's micro-batches make one update (algo.mini_batches is 1 then)
        per_update = len(micro_batches) if self.cfg.train.micro_batch_tokens else self.cfg.derived.micro_batches_per_update
        updates = [micro_batches[i:i + per_update] for i in range(0, len(micro_batches), per_update)]
        norms = [step_norm(reduce_across_ranks(local_counts(chunk), {}, self.dist.device), self.cfg.rollout.max_new_tokens)
                 for chunk in updates]
        sums = dict.fromkeys(["loss/policy", "loss/kl", "loss/total", "policy/entropy", "policy/approx_kl",
                              "policy/clipped_tokens", "policy/dual_clipped_tokens", "rollout/logprob_diff_sum",
                              "rollout/importance_weight_sum", "rollout/importance_capped_tokens"], 0.0)
        maxes = {"rollout/logprob_diff_max": 0.0}
        grad_norms = []
        for epoch in range(algo.ppo_epochs):
            for chunk, norm in zip(updates, norms):
                for i, mb in enumerate(chunk):
                    logp_BT, entropy_BT = self.train.policy_logprobs(mb, temperature)
                    mask_BT = mb.response_mask_BT
                    # With one on-policy update the policy that sampled is the current one, so the old
                    # logprobs are these, detached (a separate forward would compute the same numbers).
                    old_logp_BT = mb.old_logp_BT if mb.old_logp_BT is not None else logp_BT.detach()
                    pg_BT, pg_metrics = policy_loss(logp_BT, old_logp_BT, mb.advantages_B, mask_BT,
                                                    clip_low=algo.clip_low, clip_high=algo.clip_high,
                                                    dual_clip=algo.dual_clip)
                    if algo.importance_cap > 0:
                        weights_BT, w_metrics = truncated_importance_weights(
                            old_logp_BT, mb.sampler_logp_BT, mask_BT, algo.importance_cap, algo.importance_level)
                        pg_BT = pg_BT * weights_BT
                        sums["rollout/importance_weight_sum"] += float(w_metrics["weight_sum"]) / algo.ppo_epochs
                        sums["rollout/importance_capped_tokens"] += float(w_metrics["capped_tokens"]) / algo.ppo_epochs
                    loss_BT = pg_BT
                    if mb.ref_logp_BT is not None:
                        kl_BT = kl_estimator(logp_BT, mb.ref_logp_BT)
                        if algo.kl_in == "loss":
                            loss_BT = loss_BT + algo.kl_coef * kl_BT
                        sums["loss/kl"] += float(aggregate(kl_BT.detach(), mask_BT, norm))
                    if algo.entropy_coef > 0:
                        loss_BT = loss_BT - algo.entropy_coef * entropy_BT
                    loss = aggregate(loss_BT, mask_BT, norm)
                    self.train.backward(loss, last=i == len(chunk) - 1)
                    if i == len(chunk) - 1:
                        grad_norms.append(self.train.step())
                    else:
                        self.train.micro_step()
                    sums["loss/policy"] += float(aggregate(pg_BT.detach(), mask_BT, norm))
                    sums["loss/total"] += float(loss.detach())
                    sums["policy/entropy"] += float(aggregate(entropy_BT.detach(), mask_BT, norm))
                    sums["policy/approx_kl"] += float(aggregate(KL_ESTIMATORS["k3"](logp_BT.detach(), old_logp_BT),
                                                                mask_BT, norm))
                    sums["policy/clipped_tokens"] += float(pg_metrics["clipped_tokens"])
                    sums["policy/dual_clipped_tokens"] += float(pg_metrics.get("dual_clipped_tokens", 0.0))
                    if epoch == 0:  # the engine/trainer mismatch, on the weights the engine sampled with
                        generated_BT = mb.attention_mask_BL[:, mb.prompt_width:].float()  # masked or not
                        diff_BT = (old_logp_BT - mb.sampler_logp_BT).abs() * generated_BT
                        sums["rollout/logprob_diff_sum"] += float(diff_BT.sum())
                        maxes["rollout/logprob_diff_max"] = max(maxes["rollout/logprob_diff_max"], float(diff_BT.max()))
        return sums, maxes, sum(grad_norms) / len(grad_norms)

    def _sampling(self, attempt: int = 1) -> SamplingSettings:
        r = self.cfg.rollout
        # distinct on every rank, step and dynamic-sampling attempt, reproducible from train.seed
        seed = (self.cfg.train.seed * 1_000_003 + self.dist.rank * 10_007 + self.step * 101 + attempt) % 2**63
        return SamplingSettings(n=r.n, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                max_new_tokens=r.max_new_tokens, stop=self.stop, seed=seed)

    def _step_metrics(self, total: dict[str, float], grad_norm: float,
                      sync_metrics: dict[str, float]) -> dict[str, float]:
        updates = self.cfg.derived.optimizer_steps_per_step
        count = total.pop("reward/count")
        mean = total.pop("reward/sum") / count
        variance = max(total.pop("reward/sq_sum") / count - mean * mean, 0.0)
        tokens, loss_tokens = total.pop("response/tokens"), total.pop("norm/tokens")
        total.pop("norm/sequences")
        metrics = {
            "reward/mean": mean,
            "reward/std": variance ** 0.5,
            "reward/accuracy": total.pop("reward/accuracy_sum") / count,
            "reward/format": total.pop("reward/format_sum") / count,
            "reward/overlong_penalty": total.pop("reward/overlong_sum") / count,
            "response/length_mean": tokens / count,
            "response/length_max": total.pop("response/length_max"),
            "response/clipped_frac": total.pop("response/clipped_count") / count,
            "loss/total": total.pop("loss/total") / updates,
            "loss/policy": total.pop("loss/policy") / updates,
            "loss/kl": total.pop("loss/kl") / updates,
            "policy/entropy": total.pop("policy/entropy") / updates,
            "policy/approx_kl": total.pop("policy/approx_kl") / updates,
            "policy/clip_frac": total.pop("policy/clipped_tokens") / max(loss_tokens, 1.0) / self.cfg.algo.ppo_epochs,
            "policy/dual_clip_frac": total.pop("policy/dual_clipped_tokens") / max(loss_tokens, 1.0) / self.cfg.algo.ppo_epochs,
            "train/grad_norm": grad_norm,
            "train/lr": self.train.lr(),
            "train/loss_tokens": loss_tokens,
            "rollout/logprob_diff_mean": total.pop("rollout/logprob_diff_sum") / tokens,
            "rollout/logprob_diff_max": total.pop("rollout/logprob_diff_max"),
            "throughput/tokens_per_s": tokens / total["time/step"],
            **sync_metrics,
        }
        weight_sum, capped = total.pop("rollout/importance_weight_sum"), total.pop("rollout/importance_capped_tokens")
        if self.cfg.algo.importance_cap > 0:
            metrics["rollout/importance_weight_mean"] = weight_sum / max(loss_tokens, 1.0)
            metrics["rollout/importance_capped_frac"] = capped / max(loss_tokens, 1.0)
        metrics["response/reflection_rate"] = total.pop("response/reflection_count") / count
        for name in self.data_sources:
            seen = total.pop(f"source/{name}/count")
            accuracy = total.pop(f"source/{name}/accuracy_sum")
            if seen:
                metrics[f"reward/accuracy/{name}"] = accuracy / seen
        metrics.update(total)  # phase times and memory peaks (max over ranks), dynamic-sampling counts
        return metrics

    def _samples(self, prompts: list[PromptRecord], groups: list[list[Completion]], rewards_PG: torch.Tensor):
        every, count = self.cfg.log.samples_every, self.cfg.log.num_samples
        if self.dist.rank != 0 or every <= 0 or self.step % every != 0:
            return []
        return [{"prompt": prompts[p].prompt_text, "response": groups[p][0].text,
                 "reward": float(rewards_PG[p, 0]), "ground_truth": prompts[p].ground_truth,
                 "data_source": prompts[p].data_source} for p in range(min(count, len(prompts)))]


def _reward_sums(rewards_PG: torch.Tensor, components: list[dict[str, float]], groups) -> dict[str, float]:
    return {"reward/count": float(rewards_PG.numel()), "reward/sum": float(rewards_PG.sum()),
            "reward/sq_sum": float((rewards_PG ** 2).sum()),
            "reward/accuracy_sum": sum(c.get("accuracy", 0.0) for c in components),
            "reward/format_sum": sum(c.get("format", 0.0) for c in components),
            "reward/overlong_sum": sum(c.get("overlong_penalty", 0.0) for c in components),
            "response/clipped_count": float(sum(c.finish_reason == "length" for g in groups for c in g))}


def _check_choices(cfg: Config) -> None:
    """Names that pick a function from a registry must exist; say which ones do."""
    for key, value, registry in [("algo.advantage", cfg.algo.advantage, ADVANTAGES),
                                 ("algo.policy_loss", cfg.algo.policy_loss, POLICY_LOSSES),
                                 ("algo.loss_agg", cfg.algo.loss_agg, LOSS_AGGREGATIONS),
                                 ("algo.kl_estimator", cfg.algo.kl_estimator, KL_ESTIMATORS),
                                 ("rollout.engine", cfg.rollout.engine, ENGINES)]:
        if value not in registry:
            close = difflib.get_close_matches(value, list(registry), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{key}: unknown choice {value!r} (in {cfg.source}); available: "
                            f"{', '.join(sorted(registry))}{hint}")
    least = ADVANTAGES[cfg.algo.advantage].min_group_size
    if cfg.rollout.n < least:
        raise UserError(f"rollout.n = {cfg.rollout.n}: algo.advantage={cfg.algo.advantage} compares completions "
                        f"within a group, so it needs n >= {least} (in {cfg.source})")


def _check_model_path(path: str) -> None:
    """Fail early, before any process group exists, on a local model folder that is not there."""
    looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1
    if looks_local and not Path(os.path.expanduser(path)).exists():
        raise UserError(f"model.path: no such folder {path!r}. Give a local model folder or a hub id like "
                        "'Qwen/Qwen2.5-0.5B'; build the demo's base model with: python launch/build_base.py --out .cache/base")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
