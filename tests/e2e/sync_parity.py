"""Run under torchrun by test_weight_sync_parity.py: train two steps through the notebook API, then
check that the rollout engine's weights equal the gathered ZeRO-3 weights, tensor by tensor.

argv: MODEL_DIR TRAIN_PARQUET RUN_DIR. Each rank writes RUN_DIR/parity_rank{R}.json (stdout would
interleave the ranks) and exits 1 on a mismatch.
"""
import json
import sys

import torch

import grpo

from cli import TEST_SCALE  # this script's folder is on sys.path

model_dir, train_file, run_dir = sys.argv[1:4]
cfg = grpo.load_config("recipes/countdown_tiny.yaml", [
    f"model.path={model_dir}", f"data.train_files=[{train_file}]", f"log.dir={run_dir}", "log.progress=false", *TEST_SCALE,
    "train.max_steps=2", "train.lr=1.0e-3", "reward.functions=[digit_reward:digit_share]",
    "checkpoint.save_final=false", "sync.bucket_mb=1"])
trainer = grpo.Trainer(cfg)
initial = {name: t.detach().clone() for name, t in trainer.rollout.named_weights().items()}
trainer.fit()
engine_weights = trainer.rollout.named_weights()
mismatched, moved = [], 0
for name, param in trainer.policy.named_parameters_for_sync():
    with trainer.policy.gathered([param]):
        trained = param.data.detach().clone()
    if not torch.equal(trained, engine_weights[name]):
        mismatched.append(name)
    moved += not torch.equal(initial[name], engine_weights[name])
with open(f"{run_dir}/parity_rank{trainer.dist.rank}.json", "w") as f:
    json.dump({"rank": trainer.dist.rank, "checked": len(engine_weights), "mismatched": mismatched, "moved": moved}, f)
sys.exit(1 if mismatched else 0)
