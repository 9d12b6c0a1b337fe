"""End-to-end checkpoints under torchrun (2 ranks, ZeRO-3): exact resume (metrics and weights, of PPO with its
critic, dynamic sampling and the vLLM engine when it is installed; the warm-up schedule, an epoch boundary and
the evaluation cadence), a SIGKILL during a save, a resume on a number of ranks that cannot split the global
batch refused with a clear error (test_resume_reshard.py resumes on other numbers that can), and export of a
checkpoint to a Hugging Face folder.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import importlib.util

import psutil
import pytest
import torch

from cli import REPO, cli_env, run_cli, tiny_overrides

RECIPE = "recipes/countdown_tiny.yaml"
# Everything but wall-clock time, memory and throughput must repeat exactly on CPU in fp32.
VOLATILE = ("time/", "memory/", "throughput/")
# The resume test runs what has the most state to lose: PPO (a critic with its own optimizer beside the
# policy), dynamic sampling (its extra rounds move the data cursor) and, when installed, the vLLM engine
# (its own seeded generators and prefix cache). Groups of 4 and one mini-batch fit the tests' scale.
RESUMED = ["recipes/algorithms/ppo.yaml", "rollout.n=4", "algo.mini_batches=1", "critic.lr=2.0e-4",
           "algo.dynamic_sampling=true",
           *(["rollout.engine=vllm", "rollout.kv_cache_mb=64"] if importlib.util.find_spec("vllm") else [])]


def train(tiny_dir, plugin, run_dir, steps, *extra):
    result = run_cli(["launch/run.py", RECIPE, *tiny_overrides(tiny_dir, run_dir), f"train.max_steps={steps}",
                      "reward.functions=[digit_reward:digit_share]", "train.lr=1.0e-3", *extra],
                     cli_env(plugin), torchrun=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, reward_plugin_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    train(tiny_dir, reward_plugin_dir, run_dir, 4, "checkpoint.every_steps=2", *RESUMED)
    return run_dir


def test_resume_repeats_the_uninterrupted_run(uninterrupted, tiny_dir, reward_plugin_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path / "run"
    train(tiny_dir, reward_plugin_dir, run_dir, 2, "checkpoint.every_steps=2", *RESUMED)
    resumed = train(tiny_dir, reward_plugin_dir, run_dir, 4, "checkpoint.every_steps=2", *RESUMED)
    assert "resumed from" in resumed.stdout and "step_00000002 at step 2" in resumed.stdout
    straight, split = metrics(uninterrupted), metrics(run_dir)
    assert [m["step"] for m in split] == [1, 2, 3, 4]  # each step logged once across the two runs
    assert "dynamic/tries" in split[-1] and "critic/value_loss" in split[-1]  # dynamic sampling and PPO were on
    for a, b in zip(straight[2:], split[2:]):
        for key, value in a.items():
            if not key.startswith(VOLATILE):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (a["step"], key)
    # and the policy they end with: the same to rounding (lr 1e-3 makes any lost state show far above it; the
    # critic's state shows in the step 3-4 value losses and advantages compared above)
    ends = [AutoModelForCausalLM.from_pretrained(d / "final", dtype=torch.float32).state_dict()
            for d in (uninterrupted, run_dir)]
    for name, weight in ends[0].items():
        torch.testing.assert_close(ends[1][name], weight, rtol=1e-5, atol=1e-6, msg=name)


def test_resume_on_ranks_that_cannot_split_the_global_batch_is_a_clear_error(uninterrupted, tiny_dir, tmp_path):
    # saved by 2 ranks with train.prompts_per_step=8; 3 ranks cannot split 8 prompts (8 % 3 = 2): refused before
    # any engine loads, naming both world sizes and the numbers of ranks that would work (divisors of 8)
    checkpoint = uninterrupted / "checkpoints" / "step_00000004"
    result = run_cli(["launch/run.py", RECIPE, *tiny_overrides(tiny_dir, tmp_path / "run"), "train.max_steps=5",
                      f"checkpoint.resume={checkpoint}"], cli_env(), torchrun=True, nproc=3)
    assert result.returncode != 0 and "error: checkpoint" in result.stderr, result.stderr[-4000:]
    assert (f"checkpoint {checkpoint} was saved by 2 ranks and this run has 3" in result.stderr
            and "resume on a number of ranks that divides it (1, 2, 4, 8)" in result.stderr), result.stderr[-4000:]


def test_exported_checkpoint_equals_the_trained_model(uninterrupted, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "launch/export.py", str(uninterrupted / "checkpoints" / "step_00000004"),
                           str(out)], cwd=REPO, env=cli_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    exported = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    # final/ was gathered from the live ZeRO-3 engine at step 4, the export merged the saved shards
    final = AutoModelForCausalLM.from_pretrained(uninterrupted / "final", dtype=torch.float32)
    ids = torch.arange(3, 40).unsqueeze(0)
    torch.testing.assert_close(exported(ids).logits, final(ids).logits, rtol=0, atol=1e-6)


def test_export_rejects_a_folder_that_is_not_a_checkpoint(tmp_path):
    done = subprocess.run([sys.executable, "launch/export.py", str(tmp_path), str(tmp_path / "out")], cwd=REPO,
                          env=cli_env(), capture_output=True, text=True)
    assert done.returncode == 2 and "is not a grpo checkpoint" in done.stderr and "Traceback" not in done.stderr


def _kill_during_a_save(tiny_dir, plugin, run_dir) -> bool:
    """Start a long run saving every step; SIGKILL it while a save's temporary folder exists."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "launch/run.py",
           RECIPE, *tiny_overrides(tiny_dir, run_dir), "train.max_steps=200", "checkpoint.every_steps=1",
           "checkpoint.keep=3", "reward.functions=[digit_reward:digit_share]"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=cli_env(plugin), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_everything():
        # torchrun starts each worker in a session of its own, so kill the workers themselves, as a
        # machine failure would, then the launcher
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.send_signal(signal.SIGKILL)
        proc.send_signal(signal.SIGKILL)

    root = run_dir / "checkpoints"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            complete = list(root.glob("step_*")) if root.exists() else []
            if len(complete) >= 2 and list(root.glob(".tmp_step_*")):
                kill_everything()
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            kill_everything()
        proc.wait()
    time.sleep(0.5)  # let the killed workers' files settle before looking
    return bool(list(root.glob(".tmp_step_*")))


def test_sigkill_during_a_save_resumes_from_the_previous_checkpoint(tiny_dir, reward_plugin_dir, tmp_path):
    for attempt in range(3):  # the kill must land inside a save (tens of ms); retry if a save won the race
        run_dir = tmp_path / f"run{attempt}"
        if _kill_during_a_save(tiny_dir, reward_plugin_dir, run_dir):
            break
    else:
        pytest.fail("never caught a save in progress in 3 tries")
    root = run_dir / "checkpoints"
    last = max(int(p.name.split("_")[1]) for p in root.glob("step_*"))
    resumed = train(tiny_dir, reward_plugin_dir, run_dir, last + 1, "checkpoint.every_steps=1", "checkpoint.keep=3")
    assert "removed .tmp_step_" in resumed.stdout
    assert f"resumed from {root / f'step_{last:08d}'} at step {last}" in resumed.stdout
    assert [m["step"] for m in metrics(run_dir)] == list(range(1, last + 2))
    assert not list(root.glob(".tmp_step_*"))


# 16 prompts and 8 per step: an epoch is 2 steps, so the checkpoint at step 2 sits on the epoch boundary.
# Warm-up over 4 updates (one per step at the tests' scale): the lr logged after step k is
# 1e-3 x min(1, (k + 1) / 4) = 0.5, 0.75, 1, 1 x 1e-3, so a schedule restarted by the resume would log
# 0.5e-3 again at step 3. Evaluation every 3 steps and at the end: at steps 3 and 4, both after the resume.
# (Dynamic sampling's cadence through a resume: test_resume_repeats_the_uninterrupted_run.)
CADENCE = ["train.warmup_steps=4", "eval.every_steps=3", "eval.max_prompts=4", "eval.k=0", "checkpoint.every_steps=2"]


def test_resume_keeps_the_lr_schedule_epoch_and_eval_cadence(tiny_dir, reward_plugin_dir, tmp_path):
    import pyarrow.parquet as pq

    small = tmp_path / "train16.parquet"
    pq.write_table(pq.read_table(tiny_dir / "countdown_train.parquet").slice(0, 16), small)
    files = [f"data.train_files=[{small}]", f"eval.files=[{tiny_dir / 'countdown_test.parquet'}]"]
    straight_dir, split_dir = tmp_path / "straight", tmp_path / "split"
    train(tiny_dir, reward_plugin_dir, straight_dir, 4, *CADENCE, *files)
    train(tiny_dir, reward_plugin_dir, split_dir, 2, *CADENCE, *files)
    resumed = train(tiny_dir, reward_plugin_dir, split_dir, 4, *CADENCE, *files)
    assert "step_00000002 at step 2" in resumed.stdout
    straight, split = metrics(straight_dir), metrics(split_dir)
    assert [m["step"] for m in split] == [1, 2, 3, 4]  # two steps of the second epoch after the resume
    assert [m["train/lr"] for m in split] == pytest.approx([0.5e-3, 0.75e-3, 1e-3, 1e-3], rel=1e-9)
    for a, b in zip(straight, split):  # the second epoch's prompts and everything computed from them
        for key, value in a.items():
            if not key.startswith(VOLATILE):
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-7), (a["step"], key)
    evals = [json.loads((d / "eval.json").read_text()) for d in (straight_dir, split_dir)]
    # the recipe evaluates at the start and at the end: the 2-step run's end added "step 2"; after it, the
    # resumed run evaluated on the straight run's cadence, with the same results
    assert sorted(evals[0]) == ["step 0", "step 3", "step 4"]
    assert sorted(evals[1]) == ["step 0", "step 2", "step 3", "step 4"]
    assert {k: v for k, v in evals[1].items() if k != "step 2"} == evals[0]  # greedy: exactly the same
