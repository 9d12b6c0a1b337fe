"""Run as a script (one process, world size 1): the training engine skips an update whose gradient is NaN.

For each ZeRO stage and precision, two identical engines (`grpo.train.deepspeed.OptimizedModel`, torch's
AdamW, linear warm-up over 3 updates) train a small network: A on losses [L1, NaN, L2], B on [L1, L2].
A's NaN update must return None and leave weights and learning rate as they were, and A must then end
on B's weights exactly: a skipped update leaves no trace (weights, Adam moments, schedule). Exits
non-zero with the failed assertion; prints one line per configuration. Called by test_fail_loudly.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CONFIGS = [("float32", 0), ("float32", 1), ("float32", 2), ("float32", 3), ("bfloat16", 0), ("bfloat16", 3)]
LR, WARMUP = 0.1, 3


def build(dtype: str, stage: int):
    from grpo.device import init_distributed
    from grpo.train.deepspeed import OptimizedModel

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
          "zero_optimization": {"stage": stage}, "bf16": {"enabled": dtype == "bfloat16"}, "steps_per_print": 10**9}
    return OptimizedModel(model, init_distributed(), ds, LR, [0.9, 0.999], 0.0, WARMUP)


def weights(engine) -> list[torch.Tensor]:
    import deepspeed

    params = list(engine.engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=engine.zero_stage == 3):
        return [p.detach().float().clone() for p in params]


def update(engine, scale: float, seed: int):
    torch.manual_seed(seed)
    dtype = next(engine.engine.module.parameters()).dtype
    x = torch.randn(4, 8, dtype=dtype)
    loss = (engine.engine(x).float() ** 2).mean() * scale
    engine.backward(loss, last=True)
    return engine.step()


def check(dtype: str, stage: int) -> None:
    a, b = build(dtype, stage), build(dtype, stage)
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    assert update(a, 1.0, seed=1) is not None and update(b, 1.0, seed=1) is not None
    before, lr_before = weights(a), a.lr()
    assert lr_before == LR * 2 / 3  # after one update the warm-up factor is min(1, (1 + 1) / 3)
    assert update(a, float("nan"), seed=2) is None, "a NaN loss was not reported as a skipped update"
    assert a.skips_in_a_row == 1
    assert all(torch.equal(x, y) for x, y in zip(before, weights(a))), "a skipped update changed the weights"
    assert a.lr() == lr_before, "a skipped update advanced the learning-rate schedule"
    assert update(a, 1.0, seed=3) is not None and update(b, 1.0, seed=3) is not None
    assert a.skips_in_a_row == 0 and a.lr() == b.lr() == LR  # warm-up done after two applied updates
    same = all(torch.equal(x, y) for x, y in zip(weights(a), weights(b)))
    assert same, "after a skipped update the next one differs from a run without it (moments or schedule touched)"
    print(f"ok {dtype} stage {stage}", flush=True)


if __name__ == "__main__":
    for dtype, stage in CONFIGS:
        check(dtype, stage)
