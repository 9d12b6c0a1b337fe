"""The Trainer: builds the components from a Config, and `fit()` runs THE loop, the same on every rank.

One step (`train_step`): prompts -> n completions each, scored (generation mode, grpo/experience.py)
-> micro-batches -> reference (and old) logprobs -> KL penalty in the reward, when chosen ->
advantages: per completion from its group (GRPO and relatives), or per token by GAE from the
critic's values, after which the critic is updated (PPO, algo.advantage=gae) -> the policy update
(training mode, grpo/update.py) -> push the new weights into the rollout engine -> the step's
statistics, reduced over ranks (grpo/stats.py). Each rank owns its prompts' whole groups, so group
advantages need no communication; the loss normaliser, batch-wide whitening and the logged
statistics are reduced over ranks.
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from grpo import watchdog
from grpo.algorithms import ADVANTAGES, KL_ESTIMATORS, kl_penalised_rewards, whiten
from grpo.batching import (assign_advantages, assign_gae_advantages, build_micro_batches, split_to_count,
                           token_budget_bounds)
from grpo.checkpoint import CRITIC, POLICY, checkpoint_to_resume, load_checkpoint, remove_incomplete, save_checkpoint
from grpo.config import Config
from grpo.data import PromptSampler, check_model_path, load_prompt_records, load_tokenizer
from grpo.device import init_distributed, max_memory_allocated_gb, peak_rss_gb, rng_state, set_rng_state
from grpo.errors import RunFailed, UserError
from grpo.evaluate import Evaluator, format_table, should_evaluate
from grpo.experience import collect_rollout
from grpo.metrics import MetricsWriter, PhaseTimer, is_reflective, reduce_across_ranks, reduce_stats
from grpo.report import write_report
from grpo.rewards import RewardFunction
from grpo.rollout import build_rollout_engine
from grpo.stats import CriticStats, ForwardFlopStats, PhaseStats, RolloutStats, UpdateStats
from grpo.templates import stop_strings
from grpo.types import MicroBatch, Rollout, SamplingSettings, sampling_seed
from grpo.update import critic_update, policy_update
from grpo.weight_sync import generation_mode, push_weights, training_mode


class Trainer:
    def __init__(self, cfg: Config):
        # 1. The process group, the checkpoint to resume from, then the config's per-rank numbers (they need the
        #    world size).
        check_model_path(cfg.model.path, "model.path")
        self.dist = init_distributed(cfg.dist.timeout_s + watchdog.BACKEND_GRACE_S)
        self.run_dir = Path(cfg.log.dir)
        # (the checkpoint first: a world size that cannot split the saved run's global batch is reported as a
        # resume problem, see checkpoint_to_resume)
        resume_from = self._checkpoint_to_resume(cfg)
        self.cfg = cfg.finalize(self.dist.world_size)
        if self.dist.rank == 0:
            cfg.save(self.run_dir / "config.yaml")
        # 2. Data: templated, tokenised prompts, and this rank's sampler over them.
        self.tokenizer = load_tokenizer(cfg.model.path)
        records, report = load_prompt_records(cfg.data.train_files, cfg.data.template, self.tokenizer,
                                              cfg.data.max_prompt_length, cfg.data.templates_file,
                                              cfg.data.skip_malformed)
        if report and self.dist.rank == 0:
            print("data: " + report.describe(cfg.data.max_prompt_length), flush=True)
        self.stop = stop_strings(cfg.data.template, cfg.data.templates_file, cfg.rollout.stop)
        self.sampler = PromptSampler(records, cfg.train.prompts_per_step, self.dist.rank, self.dist.world_size,
                                     seed=cfg.train.seed, shuffle=cfg.data.shuffle)
        self.data_sources = sorted({r.data_source for r in records})  # the same on every rank
        # 3. Rewards and evaluation (input mistakes surface before any model loads).
        self.reward_fn = RewardFunction.from_config(cfg.reward)
        self.evaluator = Evaluator.from_config(cfg, self.tokenizer, self.dist) if cfg.eval.files else None
        # 4. Engines: the rollout engine first, then the training engine, the order in which colocating
        #    vLLM with ZeRO-3 was verified (shared/notes/colocate-cpu.md, order A).
        self.rollout = build_rollout_engine(cfg, self.tokenizer, self.dist)
        from grpo.train.deepspeed import DeepSpeedTrainEngine

        self.policy = DeepSpeedTrainEngine(cfg, self.dist)
        self.engines = {POLICY: self.policy}  # every engine a checkpoint saves, by folder name
        self.critic = None
        if cfg.algo.advantage == "gae":  # PPO: a value model beside the policy
            from grpo.train.critic import DeepSpeedCriticEngine

            self.critic = self.engines[CRITIC] = DeepSpeedCriticEngine(cfg, self.dist)
        _seed_everything(cfg.train.seed + self.dist.rank)
        # 5. Resume: engine states, data cursor and RNG states of that checkpoint.
        self.step = self._resume(resume_from) if resume_from is not None else 0
        # 6. From here on the rollout engine only ever holds weights that came from the trainer (and may
        #    have started from dummy weights): this push makes the two identical before the first step.
        self.rollout.wake_weights()
        push_weights(self.policy, self.rollout, cfg.sync.bucket_mb, cfg.sync.lora_mode)

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        """Train up to train.max_steps; returns this call's per-step metrics (identical on every rank)."""
        cfg = self.cfg
        writer = MetricsWriter(str(self.run_dir), self.dist.rank, self.step, cfg.train.max_steps,
                               cfg.log.tensorboard, cfg.log.progress)
        history = []
        watchdog.start(self.dist.rank, self.dist.world_size, cfg.dist.timeout_s)
        try:
            if self.step == 0 and self._eval_due(0):
                self._evaluate(writer, 0)
            while self.step < cfg.train.max_steps:
                self.step += 1
                watchdog.enter("begin step", self.step)
                metrics, samples = self.train_step()
                if self._eval_due(self.step):
                    metrics.update(self._evaluate(writer, self.step))
                writer.log(self.step, metrics)
                writer.log_samples(self.step, samples)
                history.append(metrics)
                self._check_skipped_updates()
                every = cfg.checkpoint.every_steps
                if every and (self.step % every == 0 or self.step == cfg.train.max_steps):
                    writer.message(f"checkpoint: saved {self._save_checkpoint()}")
            if cfg.checkpoint.save_final:
                watchdog.enter("save final")
                self.policy.save_hf(str(self.run_dir / "final"), self.tokenizer)
                writer.message(f"saved the trained policy to {self.run_dir / 'final'}")
        except Exception as e:
            if _is_collective_timeout(e):  # the backend's own timeout: say where every rank was
                raise RunFailed(f"step {self.step}: a collective waited longer than dist.timeout_s + "
                                f"{watchdog.BACKEND_GRACE_S:g} s ({str(e).splitlines()[0]}); where the ranks were:\n"
                                f"{watchdog.describe_positions()}") from e
            raise
        finally:
            watchdog.stop()
            writer.close()
        if self.dist.rank == 0:
            print(f"report: {write_report(self.run_dir)}", flush=True)
        return history

    def train_step(self) -> tuple[dict[str, float], list[dict]]:
        """One RL step on every rank; returns the step's metrics (reduced over ranks) and rank 0's samples."""
        cfg, algo, timer, start = self.cfg, self.cfg.algo, PhaseTimer(), time.perf_counter()
        rollout = collect_rollout(sampler=self.sampler, engine=self.rollout, source=self.policy,
                                  reward_fn=self.reward_fn, sampling=self._sampling, need=cfg.derived.prompts_per_rank,
                                  algo=algo, max_new_tokens=cfg.rollout.max_new_tokens, any_rank=self._any_rank,
                                  timer=timer)
        micro_batches = build_micro_batches(rollout.prompts, rollout.groups, cfg.train.micro_batch_size,
                                            self.tokenizer.pad_token_id, self.dist.device, algo.mask_truncated,
                                            self._token_budget_bounds(rollout))
        with timer("logprobs"):
            self._reference_and_old_logprobs(micro_batches)
        if self.policy.has_reference and algo.kl_in == "reward":
            self._penalise_kl_in_reward(rollout, micro_batches)
        per_update = (len(micro_batches) if cfg.train.micro_batch_tokens  # then one update per step
                      else cfg.derived.micro_batches_per_update)
        critic = None
        if self.critic is None:
            advantages = self._advantages(rollout.rewards_PG)
            assign_advantages(micro_batches, advantages)
        else:
            with timer("values"):
                for mb in micro_batches:
                    mb.old_values_BT = self.critic.old_values(mb)
            advantages = self._gae_advantages(rollout, micro_batches)
            with timer("train_critic"):
                critic = critic_update(self.critic, micro_batches, algo, cfg.critic, per_update=per_update,
                                       max_new_tokens=cfg.rollout.max_new_tokens, sum_over_ranks=self._sum_over_ranks)
        update, sync_metrics = None, {}
        if self.critic is None or self.step > cfg.critic.warmup_steps:  # critic warm-up: the policy waits
            with timer("train"):
                update = policy_update(self.policy, micro_batches, algo, temperature=cfg.rollout.temperature,
                                       per_update=per_update, max_new_tokens=cfg.rollout.max_new_tokens,
                                       sum_over_ranks=self._sum_over_ranks)
            with timer("sync"):
                self.rollout.wake_weights()
                sync_metrics = push_weights(self.policy, self.rollout, cfg.sync.bucket_mb, cfg.sync.lora_mode)
        timer.seconds["step"] = time.perf_counter() - start
        metrics = self._step_metrics(rollout, advantages, update, critic, timer, sync_metrics)
        return metrics, self._samples(rollout)

    # -- pieces of a step ----------------------------------------------------------------------
    def _sampling(self, attempt: int) -> SamplingSettings:
        """This step's sampling settings for dynamic-sampling round `attempt` (its seed differs per rank and round)."""
        r = self.cfg.rollout
        return SamplingSettings(n=r.n, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                max_new_tokens=r.max_new_tokens, stop=self.stop,
                                seed=sampling_seed(self.cfg.train.seed, self.dist.rank, self.step, attempt))

    def _any_rank(self, flag: bool) -> bool:
        return bool(reduce_across_ranks({}, {"flag": float(flag)}, self.dist.device)["flag"])

    def _sum_over_ranks(self, sums: dict[str, float]) -> dict[str, float]:
        return reduce_across_ranks(sums, {}, self.dist.device)

    def _token_budget_bounds(self, rollout: Rollout) -> list[tuple[int, int]] | None:
        """Micro-batch ranges cut by train.micro_batch_tokens, as many on every rank (None when it is off)."""
        t = self.cfg.train
        if not t.micro_batch_tokens:
            return None
        lengths = [(len(record.prompt_ids), len(c.token_ids)) for record, group in zip(rollout.prompts, rollout.groups)
                   for c in group]
        # row-packed forwards cost their real tokens, each distinct prompt once: the budget counts those (a critic's
        # forwards are not row-packed, so with one the micro-batches keep the padded size the critic will run)
        packed = self.policy.packs_rows and self.critic is None
        groups = [i for i, group in enumerate(rollout.groups) for _ in group] if packed else None
        bounds = token_budget_bounds(lengths, t.micro_batch_tokens, t.micro_batch_size, groups)
        count = reduce_across_ranks({}, {"micro_batches": len(bounds)}, self.dist.device)["micro_batches"]
        return split_to_count(bounds, int(count), lengths, groups)

    def _reference_and_old_logprobs(self, micro_batches: list[MicroBatch]) -> None:
        """Frozen reference logprobs (KL) and, when any update would not be on-policy, the old ones."""
        algo, temperature = self.cfg.algo, self.cfg.rollout.temperature
        need_old = (algo.ppo_epochs > 1 or algo.mini_batches > 1 or algo.importance_cap > 0
                    or (algo.kl_in == "reward" and self.policy.has_reference))
        for mb in micro_batches:
            if self.policy.has_reference:
                mb.ref_logp_BT = self.policy.reference_logprobs(mb, temperature)
            if need_old:
                mb.old_logp_BT = self.policy.old_policy_logprobs(mb, temperature)

    def _penalise_kl_in_reward(self, rollout: Rollout, micro_batches: list[MicroBatch]) -> None:
        """algo.kl_in=reward: each completion's reward loses kl_coef x its summed KL(old policy || reference)."""
        kl = KL_ESTIMATORS[self.cfg.algo.kl_estimator]
        kl_sum_PG = torch.tensor([float(seq) for mb in micro_batches
                                  for seq in (kl(mb.old_logp_BT, mb.ref_logp_BT) * mb.response_mask_BT).sum(-1).cpu()])
        kl_sum_PG = kl_sum_PG.view_as(rollout.rewards_PG)
        rollout.rewards_PG = kl_penalised_rewards(rollout.rewards_PG, kl_sum_PG, self.cfg.algo.kl_coef)
        rollout.kl_penalty_PG = self.cfg.algo.kl_coef * kl_sum_PG

    def _gae_advantages(self, rollout: Rollout, micro_batches: list[MicroBatch]) -> torch.Tensor:
        """PPO: per-token advantages and returns from the critic's values; the KL in the reward goes per token."""
        algo = self.cfg.algo
        scores_PG = rollout.rewards_PG if rollout.kl_penalty_PG is None else rollout.rewards_PG + rollout.kl_penalty_PG
        kl_per_token = None
        if rollout.kl_penalty_PG is not None:
            estimator = KL_ESTIMATORS[algo.kl_estimator]
            kl_per_token = lambda mb: estimator(mb.old_logp_BT, mb.ref_logp_BT)  # noqa: E731
        return assign_gae_advantages(micro_batches, scores_PG.flatten().tolist(), algo, kl_per_token,
                                     self._sum_over_ranks)

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

    def _step_metrics(self, rollout: Rollout, advantages: torch.Tensor, update: UpdateStats | None,
                      critic: CriticStats | None, timer: PhaseTimer, sync_metrics: dict[str, float]) -> dict[str, float]:
        """The step's statistics from every rank, as the logged metrics (a phase that did not run logs nothing)."""
        phases = PhaseStats(peaks={**timer.as_metrics(), "memory/peak_rss_gb": peak_rss_gb(),
                                   "memory/device_peak_gb": max_memory_allocated_gb()})
        forward = ForwardFlopStats(**self.policy.forward_flops)
        self.policy.forward_flops = {"computed": 0.0, "needed": 0.0}
        measured = [self._rollout_stats(rollout, advantages), phases, forward,
                    *(s for s in (update, critic) if s is not None)]
        reduced = reduce_stats(measured, self.dist.device)
        metrics = {key: value for stats in reduced for key, value in stats.metrics().items()}
        metrics["train/lr"] = self.policy.lr()
        if self.critic is not None:
            metrics["critic/lr"] = self.critic.lr()
        metrics.update(sync_metrics)
        metrics["throughput/tokens_per_s"] = reduced[0].response_tokens / metrics["time/step"]
        return metrics

    def _rollout_stats(self, rollout: Rollout, advantages: torch.Tensor) -> RolloutStats:
        """This rank's counts of what the rollout held (reduced over ranks by the caller)."""
        completions = rollout.completions()
        results = [r for group in rollout.results for r in group]
        reflective = [is_reflective(c.text) for c in completions]
        stats = RolloutStats(
            completions=float(len(completions)), reward_sum=float(rollout.rewards_PG.sum()),
            reward_sq_sum=float((rollout.rewards_PG ** 2).sum()),
            accuracy_sum=sum(r.components.get("accuracy", 0.0) for r in results),
            format_sum=sum(r.components.get("format", 0.0) for r in results),
            overlong_sum=float(rollout.overlong_PG.sum()),
            kl_penalty_sum=float(rollout.kl_penalty_PG.sum()) if rollout.kl_penalty_PG is not None else None,
            reward_timeouts=float(rollout.reward_timeouts), reward_errors=float(rollout.reward_errors),
            response_tokens=float(sum(len(c.token_ids) for c in completions)),
            response_length_max=float(max(len(c.token_ids) for c in completions)),
            clipped_responses=float(sum(c.finish_reason == "length" for c in completions)),
            reflective_responses=float(sum(reflective)),
            reflective_correct=sum(r.components.get("accuracy", 0.0) for r, flag in zip(results, reflective) if flag),
            advantages=float(advantages.numel()), advantage_sum=float(advantages.sum()),
            advantage_sq_sum=float((advantages ** 2).sum()),
            advantage_max=float(advantages.max()) if advantages.numel() else float("-inf"),
            advantage_min=float(advantages.min()) if advantages.numel() else float("inf"),
            accuracy_by_source=dict.fromkeys(self.data_sources, 0.0),
            completions_by_source=dict.fromkeys(self.data_sources, 0.0))
        for record, group in zip(rollout.prompts, rollout.results):
            stats.accuracy_by_source[record.data_source] += sum(r.components.get("accuracy", 0.0) for r in group)
            stats.completions_by_source[record.data_source] += len(group)
        if self.cfg.algo.dynamic_sampling:
            stats.tries, stats.filled_groups = float(rollout.tries), float(rollout.filled_groups)
            stats.dropped_groups = float(rollout.dropped_groups)
        else:
            stats.tries = stats.filled_groups = stats.dropped_groups = None
        return stats

    def _samples(self, rollout: Rollout) -> list[dict]:
        every, count = self.cfg.log.samples_every, self.cfg.log.num_samples
        if self.dist.rank != 0 or every <= 0 or self.step % every != 0:
            return []
        return [{"prompt": record.prompt_text, "response": group[0].text, "reward": float(rollout.rewards_PG[p, 0]),
                 "ground_truth": record.ground_truth, "data_source": record.data_source}
                for p, (record, group) in enumerate(zip(rollout.prompts[:count], rollout.groups))]

    def _check_skipped_updates(self) -> None:
        """Stop when an engine skipped train.max_skipped_steps optimizer updates in a row (NaN/inf gradient norm)."""
        limit = self.cfg.train.max_skipped_steps
        for name, engine in self.engines.items():
            if engine.skips_in_a_row >= limit:
                raise RunFailed(
                    f"step {self.step}: the {name}'s last {engine.skips_in_a_row} optimizer updates were skipped "
                    f"because the gradient norm was NaN or inf (train.max_skipped_steps = {limit}); the weights "
                    f"are those of its last applied update. Common causes: a learning rate too high "
                    f"(train.lr = {self.cfg.train.lr:g}), a reward function returning NaN or inf, or bf16 overflow; "
                    "metrics.jsonl shows train/skipped_steps per step.")

    # -- evaluation and checkpoints ----------------------------------------------------------------
    def _eval_due(self, step: int) -> bool:
        ev = self.cfg.eval
        return self.evaluator is not None and should_evaluate(step, self.cfg.train.max_steps, ev.every_steps,
                                                              ev.at_start, ev.at_end)

    def _evaluate(self, writer: MetricsWriter, step: int) -> dict[str, float]:
        """The eval benchmarks through the rollout engine, sharded over ranks (collective)."""
        watchdog.enter("evaluate")
        generation_mode(self.policy, self.rollout)
        metrics = self.evaluator.run(self.rollout)
        training_mode(self.rollout)
        writer.log_eval(step, metrics)
        writer.log_eval_samples(step, self.evaluator.samples)
        writer.log_eval_completions(step, self.evaluator.completions)
        writer.message(f"evaluation at step {step}:\n{format_table(metrics)}")
        return metrics

    def _save_checkpoint(self) -> Path:
        def write_shared(folder: Path) -> None:  # rank 0: what export and a rerun need besides the engines' states
            self.cfg.save(folder / "config.yaml")
            self.policy.model_config().save_pretrained(folder / "hf")
            self.tokenizer.save_pretrained(folder / "hf")
            adapter = self.policy.adapter_config()
            if adapter is not None:
                (folder / "hf" / "adapter_config.json").write_text(json.dumps(adapter, indent=1))

        watchdog.enter("checkpoint")
        rank_state = {"step": self.step, "sampler": self.sampler.state_dict(), "rng": rng_state(),
                      "world_size": self.dist.world_size}
        return save_checkpoint(self.run_dir, self.step, self.cfg.checkpoint.keep, self.engines, rank_state,
                               self.dist.rank, write_shared)

    def _checkpoint_to_resume(self, cfg: Config) -> Path | None:
        """checkpoint.resume resolved (None: a fresh start) and checked against this run's world size."""
        if self.dist.rank == 0:
            for stale in remove_incomplete(self.run_dir):
                print(f"checkpoint: removed {stale.name}, left by a save that did not finish", flush=True)
        return checkpoint_to_resume(self.run_dir, cfg.checkpoint.resume, self.dist.world_size,
                                    cfg.train.prompts_per_step)

    def _resume(self, path: Path) -> int:
        """Load the checkpoint into the engines, the sampler and the RNGs; returns the step it was saved at.

        On another number of ranks than saved it, the engines reshard their states, every rank continues the one
        global prompt order from the saved cursor, and, since the saved RNG states belong to the old ranks, each
        rank's python and torch generators are seeded afresh from train.seed + rank + step. (Rollouts do not depend
        on them: their sampling seeds come from (train.seed, rank, step) by `sampling_seed`.)
        """
        started = time.perf_counter()
        state = load_checkpoint(path, self.engines, self.dist.rank, self.dist.world_size)
        step = int(state["step"])
        self.sampler.load_state_dict(state["sampler"])
        resharded = state["world_size"] != self.dist.world_size
        if resharded:
            _seed_everything(self.cfg.train.seed + self.dist.rank + step)
        else:
            set_rng_state(state["rng"])
        if self.dist.rank == 0:
            print(f"checkpoint: resumed from {path} at step {step}", flush=True)
            if resharded:
                cursor = state["sampler"]
                print(f"checkpoint: resharded from {state['world_size']} to {self.dist.world_size} ranks in "
                      f"{time.perf_counter() - started:.1f} s (engines: {', '.join(self.engines)}; the prompt order "
                      f"continues at epoch {cursor['epoch']}, offset {cursor['offset']}; RNGs seeded from "
                      f"train.seed + rank + step)", flush=True)
        return step


def _is_collective_timeout(error: Exception) -> bool:
    """Whether `error` is a collective that gave up waiting (gloo raises it; nccl aborts the process instead)."""
    import torch.distributed as dist

    if isinstance(error, (UserError, RunFailed)):
        return False
    return isinstance(error, getattr(dist, "DistError", ())) or (isinstance(error, RuntimeError)
                                                                 and "timed out" in str(error).lower())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
