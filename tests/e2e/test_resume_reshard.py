"""End-to-end: a checkpoint saved by 2 ranks resumes on 1, and one saved by 1 rank resumes on 2 (ZeRO-3, torchrun).

What must carry over, checked right after loading against what the saving run held (tests/e2e/resume_probe.py
gathers both over the ZeRO partitions): every trained parameter's fp32 weight and Adam moments, Adam's step
count and the learning-rate schedule, of the policy and (PPO) of the critic, or (LoRA) of the adapter; the step
(the resumed run logs steps 3 and 4); and the data cursor, so the prompts of steps 3-4 are exactly the 3rd and
4th batches of the one global prompt order, whatever the number of ranks.

Not compared: a resumed run's steps 3-4 against a straight run's. Rollouts are seeded per rank and step, so on
another number of ranks the same prompts get other completions, and no straight run at either world size
passes through the same state.
"""
from __future__ import annotations

import json

import pytest
import torch

from cli import cli_env, lora_overrides, run_cli, tiny_overrides

RECIPE = "recipes/countdown_tiny.yaml"
PROMPTS_PER_STEP = 8  # tests/e2e/cli.py TEST_SCALE
LR, WARMUP = 1.0e-3, 10  # a warm-up makes the scheduler's position visible in the learning rate
# PPO: a critic with its own AdamW and schedule beside the policy; groups of 4 and one mini-batch fit the scale
PPO = ["recipes/algorithms/ppo.yaml", "rollout.n=4", "algo.mini_batches=1", "critic.lr=2.0e-4",
       f"critic.lr_warmup_steps={WARMUP}"]


def probe(out_file, run_dir, steps, nproc, plugin, args):
    result = run_cli(["tests/e2e/resume_probe.py", str(out_file), *args, f"train.max_steps={steps}",
                      "checkpoint.every_steps=2", "log.samples_every=1", f"log.num_samples={PROMPTS_PER_STEP}",
                      f"train.lr={LR}", f"train.warmup_steps={WARMUP}"], cli_env(plugin), torchrun=True, nproc=nproc)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result, torch.load(out_file, weights_only=False)


def global_batches(tiny_dir, count):
    """The first `count` global batches of prompt texts, from the sampler's one order (as one rank sees them all)."""
    from grpo.data import PromptSampler, load_prompt_records, load_tokenizer
    from grpo.recipe import load_config

    cfg = load_config(RECIPE, tiny_overrides(tiny_dir, tiny_dir / "unused"))
    records, _ = load_prompt_records(cfg.data.train_files, cfg.data.template, load_tokenizer(cfg.model.path),
                                     cfg.data.max_prompt_length, cfg.data.templates_file, cfg.data.skip_malformed)
    sampler = PromptSampler(records, PROMPTS_PER_STEP, rank=0, world_size=1, seed=cfg.train.seed,
                            shuffle=cfg.data.shuffle)
    return [[record.prompt_text for record in sampler.next_batch()] for _ in range(count)]


def logged_prompts(run_dir):
    """step -> the prompts rank 0 trained on, in order (log.num_samples covers all of them)."""
    by_step = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        by_step.setdefault(sample["step"], []).append(sample["prompt"])
    return by_step


def check_reshard(tiny_dir, plugin, tmp_path, args, saved_ranks, resumed_ranks, engines):
    run_dir = tmp_path / "run"
    _, saved = probe(tmp_path / "saved.pt", run_dir, 2, saved_ranks, plugin, args(run_dir))
    checkpoint = run_dir / "checkpoints" / "step_00000002"
    files = sorted(p.relative_to(checkpoint) for p in checkpoint.rglob("*"))
    result, loaded = probe(tmp_path / "loaded.pt", run_dir, 4, resumed_ranks, plugin, args(run_dir))
    # the resharding's conversion (written beside the engines' folders) is gone, the checkpoint as it was
    assert sorted(p.relative_to(checkpoint) for p in checkpoint.rglob("*")) == files

    assert "resumed from" in result.stdout and "step_00000002 at step 2" in result.stdout, result.stdout[-3000:]
    assert f"resharded from {saved_ranks} to {resumed_ranks} ranks" in result.stdout, result.stdout[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # the resumed run starts at step 3

    # The step and the data cursor: 2 steps x 8 prompts = offset 16 of epoch 0.
    assert loaded["step"] == saved["step"] == 2
    assert loaded["sampler"] == saved["sampler"] and (saved["sampler"]["epoch"], saved["sampler"]["offset"]) == (0, 16)
    # Every engine's weights, Adam moments, Adam step and schedule equal the saved ones (a freshly built engine holds
    # the initial weights and zero moments, so a lost or misplaced shard shows far above the tolerance).
    assert sorted(loaded["engines"]) == sorted(saved["engines"]) == engines
    for name in engines:
        before, after = saved["engines"][name], loaded["engines"][name]
        assert sorted(after["params"]) == sorted(before["params"])
        assert max(float(s["exp_avg_sq"].abs().max()) for s in before["params"].values()) > 0  # moments were saved
        for param, states in before["params"].items():
            for key, tensor in states.items():
                torch.testing.assert_close(after["params"][param][key], tensor, rtol=0, atol=1e-7,
                                           msg=f"{name} {param} {key}")
        # one optimizer step per RL step here (ppo_epochs = mini_batches = 1): Adam's step is 2; LambdaLR's
        # factor min(1, (epoch + 1) / warmup) after 2 steps gives lr = 1e-3 x 3/10 (policy) or 2e-4 x 3/10 (critic)
        assert after["adam_step"] == before["adam_step"] == 2.0, name
        assert after["scheduler_epoch"] == before["scheduler_epoch"] == 2, name
        base_lr = 2.0e-4 if name == "critic" else LR
        assert after["lr"] == pytest.approx(base_lr * 3 / WARMUP) and after["lr"] == before["lr"], name
    # the resumed schedule goes on: the lr logged after steps 3 and 4 is 1e-3 x 4/10 and 1e-3 x 5/10
    assert [m["train/lr"] for m in metrics[2:]] == pytest.approx([LR * 4 / WARMUP, LR * 5 / WARMUP])

    # The prompts: rank 0 takes the first 8 / ranks of each global batch; steps 3-4 are the 3rd and 4th batches.
    batches, logged = global_batches(tiny_dir, 4), logged_prompts(run_dir)
    for step, ranks in [(1, saved_ranks), (2, saved_ranks), (3, resumed_ranks), (4, resumed_ranks)]:
        assert logged[step] == batches[step - 1][: PROMPTS_PER_STEP // ranks], step
    assert not set(batches[2] + batches[3]) & set(batches[0] + batches[1])  # so a repeat could not pass unseen


def test_two_ranks_resume_on_one_with_the_critic(tiny_dir, reward_plugin_dir, tmp_path):
    def args(run_dir):
        return [RECIPE, *PPO, *tiny_overrides(tiny_dir, run_dir), "reward.functions=[digit_reward:digit_share]"]

    check_reshard(tiny_dir, reward_plugin_dir, tmp_path, args, saved_ranks=2, resumed_ranks=1,
                  engines=["critic", "policy"])


def test_one_rank_resumes_on_two_with_lora(tiny_dir, reward_plugin_dir, tmp_path):
    def args(run_dir):
        overrides = lora_overrides(tiny_dir / "model", tiny_dir / "countdown_train.parquet", run_dir, "hf", "adapter")
        return [RECIPE, *[o for o in overrides if not o.startswith(("train.lr=", "checkpoint."))]]

    check_reshard(tiny_dir, reward_plugin_dir, tmp_path, args, saved_ranks=1, resumed_ranks=2, engines=["policy"])
