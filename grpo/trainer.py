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

from grpo.algorithms import ADVANTAGES, KL_ESTIMATORS, LOSS_AGGREGATIONS, POLICY_LOSSES
from grpo.config import Config
from grpo.data import PromptSampler, load_prompt_records
from grpo.device import init_distributed, max_memory_allocated_gb, peak_rss_gb
from grpo.errors import UserError
from grpo.metrics import MetricsWriter, PhaseTimer, reduce_across_ranks
from grpo.rewards import RewardFunction
from grpo.rollout import ENGINES, build_rollout_engine
from grpo.templates import load_user_templates
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
        self.tokenizer = _load_tokenizer(cfg.model.path)
        templates = load_user_templates(cfg.data.templates_file) if cfg.data.templates_file else None
        records, dropped = load_prompt_records(cfg.data.train_files, cfg.data.template, self.tokenizer,
                                               cfg.data.max_prompt_length, templates)
        if dropped and self.dist.rank == 0:
            print(f"data: dropped {dropped} prompts longer than data.max_prompt_length={cfg.data.max_prompt_length} "
                  f"tokens; {len(records)} remain", flush=True)
        self.sampler = PromptSampler(records, cfg.train.prompts_per_step, self.dist.rank, self.dist.world_size,
                                     seed=cfg.train.seed, shuffle=cfg.data.shuffle)
        self.reward_fn = RewardFunction(cfg.reward.functions)
        # The rollout engine is built first: it must load plain (unsharded) weights, before
        # the training engine's HfDeepSpeedConfig makes from_pretrained shard under ZeRO-3.
        self.rollout = build_rollout_engine(cfg, self.tokenizer, self.dist)
        from grpo.train.deepspeed import DeepSpeedTrainEngine

        self.train = DeepSpeedTrainEngine(cfg, self.dist)
        # From here on the rollout engine only ever holds weights that came from the trainer (and may
        # have started from dummy weights): the first push makes the two identical before step 1.
        self.rollout.wake_weights()
        push_weights(self.train, self.rollout, cfg.sync.bucket_mb)
        _seed_everything(cfg.train.seed + self.dist.rank)
        self.step = 0

    # -- the loop ----------------------------------------------------------------------------
    def fit(self) -> list[dict[str, float]]:
        """Train for train.max_steps steps; returns the per-step metrics (identical on every rank)."""
        cfg = self.cfg
        writer = MetricsWriter(str(self.run_dir), self.dist.rank, cfg.train.max_steps - self.step,
                               cfg.log.tensorboard, cfg.log.progress)
        history = []
        try:
            while self.step < cfg.train.max_steps:
                self.step += 1
                metrics, samples = self.train_step()
                writer.log(self.step, metrics)
                writer.log_samples(self.step, samples)
                history.append(metrics)
            if cfg.checkpoint.save_final:
                self.train.save_hf(str(self.run_dir / "final"), self.tokenizer)
                writer.message(f"saved the trained policy to {self.run_dir / 'final'}")
        finally:
            writer.close()
        return history

    def train_step(self) -> tuple[dict[str, float], list[dict]]:
        cfg, timer, start = self.cfg, PhaseTimer(), time.perf_counter()
        prompts = self.sampler.next_batch()
        with timer("generate"):
            generation_mode(self.train, self.rollout)
            groups = self.rollout.generate([p.prompt_ids for p in prompts], self._sampling())
            training_mode(self.rollout)
        with timer("score"):
            rewards_PG, components = self._score(prompts, groups)
        adv_PG = ADVANTAGES[cfg.algo.advantage](rewards_PG, eps=cfg.algo.adv_eps)
        micro_batches = self._micro_batches(prompts, groups, adv_PG)
        local_tokens = sum(float(mb.response_mask_BT.sum()) for mb in micro_batches)
        step_tokens = reduce_across_ranks({"tokens": local_tokens}, {}, self.dist.device)["tokens"]
        with timer("logprobs"):
            if self.train.ref_engine is not None:
                for mb in micro_batches:
                    mb.ref_logp_BT = self.train.reference_logprobs(mb, cfg.rollout.temperature)
        with timer("train"):
            sums, maxes, grad_norm = self._optimize(micro_batches, step_tokens)
        with timer("sync"):
            self.rollout.wake_weights()
            sync_metrics = push_weights(self.train, self.rollout, cfg.sync.bucket_mb)
        timer.seconds["step"] = time.perf_counter() - start
        sums.update(_reward_sums(rewards_PG, components, groups))
        maxes.update({"response/length_max": max(len(c.token_ids) for g in groups for c in g),
                      "memory/peak_rss_gb": peak_rss_gb(), "memory/device_peak_gb": max_memory_allocated_gb(),
                      **{k: v for k, v in timer.as_metrics().items()}})
        total = reduce_across_ranks(sums, maxes, self.dist.device)
        return self._step_metrics(total, step_tokens, grad_norm, sync_metrics), self._samples(prompts, groups, rewards_PG)

    def _optimize(self, micro_batches: list[MicroBatch], step_tokens: float):
        """One optimizer step over all micro-batches; returns local sums, local maxes and the grad norm."""
        algo, temperature = self.cfg.algo, self.cfg.rollout.temperature
        policy_loss, aggregate = POLICY_LOSSES[algo.policy_loss], LOSS_AGGREGATIONS[algo.loss_agg]
        kl_estimator = KL_ESTIMATORS[algo.kl_estimator]
        sums = {"loss/policy": 0.0, "loss/kl": 0.0, "loss/total": 0.0, "policy/entropy": 0.0,
                "policy/clipped_tokens": 0.0, "rollout/logprob_diff_sum": 0.0}
        maxes = {"rollout/logprob_diff_max": 0.0}
        grad_norm = float("nan")
        for i, mb in enumerate(micro_batches):
            logp_BT, entropy_BT = self.train.policy_logprobs(mb, temperature)
            mask_BT = mb.response_mask_BT
            # One update per rollout: the policy that sampled is the current one, so its logprobs
            # are these, detached (a separate no-grad forward would compute the same numbers).
            old_logp_BT = logp_BT.detach()
            pg_BT, pg_metrics = policy_loss(logp_BT, old_logp_BT, mb.advantages_B, mask_BT,
                                            clip_low=algo.clip_low, clip_high=algo.clip_high)
            loss_BT = pg_BT
            if mb.ref_logp_BT is not None:
                kl_BT = kl_estimator(logp_BT, mb.ref_logp_BT)
                loss_BT = pg_BT + algo.kl_coef * kl_BT
                sums["loss/kl"] += float(aggregate(kl_BT.detach(), mask_BT, step_tokens))
            loss = aggregate(loss_BT, mask_BT, step_tokens)
            self.train.backward(loss)
            if i == len(micro_batches) - 1:
                grad_norm = self.train.step()
            else:
                self.train.micro_step()
            diff_BT = (logp_BT.detach() - mb.sampler_logp_BT).abs() * mask_BT
            sums["loss/policy"] += float(aggregate(pg_BT.detach(), mask_BT, step_tokens))
            sums["loss/total"] += float(loss.detach())
            sums["policy/entropy"] += float(aggregate(entropy_BT, mask_BT, step_tokens))
            sums["policy/clipped_tokens"] += float(pg_metrics["clipped_tokens"])
            sums["rollout/logprob_diff_sum"] += float(diff_BT.sum())
            maxes["rollout/logprob_diff_max"] = max(maxes["rollout/logprob_diff_max"], float(diff_BT.max()))
        return sums, maxes, grad_norm

    # -- pieces of a step ----------------------------------------------------------------------
    def _sampling(self) -> SamplingSettings:
        r = self.cfg.rollout
        # distinct on every rank and step, reproducible from train.seed
        seed = (self.cfg.train.seed * 1_000_003 + self.dist.rank * 10_007 + self.step) % 2**63
        return SamplingSettings(n=r.n, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                max_new_tokens=r.max_new_tokens, stop=list(r.stop), seed=seed)

    def _score(self, prompts: list[PromptRecord], groups: list[list[Completion]]):
        rewards, components = [], []
        for record, group in zip(prompts, groups):
            results = [self.reward_fn(record.data_source, c.text, record.ground_truth, record.prompt_text)
                       for c in group]
            rewards.append([r.score for r in results])
            components += [r.components for r in results]
        return torch.tensor(rewards, dtype=torch.float32), components

    def _micro_batches(self, prompts: list[PromptRecord], groups: list[list[Completion]],
                       adv_PG: torch.Tensor) -> list[MicroBatch]:
        rows = [(record.prompt_ids, completion, float(adv_PG[p, g]))
                for p, (record, group) in enumerate(zip(prompts, groups)) for g, completion in enumerate(group)]
        size, device = self.cfg.train.micro_batch_size, self.dist.device
        batches = []
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            B = len(chunk)
            P = max(len(ids) for ids, _, _ in chunk)
            T = max(max(len(c.token_ids) for _, c, _ in chunk), 1)
            input_ids_BL = torch.full((B, P + T), self.tokenizer.pad_token_id, dtype=torch.long)
            attention_BL = torch.zeros((B, P + T), dtype=torch.long)
            response_mask_BT = torch.zeros((B, T), dtype=torch.float32)
            sampler_logp_BT = torch.zeros((B, T), dtype=torch.float32)
            for i, (ids, completion, _) in enumerate(chunk):
                n = len(completion.token_ids)
                input_ids_BL[i, P - len(ids):P] = torch.tensor(ids)
                input_ids_BL[i, P:P + n] = torch.tensor(completion.token_ids, dtype=torch.long)
                attention_BL[i, P - len(ids):P + n] = 1
                response_mask_BT[i, :n] = 1.0
                sampler_logp_BT[i, :n] = torch.tensor(completion.logprobs)
            position_BL = (attention_BL.cumsum(-1) - 1).clamp(min=0)
            batches.append(MicroBatch(
                input_ids_BL=input_ids_BL.to(device), attention_mask_BL=attention_BL.to(device),
                position_ids_BL=position_BL.to(device), response_mask_BT=response_mask_BT.to(device),
                prompt_width=P, advantages_B=torch.tensor([a for _, _, a in chunk], device=device),
                sampler_logp_BT=sampler_logp_BT.to(device)))
        return batches

    def _step_metrics(self, total: dict[str, float], step_tokens: float, grad_norm: float,
                      sync_metrics: dict[str, float]) -> dict[str, float]:
        count = total.pop("reward/count")
        mean = total.pop("reward/sum") / count
        variance = max(total.pop("reward/sq_sum") / count - mean * mean, 0.0)
        metrics = {
            "reward/mean": mean,
            "reward/std": variance ** 0.5,
            "reward/accuracy": total.pop("reward/accuracy_sum") / count,
            "reward/format": total.pop("reward/format_sum") / count,
            "response/length_mean": step_tokens / count,
            "response/length_max": total.pop("response/length_max"),
            "response/clipped_frac": total.pop("response/clipped_count") / count,
            "loss/total": total.pop("loss/total"),
            "loss/policy": total.pop("loss/policy"),
            "loss/kl": total.pop("loss/kl"),
            "policy/entropy": total.pop("policy/entropy"),
            "policy/clip_frac": total.pop("policy/clipped_tokens") / step_tokens,
            "train/grad_norm": grad_norm,
            "train/lr": self.train.lr(),
            "rollout/logprob_diff_mean": total.pop("rollout/logprob_diff_sum") / step_tokens,
            "rollout/logprob_diff_max": total.pop("rollout/logprob_diff_max"),
            "throughput/tokens_per_s": step_tokens / total["time/step"],
            **sync_metrics,
        }
        metrics.update(total)  # the phase times and memory peaks (max over ranks)
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


def _check_model_path(path: str) -> None:
    """Fail early, before any process group exists, on a local model folder that is not there."""
    looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1
    if looks_local and not Path(os.path.expanduser(path)).exists():
        raise UserError(f"model.path: no such folder {path!r}. Give a local model folder or a hub id like "
                        "'Qwen/Qwen2.5-0.5B'; build the tiny test model with: python launch/build_tiny.py --out .cache/tiny")


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"model.path: cannot load a tokenizer from {path!r}: {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
