"""Run under torchrun by test_lora.py: LoRA (rank 8) under ZeRO-3 with the engine and sync.lora_mode given.

Three steps through `fit()` (checkpoints at steps 2 and 3, the final model), then two more with the weight
sync cut off (the engine's load calls do nothing): the rollouts of step 5 are then sampled by the adapter of
step 3 while the trainer holds step 4's, and the logprob gap must show it.

argv: MODEL_DIR TRAIN_PARQUET RUN_DIR ENGINE MODE. Rank 0 writes RUN_DIR/lora.json: the steps' metrics, the
trainer's trainable and total parameter counts.
"""
import json
import sys

import grpo

from cli import lora_overrides  # this script's folder is on sys.path

model_dir, train_file, run_dir, engine, mode = sys.argv[1:6]
cfg = grpo.load_config("recipes/countdown_tiny.yaml", [*lora_overrides(model_dir, train_file, run_dir, engine, mode),
                                                        "train.max_steps=3"])
trainer = grpo.Trainer(cfg)
steps = trainer.fit()

trainer.rollout.load_adapter = lambda *args, **kwargs: None  # from here on nothing reaches the engine
trainer.rollout.load_weights = lambda *args, **kwargs: None
trainer.cfg.train.max_steps = 5
cut = trainer.fit()

module = trainer.policy.engine.module
params = list(module.parameters())
counts = {"trainable": sum(getattr(p, "ds_numel", p.numel()) for p in params if p.requires_grad),
          "total": sum(getattr(p, "ds_numel", p.numel()) for p in params)}
if trainer.dist.rank == 0:
    with open(f"{run_dir}/lora.json", "w") as f:
        json.dump({"steps": steps, "cut_off": cut, "parameters": counts}, f)
