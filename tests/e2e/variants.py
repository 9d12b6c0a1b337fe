"""Run under torchrun by test_algorithm_variants.py: every algorithm recipe (and a few extra switches)
trains the tiny model for two steps in this one process, so start-up is paid once.

argv: MODEL_DIR TRAIN_PARQUET OUT_DIR. Rank 0 writes OUT_DIR/variants.json: per variant, the two
steps' metrics.
"""
import json
import sys

import grpo

from cli import TEST_SCALE  # this script's folder is on sys.path

model_dir, train_file, out_dir = sys.argv[1:4]
VARIANTS = {
    "grpo": ["recipes/algorithms/grpo.yaml"],
    "dr_grpo": ["recipes/algorithms/dr_grpo.yaml"],
    "dapo": ["recipes/algorithms/dapo.yaml"],
    "rloo": ["recipes/algorithms/rloo.yaml"],
    "reinforce_pp": ["recipes/algorithms/reinforce_pp.yaml"],
    "reinforce_pp_baseline": ["recipes/algorithms/reinforce_pp.yaml", "algo.advantage=reinforce_pp_baseline"],
    "gspo": ["recipes/algorithms/gspo.yaml"],
    "dual_clip_k2_entropy": ["algo.dual_clip=3.0", "algo.kl_estimator=k2", "algo.entropy_coef=0.001"],
    "mu2_minibatch2_tis": ["algo.ppo_epochs=2", "algo.mini_batches=2", "train.micro_batch_size=8",
                           "algo.importance_cap=2.0", "algo.importance_level=sequence", "algo.kl_estimator=k1"],
    "masked_truncation": ["algo.mask_truncated=true", "algo.loss_agg=seq_mean_token_mean"],
    "token_budget": ["recipes/algorithms/grpo.yaml", "train.micro_batch_tokens=700"],
    # PPO with a critic at the tests' scale: groups of 4 (ppo.yaml samples 1), one mini-batch
    "ppo": ["recipes/algorithms/ppo.yaml", "rollout.n=4", "algo.mini_batches=1"],
}
results = {}
for name, extra in VARIANTS.items():
    recipes = ["recipes/countdown_tiny.yaml"] + [e for e in extra if "=" not in e]
    cfg = grpo.load_config(recipes, [
        f"model.path={model_dir}", f"data.train_files=[{train_file}]", f"log.dir={out_dir}/{name}",
        "log.progress=false", *TEST_SCALE, "train.max_steps=2", "train.lr=1.0e-3", "reward.functions=[digit_reward:digit_share]",
        "checkpoint.save_final=false", *[e for e in extra if "=" in e]])
    trainer = grpo.Trainer(cfg)
    results[name] = {"algo": cfg.to_dict()["algo"], "steps": trainer.fit()}
    if trainer.dist.rank == 0:
        with open(f"{out_dir}/variants.json", "w") as f:
            json.dump(results, f)
