"""Run under torchrun by test_ppo.py: PPO (recipes/algorithms/ppo.yaml, a critic under ZeRO-3) trains the tiny
model for three steps with the engine given, then the critic is trained again and again on one fixed batch
toward the same returns, and its value loss must fall.

argv: MODEL_DIR TRAIN_PARQUET RUN_DIR ENGINE. Rank 0 writes RUN_DIR/ppo.json: the steps' metrics and the
fixed batch's value losses.
"""
import json
import sys

import grpo

from cli import TEST_SCALE  # this script's folder is on sys.path
from grpo.batching import build_micro_batches
from grpo.experience import collect_rollout
from grpo.metrics import PhaseTimer, reduce_stats
from grpo.update import critic_update

model_dir, train_file, run_dir, engine = sys.argv[1:5]
cfg = grpo.load_config(["recipes/countdown_tiny.yaml", "recipes/algorithms/ppo.yaml"], [
    f"model.path={model_dir}", f"data.train_files=[{train_file}]", f"log.dir={run_dir}", "log.progress=false",
    *TEST_SCALE, f"rollout.engine={engine}", "rollout.kv_cache_mb=64", "rollout.n=4", "algo.mini_batches=1",
    "train.lr=1.0e-3", "critic.lr=2.0e-4", "reward.functions=[digit_reward:digit_share]",
    "checkpoint.save_final=false"])
trainer = grpo.Trainer(cfg)
steps = []
for step in range(1, 4):
    trainer.step = step
    metrics, _ = trainer.train_step()
    steps.append(metrics)

# One fixed batch: its returns stay as they are; each round takes the critic's current values as the old
# ones (a new PPO step on the same data) and trains on them, so the clip never holds the critic back.
rollout = collect_rollout(sampler=trainer.sampler, engine=trainer.rollout, source=trainer.policy,
                          reward_fn=trainer.reward_fn, sampling=trainer._sampling, need=cfg.derived.prompts_per_rank,
                          algo=cfg.algo, max_new_tokens=cfg.rollout.max_new_tokens, any_rank=trainer._any_rank,
                          timer=PhaseTimer())
micro_batches = build_micro_batches(rollout.prompts, rollout.groups, cfg.train.micro_batch_size,
                                    trainer.tokenizer.pad_token_id, trainer.dist.device)
trainer._reference_and_old_logprobs(micro_batches)
for mb in micro_batches:
    mb.old_values_BT = trainer.critic.old_values(mb)
trainer._gae_advantages(rollout, micro_batches)
losses = []
for _ in range(6):
    for mb in micro_batches:
        mb.old_values_BT = trainer.critic.old_values(mb)
    stats = critic_update(trainer.critic, micro_batches, cfg.algo, cfg.critic,
                          per_update=cfg.derived.micro_batches_per_update, max_new_tokens=cfg.rollout.max_new_tokens,
                          sum_over_ranks=trainer._sum_over_ranks)
    (reduced,) = reduce_stats([stats], trainer.dist.device)
    losses.append(reduced.metrics()["critic/value_loss"])
if trainer.dist.rank == 0:
    with open(f"{run_dir}/ppo.json", "w") as f:
        json.dump({"steps": steps, "fixed_batch_value_loss": losses}, f)
