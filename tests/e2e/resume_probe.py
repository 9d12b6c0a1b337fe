"""Run under torchrun by test_resume_reshard.py: train as launch/run.py does, and write what a checkpoint holds
as every rank sees it once gathered, so the test can compare a resume on another number of ranks with the save.

argv: OUT_FILE, then launch/run.py's own arguments (recipes, key=value overrides). When the Trainer resumed, the
state is taken right after it was built (engines, step and data cursor loaded; nothing trained yet) and the run
then trains on to train.max_steps; otherwise after fit() (the state the last checkpoint saved). Rank 0 writes
OUT_FILE: {"step", "sampler", "engines": {name: {"params": {param: {fp32, exp_avg, exp_avg_sq}}, "adam_step",
"lr", "scheduler_epoch"}}}, tensors whole (gathered over the ZeRO partitions), on the CPU.
"""
import sys

import torch

import grpo


def engine_state(model) -> dict:
    """An `OptimizedModel`'s full fp32 weights and Adam state, parameter by parameter (collective under ZeRO)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state

    params = {}
    for name, param in model.engine.module.named_parameters():
        if param.requires_grad:  # with LoRA only the adapter has an optimizer state
            params[name] = {"fp32": safe_get_full_fp32_param(param).detach().cpu().clone(),
                            **{key: safe_get_full_optimizer_state(param, key).cpu().clone()
                               for key in ("exp_avg", "exp_avg_sq")}}
    adam = model.optimizer.optimizer  # the torch AdamW inside DeepSpeed's ZeRO optimizer
    steps = {float(state["step"]) for state in adam.state.values()}
    return {"params": params, "adam_step": steps.pop() if len(steps) == 1 else sorted(steps), "lr": model.lr(),
            "scheduler_epoch": model.scheduler.state_dict()["last_epoch"]}


def snapshot(trainer) -> dict:
    return {"step": trainer.step, "sampler": trainer.sampler.state_dict(),
            "engines": {name: engine_state(engine) for name, engine in trainer.engines.items()}}


out_file, argv = sys.argv[1], sys.argv[2:]
cfg = grpo.load_config([a for a in argv if "=" not in a], [a for a in argv if "=" in a])
trainer = grpo.Trainer(cfg)
state = snapshot(trainer) if trainer.step > 0 else None
trainer.fit()
if state is None:
    state = snapshot(trainer)
if trainer.dist.rank == 0:
    torch.save(state, out_file)
